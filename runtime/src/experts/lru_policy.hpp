#pragma once
// The built-in cache policy: evict the least recently used expert first. It is a regular
// pmoe::sdk::CachePolicy, exposed through the same C table a plugin policy would export
// (register_lru_policy adds it to PluginRegistry's built-ins as "lru").
#include <pocketmoe/cpp/plugin.hpp>

#include <cstdint>
#include <list>
#include <unordered_map>

namespace pmoe {

class LruPolicy : public sdk::CachePolicy {
 public:
  LruPolicy(const pmoe_host* host, const sdk::Options& options, const pmoe_cache_shape& shape);

  void on_insert(std::span<const uint64_t> keys) override;
  void on_access(std::span<const uint64_t> keys, uint64_t tick) override;
  void on_evict(std::span<const uint64_t> keys) override;
  /// Least recently used first; does not change the order.
  size_t victims(uint64_t* out, size_t max) override;

  size_t size() const { return order_.size(); }

 private:
  void touch(uint64_t key);
  std::list<uint64_t> order_;  // front = most recently used
  std::unordered_map<uint64_t, std::list<uint64_t>::iterator> where_;
};

/// Adds "lru" to PluginRegistry's built-ins (once, however often it is called). Whatever builds a
/// registry calls it first: the Session, `pocketmoe plugins`, tests.
void register_lru_policy();

}  // namespace pmoe
