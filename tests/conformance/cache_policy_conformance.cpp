// Cache-policy conformance suite: checks every cache-policy implementation a library offers (or the
// one --impl names) against cache_policy.h, through the C ABI alone: random engine-like traffic
// against a model of the resident set at capacities 1, 3 and 12, and the contract's edge cases
// (cache_policy_conformance.hpp).
//
//   cache_policy_conformance --plugin=<lib.so> [--impl=<name> [--option=key=value ...]] [doctest options]
// Environment equivalents: PMOE_CACHE_POLICY_PLUGIN, PMOE_CACHE_POLICY_IMPL, PMOE_CACHE_POLICY_OPTIONS.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include "cache_policy_conformance.hpp"
#include "plugin_library.hpp"

namespace pmoe::conformance {
namespace {

SuiteArgs g_args;

/// One instance of a policy implementation, shaped like the runtime's CachePolicyInstance.
class PolicyInstance {
 public:
  PolicyInstance(const PluginLibrary& lib, const OptionList& options, const pmoe_cache_shape& shape)
      : vt_(&lib.vtable<pmoe_cache_policy_vtable>()) {
    const std::vector<pmoe_option> items = option_items(options);
    const pmoe_options o{items.data(), items.size()};
    pmoe_error err{};
    if (vt_->create(lib.host(), &o, &shape, &p_, &err) != PMOE_OK || !p_)
      throw CreateError(err.code, std::string("create failed: ") + err.message);
  }
  PolicyInstance(PolicyInstance&& o) noexcept : vt_(o.vt_), p_(std::exchange(o.p_, nullptr)) {}
  PolicyInstance(const PolicyInstance&) = delete;
  PolicyInstance& operator=(const PolicyInstance&) = delete;
  ~PolicyInstance() {
    if (p_) vt_->destroy(p_);
  }
  void on_insert(std::span<const uint64_t> k) { vt_->on_insert(p_, k.data(), k.size()); }
  void on_access(std::span<const uint64_t> k, uint64_t tick) { vt_->on_access(p_, k.data(), k.size(), tick); }
  void on_evict(std::span<const uint64_t> k) { vt_->on_evict(p_, k.data(), k.size()); }
  size_t victims(std::span<uint64_t> out) { return vt_->victims(p_, out.data(), out.size()); }
  void on_routing(uint32_t layer, const float* probs, uint32_t n_tokens, uint32_t n_experts) {
    if (vt_->on_routing) vt_->on_routing(p_, layer, probs, n_tokens, n_experts);  // optional
  }

 private:
  const pmoe_cache_policy_vtable* vt_;
  pmoe_cache_policy* p_ = nullptr;
};

/// The implementations under test: the one --impl names, or every cache policy of the library.
std::vector<std::string> impls() {
  if (!g_args.impl.empty()) return {g_args.impl};
  const PluginLibrary lib(g_args.library, PMOE_KIND_CACHE_POLICY);
  std::vector<std::string> names;
  for (size_t i = 0; i < lib.desc().n_impls; ++i)
    if (lib.desc().impls[i].kind == PMOE_KIND_CACHE_POLICY) names.push_back(lib.desc().impls[i].name);
  return names;
}

}  // namespace

TEST_CASE("every policy keeps exactly the resident set under engine-like traffic") {
  for (const std::string& impl : impls()) {
    const PluginLibrary lib(g_args.library, PMOE_KIND_CACHE_POLICY, impl);
    for (uint64_t capacity : {1, 3, 12}) {
      CAPTURE(impl);
      CAPTURE(capacity);
      contract_run([&](const pmoe_cache_shape& s) { return PolicyInstance(lib, g_args.options, s); }, capacity,
                   1000 * capacity);
    }
  }
}

TEST_CASE("every policy handles the contract's edge cases") {
  for (const std::string& impl : impls()) {
    CAPTURE(impl);
    const PluginLibrary lib(g_args.library, PMOE_KIND_CACHE_POLICY, impl);
    contract_edges([&](const pmoe_cache_shape& s) { return PolicyInstance(lib, g_args.options, s); });
  }
}

}  // namespace pmoe::conformance

int main(int argc, char** argv) {
  using pmoe::conformance::g_args;
  if (!g_args.parse(argc, argv, PMOE_KIND_CACHE_POLICY, {})) return 2;
  if (!g_args.options.empty() && g_args.impl.empty()) {
    std::cerr << "--option needs --impl: options belong to one policy\n";
    return 2;
  }
  std::cout << "cache-policy conformance: " << g_args.library << " policies:";
  try {
    for (const std::string& n : pmoe::conformance::impls()) std::cout << " " << n;
  } catch (const std::exception& e) {
    std::cerr << "\n" << e.what() << "\n";
    return 1;
  }
  std::cout << "\n";
  doctest::Context ctx;
  ctx.applyCommandLine(static_cast<int>(g_args.rest.size()), g_args.rest.data());
  return ctx.run();
}
