#include "plugin/registry.hpp"

#include <dlfcn.h>
#include <pocketmoe/pocketmoe.h>

#include <algorithm>
#include <boost/dll/runtime_symbol_info.hpp>
#include <boost/dll/shared_library.hpp>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <set>

#include "common/error.hpp"
#include "config/yaml_util.hpp"
#include "plugin/elf_check.hpp"

namespace fs = std::filesystem;

namespace pmoe {

// --- v1.0 table sizes: the first released layouts. Members appended later lie beyond these. ---
#define PMOE_END_OF(T, m) (offsetof(T, m) + sizeof(static_cast<T*>(nullptr)->m))
size_t min_table_size(uint32_t kind) {
  switch (kind) {
    case PMOE_KIND_COMPUTE: return PMOE_END_OF(pmoe_compute_vtable, sync);
    case PMOE_KIND_STORAGE: return PMOE_END_OF(pmoe_storage_vtable, direct_alignment);
    case PMOE_KIND_CACHE_POLICY: return PMOE_END_OF(pmoe_cache_policy_vtable, on_routing);
    default: return 0;
  }
}
static constexpr size_t kMinDescSize = PMOE_END_OF(pmoe_plugin_desc, impls);

namespace {

std::string version_str(unsigned major, unsigned minor) {
  return std::to_string(major) + "." + std::to_string(minor);
}

// Name of the first required (non-optional) v1.0 member that is NULL, or nullptr.
const char* missing_member(uint32_t kind, const void* vt) {
#define PMOE_REQ(T, m) \
  if (!static_cast<const T*>(vt)->m) return #m;
  switch (kind) {
    case PMOE_KIND_COMPUTE:  // buffer_wrap is optional
      PMOE_REQ(pmoe_compute_vtable, create) PMOE_REQ(pmoe_compute_vtable, destroy)
      PMOE_REQ(pmoe_compute_vtable, buffer_alloc) PMOE_REQ(pmoe_compute_vtable, buffer_free)
      PMOE_REQ(pmoe_compute_vtable, buffer_host_ptr) PMOE_REQ(pmoe_compute_vtable, buffer_write)
      PMOE_REQ(pmoe_compute_vtable, buffer_read) PMOE_REQ(pmoe_compute_vtable, execute)
      PMOE_REQ(pmoe_compute_vtable, sync)
      break;
    case PMOE_KIND_STORAGE:
      PMOE_REQ(pmoe_storage_vtable, create) PMOE_REQ(pmoe_storage_vtable, destroy)
      PMOE_REQ(pmoe_storage_vtable, open) PMOE_REQ(pmoe_storage_vtable, close)
      PMOE_REQ(pmoe_storage_vtable, set_callback) PMOE_REQ(pmoe_storage_vtable, submit)
      PMOE_REQ(pmoe_storage_vtable, poll) PMOE_REQ(pmoe_storage_vtable, direct_alignment)
      break;
    case PMOE_KIND_CACHE_POLICY:  // on_routing is optional
      PMOE_REQ(pmoe_cache_policy_vtable, create) PMOE_REQ(pmoe_cache_policy_vtable, destroy)
      PMOE_REQ(pmoe_cache_policy_vtable, on_insert) PMOE_REQ(pmoe_cache_policy_vtable, on_access)
      PMOE_REQ(pmoe_cache_policy_vtable, on_evict) PMOE_REQ(pmoe_cache_policy_vtable, victims)
      break;
  }
#undef PMOE_REQ
  return nullptr;
}

std::vector<const pmoe_impl*>& builtins() {
  static std::vector<const pmoe_impl*> list;
  return list;
}

PluginManifest builtin_manifest() {
  PluginManifest m;
  m.manifest_path = m.library_path = "(built-in)";
  m.plugin = "pocketmoe";
  m.version = PMOE_VERSION;
  m.abi_major = PMOE_ABI_MAJOR;
  m.abi_minor = PMOE_ABI_MINOR;
  m.builtin = true;
  for (const pmoe_impl* impl : builtins()) m.provides.push_back({impl->name, impl->kind, impl->description, {}});
  return m;
}

std::string join(const std::vector<std::string>& v, const char* sep) {
  std::string s;
  for (const auto& x : v) s += (s.empty() ? "" : sep) + x;
  return s;
}

}  // namespace

// --- host services ---

struct PluginRegistry::Logger {
  pmoe_log_level min_level = PMOE_LOG_WARN;
  static void log(void* ctx, pmoe_log_level level, const char* source, const char* message) {
    static std::mutex mu;  // whole lines, even from several plugin threads
    auto* self = static_cast<Logger*>(ctx);
    if (level < self->min_level) return;
    static const char* names[] = {"debug", "info", "warn", "error"};
    const char* name = (level >= 0 && level <= 3) ? names[level] : "?";
    std::lock_guard lock(mu);
    std::fprintf(stderr, "pocketmoe [%s] %s: %s\n", name, source ? source : "plugin",
                 message ? message : "");
  }
};

struct PluginRegistry::Library {
  boost::dll::shared_library lib;
  const pmoe_plugin_desc* desc = nullptr;
  std::string error;  // non-empty: loading failed; rethrown on every later attempt
};

PluginRegistry::PluginRegistry(std::vector<std::string> extra_paths, bool default_paths)
    : logger_(std::make_unique<Logger>()) {
  if (const char* lv = std::getenv("POCKETMOE_LOG")) {
    std::string_view v(lv);
    logger_->min_level = v == "debug" ? PMOE_LOG_DEBUG
                         : v == "info" ? PMOE_LOG_INFO
                         : v == "error" ? PMOE_LOG_ERROR
                                        : PMOE_LOG_WARN;
  }
  host_ = {sizeof(pmoe_host), PMOE_ABI_MAJOR, PMOE_ABI_MINOR, logger_.get(), &Logger::log};

  search_paths_ = make_search_paths(std::move(extra_paths), default_paths);
  std::vector<std::string> dir_of;  // per manifest
  if (!builtins().empty()) {
    manifests_.push_back(builtin_manifest());
    dir_of.emplace_back();
  }
  for (const auto& d : search_paths_) scan(d, dir_of);
}

std::vector<std::string> PluginRegistry::make_search_paths(std::vector<std::string> extra_paths,
                                                           bool default_paths) {
  std::vector<std::string> dirs = std::move(extra_paths);
  if (default_paths) {
    if (const char* env = std::getenv("POCKETMOE_PLUGIN_PATH")) {
      std::string_view s(env);
      for (size_t pos = 0; pos <= s.size();) {
        size_t end = std::min(s.find(':', pos), s.size());
        if (end > pos) dirs.emplace_back(s.substr(pos, end - pos));
        pos = end + 1;
      }
    }
    dirs.emplace_back(PMOE_PLUGIN_BUILD_DIR);
    dirs.emplace_back(PMOE_PLUGIN_INSTALL_DIR);
    boost::system::error_code ec;
    auto exe = boost::dll::program_location(ec);
    if (!ec) dirs.push_back((fs::path(exe.string()).parent_path() / ".." / "lib" / "pocketmoe")
                                .lexically_normal()
                                .string());
  }
  // The same directory reached twice (build dir == exe-relative dir) is searched once.
  std::set<std::string> seen;
  std::vector<std::string> out;
  for (auto& d : dirs) {
    std::error_code ec;
    fs::path canon = fs::weakly_canonical(fs::absolute(d), ec);
    std::string key = ec ? d : canon.string();
    if (seen.insert(key).second) out.push_back(key);
  }
  return out;
}

PluginRegistry::~PluginRegistry() = default;

void PluginRegistry::add_builtin(const pmoe_impl& impl) {
  if (std::find(builtins().begin(), builtins().end(), &impl) == builtins().end()) builtins().push_back(&impl);
}

void PluginRegistry::scan(const std::string& dir, std::vector<std::string>& dir_of) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return;
  std::vector<fs::path> files;
  for (const auto& e : fs::directory_iterator(dir, ec))
    if (e.path().extension() == ".yaml" && e.is_regular_file(ec)) files.push_back(e.path());
  std::sort(files.begin(), files.end());
  for (const auto& f : files) {
    PluginManifest m;
    try {
      m = load_manifest(f.string());
    } catch (const Error& e) {
      // one broken manifest must not break every command: it is skipped with a warning, and an
      // error about a plugin that cannot be found lists it (the config may have meant that one)
      unreadable_.push_back(e.what());
      Logger::log(logger_.get(), PMOE_LOG_WARN, "plugins", (std::string("skipping an unreadable manifest: ") + e.what()).c_str());
      continue;
    }
    bool skip = false;
    for (size_t i = 0; i < manifests_.size() && !skip; ++i) {
      const auto& prev = manifests_[i];
      if (prev.builtin || prev.plugin != m.plugin) continue;
      if (dir_of[i] == dir)
        throw Error(m.manifest_path + ": plugin '" + m.plugin + "' is also described by " +
                    prev.manifest_path + " in the same directory (a stale copy? remove one)");
      shadowed_.push_back(m.manifest_path + " (shadowed by " + prev.manifest_path + ")");
      manifests_[i].shadows.push_back(m.manifest_path);
      skip = true;
    }
    if (skip) continue;
    for (const auto& impl : m.provides)
      for (const auto& prev : manifests_)
        for (const auto& p : prev.provides)
          if (p.name == impl.name)
            throw Error("implementation '" + impl.name + "' is provided twice: by plugin '" +
                        prev.plugin + "' (" + prev.manifest_path + ") and by plugin '" + m.plugin +
                        "' (" + m.manifest_path + "); remove one of them from the search path");
    manifests_.push_back(std::move(m));
    dir_of.push_back(dir);
  }
}

