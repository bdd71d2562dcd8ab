#pragma once
// The run configuration (YAML, shape in docs/config.md). Parsing checks the structure: known keys,
// types, sizes, integers. Plugin options are kept as strings with their source location and are
// checked later against the plugin's manifest schema (PluginRegistry::check_options), because only
// the manifest knows which options an implementation takes.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace pmoe {

/// A position in a config or manifest file (1-based line and column).
struct SourceLoc {
  std::string file;
  int line = 0, col = 0;
  /// "file:line:col"; "<default config>" for values that come from the built-in defaults.
  std::string str() const;
};

/// Which implementation a config section selects, and its options as written.
struct PluginChoice {
  std::string name;
  SourceLoc loc;  // of the name (or of the section when the name is the default)
  std::vector<std::pair<std::string, std::string>> options;  // key -> scalar text, in file order
  std::vector<SourceLoc> option_locs;                         // of each option's key
};

struct Config {
  std::string path;                  // "" for built-in defaults
  std::optional<std::string> model;  // relative paths resolved against the config file's directory
  PluginChoice compute;              // compute: {plugin, ...options}; default cpu-onednn
  PluginChoice storage;              // storage: {plugin, ...options}; default storage-posix
  std::string storage_fallback;      // storage.fallback: used when `plugin` cannot start here
  SourceLoc storage_fallback_loc;
  PluginChoice cache_policy;         // cache: {policy, budget, ...options}; default lru
  uint64_t cache_budget = 0;         // cache.budget in bytes; 0 = unlimited (all experts resident)
  uint32_t prefetch_lookahead = 0;   // prefetch.lookahead: layers routed ahead
  // prefetch.prefill_chunk: tokens per prefill batch, in RAM and streamed alike (one setting, so
  // the same prompt gives the same bits either way); 0 = unset (--ubatch, else kDefaultPrefillChunk)
  uint32_t prefill_chunk = 0;
  uint32_t read_timeout_ms = 30000;  // prefetch.read_timeout_ms: a slower expert read is an error
  uint32_t read_retries = 2;         // prefetch.read_retries: retries of a retryable read error
  bool pre_attention = true;         // prefetch.pre_attention: read experts while attention runs
                                     // (false: no prefetching, only when the FFN needs them)
  std::vector<std::string> plugin_paths;  // resolved against the config file's directory
  // weights.load: how the GGUF file comes into memory (docs/config.md)
  enum class WeightsLoad { automatic, mmap, read } weights_load = WeightsLoad::automatic;
  SourceLoc weights_load_loc;
};

/// Reads and parses a config file; errors are pmoe::Error("FILE:LINE:COL: what").
Config load_config(const std::string& path);
/// Parses config text; `name` is used in messages and its directory resolves relative paths.
Config parse_config(const std::string& text, const std::string& name);
Config default_config();

/// "4096", "64KiB", "512MiB", "1GiB", "1.5GiB", "2GB" (decimal units), case-insensitive units;
/// throws pmoe::Error on garbage, fractions of a byte and overflow.
uint64_t parse_size(std::string_view s);

/// Section names of the plugin kinds in the config ("compute", "storage", "cache").
const char* config_section(uint32_t kind);
/// Keys of a plugin section that are not plugin options ("plugin"; "policy", "budget").
std::vector<std::string_view> config_reserved_keys(uint32_t kind);

}  // namespace pmoe
