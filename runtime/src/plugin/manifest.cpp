#include "plugin/manifest.hpp"

#include <pocketmoe/abi.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <charconv>
#include <climits>
#include <filesystem>

#include "common/error.hpp"
#include "config/yaml_util.hpp"

namespace fs = std::filesystem;

namespace pmoe {

const OptionSpec* ImplManifest::option(std::string_view n) const {
  for (const auto& o : options)
    if (o.name == n) return &o;
  return nullptr;
}

uint32_t kind_from_name(std::string_view name) {
  for (uint32_t k : {PMOE_KIND_COMPUTE, PMOE_KIND_STORAGE, PMOE_KIND_CACHE_POLICY})
    if (name == pmoe_kind_name(k)) return k;
  return 0;
}

namespace {

constexpr std::array<std::string_view, 5> kTopKeys{"plugin", "version", "abi", "provides", "library"};
constexpr std::array<std::string_view, 4> kImplKeys{"name", "kind", "description", "options"};
constexpr std::array<std::string_view, 6> kOptKeys{"type", "default", "min", "max", "doc", "values"};
constexpr std::array<std::string_view, 5> kTypes{"int", "bool", "size", "string", "enum"};

long long parse_int(std::string_view v) {
  long long x = 0;
  const char* b = v.data();
  if (!v.empty() && v[0] == '+') ++b;
  auto [p, ec] = std::from_chars(b, v.data() + v.size(), x);
  if (ec == std::errc::result_out_of_range) throw Error("integer '" + std::string(v) + "' is too large");
  if (ec != std::errc() || p != v.data() + v.size() || v.empty())
    throw Error("expected an integer, got '" + std::string(v) + "'");
  return x;
}

ImplManifest parse_impl(const std::string& file, const YAML::Node& n) {
  if (!n.IsMap())
    throw Error(yaml::loc(file, n).str() + ": entries of 'provides' must be maps, got " +
                yaml::type_name(n));
  ImplManifest impl;
  bool have_name = false, have_kind = false;
  for (auto& e : yaml::entries(file, n, "in a 'provides' entry", kImplKeys)) {
    if (e.key == "name") {
      impl.name = yaml::scalar(file, e);
      have_name = !impl.name.empty();
    } else if (e.key == "kind") {
      std::string k = yaml::scalar(file, e);
      impl.kind = kind_from_name(k);
      if (impl.kind == 0)
        throw Error(yaml::loc(file, e.value).str() + ": unknown kind '" + k +
                    "' (expected compute, storage or cache_policy)" +
                    yaml::did_you_mean(k, {"compute", "storage", "cache_policy"}));
      have_kind = true;
    } else if (e.key == "description") {
      impl.description = yaml::scalar(file, e);
    } else if (e.key == "options") {
      if (e.value.IsNull()) continue;
      yaml::expect_map(file, e);
      for (auto& o : yaml::entries(file, e.value, "in 'options'")) {
        yaml::expect_map(file, o);
        OptionSpec spec;
        spec.name = o.key;
        yaml::MapEntry def_entry, *def = nullptr;
        for (auto& f : yaml::entries(file, o.value, "in option '" + o.key + "'", kOptKeys)) {
          if (f.key == "type") {
            spec.type = yaml::scalar(file, f);
            if (std::find(kTypes.begin(), kTypes.end(), spec.type) == kTypes.end())
              throw Error(yaml::loc(file, f.value).str() + ": unknown option type '" + spec.type +
                          "' (expected int, bool, size, string or enum)" +
                          yaml::did_you_mean(spec.type, kTypes));
          } else if (f.key == "doc") {
            spec.doc = yaml::scalar(file, f);
          } else if (f.key == "default") {
            def_entry = f;
            def = &def_entry;
          } else if (f.key == "min" || f.key == "max") {
            std::string v = yaml::scalar(file, f);
            long long x;
            try {
              // Bounds of a size may be written as sizes; parse_size accepts plain integers too.
              x = (!v.empty() && (std::isdigit(static_cast<unsigned char>(v.back())) == 0))
                      ? static_cast<long long>(parse_size(v))
                      : parse_int(v);
            } catch (const Error& err) {
              throw Error(yaml::loc(file, f.value).str() + ": '" + f.key + "' of option '" +
                          o.key + "': " + err.what());
            }
            (f.key == "min" ? spec.min : spec.max) = x;
          } else if (f.key == "values") {
            if (!f.value.IsSequence())
              throw Error(yaml::loc(file, f.value).str() + ": 'values' of option '" + o.key +
                          "' must be a sequence, got " + yaml::type_name(f.value));
            for (const auto& v : f.value) {
              if (!v.IsScalar())
                throw Error(yaml::loc(file, v).str() + ": enum values must be scalars");
              spec.values.push_back(v.Scalar());
            }
          }
        }
        auto here = yaml::loc(file, o.key_node).str();
        if (spec.type.empty()) throw Error(here + ": option '" + o.key + "' has no 'type'");
        if (spec.type == "enum" && spec.values.empty())
          throw Error(here + ": enum option '" + o.key + "' needs 'values'");
        if (spec.type != "enum" && !spec.values.empty())
          throw Error(here + ": 'values' is only allowed for enum options ('" + o.key + "' is " +
                      spec.type + ")");
        if ((spec.min || spec.max) && spec.type != "int" && spec.type != "size")
          throw Error(here + ": 'min'/'max' are only allowed for int and size options");
        if (def) {
          try {
            spec.default_value = normalize_option(spec, yaml::scalar(file, *def));
          } catch (const Error& err) {
            throw Error(yaml::loc(file, def->value).str() + ": default of option '" + o.key +
                        "': " + err.what());
          }
        }
        impl.options.push_back(std::move(spec));
      }
    }
  }
  if (!have_name) throw Error(yaml::loc(file, n).str() + ": 'provides' entry has no 'name'");
  if (!have_kind) throw Error(yaml::loc(file, n).str() + ": 'provides' entry has no 'kind'");
  return impl;
}

}  // namespace

std::string normalize_option(const OptionSpec& spec, std::string_view value) {
  auto range = [&](long long x) {
    if (spec.min && x < *spec.min)
      throw Error("value " + std::string(value) + " is below the minimum " + std::to_string(*spec.min));
    if (spec.max && x > *spec.max)
      throw Error("value " + std::string(value) + " is above the maximum " + std::to_string(*spec.max));
  };
  if (spec.type == "int") {
    long long x = parse_int(value);
    range(x);
    return std::to_string(x);
  }
  if (spec.type == "size") {
    uint64_t x = parse_size(value);
    if (x > static_cast<uint64_t>(LLONG_MAX)) throw Error("size " + std::string(value) + " is too large");
    range(static_cast<long long>(x));
    return std::to_string(x);
  }
  if (spec.type == "bool") {
    std::string v(value);
    for (auto& c : v) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    // The spellings YAML 1.1 (and yaml-cpp) read as booleans.
    if (v == "true" || v == "yes" || v == "on" || v == "y") return "true";
    if (v == "false" || v == "no" || v == "off" || v == "n") return "false";
    throw Error("expected true or false, got '" + std::string(value) + "'");
  }
  if (spec.type == "enum") {
    if (std::find(spec.values.begin(), spec.values.end(), value) != spec.values.end())
      return std::string(value);
    std::string list;
    std::vector<std::string_view> cands;
    for (const auto& v : spec.values) {
      list += (list.empty() ? "" : ", ") + v;
      cands.push_back(v);
    }
    throw Error("expected one of " + list + ", got '" + std::string(value) + "'" +
                yaml::did_you_mean(value, cands));
  }
  return std::string(value);  // string
}

PluginManifest parse_manifest(const std::string& text, const std::string& path) {
  YAML::Node root = yaml::parse(text, path);
  if (!root.IsMap())
    throw Error(yaml::loc(path, root).str() + ": a plugin manifest must be a map, got " +
                yaml::type_name(root));
  PluginManifest m;
  m.manifest_path = path;
  std::string library;
  bool have_abi = false, have_provides = false;
  for (auto& e : yaml::entries(path, root, "at the top level", kTopKeys)) {
    if (e.key == "plugin") {
      m.plugin = yaml::scalar(path, e);
    } else if (e.key == "version") {
      m.version = yaml::scalar(path, e);
    } else if (e.key == "library") {
      library = yaml::scalar(path, e);
    } else if (e.key == "abi") {
      std::string v = yaml::scalar(path, e);
      unsigned major = 0, minor = 0;
      auto dot = v.find('.');
      auto num = [&](std::string_view s, unsigned& out) {
        auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
        return ec == std::errc() && p == s.data() + s.size() && !s.empty() && out <= 0xffff;
      };
      if (dot == std::string::npos || !num(std::string_view(v).substr(0, dot), major) ||
          !num(std::string_view(v).substr(dot + 1), minor))
        throw Error(yaml::loc(path, e.value).str() + ": 'abi' must be \"MAJOR.MINOR\", got '" + v + "'");
      m.abi_major = static_cast<uint16_t>(major);
      m.abi_minor = static_cast<uint16_t>(minor);
      have_abi = true;
    } else if (e.key == "provides") {
      if (!e.value.IsSequence() || e.value.size() == 0)
        throw Error(yaml::loc(path, e.value.IsNull() ? e.key_node : e.value).str() +
                    ": 'provides' must be a non-empty sequence of implementations, got " +
                    yaml::type_name(e.value));
      for (const auto& item : e.value) {
        m.provides.push_back(parse_impl(path, item));
        for (size_t i = 0; i + 1 < m.provides.size(); ++i)
          if (m.provides[i].name == m.provides.back().name)
            throw Error(yaml::loc(path, item).str() + ": implementation '" + m.provides[i].name +
                        "' is listed twice");
      }
      have_provides = true;
    }
  }
  auto top = yaml::loc(path, root).str();
  if (m.plugin.empty()) throw Error(top + ": manifest has no 'plugin' name");
  if (m.version.empty()) throw Error(top + ": manifest has no 'version'");
  if (!have_abi) throw Error(top + ": manifest has no 'abi' version");
  if (!have_provides) throw Error(top + ": manifest has no 'provides' list");
  if (library.empty()) throw Error(top + ": manifest has no 'library' (pocketmoe_add_plugin appends it)");
  fs::path lib(library);
  m.library_path = (lib.is_absolute() ? lib : fs::absolute(fs::path(path)).parent_path() / lib)
                       .lexically_normal()
                       .string();
  return m;
}

PluginManifest load_manifest(const std::string& path) {
  return parse_manifest(yaml::read_file(path), path);
}

}  // namespace pmoe
