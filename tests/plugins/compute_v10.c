/* A compute plugin as one built for ABI 1.0 looks to the host: descriptor 1.0 and a function
 * table that ends at `sync`. It borrows the cpu-onednn library's functions (dlopen), so tests
 * can check that a v1.0 backend still loads and computes the same bits through the host's
 * fallbacks (execute + sync for submit/wait, no props, no supports_op, no flush). */
#include <pocketmoe/pocketmoe.h>

#include <dlfcn.h>
#include <string.h>

static pmoe_compute_vtable v10_table;
static pmoe_impl v10_impl = {PMOE_KIND_COMPUTE, 0, "compute-v10", "cpu-onednn seen through an ABI 1.0 table", NULL};
static const pmoe_plugin_desc v10_desc = {sizeof(pmoe_plugin_desc), 1, 0, "compute-v10", "1.0.0", 1, &v10_impl};

typedef pmoe_status (*entry_fn)(const pmoe_host*, const pmoe_plugin_desc**, pmoe_error*);

PMOE_DECLARE_ENTRY(host, out, err) {
  void* lib = dlopen(PMOE_CPU_PLUGIN_PATH, RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE);
  if (!lib) return pmoe_error_set(err, PMOE_ERR_NOT_FOUND, 0, "dlopen %s: %s", PMOE_CPU_PLUGIN_PATH, dlerror());
  entry_fn entry;
  *(void**)&entry = dlsym(lib, PMOE_ENTRY_SYMBOL);
  const pmoe_plugin_desc* cpu = NULL;
  if (!entry || entry(host, &cpu, err) != PMOE_OK) return pmoe_error_set(err, PMOE_ERR_NOT_FOUND, 0, "no cpu-onednn entry");
  const pmoe_compute_vtable* full = NULL;
  for (size_t i = 0; i < cpu->n_impls; ++i)
    if (cpu->impls[i].kind == PMOE_KIND_COMPUTE) full = (const pmoe_compute_vtable*)cpu->impls[i].vtable;
  if (!full) return pmoe_error_set(err, PMOE_ERR_NOT_FOUND, 0, "cpu-onednn has no compute implementation");
  /* the v1.0 part of the table only */
  const size_t v10_size = offsetof(pmoe_compute_vtable, sync) + sizeof(full->sync);
  memset(&v10_table, 0, sizeof v10_table);
  memcpy(&v10_table, full, v10_size);
  v10_table.struct_size = (uint32_t)v10_size;
  v10_impl.vtable = &v10_table;
  *out = &v10_desc;
  return PMOE_OK;
}
