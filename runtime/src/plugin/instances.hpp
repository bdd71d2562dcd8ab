#pragma once
// RAII owners of plugin instances, used by the engine. They convert the C ABI's status + message
// into pmoe::Error on set-up calls (create, open) and pass statuses through on hot paths.
#include <pocketmoe/cache_policy.h>
#include <pocketmoe/storage.h>

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "plugin/registry.hpp"

namespace pmoe {

using OptionList = std::vector<std::pair<std::string, std::string>>;

/// pmoe_options view of an OptionList; borrows the strings, so keep the list alive.
class AbiOptions {
 public:
  explicit AbiOptions(const OptionList& opts);
  const pmoe_options* get() const { return &view_; }

 private:
  std::vector<pmoe_option> items_;
  pmoe_options view_{};
};

/// Throws pmoe::Error("<what> (<status>): <plugin message>").
[[noreturn]] void throw_plugin_error(std::string_view what, pmoe_status status, const pmoe_error& err);

/// A status from a hot-path call plus the plugin's message (empty on success).
struct PluginStatus {
  pmoe_status status = PMOE_OK;
  std::string message;
  bool ok() const { return status == PMOE_OK; }
};

class StorageBackend {
 public:
  struct OpenFile {
    pmoe_file* file = nullptr;
    uint64_t size = 0;
  };

  StorageBackend(const LoadedImpl& impl, const OptionList& options, const pmoe_host* host);
  /// Loads the config's choice from `reg`, checks its options and creates the instance.
  static StorageBackend create(PluginRegistry& reg, const PluginChoice& choice);
  ~StorageBackend();
  StorageBackend(StorageBackend&& o) noexcept;
  StorageBackend& operator=(StorageBackend&&) = delete;
  StorageBackend(const StorageBackend&) = delete;

  /// Throws pmoe::Error with the plugin's message (it names the path).
  OpenFile open(const std::string& path, uint32_t flags);
  void close(pmoe_file* f);
  /// Throws on error; call before the first submit.
  void set_callback(pmoe_read_callback cb, void* ctx);
  PluginStatus submit(std::span<const pmoe_read_req> reqs);
  size_t poll(std::span<pmoe_read_done> out, size_t min_done, int64_t timeout_ns);
  uint32_t direct_alignment(pmoe_file* f);

  const std::string& name() const { return name_; }
  const pmoe_storage_vtable* vtable() const { return vt_; }
  pmoe_storage* handle() const { return handle_; }

 private:
  std::string name_;
  const pmoe_storage_vtable* vt_ = nullptr;
  pmoe_storage* handle_ = nullptr;
};

class CachePolicyInstance {
 public:
  CachePolicyInstance(const LoadedImpl& impl, const OptionList& options, const pmoe_host* host,
                      const pmoe_cache_shape& shape);
  static CachePolicyInstance create(PluginRegistry& reg, const PluginChoice& choice,
                                    const pmoe_cache_shape& shape);
  ~CachePolicyInstance();
  CachePolicyInstance(CachePolicyInstance&& o) noexcept;
  CachePolicyInstance& operator=(CachePolicyInstance&&) = delete;
  CachePolicyInstance(const CachePolicyInstance&) = delete;

  void on_insert(std::span<const uint64_t> keys) { vt_->on_insert(handle_, keys.data(), keys.size()); }
  void on_access(std::span<const uint64_t> keys, uint64_t tick) {
    vt_->on_access(handle_, keys.data(), keys.size(), tick);
  }
  void on_evict(std::span<const uint64_t> keys) { vt_->on_evict(handle_, keys.data(), keys.size()); }
  /// Writes up to out.size() proposals, best victim first; returns how many.
  size_t victims(std::span<uint64_t> out) { return vt_->victims(handle_, out.data(), out.size()); }
  /// Whether the policy wants routing probabilities (optional member present).
  bool wants_routing() const { return has_routing_; }
  void on_routing(uint32_t layer, const float* probs, uint32_t n_tokens, uint32_t n_experts) {
    if (has_routing_) vt_->on_routing(handle_, layer, probs, n_tokens, n_experts);
  }

  const std::string& name() const { return name_; }
  const pmoe_cache_policy_vtable* vtable() const { return vt_; }
  pmoe_cache_policy* handle() const { return handle_; }

 private:
  std::string name_;
  const pmoe_cache_policy_vtable* vt_ = nullptr;
  pmoe_cache_policy* handle_ = nullptr;
  bool has_routing_ = false;
};

}  // namespace pmoe
