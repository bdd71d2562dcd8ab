#pragma once
// Router-aware policy for SmallThinker-style MoE. SmallThinker routes each layer on its raw input
// before attention, so the runtime sees every expert's gating probability, not only the top-k that
// get used. The policy keeps per (layer, expert) moving averages and evicts the resident expert
// with the lowest expected use; equal scores go oldest use first:
//
//   score = weight * top_k * P + (1 - weight) * U + recency * R
//
//   P  EMA (factor `decay` per layer step) of the expert's share of its layer's routing mass;
//      top_k * P is on the scale of expected uses per step
//   U  EMA (`decay`) of "used in this step" (0/1), from on_access
//   R  EMA with factor 0.5 of the same: a short memory for token-to-token locality
//
// A layer step is an on_routing call for that layer; a layer that is never routed falls back to U
// and R decayed per tick (score = U + recency * R). Stats persist across evictions.
#include <pocketmoe/cpp/plugin.hpp>

#include <cstdint>
#include <set>
#include <tuple>
#include <unordered_map>
#include <vector>

namespace pmoe {

class RouterPolicy : public sdk::CachePolicy {
 public:
  RouterPolicy(const pmoe_host* host, const sdk::Options& options, const pmoe_cache_shape& shape);

  void on_insert(std::span<const uint64_t> keys) override;
  void on_access(std::span<const uint64_t> keys, uint64_t tick) override;
  void on_evict(std::span<const uint64_t> keys) override;
  size_t victims(uint64_t* out, size_t max) override;
  void on_routing(uint32_t layer, const float* probs, uint32_t n_tokens,
                  uint32_t n_experts) override;

 private:
  struct Stat {
    double prob = 0, use = 0, recent = 0;  // P, U, R above
    double score = 0;                      // rank while resident
    uint64_t last = 0;                     // logical time of the last use or insert
    bool resident = false;
  };
  using Rank = std::tuple<double, uint64_t, uint64_t>;  // (score, last, key): victim first

  bool in_shape(uint64_t key) const {
    return PMOE_KEY_LAYER(key) < n_layers_ && PMOE_KEY_EXPERT(key) < n_experts_;
  }
  Stat& stat(uint64_t key);
  Stat* resident(uint64_t key);  // nullptr unless resident
  /// Applies `change` to a key's stats and keeps order_ in step with its new score.
  template <class F>
  void update(uint64_t key, Stat& s, F&& change);
  /// Ages U and R of a layer by `steps` layer steps (used when the layer gets no routing).
  void age_use(uint32_t layer, uint64_t steps);

  double decay_, weight_, recency_, top_k_;
  uint32_t n_layers_, n_experts_;
  std::vector<Stat> table_;                   // [layer][expert]
  std::unordered_map<uint64_t, Stat> other_;  // resident keys outside the shape: recency only
  std::vector<uint8_t> routed_;               // per layer: on_routing seen
  std::vector<uint64_t> last_tick_;           // per layer: tick of the last ageing (no routing)
  std::vector<double> mean_;                  // on_routing scratch
  std::set<Rank> order_;                      // resident keys
  uint64_t clock_ = 0;
};

}  // namespace pmoe
