// Conformance suites: loading any plugin library through the C ABI alone (boost::dll,
// pmoe_plugin_entry, a host table of our own) and the command line every suite shares.
// A suite needs nothing of the runtime, so a third-party plugin is checked exactly as ours are.
#pragma once

#include <pocketmoe/pocketmoe.h>

#include <yaml-cpp/yaml.h>
#include <boost/dll/shared_library.hpp>

#include <cctype>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <mutex>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace pmoe::conformance {

using OptionList = std::vector<std::pair<std::string, std::string>>;

inline std::string kind_name(uint32_t kind) {
  const char* k = pmoe_kind_name(kind);
  return k ? k : "?";
}

/// `options` as the C ABI's key/value items; they point into `options`, which must outlive them.
inline std::vector<pmoe_option> option_items(const OptionList& options) {
  std::vector<pmoe_option> items;
  for (const auto& [k, v] : options) items.push_back({k.c_str(), v.c_str()});
  return items;
}

/// An implementation's create() failed: its status and message.
struct CreateError : std::runtime_error {
  pmoe_status code;
  CreateError(pmoe_status status, const std::string& what) : std::runtime_error(what), code(status) {}
};

/// True when `e` says the plugin cannot run on this machine at all (no such device, e.g. no
/// Vulkan driver: NOT_FOUND; a facility the system refuses, e.g. io_uring under a seccomp filter:
/// "not available on this system"), so a suite reports "skipped" rather than a failure.
inline bool unavailable_here(const std::exception& e) {
  if (const auto* c = dynamic_cast<const CreateError*>(&e); c && c->code == PMOE_ERR_NOT_FOUND) return true;
  return std::string(e.what()).find("not available on this system") != std::string::npos;
}

/// Where `e` says the plugin cannot run here: prints "SKIPPED: <why>" and returns true, and the
/// suite exits with 77 ("skipped", never a silent pass).
inline bool skip_unavailable(const std::exception& e) {
  if (!unavailable_here(e)) return false;
  std::cout << "SKIPPED: " << e.what() << "\n";
  return true;
}

/// The host's log service: keeps every line so tests can look for a warning.
class HostLog {
 public:
  static void log(void* ctx, pmoe_log_level level, const char* source, const char* message) {
    auto* self = static_cast<HostLog*>(ctx);
    std::lock_guard lk(self->mu_);
    self->lines_.push_back(std::string(level >= PMOE_LOG_WARN ? "warn " : "info ") +
                           (source ? source : "?") + ": " + (message ? message : ""));
  }
  bool contains(const std::string& needle) const {
    std::lock_guard lk(mu_);
    for (const auto& l : lines_)
      if (l.find(needle) != std::string::npos) return true;
    return false;
  }
  std::string dump() const {
    std::lock_guard lk(mu_);
    std::string s;
    for (const auto& l : lines_) s += l + "\n";
    return s;
  }
  void clear() {
    std::lock_guard lk(mu_);
    lines_.clear();
  }

 private:
  mutable std::mutex mu_;
  std::vector<std::string> lines_;
};

/// A plugin library, loaded and negotiated; `impl` picks the implementation of `kind` by name
/// (empty: the first one of that kind the library offers).
class PluginLibrary {
 public:
  PluginLibrary(const std::string& path, uint32_t kind, const std::string& impl = {})
      : lib_(path, boost::dll::load_mode::rtld_now | boost::dll::load_mode::rtld_local) {
    host_ = {sizeof(pmoe_host), PMOE_ABI_MAJOR, PMOE_ABI_MINOR, &log_, &HostLog::log};
    if (!lib_.has(PMOE_ENTRY_SYMBOL)) throw std::runtime_error(path + ": no symbol " PMOE_ENTRY_SYMBOL);
    entry_ = lib_.get<pmoe_status(const pmoe_host*, const pmoe_plugin_desc**, pmoe_error*)>(PMOE_ENTRY_SYMBOL);
    pmoe_error err{};
    if (entry_(&host_, &desc_, &err) != PMOE_OK || !desc_)
      throw std::runtime_error(path + ": entry refused the host: " + err.message);
    for (size_t i = 0; i < desc_->n_impls; ++i) {
      const pmoe_impl& m = desc_->impls[i];
      if (m.kind == kind && (impl.empty() || (m.name && impl == m.name))) {
        impl_ = &m;
        break;
      }
    }
    if (!impl_)
      throw std::runtime_error(path + ": no " + kind_name(kind) + " implementation" +
                               (impl.empty() ? std::string() : " named '" + impl + "'"));
  }
  PluginLibrary(const PluginLibrary&) = delete;
  PluginLibrary& operator=(const PluginLibrary&) = delete;

  pmoe_plugin_entry_fn entry() const { return entry_; }
  const pmoe_plugin_desc& desc() const { return *desc_; }
  const pmoe_impl& impl() const { return *impl_; }
  template <class VTable>
  const VTable& vtable() const {
    return *static_cast<const VTable*>(impl_->vtable);
  }
  const pmoe_host* host() const { return &host_; }
  HostLog& log() const { return log_; }

