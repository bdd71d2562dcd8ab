#pragma once
// S3-FIFO (Yang et al., SOSP'23): a small FIFO S (10% of the slots) filters one-hit wonders, a main
// FIFO M with a 2-bit use counter (CLOCK-like) keeps what was reused, and a ghost FIFO G of keys
// recently dropped from S sends a key that comes back straight to M.
//
// The runtime asks for victims before it evicts and may skip pinned ones, so eviction is split:
// victims() replays the algorithm on a read-only view (promotions and second chances happen only in
// the replay), and on_evict() commits the housekeeping that precedes the first victim, then removes
// the key the runtime really evicted.
#include <pocketmoe/cpp/plugin.hpp>

#include <cstdint>
#include <deque>
#include <list>
#include <unordered_map>
#include <utility>

namespace pmoe {

class S3FifoPolicy : public sdk::CachePolicy {
 public:
  S3FifoPolicy(const pmoe_host* host, const sdk::Options& options, const pmoe_cache_shape& shape);

  void on_insert(std::span<const uint64_t> keys) override;
  void on_access(std::span<const uint64_t> keys, uint64_t tick) override;
  void on_evict(std::span<const uint64_t> keys) override;
  size_t victims(uint64_t* out, size_t max) override;

  struct Entry {
    uint64_t key;
    uint8_t freq;  // reuses since insertion (or since the last second chance), capped at 3
    bool fresh;    // the first access after insert is the use that loaded it, not a reuse
    bool in_main;
  };

 private:
  template <class Q>
  uint64_t next_victim(Q& small, Q& main, bool& from_small) const;
  void ghost_add(uint64_t key);

  size_t small_target_, main_target_, ghost_max_;
  bool evicted_once_ = false;
  std::list<Entry> small_, main_;  // front = head (newest), back = tail (leaves first)
  std::unordered_map<uint64_t, std::list<Entry>::iterator> where_;
  std::list<uint64_t> ghost_;  // front = newest
  std::unordered_map<uint64_t, std::list<uint64_t>::iterator> in_ghost_;
  std::deque<std::pair<uint64_t, uint8_t>> sim_small_, sim_main_;  // victims() scratch
};

}  // namespace pmoe
