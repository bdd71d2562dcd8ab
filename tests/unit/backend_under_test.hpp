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

/// Options for the backend under test, as YAML flow-map entries ("fp16: on"): PMOE_TEST_COMPUTE_OPTIONS.
inline std::string backend_options() {
  const char* o = std::getenv("PMOE_TEST_COMPUTE_OPTIONS");
  return o && *o ? o : "";
}

/// Whether the backend under test multiplies 16-bit and quantized weights in f16
/// (PMOE_TEST_F16_PRODUCTS=1), and so is held to the fixtures' looser bound for such backends.
inline bool f16_products() {
  const char* f = std::getenv("PMOE_TEST_F16_PRODUCTS");
  return f && std::string(f) == "1";
}

/// "compute: { plugin: NAME[, options] }\n" for a config running the backend under test; "" for
/// the default.
inline std::string backend_config_section() {
  const std::string name = backend_under_test(), opts = backend_options();
  return name.empty() ? "" : "compute: { plugin: " + name + (opts.empty() ? "" : ", " + opts) + " }\n";
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
