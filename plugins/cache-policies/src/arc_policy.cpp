#include "arc_policy.hpp"

#include <algorithm>

#include "util.hpp"

namespace pmoe {

ArcPolicy::ArcPolicy(const pmoe_host*, const sdk::Options&, const pmoe_cache_shape& shape)
    : c_(static_cast<double>(capacity_of(shape))) {}

void ArcPolicy::move(Node& n, Where to) {
  lists_[to].splice(lists_[to].begin(), lists_[n.where], n.it);
  n.where = to;
}

void ArcPolicy::drop_lru(Where w) {
  nodes_.erase(lists_[w].back());
  lists_[w].pop_back();
}

// ARC's directory bounds: |T1|+|B1| <= c and |T1|+|T2|+|B1|+|B2| <= 2c (only ghosts are dropped;
// the runtime decides what leaves T1/T2).
void ArcPolicy::trim() {
  while (size(kB1) > 0 && static_cast<double>(size(kT1) + size(kB1)) > c_) drop_lru(kB1);
  while (size(kB1) + size(kB2) > 0 &&
         static_cast<double>(size(kT1) + size(kT2) + size(kB1) + size(kB2)) > 2 * c_)
    drop_lru(size(kB2) > 0 ? kB2 : kB1);
}

void ArcPolicy::on_insert(std::span<const uint64_t> keys) {
  for (uint64_t k : keys) {
    auto it = nodes_.find(k);
    if (it == nodes_.end()) {
      // A new key: make room in the directory first, as ARC's case IV does.
      if (static_cast<double>(size(kT1) + size(kB1)) >= c_ && size(kB1) > 0) drop_lru(kB1);
      lists_[kT1].push_front(k);
      nodes_[k] = {kT1, true, lists_[kT1].begin()};
      trim();
      continue;
    }
    Node& n = it->second;
    if (n.where == kB1) {  // T1 was too small for this key: grow its target
      double b1 = static_cast<double>(size(kB1)), b2 = static_cast<double>(size(kB2));
      p_ = std::min(c_, p_ + std::max(1.0, b2 / b1));
    } else if (n.where == kB2) {  // T2 was too small: shrink T1's target
      double b1 = static_cast<double>(size(kB1)), b2 = static_cast<double>(size(kB2));
      p_ = std::max(0.0, p_ - std::max(1.0, b1 / b2));
    } else {
      continue;  // already resident
    }
    move(n, kT2);
    n.fresh = true;
  }
}

void ArcPolicy::on_access(std::span<const uint64_t> keys, uint64_t) {
  for (uint64_t k : keys) {
    auto it = nodes_.find(k);
    if (it == nodes_.end() || it->second.where > kT2) continue;
    Node& n = it->second;
    if (n.fresh)
      n.fresh = false;
    else
      move(n, kT2);  // reused: frequent side, most recent
  }
}

void ArcPolicy::on_evict(std::span<const uint64_t> keys) {
  for (uint64_t k : keys) {
    auto it = nodes_.find(k);
    if (it == nodes_.end() || it->second.where > kT2) continue;
    move(it->second, it->second.where == kT1 ? kB1 : kB2);
  }
  trim();
}

size_t ArcPolicy::victims(uint64_t* out, size_t max) {
  // ARC's REPLACE repeated on shrinking counts; without knowing the incoming key, a tie |T1| == p
  // goes to T2.
  auto t1 = lists_[kT1].rbegin(), t2 = lists_[kT2].rbegin();
  size_t n1 = size(kT1), n2 = size(kT2), n = 0;
  while (n < max && n1 + n2 > 0) {
    if (n1 > 0 && (static_cast<double>(n1) > p_ || n2 == 0)) {
      out[n++] = *t1++;
      --n1;
    } else {
      out[n++] = *t2++;
      --n2;
    }
  }
  return n;
}

}  // namespace pmoe
