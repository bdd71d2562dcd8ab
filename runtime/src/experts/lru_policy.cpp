#include "experts/lru_policy.hpp"

#include "plugin/registry.hpp"

namespace pmoe {

LruPolicy::LruPolicy(const pmoe_host*, const sdk::Options&, const pmoe_cache_shape& shape) {
  where_.reserve(static_cast<size_t>(shape.capacity));
}

void LruPolicy::touch(uint64_t key) {
  auto it = where_.find(key);
  if (it == where_.end())
    where_.emplace(key, order_.insert(order_.begin(), key));
  else
    order_.splice(order_.begin(), order_, it->second);  // O(1), iterators stay valid
}

void LruPolicy::on_insert(std::span<const uint64_t> keys) {
  for (uint64_t k : keys) touch(k);
}

void LruPolicy::on_access(std::span<const uint64_t> keys, uint64_t) {
  // Only resident entries are ranked; an access to an unknown key is the runtime's bug, ignore it.
  for (uint64_t k : keys)
    if (where_.count(k)) touch(k);
}

void LruPolicy::on_evict(std::span<const uint64_t> keys) {
  for (uint64_t k : keys) {
    auto it = where_.find(k);
    if (it == where_.end()) continue;
    order_.erase(it->second);
    where_.erase(it);
  }
}

size_t LruPolicy::victims(uint64_t* out, size_t max) {
  size_t n = 0;
  for (auto it = order_.rbegin(); it != order_.rend() && n < max; ++it) out[n++] = *it;
  return n;
}

void register_lru_policy() {
  static const pmoe_impl impl =
      sdk::cache_policy_impl<LruPolicy>("lru", "least recently used expert is evicted first (built-in)");
  static const bool added = (PluginRegistry::add_builtin(impl), true);  // thread-safe once
  (void)added;
}

}  // namespace pmoe
