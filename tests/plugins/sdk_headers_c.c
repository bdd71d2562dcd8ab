/* Compiled as C11 with -Wall -Wextra -Werror -pedantic: the SDK headers are C headers. */
#include <pocketmoe/pocketmoe.h>

#include "sdk_layout.h"

#define PMOE_ITEM(e) (e),
static const size_t layout[] = {PMOE_LAYOUT(PMOE_ITEM)};

size_t pmoe_c_layout_count(void) { return sizeof layout / sizeof layout[0]; }
size_t pmoe_c_layout(size_t i) { return i < pmoe_c_layout_count() ? layout[i] : 0; }

/* A C plugin's entry point, as a C author writes it. */
static const pmoe_impl c_impls[] = {{PMOE_KIND_CACHE_POLICY, 0, "c-policy", "from C", NULL}};
static const pmoe_plugin_desc c_desc = {sizeof(pmoe_plugin_desc), PMOE_ABI_MAJOR, PMOE_ABI_MINOR,
                                        "c-plugin", "1.0.0", 1, c_impls};
PMOE_DECLARE_ENTRY(host, out, err) {
  if (host->abi_major != PMOE_ABI_MAJOR)
    return pmoe_error_set(err, PMOE_ERR_ABI, 0, "built for ABI %d.%d, host has ABI %d.%d",
                          PMOE_ABI_MAJOR, PMOE_ABI_MINOR, host->abi_major, host->abi_minor);
  *out = &c_desc;
  return PMOE_OK;
}

static pmoe_status dummy_open(pmoe_storage* s, const char* path, uint32_t flags, pmoe_file** out,
                              uint64_t* size, pmoe_error* err) {
  (void)s, (void)path, (void)flags, (void)out, (void)size;
  return pmoe_error_set(err, PMOE_ERR_NOT_FOUND, 2, "%s: not found", path);
}

#define CHECK(c) \
  if (!(c)) return __LINE__

int pmoe_c_selftest(void) {
  pmoe_error err;
  pmoe_option items[2];
  pmoe_options opts;
  pmoe_storage_vtable vt;
  pmoe_host host;
  const pmoe_plugin_desc* desc = NULL;
  pmoe_tensor t;
  uint64_t key = PMOE_EXPERT_KEY(31, 63);

  pmoe_error_clear(&err);
  CHECK(err.code == PMOE_OK && err.message[0] == '\0');
  CHECK(pmoe_error_set(&err, PMOE_ERR_IO, 5, "read %s at %d", "x.gguf", 7) == PMOE_ERR_IO);
  CHECK(err.sys_errno == 5 && strcmp(err.message, "read x.gguf at 7") == 0);
  CHECK(pmoe_error_set(NULL, PMOE_ERR_AGAIN, 0, "ignored") == PMOE_ERR_AGAIN);
  CHECK(strcmp(pmoe_status_name(PMOE_ERR_NOT_FOUND), "not_found") == 0);
  CHECK(pmoe_status_retryable(PMOE_ERR_IO) && !pmoe_status_retryable(PMOE_ERR_ABI));
  CHECK(strcmp(pmoe_kind_name(PMOE_KIND_CACHE_POLICY), "cache_policy") == 0);
  CHECK(pmoe_kind_name(99) == NULL);

  items[0].key = "threads";
  items[0].value = "2";
  items[1].key = "direct_io";
  items[1].value = "true";
  opts.items = items;
  opts.count = 2;
  CHECK(strcmp(pmoe_options_get(&opts, "direct_io"), "true") == 0);
  CHECK(pmoe_options_get(&opts, "nope") == NULL && pmoe_options_get(NULL, "x") == NULL);

  /* A table from an "older" plugin that ends before direct_alignment. */
  memset(&vt, 0, sizeof vt);
  vt.open = dummy_open;
  vt.struct_size = (uint32_t)offsetof(pmoe_storage_vtable, direct_alignment);
  CHECK(PMOE_HAS_MEMBER(pmoe_storage_vtable, &vt, open));
  CHECK(!PMOE_HAS_MEMBER(pmoe_storage_vtable, &vt, direct_alignment));
  CHECK(!PMOE_HAS_MEMBER(pmoe_storage_vtable, &vt, poll)); /* inside, but NULL */
  CHECK(vt.open(NULL, "m.gguf", PMOE_OPEN_DIRECT, NULL, NULL, &err) == PMOE_ERR_NOT_FOUND);
  CHECK(strcmp(err.message, "m.gguf: not found") == 0);

  CHECK(PMOE_KEY_LAYER(key) == 31 && PMOE_KEY_EXPERT(key) == 63);
  CHECK(pmoe_dtype_row_bytes(PMOE_DTYPE_Q4_0, 64) == 36 && pmoe_dtype_row_bytes(PMOE_DTYPE_Q8_0, 33) == 0);
  CHECK(strcmp(pmoe_dtype_name(PMOE_DTYPE_BF16), "bf16") == 0);
  t = pmoe_tensor_2d(NULL, 4096, PMOE_DTYPE_F16, 8, 3);
  CHECK(t.nb[0] == 2 && t.nb[1] == 16 && t.nb[2] == 48 && t.ne[3] == 1);

  memset(&host, 0, sizeof host);
  host.struct_size = sizeof host;
  host.abi_major = PMOE_ABI_MAJOR;
  CHECK(!PMOE_HAS_MEMBER(pmoe_host, &host, log));
  CHECK(pmoe_plugin_entry(&host, &desc, &err) == PMOE_OK && desc == &c_desc);
  host.abi_major = PMOE_ABI_MAJOR + 1;
  CHECK(pmoe_plugin_entry(&host, &desc, &err) == PMOE_ERR_ABI);
  return 0;
}