const PluginManifest* PluginRegistry::owner(std::string_view name, const ImplManifest** spec) const {
  for (const auto& m : manifests_)
    for (const auto& impl : m.provides)
      if (impl.name == name) {
        *spec = &impl;
        return &m;
      }
  return nullptr;
}

const ImplManifest* PluginRegistry::find(std::string_view impl_name, uint32_t kind) const {
  const ImplManifest* spec = nullptr;
  return owner(impl_name, &spec) && spec->kind == kind ? spec : nullptr;
}

std::string PluginRegistry::unknown_impl(std::string_view name, uint32_t kind) const {
  std::vector<std::string> names;
  std::vector<std::string_view> cands;
  for (const auto& m : manifests_)
    for (const auto& impl : m.provides)
      if (impl.kind == kind) {
        names.push_back(impl.name);
        cands.push_back(impl.name);
      }
  return "no " + std::string(pmoe_kind_name(kind)) + " implementation named '" + std::string(name) +
         "'" + yaml::did_you_mean(name, cands) + "; available: " +
         (names.empty() ? std::string("none") : join(names, ", ")) +
         "; searched: " + join(search_paths_, ", ") +
         (unreadable_.empty() ? "" : "; skipped unreadable manifests: " + join(unreadable_, "; ")) +
         (shadowed_.empty() ? "" : "; skipped shadowed manifests: " + join(shadowed_, "; "));
}

