/* Deliberately broken plugins for test_plugin_loading, written in plain C against the SDK.
 * Each build defines PLUGIN_NAME, IMPL_NAME and at most one CASE_* macro that breaks one rule;
 * with no CASE_* it is a valid (trivial) cache policy, which the manifest may then contradict. */
#include <pocketmoe/pocketmoe.h>

struct stub_policy {
  int unused;
};
static struct stub_policy the_policy;

static pmoe_status stub_create(const pmoe_host* host, const pmoe_options* options,
                               const pmoe_cache_shape* shape, pmoe_cache_policy** out,
                               pmoe_error* err) {
  (void)host, (void)options, (void)shape, (void)err;
  *out = (pmoe_cache_policy*)&the_policy;
  return PMOE_OK;
}
static void stub_destroy(pmoe_cache_policy* p) { (void)p; }
static void stub_keys(pmoe_cache_policy* p, const uint64_t* keys, size_t n) {
  (void)p, (void)keys, (void)n;
}
static void stub_access(pmoe_cache_policy* p, const uint64_t* keys, size_t n, uint64_t tick) {
  (void)p, (void)keys, (void)n, (void)tick;
}
static size_t stub_victims(pmoe_cache_policy* p, uint64_t* out, size_t max) {
  /* Proposes key 42 so a test can see the call went through. */
  (void)p;
  if (max == 0) return 0;
  out[0] = 42;
  return 1;
}

static const pmoe_cache_policy_vtable policy_table = {
#ifdef CASE_SMALL_STRUCT
    16, /* claims a table far smaller than any released layout */
#else
    sizeof(pmoe_cache_policy_vtable),
#endif
    0, stub_create, stub_destroy, stub_keys, stub_access, stub_keys, stub_victims, NULL};

static const pmoe_impl impls[] = {{
#ifdef CASE_BAD_KIND
    7,
#else
    PMOE_KIND_CACHE_POLICY,
#endif
    0, IMPL_NAME, "test policy (" PLUGIN_NAME ")",
#ifdef CASE_NULL_TABLE
    NULL
#else
    &policy_table
#endif
}};

static const pmoe_plugin_desc desc = {sizeof(pmoe_plugin_desc),
#if defined(CASE_ABI_MAJOR)
                                      2, 0,
#elif defined(CASE_ABI_MINOR)
                                      PMOE_ABI_MAJOR, 9, /* a newer minor than the host's */
#else
                                      PMOE_ABI_MAJOR, PMOE_ABI_MINOR,
#endif
                                      PLUGIN_NAME, "0.0.1", 1, impls};

#ifdef CASE_NO_ENTRY
/* Exports something, but not pmoe_plugin_entry. */
PMOE_EXPORT const pmoe_plugin_desc* not_the_entry(void) { return &desc; }
#else
PMOE_DECLARE_ENTRY(host, out, err) {
  (void)host, (void)&desc, (void)&policy_table; /* some cases leave them unused */
#if defined(CASE_ENTRY_ERROR)
  (void)out;
  return pmoe_error_set(err, PMOE_ERR_INTERNAL, 0, "%s plugin refuses: no GPU found", PLUGIN_NAME);
#elif defined(CASE_NULL_DESC)
  (void)err;
  *out = NULL;
  return PMOE_OK;
#else
  /* No version check on purpose (CASE_ABI_MAJOR): the host must catch it. */
  (void)err;
  *out = &desc;
  return PMOE_OK;
#endif
}
#endif
