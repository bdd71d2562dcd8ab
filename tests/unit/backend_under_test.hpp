// The compute backend the model-level tests run on: the default one, or PMOE_TEST_COMPUTE (set by
// a compute plugin's CONFORMANCE registration, tests/conformance/CMakeLists.txt). A backend this
// machine has no device for (no Vulkan driver, say) cannot be tested here: the test binary then
// prints why and exits 77, which ctest reports as skipped, never as a pass.
#pragma once

#include "plugin/compute_backend.hpp"
#include "plugin/registry.hpp"

#include <cstdlib>
#include <iostream>
#include <string>

namespace pmoe::test {

inline std::string backend_under_test() {
  const char* b = std::getenv("PMOE_TEST_COMPUTE");
  return b && *b ? b : "";
}

/// "compute: { plugin: NAME }\n" for a config running the backend under test; "" for the default.
inline std::string backend_config_section() {
  const std::string name = backend_under_test();
  return name.empty() ? "" : "compute: { plugin: " + name + " }\n";
}

/// Exits 77 (skipped) when the backend under test cannot be created for want of a device.
inline bool skip_without_device() {
  const std::string name = backend_under_test();
  if (name.empty()) return false;
  try {
    PluginRegistry reg;
    const LoadedImpl impl = reg.load(name, PMOE_KIND_COMPUTE);
    ComputeBackend probe(impl, {}, reg.host());
  } catch (const std::exception& e) {
    const std::string why = e.what();
    if (why.find("[not_found]") == std::string::npos) throw;
    std::cout << "SKIPPED: compute backend '" << name << "' cannot run on this machine: " << why << "\n";
    std::exit(77);
  }
  return false;
}

}  // namespace pmoe::test