PluginRegistry::Library& PluginRegistry::open_library(const PluginManifest& m) {
  auto [it, fresh] = libraries_.try_emplace(m.library_path);
  if (!fresh) {
    if (!it->second->error.empty()) throw Error(it->second->error);
    return *it->second;
  }
  it->second = std::make_unique<Library>();
  Library& lib = *it->second;
  auto fail = [&](const std::string& what) {
    const std::string msg = what + shadow_note(m);
    lib.error = msg;
    lib.desc = nullptr;
    throw Error(msg);
  };
  const std::string& mp = m.manifest_path;
  const std::string host_abi = version_str(PMOE_ABI_MAJOR, PMOE_ABI_MINOR);
  if (m.abi_major != PMOE_ABI_MAJOR)
    fail(mp + ": plugin '" + m.plugin + "' built for ABI " + version_str(m.abi_major, m.abi_minor) +
         ", host has ABI " + host_abi + "; rebuild it against this SDK");

  // The manifest's path first; for a relocated tree also the library's file name in each dir.
  std::vector<std::string> tried{m.library_path};
  for (const auto& d : search_paths_) {
    std::string p = (fs::path(d) / fs::path(m.library_path).filename()).string();
    if (std::find(tried.begin(), tried.end(), p) == tried.end()) tried.push_back(p);
  }
  std::string path;
  for (const auto& p : tried) {
    std::error_code ec;
    if (fs::is_regular_file(p, ec)) {
      path = p;
      break;
    }
  }
  if (path.empty())
    fail(mp + ": library of plugin '" + m.plugin + "' not found; tried: " + join(tried, ", "));

  if (const std::string why = elf_problem(path); !why.empty())
    fail(path + ": not a loadable plugin library (manifest " + mp + "): " + why);

  // rtld_local keeps plugins' symbols apart; RTLD_NODELETE keeps the code mapped at exit, so
  // threads a plugin's dependencies left parked (OpenMP pools) never run unmapped code.
  boost::system::error_code ec;
  lib.lib.load(path,
               boost::dll::load_mode::rtld_local | boost::dll::load_mode::rtld_now |
                   static_cast<boost::dll::load_mode::type>(RTLD_NODELETE),
               ec);
  if (ec) {
    const char* why = dlerror();
    fail(path + ": cannot load plugin library (manifest " + mp + "): " +
         (why ? why : ec.message()));
  }
  if (!lib.lib.has(PMOE_ENTRY_SYMBOL))
    fail(path + ": plugin library exports no '" PMOE_ENTRY_SYMBOL "' symbol (manifest " + mp +
         "); define it with PMOE_PLUGIN or PMOE_DECLARE_ENTRY");

  auto entry = lib.lib.get<pmoe_status(const pmoe_host*, const pmoe_plugin_desc**, pmoe_error*)>(
      PMOE_ENTRY_SYMBOL);
  pmoe_error err;
  pmoe_error_clear(&err);
  const pmoe_plugin_desc* d = nullptr;
  pmoe_status st = entry(&host_, &d, &err);
  if (st != PMOE_OK)
    fail(path + ": " PMOE_ENTRY_SYMBOL " failed (" + pmoe_status_name(st) + "): " +
         (err.message[0] ? err.message : "no message"));
  if (!d) fail(path + ": " PMOE_ENTRY_SYMBOL " returned OK but no descriptor (NULL)");
  // Only the version fields are read before the major is known to match.
  if (d->struct_size < PMOE_END_OF(pmoe_plugin_desc, abi_minor))
    fail(path + ": plugin descriptor struct_size " + std::to_string(d->struct_size) +
         " is too small to hold a version");
  if (d->abi_major != PMOE_ABI_MAJOR)
    fail(path + ": plugin built for ABI " + version_str(d->abi_major, d->abi_minor) +
         ", host has ABI " + host_abi + " (manifest " + mp + ")");
  if (d->struct_size < kMinDescSize)
    fail(path + ": plugin descriptor struct_size " + std::to_string(d->struct_size) +
         " is smaller than ABI 1.0's " + std::to_string(kMinDescSize));
  std::string dname = d->name ? d->name : "", dver = d->version ? d->version : "";
  if (dname != m.plugin || dver != m.version)
    fail(path + ": library says plugin '" + dname + "' version " + dver + ", manifest " + mp +
         " says '" + m.plugin + "' version " + m.version);
  if (d->n_impls == 0 || !d->impls) fail(path + ": plugin descriptor lists no implementations");

  std::vector<std::string> lib_impls;
  for (size_t i = 0; i < d->n_impls; ++i) {
    const pmoe_impl& im = d->impls[i];
    std::string where = path + ": implementation #" + std::to_string(i);
    if (!im.name) fail(where + " has no name");
    where = path + ": implementation '" + std::string(im.name) + "'";
    const char* kname = pmoe_kind_name(im.kind);
    if (!kname) fail(where + " has unknown kind " + std::to_string(im.kind));
    lib_impls.push_back(std::string(im.name) + " (" + kname + ")");
    if (!im.vtable) fail(where + " has a NULL function table");
    uint32_t size = *static_cast<const uint32_t*>(im.vtable);
    if (size < min_table_size(im.kind))
      fail(where + ": " + kname + " table struct_size " + std::to_string(size) +
           " is smaller than ABI 1.0's " + std::to_string(min_table_size(im.kind)));
    if (const char* miss = missing_member(im.kind, im.vtable))
      fail(where + ": required table member '" + miss + "' is NULL");
  }
  // The manifest is what users and `check_options` see; the library must agree with it exactly.
  for (const auto& spec : m.provides) {
    const pmoe_impl* hit = nullptr;
    for (size_t i = 0; i < d->n_impls; ++i)
      if (spec.name == d->impls[i].name) hit = &d->impls[i];
    if (!hit)
      fail(mp + ": manifest lists '" + spec.name + "' (" + pmoe_kind_name(spec.kind) +
           ") but library " + path + " does not provide it; the library provides: " +
           join(lib_impls, ", "));
    if (hit->kind != spec.kind)
      fail(mp + ": manifest says '" + spec.name + "' is " + pmoe_kind_name(spec.kind) +
           ", library " + path + " says " + pmoe_kind_name(hit->kind));
  }
  for (size_t i = 0; i < d->n_impls; ++i) {
    bool listed = false;
    for (const auto& spec : m.provides) listed |= spec.name == d->impls[i].name;
    if (!listed)
      fail(mp + ": library " + path + " provides '" + d->impls[i].name +
           "' which the manifest does not list");
  }
  lib.desc = d;
  return lib;
}

