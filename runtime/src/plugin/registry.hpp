#pragma once
// Plugin discovery and loading. The registry scans manifest directories, lists what they offer,
// checks config options against the manifests' schemas and loads a library only when one of its
// implementations is asked for: dlopen, the entry symbol, ABI negotiation, table validation.
// Built-in implementations sit behind the same pmoe_impl tables; their owners add them
// (add_builtin), so the registry knows none by name.
//
// Search order: extra_paths (the config's plugin_paths), $POCKETMOE_PLUGIN_PATH (colon-separated),
// the build tree's plugin dir, the install dir, <executable dir>/../lib/pocketmoe. A plugin found
// again in a later directory is shadowed by the first one (like $PATH); two *different* plugins
// that offer an implementation of the same name are an error naming both manifests.
//
// Not thread-safe; libraries stay loaded for the registry's lifetime, so it must outlive every
// instance created from it.
#include <pocketmoe/abi.h>

#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "config/config.hpp"
#include "plugin/manifest.hpp"

namespace pmoe {

struct LoadedImpl {
  const pmoe_impl* impl;         // the descriptor's entry (lives as long as the library)
  const void* vtable;            // impl->vtable, validated for the kind
  const PluginManifest* manifest;
  const ImplManifest* spec;
  uint16_t abi_minor;            // the ABI minor the library was built with (what it can know)
};

class PluginRegistry {
 public:
  /// Scans all search dirs; a manifest that cannot be read is skipped (unreadable()). With
  /// `default_paths` false only `extra_paths` are searched (tests, hermetic setups).
  explicit PluginRegistry(std::vector<std::string> extra_paths = {}, bool default_paths = true);
  ~PluginRegistry();
  PluginRegistry(const PluginRegistry&) = delete;
  PluginRegistry& operator=(const PluginRegistry&) = delete;

  /// Adds an implementation compiled into the runtime (it takes no options). Registries built
  /// afterwards list the built-ins first, in one "(built-in)" manifest. `impl` must outlive them;
  /// call before building a registry (not thread-safe).
  static void add_builtin(const pmoe_impl& impl);

  /// Every directory searched, in order (including ones that do not exist).
  const std::vector<std::string>& search_paths() const { return search_paths_; }
  /// The search path a registry built with these arguments uses (canonical, duplicates removed).
  static std::vector<std::string> make_search_paths(std::vector<std::string> extra_paths,
                                                    bool default_paths = true);
  /// Built-ins first, then plugins in search order.
  const std::vector<PluginManifest>& manifests() const { return manifests_; }
  /// Manifests skipped because the same plugin was found earlier: "path (shadowed by path)".
  const std::vector<std::string>& shadowed() const { return shadowed_; }
  /// Manifests skipped because they could not be read: "FILE:LINE:COL: what" each (a warning
  /// when found; listed again by any error about an implementation that cannot be found).
  const std::vector<std::string>& unreadable() const { return unreadable_; }

  const ImplManifest* find(std::string_view impl_name, uint32_t kind) const;

  /// Loads the implementation's library once (cached, also when it failed), negotiates the ABI
  /// and validates the descriptor against the manifest. Throws pmoe::Error naming the files.
  LoadedImpl load(std::string_view impl_name, uint32_t kind);
  /// Loads and validates a whole plugin library (what `pocketmoe plugins` checks).
  void load_library(const PluginManifest& manifest);

  /// Checks a config section's options against the implementation's schema; returns them
  /// normalised for pmoe_options (defaults not filled in). Errors carry the config's location.
  std::vector<std::pair<std::string, std::string>> check_options(const PluginChoice& choice,
                                                                 uint32_t kind) const;
  /// The one validator of a config's plugin choices (`run` and `plugins -c` both call it):
  /// check_options for the compute, storage and cache sections, the storage fallback, and the
  /// libraries of all three loaded and checked (a failing storage library is accepted when the
  /// fallback loads, as `run` then uses it). Errors carry the config's location.
  void check_config(const Config& cfg);

  /// Host services for plugins: log -> stderr, filtered by $POCKETMOE_LOG
  /// (debug|info|warn|error, default warn).
  const pmoe_host* host() const { return &host_; }

 private:
  struct Library;
  struct Logger;
  const PluginManifest* owner(std::string_view impl_name, const ImplManifest** spec) const;
  std::string unknown_impl(std::string_view name, uint32_t kind) const;
  /// "" or, for a plugin that shadows others of its name, which manifest won and which it hid.
  static std::string shadow_note(const PluginManifest& m);
  void scan(const std::string& dir, std::vector<std::string>& dirs_of);
  Library& open_library(const PluginManifest& m);

  std::vector<std::string> search_paths_;
  std::vector<PluginManifest> manifests_;
  std::vector<std::string> shadowed_;
  std::vector<std::string> unreadable_;
  std::map<std::string, std::unique_ptr<Library>> libraries_;  // by library path
  std::unique_ptr<Logger> logger_;
  pmoe_host host_{};
};

/// Minimum struct_size of each v1.0 table (the first released layout); 0 for an unknown kind.
size_t min_table_size(uint32_t kind);

}  // namespace pmoe
