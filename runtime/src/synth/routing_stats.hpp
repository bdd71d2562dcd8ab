#pragma once
// How skewed a model's routing is, measured through the real forward pass: run tokens through
// an Engine, count each layer's expert choices, and summarise them the way the expert cache
// cares about (share taken by the hottest experts, how many experts are rarely used).
#include <cstdint>
#include <string>
#include <vector>

#include "engine/engine.hpp"

namespace pmoe::synth {

struct RoutingStats {
  uint32_t n_tokens = 0, n_expert = 0, n_expert_used = 0;
  std::vector<std::vector<uint64_t>> counts;  // [layer][expert]: times chosen

  /// Experts in the "top 20%": round(0.2 * n_expert), at least 1.
  uint32_t n_top() const;
  /// Share of all choices of layer il that went to its top-20% experts (uniform: ~0.2).
  double top_share(uint32_t il) const;
  /// Fraction of layer il's experts chosen at less than 1/4 of the uniform rate.
  double rare_fraction(uint32_t il) const;
  double mean_top_share() const;
  double mean_rare_fraction() const;
  /// Per-layer table plus the means, for a terminal.
  std::string report() const;
};

/// Evaluates n_tokens random token ids (seeded; in windows of the engine's context size) and
/// counts the routing. Resets the engine before and after; replaces its routing observer.
RoutingStats measure_routing(Engine& engine, uint32_t n_tokens, uint64_t seed = 1);

}  // namespace pmoe::synth
