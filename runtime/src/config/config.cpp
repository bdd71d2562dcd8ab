#include "config/config.hpp"

#include <pocketmoe/abi.h>

#include <array>
#include <cctype>
#include <charconv>
#include <filesystem>
#include <limits>

#include "common/error.hpp"
#include "config/yaml_util.hpp"

namespace fs = std::filesystem;

namespace pmoe {

std::string SourceLoc::str() const {
  if (file.empty()) return "<default config>";
  return file + ":" + std::to_string(line) + ":" + std::to_string(col);
}

const char* config_section(uint32_t kind) {
  switch (kind) {
    case PMOE_KIND_COMPUTE: return "compute";
    case PMOE_KIND_STORAGE: return "storage";
    case PMOE_KIND_CACHE_POLICY: return "cache";
    default: return "?";
  }
}

std::vector<std::string_view> config_reserved_keys(uint32_t kind) {
  if (kind == PMOE_KIND_CACHE_POLICY) return {"policy", "budget"};
  if (kind == PMOE_KIND_STORAGE) return {"plugin", "fallback"};
  return {"plugin"};
}

uint64_t parse_size(std::string_view s) {
  auto bad = [&](const std::string& why) {
    return Error("bad size '" + std::string(s) + "': " + why +
                 " (write e.g. 4096, 64KiB, 512MiB, 1.5GiB or 2GB)");
  };
  size_t i = 0;
  while (i < s.size() && std::isspace(static_cast<unsigned char>(s[i]))) ++i;
  size_t int_begin = i;
  while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i]))) ++i;
  std::string_view int_part = s.substr(int_begin, i - int_begin);
  std::string_view frac_part;
  if (i < s.size() && s[i] == '.') {
    size_t f = ++i;
    while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i]))) ++i;
    frac_part = s.substr(f, i - f);
  }
  if (int_part.empty() && frac_part.empty()) throw bad("expected a non-negative number");
  while (i < s.size() && std::isspace(static_cast<unsigned char>(s[i]))) ++i;
  std::string unit;
  for (; i < s.size(); ++i) unit += static_cast<char>(std::tolower(static_cast<unsigned char>(s[i])));
  while (!unit.empty() && std::isspace(static_cast<unsigned char>(unit.back()))) unit.pop_back();

  static const std::array<std::pair<std::string_view, uint64_t>, 9> units{{
      {"", 1}, {"b", 1},
      {"kib", 1ull << 10}, {"mib", 1ull << 20}, {"gib", 1ull << 30}, {"tib", 1ull << 40},
      {"kb", 1000ull}, {"mb", 1000000ull}, {"gb", 1000000000ull},
  }};
  uint64_t mult = 0;
  for (auto [name, m] : units)
    if (unit == name) mult = m;
  if (unit == "tb") mult = 1000000000000ull;
  if (mult == 0) throw bad("unknown unit '" + unit + "'");
  if (frac_part.size() > 18) throw bad("too many decimals");

  uint64_t whole = 0;
  if (!int_part.empty()) {
    auto [p, ec] = std::from_chars(int_part.data(), int_part.data() + int_part.size(), whole);
    if (ec != std::errc()) throw bad("too large");
  }
  unsigned __int128 bytes = static_cast<unsigned __int128>(whole) * mult;
  if (!frac_part.empty()) {
    // Exact decimal arithmetic: frac/10^n * mult must come out as whole bytes.
    uint64_t frac = 0, scale = 1;
    for (char c : frac_part) {
      frac = frac * 10 + static_cast<uint64_t>(c - '0');
      scale *= 10;
    }
    unsigned __int128 num = static_cast<unsigned __int128>(frac) * mult;
    if (num % scale != 0) throw bad("not a whole number of bytes");
    bytes += num / scale;
  }
  if (bytes > std::numeric_limits<uint64_t>::max()) throw bad("too large");
  return static_cast<uint64_t>(bytes);
}

