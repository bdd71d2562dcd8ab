#include "engine/sampler.hpp"

#include <algorithm>
#include <cmath>
#include <unordered_map>

namespace pmoe {

int32_t argmax(std::span<const float> v) {
  return int32_t(std::max_element(v.begin(), v.end()) - v.begin());
}

Sampler::Sampler(SamplerParams p) : p_(p), rng_(p.seed) {}

void Sampler::accept(int32_t token) {
  if (p_.repeat_last_n <= 0) return;
  recent_.push_back(token);
  while (recent_.size() > size_t(p_.repeat_last_n)) recent_.pop_front();
}

int32_t Sampler::sample(std::span<const float> logits) {
  cand_.resize(logits.size());
  for (size_t i = 0; i < logits.size(); ++i) cand_[i] = {logits[i], int32_t(i)};
  if (p_.repeat_penalty != 1.0f || p_.presence_penalty != 0.0f || p_.frequency_penalty != 0.0f) {
    std::unordered_map<int32_t, int> count;
    for (int32_t t : recent_) ++count[t];
    for (const auto& [t, n] : count) {  // as llama.cpp: shrink positive logits, grow negative ones
      float& l = cand_[size_t(t)].first;
      l = l > 0 ? l / p_.repeat_penalty : l * p_.repeat_penalty;
      l -= float(n) * p_.frequency_penalty + p_.presence_penalty;
    }
  }
  auto by_logit = [](const auto& a, const auto& b) {
    return a.first > b.first || (a.first == b.first && a.second < b.second);
  };
  int32_t token;
  if (p_.temperature <= 0.f) {
    token = std::min_element(cand_.begin(), cand_.end(), by_logit)->second;
  } else {
    size_t n = cand_.size();
    if (p_.top_k > 0 && size_t(p_.top_k) < n) n = size_t(p_.top_k);
    std::partial_sort(cand_.begin(), cand_.begin() + long(n), cand_.end(), by_logit);
    cand_.resize(n);
    // probabilities at temperature 1 for the top-p / min-p filters
    std::vector<double> prob(n);
    double sum = 0;
    for (size_t i = 0; i < n; ++i) sum += prob[i] = std::exp(double(cand_[i].first - cand_[0].first));
    size_t keep = n;
    if (p_.top_p < 1.f) {
      double acc = 0;
      for (size_t i = 0; i < n; ++i) {
        acc += prob[i] / sum;
        if (acc >= p_.top_p) {
          keep = i + 1;
          break;
        }
      }
    }
    if (p_.min_p > 0.f)
      for (size_t i = 1; i < keep; ++i)
        if (prob[i] < p_.min_p * prob[0]) {
          keep = i;
          break;
        }
    std::vector<double> w(keep);
    for (size_t i = 0; i < keep; ++i)
      w[i] = std::exp(double(cand_[i].first - cand_[0].first) / double(p_.temperature));
    std::discrete_distribution<size_t> dist(w.begin(), w.end());
    token = cand_[dist(rng_)].second;
  }
  accept(token);
  return token;
}

}  // namespace pmoe
