#include "router_policy.hpp"

#include <algorithm>
#include <cmath>

#include "util.hpp"

namespace pmoe {
namespace {
constexpr double kFast = 0.5;  // decay of R: a use counts half as much one step later
}

RouterPolicy::RouterPolicy(const pmoe_host*, const sdk::Options& options,
                           const pmoe_cache_shape& shape)
    : decay_(get_decimal(options, "decay", 0.98, 0.0, 0.999)),
      weight_(get_decimal(options, "weight", 0.5, 0.0, 1.0)),
      recency_(get_decimal(options, "recency", 0.15, 0.0, 10.0)),
      top_k_(std::max(1u, shape.top_k)),
      n_layers_(shape.n_layers),
      n_experts_(shape.n_experts),
      table_(size_t{shape.n_layers} * shape.n_experts),
      routed_(shape.n_layers, 0),
      last_tick_(shape.n_layers, 0),
      mean_(shape.n_experts) {}

RouterPolicy::Stat& RouterPolicy::stat(uint64_t key) {
  if (!in_shape(key)) return other_[key];
  return table_[size_t{PMOE_KEY_LAYER(key)} * n_experts_ + PMOE_KEY_EXPERT(key)];
}

RouterPolicy::Stat* RouterPolicy::resident(uint64_t key) {
  Stat* s = nullptr;
  if (in_shape(key))
    s = &stat(key);
  else if (auto it = other_.find(key); it != other_.end())
    s = &it->second;
  return s && s->resident ? s : nullptr;
}

template <class F>
void RouterPolicy::update(uint64_t key, Stat& s, F&& change) {
  if (s.resident) order_.erase({s.score, s.last, key});
  change(s);
  if (in_shape(key)) {
    double base =
        routed_[PMOE_KEY_LAYER(key)] ? weight_ * top_k_ * s.prob + (1 - weight_) * s.use : s.use;
    s.score = base + recency_ * s.recent;
  }
  if (s.resident) order_.insert({s.score, s.last, key});
}

void RouterPolicy::age_use(uint32_t layer, uint64_t steps) {
  const double d = std::pow(decay_, static_cast<double>(steps));
  const double f = std::pow(kFast, static_cast<double>(steps));
  for (uint32_t e = 0; e < n_experts_; ++e) {
    uint64_t k = PMOE_EXPERT_KEY(layer, e);
    update(k, stat(k), [&](Stat& s) {
      s.use *= d;
      s.recent *= f;
    });
  }
}

void RouterPolicy::on_routing(uint32_t layer, const float* probs, uint32_t n_tokens,
                              uint32_t n_experts) {
  if (layer >= n_layers_ || n_tokens == 0 || n_experts == 0) return;
  // Mean share of each expert over the tokens (a prefill chunk routes several); rows are normalised
  // so sigmoid gating, which does not sum to 1, weighs the same as softmax.
  std::fill(mean_.begin(), mean_.end(), 0.0);
  uint32_t rows = 0;
  for (uint32_t t = 0; t < n_tokens; ++t) {
    const float* row = probs + size_t{t} * n_experts;
    double sum = 0;
    for (uint32_t e = 0; e < n_experts; ++e) sum += std::max(0.0f, row[e]);
    if (!(sum > 0)) continue;
    for (uint32_t e = 0; e < std::min(n_experts, n_experts_); ++e)
      mean_[e] += std::max(0.0f, row[e]) / sum;
    ++rows;
  }
  if (rows == 0) return;
  routed_[layer] = 1;
  const double d = decay_;
  for (uint32_t e = 0; e < n_experts_; ++e) {
    uint64_t k = PMOE_EXPERT_KEY(layer, e);
    const double share = mean_[e] / rows;
    update(k, stat(k), [&](Stat& s) {  // one step of this layer: everything ages once
      s.prob = d * s.prob + (1 - d) * share;
      s.use *= d;
      s.recent *= kFast;
    });
  }
}

void RouterPolicy::on_insert(std::span<const uint64_t> keys) {
  for (uint64_t k : keys) {
    Stat& s = stat(k);
    if (s.resident) continue;
    update(k, s, [&](Stat& x) { x.last = ++clock_; });
    s.resident = true;
    order_.insert({s.score, s.last, k});
  }
}

void RouterPolicy::on_access(std::span<const uint64_t> keys, uint64_t tick) {
  for (uint64_t k : keys) {
    Stat* s = resident(k);
    if (!s) continue;  // runtime bug; ignore
    if (in_shape(k)) {
      uint32_t layer = PMOE_KEY_LAYER(k);
      if (!routed_[layer] && tick > last_tick_[layer]) {  // no routing: a tick is the step
        age_use(layer, tick - last_tick_[layer]);
        last_tick_[layer] = tick;
      }
    }
    update(k, *s, [&](Stat& x) {
      x.use += 1 - decay_;
      x.recent += 1 - kFast;
      x.last = ++clock_;
    });
  }
}

void RouterPolicy::on_evict(std::span<const uint64_t> keys) {
  for (uint64_t k : keys) {
    Stat* s = resident(k);
    if (!s) continue;
    order_.erase({s->score, s->last, k});
    s->resident = false;
    if (!in_shape(k)) other_.erase(k);
  }
}

size_t RouterPolicy::victims(uint64_t* out, size_t max) {
  size_t n = 0;
  for (auto it = order_.begin(); it != order_.end() && n < max; ++it) out[n++] = std::get<2>(*it);
  return n;
}

}  // namespace pmoe
