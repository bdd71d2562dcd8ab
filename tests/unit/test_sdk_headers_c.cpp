// The SDK headers compile as strict C (tests/plugins/sdk_headers_c.c, built with -pedantic
// -Werror), agree with C++ on every table layout, and the v1.0 layouts stay pinned: a change to
// any number below breaks every released plugin and needs a new ABI major (docs/plugin-abi.md).
#include <doctest/doctest.h>
#include <pocketmoe/pocketmoe.h>

#include <cstddef>

#include "../plugins/sdk_layout.h"
#include "plugin/registry.hpp"

#if defined(__x86_64__) || defined(__aarch64__)  // LP64: the layouts of the released binaries
// ABI 1.0, frozen. Tables may grow at the end; nothing here may change.
static_assert(PMOE_ABI_MAJOR == 1);
static_assert(sizeof(pmoe_error) == 520 && offsetof(pmoe_error, message) == 8);
static_assert(sizeof(pmoe_option) == 16 && sizeof(pmoe_options) == 16);
static_assert(offsetof(pmoe_host, abi_major) == 4 && offsetof(pmoe_host, abi_minor) == 6);
static_assert(offsetof(pmoe_host, ctx) == 8 && offsetof(pmoe_host, log) == 16);
static_assert(sizeof(pmoe_impl) == 32 && offsetof(pmoe_impl, name) == 8 &&
              offsetof(pmoe_impl, vtable) == 24);
static_assert(offsetof(pmoe_plugin_desc, abi_major) == 4 && offsetof(pmoe_plugin_desc, name) == 8 &&
              offsetof(pmoe_plugin_desc, n_impls) == 24 && offsetof(pmoe_plugin_desc, impls) == 32);
static_assert(sizeof(pmoe_read_req) == 48 && offsetof(pmoe_read_req, priority) == 40);
static_assert(sizeof(pmoe_read_done) == 24 && offsetof(pmoe_read_done, bytes) == 16);
static_assert(offsetof(pmoe_storage_vtable, create) == 8 &&
              offsetof(pmoe_storage_vtable, submit) == 48 &&
              offsetof(pmoe_storage_vtable, direct_alignment) == 64);
static_assert(offsetof(pmoe_cache_shape, capacity) == 16);
static_assert(offsetof(pmoe_cache_policy_vtable, create) == 8 &&
              offsetof(pmoe_cache_policy_vtable, victims) == 48 &&
              offsetof(pmoe_cache_policy_vtable, on_routing) == 56);
static_assert(sizeof(pmoe_tensor) == 88 && offsetof(pmoe_tensor, ne) == 24 &&
              offsetof(pmoe_tensor, nb) == 56);
static_assert(sizeof(pmoe_op) == 672 && offsetof(pmoe_op, src) == 96 && offsetof(pmoe_op, i) == 624 &&
              offsetof(pmoe_op, f) == 656);
static_assert(offsetof(pmoe_compute_vtable, create) == 8 &&
              offsetof(pmoe_compute_vtable, buffer_wrap) == 32 &&
              offsetof(pmoe_compute_vtable, execute) == 72 && offsetof(pmoe_compute_vtable, sync) == 80);
// ABI 1.2: appended to the compute table, plus the props struct get_props fills
static_assert(offsetof(pmoe_compute_vtable, get_props) == 88 && offsetof(pmoe_compute_vtable, supports_op) == 96 &&
              offsetof(pmoe_compute_vtable, submit) == 104 && offsetof(pmoe_compute_vtable, wait) == 112 &&
              offsetof(pmoe_compute_vtable, buffer_flush_range) == 120);
static_assert(sizeof(pmoe_compute_props) == 176 && offsetof(pmoe_compute_props, name) == 8 &&
              offsetof(pmoe_compute_props, unified_memory) == 136 && offsetof(pmoe_compute_props, alignment) == 168);
#endif

