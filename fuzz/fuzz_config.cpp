// libFuzzer target: the YAML config parser and the plugin-manifest parser on arbitrary text. Any
// input must parse or end in a pmoe::Error naming FILE:LINE:COL; never a crash or a hang.
#include "common/error.hpp"
#include "config/config.hpp"
#include "plugin/manifest.hpp"

#include <cstdint>
#include <string>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  try {
    (void)pmoe::parse_config(text, "fuzz.yaml");
  } catch (const pmoe::Error&) {
  }
  try {
    (void)pmoe::parse_manifest(text, "fuzz-manifest.yaml");
  } catch (const pmoe::Error&) {
  }
  return 0;
}
