#pragma once
// Synthetic SmallThinker models: random weights in exactly the GGUF layout of the real models
// (and of the fixtures), loadable by any GGUF reader including llama.cpp. For tests, demos and
// benchmarks at the real sizes without the real weights. docs/synth.md has the details.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "gguf/gguf_writer.hpp"
#include "model/model.hpp"

namespace pmoe::synth {

/// Hyperparameters and tensor type of a synthetic model.
struct Shape {
  std::string name;  // preset name (or "custom"), used in general.name
  uint32_t n_layer = 0, n_embd = 0, n_head = 0, n_head_kv = 0, head_dim = 0;
  uint32_t n_expert = 0, n_expert_used = 0, n_ff_exp = 0, n_vocab = 0, n_ctx = 32768;
  uint32_t sliding_window = 0;          // 0: no key (4B layout: RoPE + full attention everywhere)
  std::optional<uint32_t> swa_pattern;  // attention.sliding_window_pattern, written only if set
  Gating gating = Gating::Softmax;
  float rope_base = 10000.f, rms_eps = 1e-6f;
  uint32_t type = 0;  // pmoe_dtype of token_embd, attn_q/k/v/output and the expert tensors
};

/// "tiny", "4b-a0.6b" or "21b-a3b"; throws pmoe::Error naming the known presets otherwise.
Shape preset(std::string_view name);
/// "f32", "f16", "bf16", "q8_0", "q4_0" -> pmoe_dtype; throws pmoe::Error otherwise.
uint32_t parse_type(std::string_view name);

struct Options {
  Shape shape;
  std::string vocab_from;     // copy tokenizer.* from this GGUF (n_vocab = its token count)
  bool routing_skew = false;  // realistic hot/cold experts instead of near-uniform routing
  /// Fraction of ReGLU neurons inactive (gate <= 0) on typical inputs, 0 < F < 1; 0 leaves the
  /// gates unbiased (about half inactive). 0.6 is the real models' median.
  float reglu_sparsity = 0.6f;
  uint64_t seed = 1;
  unsigned threads = 0;  // 0 = all cores; the output does not depend on it
};

struct Result {
  uint64_t file_bytes = 0, n_params = 0;
  uint32_t n_tensors = 0, n_vocab = 0, n_merges = 0;  // n_merges: 0 with --vocab-from
};

/// Checks the shape (throws pmoe::Error naming the bad value) and writes the model to `path`.
Result write_model(const Options& o, const std::string& path, GgufWriter::Progress progress = {});

/// A progress callback for stderr: a redrawn bar on a terminal, else a line every 10%.
GgufWriter::Progress stderr_progress(std::string label);

}  // namespace pmoe::synth