// Values that cross the ABI as integers are frozen too; new ones are only appended.
static_assert(PMOE_OK == 0 && PMOE_ERR_INVALID_ARGUMENT == 1 && PMOE_ERR_NOT_SUPPORTED == 2 &&
              PMOE_ERR_OUT_OF_MEMORY == 3 && PMOE_ERR_IO == 4 && PMOE_ERR_NOT_FOUND == 5 &&
              PMOE_ERR_PERMISSION == 6 && PMOE_ERR_OUT_OF_RANGE == 7 && PMOE_ERR_TIMEOUT == 8 &&
              PMOE_ERR_ABI == 9 && PMOE_ERR_INTERNAL == 10 && PMOE_ERR_AGAIN == 11);
static_assert(PMOE_KIND_COMPUTE == 1 && PMOE_KIND_STORAGE == 2 && PMOE_KIND_CACHE_POLICY == 3);
static_assert(PMOE_DTYPE_F32 == 0 && PMOE_DTYPE_F16 == 1 && PMOE_DTYPE_Q4_0 == 2 &&
              PMOE_DTYPE_Q8_0 == 8 && PMOE_DTYPE_I32 == 26 && PMOE_DTYPE_BF16 == 30);
// ABI 1.1: the block types of downloaded GGUF files, with GGML's ids
static_assert(PMOE_DTYPE_Q4_1 == 3 && PMOE_DTYPE_Q5_0 == 6 && PMOE_DTYPE_Q5_1 == 7 && PMOE_DTYPE_Q2_K == 10 &&
              PMOE_DTYPE_Q3_K == 11 && PMOE_DTYPE_Q4_K == 12 && PMOE_DTYPE_Q5_K == 13 && PMOE_DTYPE_Q6_K == 14 &&
              PMOE_DTYPE_IQ4_NL == 20 && PMOE_DTYPE_IQ4_XS == 23);
static_assert(PMOE_OP_GET_ROWS == 1 && PMOE_OP_MOE_EXPERT == 7 && PMOE_OP_COPY == 8);
static_assert(PMOE_DEVICE_CPU == 0 && PMOE_DEVICE_INTEGRATED_GPU == 1 && PMOE_DEVICE_DISCRETE_GPU == 2 &&
              PMOE_DEVICE_OTHER == 3);
static_assert(PMOE_OPEN_DIRECT == 1u && PMOE_BUFFER_HOST_VISIBLE == 1u && PMOE_BUFFER_READ_ONLY == 2u);

TEST_CASE("C and C++ see the same layouts") {
  static const size_t cpp[] = {
#define PMOE_ITEM(e) (e),
      PMOE_LAYOUT(PMOE_ITEM)
#undef PMOE_ITEM
  };
  static const char* names[] = {
#define PMOE_ITEM(e) #e,
      PMOE_LAYOUT(PMOE_ITEM)
#undef PMOE_ITEM
  };
  REQUIRE(pmoe_c_layout_count() == sizeof(cpp) / sizeof(cpp[0]));
  for (size_t i = 0; i < pmoe_c_layout_count(); ++i) {
    INFO(names[i]);
    CHECK(pmoe_c_layout(i) == cpp[i]);
  }
}

TEST_CASE("the headers' inline functions and macros work from C") {
  CHECK(pmoe_c_selftest() == 0);  // else: the failing line of sdk_headers_c.c
}

TEST_CASE("the host's minimum table sizes are the v1.0 layouts") {
  CHECK(pmoe::min_table_size(PMOE_KIND_COMPUTE) == offsetof(pmoe_compute_vtable, sync) + sizeof(void*));
  CHECK(pmoe::min_table_size(PMOE_KIND_STORAGE) ==
        offsetof(pmoe_storage_vtable, direct_alignment) + sizeof(void*));
  CHECK(pmoe::min_table_size(PMOE_KIND_CACHE_POLICY) ==
        offsetof(pmoe_cache_policy_vtable, on_routing) + sizeof(void*));
  CHECK(pmoe::min_table_size(42) == 0);
#if defined(__x86_64__) || defined(__aarch64__)
  CHECK(pmoe::min_table_size(PMOE_KIND_COMPUTE) == 88);
  CHECK(pmoe::min_table_size(PMOE_KIND_STORAGE) == 72);
  CHECK(pmoe::min_table_size(PMOE_KIND_CACHE_POLICY) == 64);
#endif
}
