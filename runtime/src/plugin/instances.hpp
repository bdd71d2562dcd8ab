#pragma once
// The storage and cache-policy instances the engine uses (ownership: PluginInstance). They convert
// the C ABI's status + message into pmoe::Error on set-up calls (create, open) and pass statuses
// through on hot paths.
#include <pocketmoe/cache_policy.h>
#include <pocketmoe/storage.h>

#include <cstdint>
#include <span>
#include <string>

#include "plugin/plugin_instance.hpp"

namespace pmoe {

/// A status from a hot-path call plus the plugin's message (empty on success).
struct PluginStatus {
  pmoe_status status = PMOE_OK;
  std::string message;
  bool ok() const { return status == PMOE_OK; }
};

class StorageBackend : public PluginInstance<pmoe_storage_vtable, pmoe_storage> {
 public:
  struct OpenFile {
    pmoe_file* file = nullptr;
    uint64_t size = 0;
  };

  StorageBackend(const LoadedImpl& impl, const OptionList& options, const pmoe_host* host);
  static StorageBackend create(PluginRegistry& reg, const PluginChoice& choice) {
    return create_instance<StorageBackend>(reg, choice, PMOE_KIND_STORAGE);
  }

  /// Throws pmoe::Error with the plugin's message (it names the path).
  OpenFile open(const std::string& path, uint32_t flags);
  void close(pmoe_file* f);
  /// Throws on error; call before the first submit.
  void set_callback(pmoe_read_callback cb, void* ctx);
  PluginStatus submit(std::span<const pmoe_read_req> reqs);
  size_t poll(std::span<pmoe_read_done> out, size_t min_done, int64_t timeout_ns);
  uint32_t direct_alignment(pmoe_file* f);
};

class CachePolicyInstance : public PluginInstance<pmoe_cache_policy_vtable, pmoe_cache_policy> {
 public:
  CachePolicyInstance(const LoadedImpl& impl, const OptionList& options, const pmoe_host* host,
                      const pmoe_cache_shape& shape);
  static CachePolicyInstance create(PluginRegistry& reg, const PluginChoice& choice,
                                    const pmoe_cache_shape& shape) {
    return create_instance<CachePolicyInstance>(reg, choice, PMOE_KIND_CACHE_POLICY, shape);
  }

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


 private:
  bool has_routing_ = false;
};

}  // namespace pmoe