 private:
  boost::dll::shared_library lib_;
  mutable HostLog log_;
  pmoe_host host_{};
  pmoe_plugin_entry_fn entry_ = nullptr;
  const pmoe_plugin_desc* desc_ = nullptr;
  const pmoe_impl* impl_ = nullptr;
};

/// The library that provides implementation `impl` of `kind`, found through the plugin manifests
/// (`<name>.yaml` with `provides:` and `library:`) in a ':'-separated list of directories.
inline std::string find_library_by_impl(const std::string& impl, uint32_t kind, const std::string& search_path) {
  std::stringstream dirs(search_path);
  for (std::string dir; std::getline(dirs, dir, ':');) {
    std::error_code ec;
    if (dir.empty() || !std::filesystem::is_directory(dir, ec)) continue;
    for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
      if (e.path().extension() != ".yaml") continue;
      try {
        const YAML::Node m = YAML::LoadFile(e.path().string());
        if (!m["library"] || !m["provides"]) continue;
        for (const auto& p : m["provides"])
          if (p["name"].as<std::string>("") == impl && p["kind"].as<std::string>("") == kind_name(kind))
            return (std::filesystem::path(dir) / m["library"].as<std::string>()).string();
      } catch (const YAML::Exception&) {
        // not a manifest; ignore it like the runtime does
      }
    }
  }
  throw std::runtime_error("no manifest in '" + search_path + "' provides " + kind_name(kind) + " '" + impl + "'");
}

/// What every suite takes: --plugin=<lib> | --impl=<name> (found through POCKETMOE_PLUGIN_PATH),
/// --option=key=value (repeatable), and flags of its own (`extra`, e.g. "--data-dir="). The
/// environment gives defaults: PMOE_<KIND>_PLUGIN, PMOE_<KIND>_IMPL, PMOE_<KIND>_OPTIONS
/// ("k=v,k=v"), KIND in upper case (COMPUTE, STORAGE, CACHE_POLICY). The rest goes to doctest.
struct SuiteArgs {
  std::string library, impl;
  OptionList options;
  std::vector<std::pair<std::string, std::string>> extra;  // flag, value
  std::vector<char*> rest;

  /// False (after printing usage) when no library can be named.
  bool parse(int argc, char** argv, uint32_t kind, const std::vector<std::string>& extra_flags) {
    std::string prefix = "PMOE_" + kind_name(kind) + "_";
    for (char& c : prefix) c = char(std::toupper(static_cast<unsigned char>(c)));
    auto env = [&](const std::string& k) {
      const char* v = std::getenv((prefix + k).c_str());
      return v ? std::string(v) : std::string();
    };
    library = env("PLUGIN"), impl = env("IMPL");
    auto add_option = [&](const std::string& kv) {
      const auto eq = kv.find('=');
      if (eq != std::string::npos) options.emplace_back(kv.substr(0, eq), kv.substr(eq + 1));
    };
    std::stringstream env_opts(env("OPTIONS"));
    for (std::string kv; std::getline(env_opts, kv, ',');) add_option(kv);
    rest = {argv[0]};
    for (int i = 1; i < argc; ++i) {
      const std::string a = argv[i];
      auto value = [&](const std::string& flag) -> const char* {
        return a.compare(0, flag.size(), flag) == 0 ? argv[i] + flag.size() : nullptr;
      };
      const char* v = nullptr;
      bool taken = true;
      if ((v = value("--plugin="))) library = v;
      else if ((v = value("--impl="))) impl = v;
      else if ((v = value("--option="))) add_option(v);
      else {
        taken = false;
        for (const std::string& f : extra_flags)
          if ((v = value(f))) extra.emplace_back(f, v), taken = true;
      }
      if (!taken) rest.push_back(argv[i]);
    }
    if (library.empty() && !impl.empty()) {
      const char* path = std::getenv("POCKETMOE_PLUGIN_PATH");
      try {
        library = find_library_by_impl(impl, kind, path ? path : "");
      } catch (const std::exception& e) {
        std::cerr << e.what() << "\n";
        return false;
      }
    }
    if (library.empty()) {
      std::cerr << "usage: " << argv[0] << " --plugin=<library> | --impl=<name> (with POCKETMOE_PLUGIN_PATH)"
                << " [--option=key=value ...]";
      for (const std::string& f : extra_flags) std::cerr << " [" << f << "...]";
      std::cerr << " [doctest options]\n";
      return false;
    }
    return true;
  }
  /// The value of an extra flag (the last one given, like --plugin=), or `fallback`.
  std::string get(const std::string& flag, const std::string& fallback) const {
    for (auto it = extra.rbegin(); it != extra.rend(); ++it)
      if (it->first == flag) return it->second;
    return fallback;
  }
};

}  // namespace pmoe::conformance