void PluginRegistry::load_library(const PluginManifest& m) {
  if (!m.builtin) open_library(m);
}

LoadedImpl PluginRegistry::load(std::string_view impl_name, uint32_t kind) {
  const ImplManifest* spec = nullptr;
  const PluginManifest* m = owner(impl_name, &spec);
  if (!m) throw Error(unknown_impl(impl_name, kind));
  if (spec->kind != kind)
    throw Error("'" + std::string(impl_name) + "' (" + m->manifest_path + ") is a " +
                pmoe_kind_name(spec->kind) + " implementation, not " + pmoe_kind_name(kind));
  if (m->builtin) {
    for (const pmoe_impl* impl : builtins())
      if (impl_name == impl->name) return {impl, impl->vtable, m, spec, PMOE_ABI_MINOR};
    throw Error("internal: built-in '" + std::string(impl_name) + "' vanished");
  }
  Library& lib = open_library(*m);
  for (size_t i = 0; i < lib.desc->n_impls; ++i)
    if (impl_name == lib.desc->impls[i].name)
      return {&lib.desc->impls[i], lib.desc->impls[i].vtable, m, spec, lib.desc->abi_minor};
  throw Error("internal: '" + std::string(impl_name) + "' vanished from " + m->library_path);
}

std::vector<std::pair<std::string, std::string>> PluginRegistry::check_options(
    const PluginChoice& choice, uint32_t kind) const {
  const char* section = config_section(kind);
  const ImplManifest* spec = nullptr;
  const PluginManifest* m = owner(choice.name, &spec);
  if (!m) throw Error(choice.loc.str() + ": " + unknown_impl(choice.name, kind));
  if (spec->kind != kind)
    throw Error(choice.loc.str() + ": '" + choice.name + "' (" + m->manifest_path + ") is a " +
                pmoe_kind_name(spec->kind) + " implementation; '" + section + "' needs a " +
                pmoe_kind_name(kind) + " one" + shadow_note(*m));
  std::vector<std::pair<std::string, std::string>> out;
  for (size_t i = 0; i < choice.options.size(); ++i) {
    const auto& [key, value] = choice.options[i];
    std::string where = i < choice.option_locs.size() ? choice.option_locs[i].str() : choice.loc.str();
    const OptionSpec* o = spec->option(key);
    if (!o) {
      std::vector<std::string_view> cands = config_reserved_keys(kind);
      std::string list;
      for (const auto& op : spec->options) {
        cands.push_back(op.name);
        list += (list.empty() ? "" : ", ") + op.name;
      }
      std::string hint = yaml::did_you_mean(key, cands);
      throw Error(where + ": unknown key '" + key + "' in '" + section + "'" + hint + "; '" +
                  spec->name + "' " + (list.empty() ? "takes no options" : "takes: " + list) +
                  shadow_note(*m));
    }
    try {
      out.emplace_back(key, normalize_option(*o, value));
    } catch (const Error& e) {
      throw Error(where + ": option '" + key + "' of '" + spec->name + "' (" + o->type + "): " +
                  e.what() + shadow_note(*m));
    }
  }
  return out;
}

