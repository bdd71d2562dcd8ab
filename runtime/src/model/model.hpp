#pragma once
// A SmallThinker model as stored in a GGUF file: hyperparameters from the metadata, the per-layer
// attention kinds, and every tensor checked against the shapes those imply. Nothing is copied:
// tensors are views into the read-only mapping of the file.
#include "gguf/gguf.hpp"
#include "model/expert_layout.hpp"

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace pmoe {

enum class Gating : uint32_t { Softmax = 1, Sigmoid = 2 };

struct LayerSpec {
  bool sliding = false;   // sliding-window attention (else full causal)
  bool rope = true;       // RoPE on q/k (else NoPE)
  uint32_t window = 0;    // keys within `window` positions, the current one included; 0 = all
  float rope_base = 10000.f;
};

struct Hparams {
  uint32_t n_vocab = 0, n_embd = 0, n_layer = 0, n_head = 0, n_head_kv = 0, head_dim = 0;
  uint32_t n_rot = 0, n_expert = 0, n_expert_used = 0, n_ff_exp = 0, n_ctx_train = 0;
  Gating gating = Gating::Softmax;
  float rms_eps = 1e-6f, rope_base = 10000.f, rope_base_swa = 10000.f;
  uint32_t sliding_window = 0;  // 0 = none
  uint32_t swa_pattern = 4;
  std::vector<LayerSpec> layers;

  uint32_t q_dim() const { return n_head * head_dim; }
  uint32_t kv_dim() const { return n_head_kv * head_dim; }
};

struct LayerTensors {
  const GgufTensorInfo *attn_norm, *wq, *wk, *wv, *wo, *ffn_norm, *router;
  const GgufTensorInfo *gate_exps, *up_exps, *down_exps;  // 3-D, expert e = slice e of ne[2]
};

/// Which of an expert's three matrices.
enum class ExpertMatrix { Gate = 0, Up = 1, Down = 2 };

class Model {
 public:
  /// Open, validate and describe the model; errors name the file and the key or tensor.
  static std::unique_ptr<Model> load(const std::string& path, GgufLoad how = GgufLoad::map);

  const GgufFile& file() const { return *file_; }
  const Hparams& hp() const { return hp_; }
  const GgufTensorInfo& token_embd() const { return *token_embd_; }
  const GgufTensorInfo& output_norm() const { return *output_norm_; }
  const GgufTensorInfo& output() const { return *output_; }  // token_embd when tied
  bool tied_output() const { return output_ == token_embd_; }
  const LayerTensors& layer(uint32_t il) const { return layers_[il]; }

  const GgufTensorInfo& expert_tensor(uint32_t il, ExpertMatrix m) const;
  /// Absolute file offset and size of expert `e`'s slice of one matrix.
  uint64_t expert_offset(uint32_t il, ExpertMatrix m, uint32_t e) const;
  uint64_t expert_matrix_bytes(uint32_t il, ExpertMatrix m) const;
  /// Bytes of one expert (all three matrices) of layer il.
  uint64_t expert_bytes(uint32_t il) const;
  uint64_t total_expert_bytes() const;
  uint64_t dense_bytes() const;  // everything that is not an expert tensor

 private:
  Model() = default;
  void read_hparams();
  void bind_tensors();
  const GgufTensorInfo& require(const std::string& name, std::vector<int64_t> shape) const;

  std::unique_ptr<GgufFile> file_;
  Hparams hp_;
  const GgufTensorInfo *token_embd_ = nullptr, *output_norm_ = nullptr, *output_ = nullptr;
  std::vector<LayerTensors> layers_;
};

/// "full+nope", "swa(4096)+rope", ... for `pocketmoe info`.
std::string describe(const LayerSpec& l);

}  // namespace pmoe
