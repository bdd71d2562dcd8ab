#pragma once
// A small but real byte-level BPE vocabulary (tokenizer.ggml.model "gpt2", pre "qwen2") for
// synthetic models: the 256 GPT-2 byte tokens in GPT-2's id order, merges learned by BPE
// training on a built-in English paragraph, then <|endoftext|>, <|im_start|>, <|im_end|>
// (CONTROL) and [PAD<id>] (UNUSED) up to the requested size.
#include <cstdint>
#include <string>
#include <vector>

namespace pmoe::synth {

struct BpeVocab {
  std::vector<std::string> tokens;   // GPT-2-mapped texts, as tokenizer.ggml.tokens stores them
  std::vector<int32_t> token_types;  // llama_token_type values
  std::vector<std::string> merges;   // "left right", by rank
  int32_t endoftext = -1;            // bos = eos = pad
};

/// Builds a vocabulary of exactly n_vocab tokens with at most max_merges merges (fewer when
/// n_vocab leaves no room, or when no pair occurs twice any more). Throws pmoe::Error if n_vocab
/// cannot hold the byte and special tokens (259). Deterministic.
BpeVocab build_bpe_vocab(uint32_t n_vocab, uint32_t max_merges = 512);

/// The built-in training text (also handy as a round-trip sample).
const std::string& bpe_training_text();

}  // namespace pmoe::synth
