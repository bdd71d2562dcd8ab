#include "lfu_policy.hpp"

#include <algorithm>
#include <limits>

#include "util.hpp"

namespace pmoe {

LfuPolicy::LfuPolicy(const pmoe_host*, const sdk::Options& options, const pmoe_cache_shape& shape) {
  // 0 = auto: ~16 refills of the cache. Long enough to tell hot from lukewarm experts, short enough
  // that a topic change re-ranks them within a few dozen tokens.
  long long period = options.get_int("aging_period", 0);
  if (period < 0)
    throw sdk::StatusError(PMOE_ERR_INVALID_ARGUMENT, "option 'aging_period' must be >= 0");
  aging_period_ = period > 0 ? static_cast<uint64_t>(period) : 16 * capacity_of(shape);
}

void LfuPolicy::on_insert(std::span<const uint64_t> keys) {
  for (uint64_t k : keys) {
    Stat& s = stats_[k];
    if (s.resident) continue;  // already resident: nothing to add
    s.resident = true;
    s.last = ++clock_;
    order_.insert(rank(k, s));
  }
}

void LfuPolicy::on_access(std::span<const uint64_t> keys, uint64_t) {
  for (uint64_t k : keys) {
    auto it = stats_.find(k);
    if (it == stats_.end() || !it->second.resident) continue;  // runtime bug; ignore
    Stat& s = it->second;
    order_.erase(rank(k, s));
    if (s.count < std::numeric_limits<uint32_t>::max()) ++s.count;
    s.last = ++clock_;
    order_.insert(rank(k, s));
    if (++since_aging_ >= aging_period_) age();
  }
}

void LfuPolicy::age() {
  since_aging_ = 0;
  order_.clear();
  for (auto it = stats_.begin(); it != stats_.end();) {
    Stat& s = it->second;
    s.count >>= 1;
    if (!s.resident && s.count == 0) {
      it = stats_.erase(it);  // forgotten history keeps the map bounded
      continue;
    }
    if (s.resident) order_.insert(rank(it->first, s));
    ++it;
  }
}

void LfuPolicy::on_evict(std::span<const uint64_t> keys) {
  for (uint64_t k : keys) {
    auto it = stats_.find(k);
    if (it == stats_.end() || !it->second.resident) continue;
    order_.erase(rank(k, it->second));
    it->second.resident = false;
  }
}

size_t LfuPolicy::victims(uint64_t* out, size_t max) {
  size_t n = 0;
  for (auto it = order_.begin(); it != order_.end() && n < max; ++it) out[n++] = std::get<2>(*it);
  return n;
}

}  // namespace pmoe
