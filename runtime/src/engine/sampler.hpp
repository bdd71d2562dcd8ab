#pragma once
// Token sampling with llama.cpp's knobs, applied in llama.cpp's order: penalties (repetition,
// presence, frequency: over the last repeat_last_n tokens, once per distinct token), top-k, top-p, min-p, temperature, then a draw from a seeded generator (reproducible for a
// seed). temperature <= 0 is greedy (ties -> lowest id).
#include <cstdint>
#include <deque>
#include <random>
#include <span>
#include <vector>

namespace pmoe {

struct SamplerParams {
  float temperature = 0.8f;
  int32_t top_k = 40;          // <= 0: off
  float top_p = 0.95f;         // >= 1: off
  float min_p = 0.05f;         // <= 0: off
  float repeat_penalty = 1.0f; // 1: off
  int32_t repeat_last_n = 64;
  float presence_penalty = 0.0f;  // subtracted from a token seen in the window (OpenAI's meaning)
  float frequency_penalty = 0.0f; // subtracted once per occurrence in the window
  uint64_t seed = 0;
};

class Sampler {
 public:
  explicit Sampler(SamplerParams p);
  /// Pick the next token from one row of logits; remembers it for the repetition penalty.
  int32_t sample(std::span<const float> logits);
  /// Remember prompt tokens for the repetition penalty.
  void accept(int32_t token);

 private:
  SamplerParams p_;
  std::mt19937_64 rng_;
  std::deque<int32_t> recent_;
  std::vector<std::pair<float, int32_t>> cand_;
};

/// Index of the largest value, lowest index on ties.
int32_t argmax(std::span<const float> v);

}  // namespace pmoe
