/* The ABI layout facts that C and C++ must agree on: every size and offset of the v1.0 tables.
 * Compiled once as C (sdk_headers_c.c) and once as C++ (test_sdk_headers_c.cpp), then compared. */
#ifndef PMOE_TEST_SDK_LAYOUT_H
#define PMOE_TEST_SDK_LAYOUT_H
#include <pocketmoe/pocketmoe.h>

#define PMOE_LAYOUT(X)                                                                          \
  X(sizeof(pmoe_error)) X(offsetof(pmoe_error, message))                                        \
  X(sizeof(pmoe_option)) X(sizeof(pmoe_options))                                                \
  X(sizeof(pmoe_host)) X(offsetof(pmoe_host, ctx)) X(offsetof(pmoe_host, log))                  \
  X(sizeof(pmoe_impl)) X(offsetof(pmoe_impl, vtable))                                           \
  X(sizeof(pmoe_plugin_desc)) X(offsetof(pmoe_plugin_desc, n_impls))                            \
  X(offsetof(pmoe_plugin_desc, impls))                                                          \
  X(sizeof(pmoe_read_req)) X(offsetof(pmoe_read_req, priority))                                 \
  X(sizeof(pmoe_read_done)) X(offsetof(pmoe_read_done, bytes))                                  \
  X(sizeof(pmoe_storage_vtable)) X(offsetof(pmoe_storage_vtable, direct_alignment))             \
  X(sizeof(pmoe_cache_shape)) X(offsetof(pmoe_cache_shape, capacity))                           \
  X(sizeof(pmoe_cache_policy_vtable)) X(offsetof(pmoe_cache_policy_vtable, on_routing))         \
  X(sizeof(pmoe_tensor)) X(offsetof(pmoe_tensor, nb))                                           \
  X(sizeof(pmoe_op)) X(offsetof(pmoe_op, src)) X(offsetof(pmoe_op, f))                          \
  X(sizeof(pmoe_compute_vtable)) X(offsetof(pmoe_compute_vtable, sync))                        \
  X(offsetof(pmoe_compute_vtable, buffer_flush_range)) X(sizeof(pmoe_compute_props))            \
  X(offsetof(pmoe_compute_props, alignment))

#ifdef __cplusplus
extern "C" {
#endif
/** Number of PMOE_LAYOUT entries and entry i, as the C compiler sees them. */
size_t pmoe_c_layout_count(void);
size_t pmoe_c_layout(size_t i);
/** Exercises the headers' inline functions and macros from C; 0 or the failing line. */
int pmoe_c_selftest(void);
#ifdef __cplusplus
}
#endif
#endif
