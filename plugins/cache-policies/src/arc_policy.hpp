#pragma once
// ARC (Megiddo & Modha, FAST'03): T1 holds experts used once recently, T2 those reused; ghost lists
// B1/B2 remember keys evicted from each, and a hit in a ghost list moves the target size p of T1
// toward whichever side would have kept that key. Victims come from T1's LRU end while |T1| > p,
// else from T2's.
#include <pocketmoe/cpp/plugin.hpp>

#include <cstdint>
#include <list>
#include <unordered_map>

namespace pmoe {

class ArcPolicy : public sdk::CachePolicy {
 public:
  ArcPolicy(const pmoe_host* host, const sdk::Options& options, const pmoe_cache_shape& shape);

  void on_insert(std::span<const uint64_t> keys) override;
  void on_access(std::span<const uint64_t> keys, uint64_t tick) override;
  void on_evict(std::span<const uint64_t> keys) override;
  size_t victims(uint64_t* out, size_t max) override;

 private:
  enum Where : uint8_t { kT1, kT2, kB1, kB2 };
  struct Node {
    Where where;
    bool fresh;  // the first access after insert is the use that loaded it, not a reuse
    std::list<uint64_t>::iterator it;
  };
  void move(Node& n, Where to);
  void drop_lru(Where list);
  void trim();
  size_t size(Where w) const { return lists_[w].size(); }

  double c_, p_ = 0;              // capacity and target size of T1
  std::list<uint64_t> lists_[4];  // front = most recent
  std::unordered_map<uint64_t, Node> nodes_;
};

}  // namespace pmoe
