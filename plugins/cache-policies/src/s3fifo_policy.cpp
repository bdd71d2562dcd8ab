#include "s3fifo_policy.hpp"

#include <algorithm>
#include <cmath>

#include "util.hpp"

namespace pmoe {
namespace {

// Reused at least this often while in S -> promoted to M. An expert is reused at most once per
// token and S turns over within a few tokens, so libCacheSim's 2 rarely fires; 1 measured the same
// or better on the traces of tests/unit/test_cache_policies.cpp.
constexpr uint8_t kPromote = 1;

// The real queues: moves are list splices, so the iterators in where_ stay valid.
struct RealQueue {
  std::list<S3FifoPolicy::Entry>& list;
  bool is_main;
  size_t size() const { return list.size(); }
  uint64_t tail_key() const { return list.back().key; }
  uint8_t tail_freq() const { return list.back().freq; }
  void move_tail(RealQueue& dst, uint8_t freq) {
    dst.list.splice(dst.list.begin(), list, std::prev(list.end()));
    dst.list.front().freq = freq;
    dst.list.front().in_main = dst.is_main;
  }
};

// A replay view: reads the real queue from its tail, keeps what the replay pushes in a scratch
// deque behind it. Costs O(work done), not O(queue size).
struct SimQueue {
  std::list<S3FifoPolicy::Entry>::const_reverse_iterator it;
  size_t left;
  std::deque<std::pair<uint64_t, uint8_t>>& pushed;
  SimQueue(const std::list<S3FifoPolicy::Entry>& l, std::deque<std::pair<uint64_t, uint8_t>>& p)
      : it(l.rbegin()), left(l.size()), pushed(p) {
    pushed.clear();
  }
  size_t size() const { return left + pushed.size(); }
  uint64_t tail_key() const { return left ? it->key : pushed.front().first; }
  uint8_t tail_freq() const { return left ? it->freq : pushed.front().second; }
  void pop_tail() {
    if (left) {
      ++it;
      --left;
    } else {
      pushed.pop_front();
    }
  }
  void move_tail(SimQueue& dst, uint8_t freq) {
    uint64_t k = tail_key();
    pop_tail();
    dst.pushed.emplace_back(k, freq);
  }
};

}  // namespace

S3FifoPolicy::S3FifoPolicy(const pmoe_host*, const sdk::Options& options,
                           const pmoe_cache_shape& shape) {
  double fraction = get_decimal(options, "small_fraction", 0.1, 0.01, 0.9);
  uint64_t cap = capacity_of(shape);
  small_target_ =
      std::max<size_t>(1, static_cast<size_t>(std::llround(fraction * static_cast<double>(cap))));
  main_target_ = cap > small_target_ ? cap - small_target_ : 0;
  ghost_max_ = std::max<size_t>(1, main_target_);  // as many keys as M holds entries
}

// One eviction step of S3-FIFO, run on either kind of queue. Returns the victim without removing
// it; promotions from S and second chances in M on the way are applied to the queues.
template <class Q>
uint64_t S3FifoPolicy::next_victim(Q& small, Q& main, bool& from_small) const {
  for (;;) {
    if (main.size() > 0 && (small.size() == 0 || main.size() > main_target_)) {
      if (main.tail_freq() == 0) {
        from_small = false;
        return main.tail_key();
      }
      main.move_tail(main, static_cast<uint8_t>(main.tail_freq() - 1));  // second chance
    } else {
      if (small.tail_freq() < kPromote) {
        from_small = true;
        return small.tail_key();
      }
      small.move_tail(main, 0);  // reused while in S: it is worth a place in M
    }
  }
}

void S3FifoPolicy::ghost_add(uint64_t key) {
  if (in_ghost_.count(key)) return;
  ghost_.push_front(key);
  in_ghost_[key] = ghost_.begin();
  if (ghost_.size() > ghost_max_) {
    in_ghost_.erase(ghost_.back());
    ghost_.pop_back();
  }
}

void S3FifoPolicy::on_insert(std::span<const uint64_t> keys) {
  for (uint64_t k : keys) {
    if (where_.count(k)) continue;
    bool to_main = false;
    if (auto g = in_ghost_.find(k); g != in_ghost_.end()) {
      ghost_.erase(g->second);
      in_ghost_.erase(g);
      to_main = true;  // it left S recently and is back: it is not a one-hit wonder
    } else if (!evicted_once_ && small_.size() >= small_target_) {
      to_main = true;  // warm-up (as libCacheSim): while nothing was evicted yet, fill M too
    }
    auto& q = to_main ? main_ : small_;
    q.push_front({k, 0, true, to_main});
    where_[k] = q.begin();
  }
}

void S3FifoPolicy::on_access(std::span<const uint64_t> keys, uint64_t) {
  for (uint64_t k : keys) {
    auto it = where_.find(k);
    if (it == where_.end()) continue;
    Entry& e = *it->second;
    if (e.fresh)
      e.fresh = false;
    else if (e.freq < 3)
      ++e.freq;
  }
}

void S3FifoPolicy::on_evict(std::span<const uint64_t> keys) {
  for (uint64_t k : keys) {
    auto it = where_.find(k);
    if (it == where_.end()) continue;
    // Commit what the replay did before its first victim (that victim may be pinned and stay).
    RealQueue s{small_, false}, m{main_, true};
    bool from_small = false;
    next_victim(s, m, from_small);
    auto e = it->second;
    if (!e->in_main) ghost_add(k);  // leaves S without having earned M
    (e->in_main ? main_ : small_).erase(e);
    where_.erase(it);
    evicted_once_ = true;
  }
}

size_t S3FifoPolicy::victims(uint64_t* out, size_t max) {
  SimQueue s(small_, sim_small_), m(main_, sim_main_);
  size_t n = 0;
  while (n < max && s.size() + m.size() > 0) {
    bool from_small = false;
    out[n++] = next_victim(s, m, from_small);
    (from_small ? s : m).pop_tail();
  }
  return n;
}

}  // namespace pmoe
