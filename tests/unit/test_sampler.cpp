// Sampling: greedy picks the argmax (lowest id on ties), a seed reproduces a sequence, and
// top-k / top-p / min-p / repetition penalty restrict the candidates as documented.
#include <doctest/doctest.h>

#include "engine/sampler.hpp"

#include <set>

using namespace pmoe;

namespace {
std::vector<int32_t> draw(SamplerParams p, const std::vector<float>& logits, int n) {
  Sampler s(p);
  std::vector<int32_t> out;
  for (int i = 0; i < n; ++i) out.push_back(s.sample(logits));
  return out;
}
}  // namespace

TEST_CASE("greedy takes the argmax, lowest id on ties") {
  SamplerParams p;
  p.temperature = 0;
  CHECK(draw(p, {0.f, 3.f, 1.f, 3.f}, 1)[0] == 1);
}

TEST_CASE("a seed reproduces the sequence; another seed differs") {
  std::vector<float> logits(50);
  for (size_t i = 0; i < logits.size(); ++i) logits[i] = float(i % 7) * 0.3f;
  SamplerParams p;
  p.temperature = 1.0f, p.top_k = 0, p.top_p = 1.f, p.min_p = 0.f, p.seed = 7;
  const auto a = draw(p, logits, 200), b = draw(p, logits, 200);
  CHECK(a == b);
  p.seed = 8;
  CHECK(draw(p, logits, 200) != a);
}

TEST_CASE("top-k, top-p and min-p restrict the candidates") {
  const std::vector<float> logits = {5.f, 4.f, 3.f, 2.f, 1.f, 0.f};
  SamplerParams p;
  p.temperature = 2.0f, p.top_p = 1.f, p.min_p = 0.f, p.seed = 1;
  p.top_k = 2;
  for (int32_t t : draw(p, logits, 300)) CHECK(t < 2);
  p.top_k = 0, p.top_p = 0.5f;  // p(0) = 0.64 at temperature 1: only token 0 survives
  for (int32_t t : draw(p, logits, 300)) CHECK(t == 0);
  p.top_p = 1.f, p.min_p = 0.3f;  // e^-1 = 0.37 >= 0.3 keeps token 1, e^-2 = 0.14 drops token 2
  std::set<int32_t> seen;
  for (int32_t t : draw(p, logits, 500)) seen.insert(t);
  CHECK(seen == std::set<int32_t>{0, 1});
}

TEST_CASE("repetition penalty pushes a repeated token down") {
  SamplerParams p;
  p.temperature = 0, p.repeat_penalty = 2.0f, p.repeat_last_n = 8;
  Sampler s(p);
  s.accept(0);
  CHECK(s.sample(std::vector<float>{3.f, 2.f, 1.f}) == 1);  // 3 / 2 = 1.5 < 2
}

TEST_CASE("the repetition penalty counts a token once however often it repeats (as llama.cpp)") {
  SamplerParams p;
  p.temperature = 0, p.repeat_penalty = 2.0f, p.repeat_last_n = 8;
  Sampler s(p);
  for (int i = 0; i < 3; ++i) s.accept(0);
  CHECK(s.sample(std::vector<float>{3.f, 1.4f, 1.f}) == 0);  // 3 / 2 = 1.5 > 1.4 (per occurrence: 3 / 8)
}

TEST_CASE("presence penalty: once per distinct token; frequency penalty: once per occurrence") {
  SamplerParams p;
  p.temperature = 0, p.repeat_last_n = 8;
  p.presence_penalty = 0.3f;
  {
    Sampler s(p);
    s.accept(0), s.accept(0);
    CHECK(s.sample(std::vector<float>{2.4f, 2.0f}) == 0);  // 2.4 - 0.3 = 2.1 > 2.0
  }
  p.presence_penalty = 0, p.frequency_penalty = 0.25f;
  {
    Sampler s(p);
    s.accept(0), s.accept(0);
    CHECK(s.sample(std::vector<float>{2.4f, 2.0f}) == 1);  // 2.4 - 2 x 0.25 = 1.9 < 2.0
  }
}