namespace {

constexpr std::array<std::string_view, 7> kTopKeys{"model",    "compute",      "storage", "cache",
                                                   "prefetch", "plugin_paths", "weights"};
constexpr std::array<std::string_view, 1> kWeightsKeys{"load"};
constexpr std::array<std::string_view, 5> kPrefetchKeys{"lookahead", "prefill_chunk", "read_timeout_ms",
                                                        "read_retries", "pre_attention"};

std::string resolve(const fs::path& base, const std::string& p) {
  if (p.empty() || fs::path(p).is_absolute() || base.empty()) return p;
  return (base / p).lexically_normal().string();
}

// A plugin section: the name key (`plugin` or `policy`) selects the implementation, `budget` is
// the cache's own, every other key is an option for the implementation, kept as written.
void parse_plugin_section(const std::string& file, const yaml::MapEntry& sec, std::string_view name_key,
                          PluginChoice& choice, Config& cfg) {
  yaml::expect_map(file, sec);
  choice.loc = yaml::loc(file, sec.key_node);
  for (auto& e : yaml::entries(file, sec.value, "in '" + sec.key + "'")) {
    if (e.key == name_key) {
      choice.name = yaml::scalar(file, e);
      choice.loc = yaml::loc(file, e.value);
      if (choice.name.empty())
        throw Error(choice.loc.str() + ": '" + e.key + "' in '" + sec.key + "' is empty");
    } else if (sec.key == "storage" && e.key == "fallback") {
      cfg.storage_fallback = yaml::scalar(file, e);
      cfg.storage_fallback_loc = yaml::loc(file, e.value);
    } else if (sec.key == "cache" && e.key == "budget") {
      std::string text = yaml::scalar(file, e);
      try {
        cfg.cache_budget = parse_size(text);
      } catch (const Error& err) {
        throw Error(yaml::loc(file, e.value).str() + ": cache.budget: " + err.what());
      }
    } else {
      if (e.value.IsNull())
        throw Error(yaml::loc(file, e.key_node).str() + ": option '" + e.key + "' in '" + sec.key +
                    "' has no value");
      if (!e.value.IsScalar())
        throw Error(yaml::loc(file, e.value).str() + ": option '" + e.key + "' in '" + sec.key +
                    "' must be a scalar, got " + yaml::type_name(e.value));
      choice.options.emplace_back(e.key, e.value.Scalar());
      choice.option_locs.push_back(yaml::loc(file, e.key_node));
    }
  }
}

Config parse_impl(const std::string& text, const std::string& name, const fs::path& base) {
  Config cfg = default_config();
  cfg.path = name;
  YAML::Node root = yaml::parse(text, name);
  if (root.IsNull()) return cfg;  // an empty file means "all defaults"
  if (!root.IsMap())
    throw Error(yaml::loc(name, root).str() + ": a config must be a map of sections, got " +
                yaml::type_name(root));
  for (auto& e : yaml::entries(name, root, "at the top level", kTopKeys)) {
    if (e.key == "model") {
      cfg.model = resolve(base, yaml::scalar(name, e));
    } else if (e.key == "compute") {
      parse_plugin_section(name, e, "plugin", cfg.compute, cfg);
    } else if (e.key == "storage") {
      parse_plugin_section(name, e, "plugin", cfg.storage, cfg);
    } else if (e.key == "cache") {
      parse_plugin_section(name, e, "policy", cfg.cache_policy, cfg);
    } else if (e.key == "prefetch") {
      yaml::expect_map(name, e);
      for (auto& p : yaml::entries(name, e.value, "in 'prefetch'", kPrefetchKeys)) {
        if (p.key == "pre_attention") {
          const std::string b = yaml::scalar(name, p);
          if (b != "true" && b != "false")
            throw Error(yaml::loc(name, p.value).str() + ": 'pre_attention' must be true or false, got '" + b + "'");
          cfg.pre_attention = b == "true";
          continue;
        }
        uint32_t v = static_cast<uint32_t>(yaml::unsigned_int(name, p, 1u << 20));
        if (p.key == "lookahead") {
          cfg.prefetch_lookahead = v;
        } else if (p.key == "read_timeout_ms") {
          if (v == 0) throw Error(yaml::loc(name, p.value).str() + ": 'read_timeout_ms' must be >= 1");
          cfg.read_timeout_ms = v;
        } else if (p.key == "read_retries") {
          cfg.read_retries = v;
        } else {
          if (v == 0) throw Error(yaml::loc(name, p.value).str() + ": 'prefill_chunk' must be >= 1");
          cfg.prefill_chunk = v;
        }
      }
    } else if (e.key == "weights") {
      yaml::expect_map(name, e);
      for (auto& w : yaml::entries(name, e.value, "in 'weights'", kWeightsKeys)) {
        const std::string v = yaml::scalar(name, w);
        if (v != "auto" && v != "mmap" && v != "read")
          throw Error(yaml::loc(name, w.value).str() + ": 'load' in 'weights' must be auto, mmap or read, got '" + v + "'");
        cfg.weights_load = v == "mmap" ? Config::WeightsLoad::mmap
                           : v == "read" ? Config::WeightsLoad::read
                                         : Config::WeightsLoad::automatic;
        cfg.weights_load_loc = yaml::loc(name, w.value);
      }
    } else if (e.key == "plugin_paths") {
      if (!e.value.IsSequence())
        throw Error(yaml::loc(name, e.value.IsNull() ? e.key_node : e.value).str() +
                    ": 'plugin_paths' must be a sequence of directories, got " +
                    yaml::type_name(e.value));
      for (const auto& item : e.value) {
        if (!item.IsScalar() || item.Scalar().empty())
          throw Error(yaml::loc(name, item).str() + ": entries of 'plugin_paths' must be paths, got " +
                      yaml::type_name(item));
        cfg.plugin_paths.push_back(resolve(base, item.Scalar()));
      }
    }
  }
  if (cfg.weights_load == Config::WeightsLoad::read && cfg.cache_budget > 0)
    throw Error(cfg.weights_load_loc.str() + ": weights.load: read keeps every expert in memory, but cache.budget streams "
                "them from storage; use auto or mmap");
  return cfg;
}

}  // namespace

Config default_config() {
  Config cfg;
  cfg.compute.name = "cpu-onednn";
  cfg.storage.name = "storage-posix";
  cfg.cache_policy.name = "lru";
  return cfg;
}

Config parse_config(const std::string& text, const std::string& name) {
  return parse_impl(text, name, fs::path(name).parent_path());
}

Config load_config(const std::string& path) {
  std::string text = yaml::read_file(path);
  return parse_impl(text, path, fs::absolute(fs::path(path)).parent_path());
}

}  // namespace pmoe