void PluginRegistry::check_config(const Config& cfg) {
  check_options(cfg.compute, PMOE_KIND_COMPUTE);
  check_options(cfg.storage, PMOE_KIND_STORAGE);
  check_options(cfg.cache_policy, PMOE_KIND_CACHE_POLICY);
  if (!cfg.storage_fallback.empty() && !find(cfg.storage_fallback, PMOE_KIND_STORAGE))
    throw Error(cfg.storage_fallback_loc.str() + ": storage fallback: " +
                unknown_impl(cfg.storage_fallback, PMOE_KIND_STORAGE));
  // Libraries are opened (and checked against their manifests) up front, also those a run in RAM
  // never calls, so `plugins -c` and `run` accept exactly the same configs.
  load(cfg.compute.name, PMOE_KIND_COMPUTE);
  load(cfg.cache_policy.name, PMOE_KIND_CACHE_POLICY);
  try {
    load(cfg.storage.name, PMOE_KIND_STORAGE);
  } catch (const Error&) {
    if (cfg.storage_fallback.empty()) throw;
    load(cfg.storage_fallback, PMOE_KIND_STORAGE);  // what `run` falls back to
  }
}

std::string PluginRegistry::shadow_note(const PluginManifest& m) {
  if (m.shadows.empty()) return "";
  return " (plugin '" + m.plugin + "' comes from " + m.manifest_path + ", which shadows " +
         join(m.shadows, ", ") + " further down the search path)";
}

}  // namespace pmoe
