#pragma once
// The decode loop of `run` and `chat`: sample, stop at the end of text, a token limit, a full
// context or Ctrl-C, else hand the token to the caller and evaluate it (so the KV cache holds
// every token shown, and a chat's next turn continues from it).
#include "common/interrupt.hpp"
#include "engine/engine.hpp"
#include "engine/sampler.hpp"
#include "tokenizer/tokenizer.hpp"

#include <span>
#include <vector>

namespace pmoe::cli {

enum class GenerationEnd { end_of_text, limit, context_full, interrupted };

/// Generates from `logits` (the last prompt token's row at the end). `on_token(id)` runs for
/// each sampled token, the end-of-text one included, before it is evaluated. Returns why it
/// stopped; `generated` counts the sampled tokens.
template <class OnToken>
GenerationEnd generate(Engine& eng, Sampler& sampler, const Tokenizer& tok, std::vector<float>& logits, int64_t limit,
                       int64_t& generated, OnToken&& on_token) {
  const uint32_t V = eng.model().hp().n_vocab;
  generated = 0;
  for (;;) {
    if (interrupted()) return GenerationEnd::interrupted;
    if (generated >= limit) return GenerationEnd::limit;
    if (eng.n_past() >= eng.n_ctx()) return GenerationEnd::context_full;
    const int32_t next = sampler.sample(std::span<const float>(logits).last(V));
    ++generated;
    on_token(next);
    if (tok.is_end_of_generation(next)) return GenerationEnd::end_of_text;
    logits.clear();
    eng.eval(std::span(&next, 1), false, logits);
  }
}

}  // namespace pmoe::cli
