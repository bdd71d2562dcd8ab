// The contract of cache_policy.h, checked against a model of the resident set. Generic over the
// policy handle P (victims(span) -> count, on_insert(span), on_access(span, tick), on_evict(span),
// on_routing(layer, probs, n_tokens, n_experts)), so the standalone suite (any library, through
// the C ABI) and tests/unit/test_cache_policies.cpp (the runtime's instances, option variants,
// the built-in lru) run the same checks.
#pragma once

#include <pocketmoe/cache_policy.h>

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <set>
#include <span>
#include <vector>

namespace pmoe::conformance {

inline uint64_t K(uint32_t layer, uint32_t expert) { return PMOE_EXPERT_KEY(layer, expert); }

inline pmoe_cache_shape shape(uint64_t capacity, uint32_t layers = 4, uint32_t experts = 16, uint32_t top_k = 2) {
  return {sizeof(pmoe_cache_shape), layers, experts, top_k, capacity};
}

template <class P>
std::vector<uint64_t> victims(P& p, size_t max = 1000) {
  std::vector<uint64_t> out(max);
  out.resize(p.victims(std::span<uint64_t>(out)));
  return out;
}
template <class P>
void insert(P& p, std::vector<uint64_t> keys) {
  p.on_insert(std::span<const uint64_t>(keys));
}
template <class P>
void access(P& p, std::vector<uint64_t> keys, uint64_t tick) {
  p.on_access(std::span<const uint64_t>(keys), tick);
}
template <class P>
void evict(P& p, std::vector<uint64_t> keys) {
  p.on_evict(std::span<const uint64_t>(keys));
}

/// Checks one victims() answer against the model of the resident set; returns the full ranking.
template <class P>
std::vector<uint64_t> check_victims(P& p, const std::set<uint64_t>& resident, size_t max) {
  std::vector<uint64_t> v = victims(p, max);
  REQUIRE(v.size() == std::min(max, resident.size()));  // every resident entry is a candidate
  std::set<uint64_t> seen;
  for (uint64_t k : v) {
    REQUIRE_MESSAGE(resident.count(k) == 1, "proposed a key that is not resident: ", k);
    REQUIRE_MESSAGE(seen.insert(k).second, "proposed a key twice: ", k);
  }
  REQUIRE(victims(p, max) == v);  // proposing changes nothing
  if (max > 1) {                  // best first: a shorter answer is a prefix of a longer one
    std::vector<uint64_t> shorter = victims(p, max / 2);
    REQUIRE(std::equal(shorter.begin(), shorter.end(), v.begin()));
  }
  return v;
}

/// Random engine-like traffic with pins, runtime-initiated evictions, re-inserts and bogus keys,
/// against a policy that `make(shape)` creates.
template <class Make>
void contract_run(Make make, uint64_t capacity, uint64_t seed) {
  const uint32_t layers = 4, experts = 8;
  const uint32_t top_k = static_cast<uint32_t>(std::min<uint64_t>(2, capacity));
  auto p = make(shape(capacity, layers, experts, top_k));
  std::mt19937_64 rng(seed);
  auto chance = [&](double x) { return std::uniform_real_distribution<>(0, 1)(rng) < x; };
  auto pick = [&](size_t n) { return static_cast<size_t>(rng() % n); };
  std::set<uint64_t> resident;
  std::vector<float> probs(experts);

  for (uint64_t step = 0; step < 1500; ++step) {
    const uint64_t tick = step / layers;
    // Layer `layers` is outside the shape: policies must cope with such keys too.
    const uint32_t layer = chance(0.05) ? layers : static_cast<uint32_t>(step % layers);
    for (auto& x : probs)
      x = static_cast<float>(std::exp(-3.0 * static_cast<double>(pick(100)) / 100.0));
    p.on_routing(layer, probs.data(), 1, experts);

    std::vector<uint64_t> use;  // top_k distinct experts, skewed toward low numbers
    while (use.size() < top_k) {
      uint64_t k = K(layer, static_cast<uint32_t>(std::min(pick(experts), pick(experts))));
      if (std::find(use.begin(), use.end(), k) == use.end()) use.push_back(k);
    }
    std::vector<uint64_t> hits, misses;
    for (uint64_t k : use) (resident.count(k) ? hits : misses).push_back(k);

    size_t need =
        resident.size() + misses.size() > capacity ? resident.size() + misses.size() - capacity : 0;
    if (need > 0) {
      // Ask for more than needed (pins), sometimes for far more than is resident.
      size_t max = chance(0.2) ? resident.size() * 3 + 1 : need + hits.size() + pick(3);
      std::vector<uint64_t> v = check_victims(p, resident, max);
      std::vector<uint64_t> out;
      for (uint64_t k : v) {
        if (out.size() == need) break;
        // In use by this step, or (at random) by an in-flight read.
        bool pinned = std::count(hits.begin(), hits.end(), k) || chance(0.15);
        if (!pinned) out.push_back(k);
      }
      if (out.size() < need) {  // pins took too many: fall back to any unpinned entry
        for (uint64_t k : check_victims(p, resident, resident.size()))
          if (out.size() < need && !std::count(hits.begin(), hits.end(), k) &&
              !std::count(out.begin(), out.end(), k))
            out.push_back(k);
      }
      REQUIRE(out.size() == need);
      if (chance(0.5)) {
        evict(p, out);
        for (uint64_t k : out) resident.erase(k);
      } else {
        for (uint64_t k : out) {
          std::vector<uint64_t> before = victims(p);
          evict(p, {k});
          resident.erase(k);
          if (k == before[0]) {  // taking the best victim leaves the rest of the ranking as it was
            before.erase(before.begin());
            REQUIRE(victims(p) == before);
          }
        }
      }
    }
    insert(p, misses);
    resident.insert(misses.begin(), misses.end());
    access(p, use, tick);

    if (chance(0.05) && !resident.empty()) {  // the runtime drops an entry of its own accord
      auto it = std::next(resident.begin(), static_cast<long>(pick(resident.size())));
      evict(p, {*it});
      resident.erase(it);
    }
    if (chance(0.05) && !resident.empty())  // a resident key inserted again is not duplicated
      insert(p, {*std::next(resident.begin(), static_cast<long>(pick(resident.size())))});
    if (chance(0.05)) {  // keys that are not resident are ignored
      uint64_t bogus = K(layers + 7, static_cast<uint32_t>(pick(experts)));
      access(p, {bogus}, tick);
      evict(p, {bogus});
    }
    // The policy's view is exactly the resident set.
    std::vector<uint64_t> all = check_victims(p, resident, resident.size() + 5);
    REQUIRE(std::set<uint64_t>(all.begin(), all.end()) == resident);
  }
  // Evicting everything leaves nothing to propose; re-inserting works from scratch.
  std::vector<uint64_t> all(resident.begin(), resident.end());
  evict(p, all);
  CHECK(victims(p).empty());
  insert(p, all);
  std::vector<uint64_t> again = victims(p);
  CHECK(std::set<uint64_t>(all.begin(), all.end()) ==
        std::set<uint64_t>(again.begin(), again.end()));
}

/// The contract's edge cases: empty answers, max beyond the resident count, evicting other than
/// the first proposal, re-inserting, a shape without a capacity.
template <class Make>
void contract_edges(Make make) {
  auto p = make(shape(4));
  CHECK(victims(p).empty());
  CHECK(victims(p, 0).empty());
  insert(p, {K(0, 1), K(0, 2)});
  access(p, {K(0, 1), K(0, 2)}, 1);
  CHECK(victims(p, 0).empty());
  CHECK(victims(p, 100).size() == 2);  // max beyond the resident count
  // Evicting the key that was not proposed first is allowed.
  uint64_t second = victims(p)[1];
  evict(p, {second});
  CHECK(victims(p) == std::vector<uint64_t>{second == K(0, 1) ? K(0, 2) : K(0, 1)});
  // ... and so is a re-insert after an evict.
  insert(p, {second});
  access(p, {second}, 2);
  CHECK(victims(p).size() == 2);
  // A shape without a capacity (unlimited budget) still works.
  auto q = make(shape(0, 2, 4, 1));
  for (uint32_t e = 0; e < 4; ++e) insert(q, {K(1, e)});
  CHECK(victims(q).size() == 4);
}

}  // namespace pmoe::conformance
