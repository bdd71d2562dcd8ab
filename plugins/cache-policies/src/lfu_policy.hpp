#pragma once
// LFU with aging: evict the resident expert used least often, oldest use first among equals. Counts
// survive eviction (the key space, layers x experts, is small), so a hot expert pushed out by a
// burst comes back with its history; every `aging_period` accesses all counts are halved, so a
// once-hot expert that is no longer used loses its lead.
#include <pocketmoe/cpp/plugin.hpp>

#include <cstdint>
#include <set>
#include <tuple>
#include <unordered_map>

namespace pmoe {

class LfuPolicy : public sdk::CachePolicy {
 public:
  LfuPolicy(const pmoe_host* host, const sdk::Options& options, const pmoe_cache_shape& shape);

  void on_insert(std::span<const uint64_t> keys) override;
  void on_access(std::span<const uint64_t> keys, uint64_t tick) override;
  void on_evict(std::span<const uint64_t> keys) override;
  size_t victims(uint64_t* out, size_t max) override;

 private:
  struct Stat {
    uint32_t count = 0;
    uint64_t last = 0;  // logical time of the last use (or insert)
    bool resident = false;
  };
  using Rank = std::tuple<uint32_t, uint64_t, uint64_t>;  // (count, last, key): victim first
  static Rank rank(uint64_t key, const Stat& s) { return {s.count, s.last, key}; }
  void age();

  uint64_t aging_period_;
  uint64_t since_aging_ = 0, clock_ = 0;
  std::unordered_map<uint64_t, Stat> stats_;  // resident keys plus the history of evicted ones
  std::set<Rank> order_;                      // resident keys only: O(log n) updates
};

}  // namespace pmoe
