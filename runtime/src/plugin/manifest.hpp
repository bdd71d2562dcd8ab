#pragma once
// Plugin manifests: the YAML file each plugin installs next to its library (docs/plugin-abi.md).
// They let the host list plugins and check config options without loading any library.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace pmoe {

/// One option of an implementation. `type` is int, bool, size, string or enum.
struct OptionSpec {
  std::string name, type, doc, default_value;  // default normalised like a config value; "" = none
  std::optional<long long> min, max;           // int and size only (sizes in bytes)
  std::vector<std::string> values;             // enum only
};

struct ImplManifest {
  std::string name;
  uint32_t kind = 0;  // pmoe_kind
  std::string description;
  std::vector<OptionSpec> options;
  const OptionSpec* option(std::string_view name) const;
};

struct PluginManifest {
  std::string manifest_path, library_path /*absolute*/, plugin, version;
  uint16_t abi_major = 0, abi_minor = 0;
  std::vector<ImplManifest> provides;
  bool builtin = false;
  /// Manifests of the same plugin found later on the search path and skipped for this one.
  std::vector<std::string> shadows;
};

/// Parses a manifest file; errors are pmoe::Error("FILE:LINE:COL: what").
PluginManifest load_manifest(const std::string& path);
PluginManifest parse_manifest(const std::string& text, const std::string& path);

/// Checks `value` against `spec` and returns it normalised: bools "true"/"false", ints in
/// decimal, sizes in bytes. Throws pmoe::Error (without location: the caller adds it).
std::string normalize_option(const OptionSpec& spec, std::string_view value);

/// Kind from its manifest/config name ("compute", "storage", "cache_policy"); 0 if unknown.
uint32_t kind_from_name(std::string_view name);

}  // namespace pmoe
