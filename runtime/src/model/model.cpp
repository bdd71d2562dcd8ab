#include "model/model.hpp"

#include "common/error.hpp"

#include <pocketmoe/dtype.h>

#include <set>
#include <sstream>

namespace pmoe {

namespace {
constexpr const char* kArch = "smallthinker";

std::string shape_str(const int64_t* ne, uint32_t n) {
  std::string s = "{";
  for (uint32_t i = 0; i < n; ++i) s += (i ? ", " : "") + std::to_string(ne[i]);
  return s + "}";
}
}  // namespace

std::unique_ptr<Model> Model::load(const std::string& path, GgufLoad how) {
  std::unique_ptr<Model> m(new Model());
  m->file_ = GgufFile::open(path, how);
  m->read_hparams();
  m->bind_tensors();
  return m;
}

void Model::read_hparams() {
  const GgufFile& f = *file_;
  const std::string arch = f.get_string("general.architecture");
  if (arch != kArch)
    throw Error(f.path() + ": architecture '" + arch + "' is not supported (pocketmoe runs '" +
                kArch + "')");
  auto key = [](const char* k) { return std::string(kArch) + "." + k; };
  auto positive = [&](const char* k) {
    const uint32_t v = f.get_u32(key(k));
    if (v == 0) throw Error(f.path() + ": metadata key '" + key(k) + "' must be > 0");
    return v;
  };
  Hparams& h = hp_;
  h.n_embd = positive("embedding_length");
  h.n_layer = positive("block_count");
  h.n_head = positive("attention.head_count");
  h.n_head_kv = f.get_u32_opt(key("attention.head_count_kv")).value_or(h.n_head);
  if (h.n_head_kv == 0) throw Error(f.path() + ": metadata key '" + key("attention.head_count_kv") + "' must be > 0");
  h.n_expert = positive("expert_count");
  h.n_expert_used = positive("expert_used_count");
  h.n_ff_exp = positive("expert_feed_forward_length");
  h.n_ctx_train = f.get_u32_opt(key("context_length")).value_or(4096);
  h.rms_eps = f.get_f32(key("attention.layer_norm_rms_epsilon"));
  h.head_dim = f.get_u32_opt(key("attention.key_length")).value_or(h.n_embd / h.n_head);
  const uint32_t v_dim = f.get_u32_opt(key("attention.value_length")).value_or(h.head_dim);
  h.n_rot = f.get_u32_opt(key("rope.dimension_count")).value_or(h.head_dim);
  h.rope_base = f.get_f32_opt(key("rope.freq_base")).value_or(10000.f);
  h.rope_base_swa = f.get_f32_opt(key("rope.freq_base_swa")).value_or(h.rope_base);
  h.sliding_window = f.get_u32_opt(key("attention.sliding_window")).value_or(0);
  if (f.has(key("attention.sliding_window_pattern")) &&
      f.type_of(key("attention.sliding_window_pattern")) != GgufValueType::ARRAY)
    h.swa_pattern = f.get_u32(key("attention.sliding_window_pattern"));
  if (!f.has(key("expert_gating_func")))
    throw Error(f.path() + ": metadata key '" + key("expert_gating_func") +
                "' is missing (1 = softmax, 2 = sigmoid); the router cannot be applied without it");
  const uint32_t g = f.get_u32(key("expert_gating_func"));
  if (g != 1 && g != 2)
    throw Error(f.path() + ": metadata key '" + key("expert_gating_func") + "' is " +
                std::to_string(g) + "; supported: 1 (softmax), 2 (sigmoid)");
  h.gating = Gating(g);

  auto bad = [&](const std::string& what) { throw Error(f.path() + ": " + what); };
  if (v_dim != h.head_dim)
    bad(key("attention.key_length") + " (" + std::to_string(h.head_dim) + ") != " + key("attention.value_length") +
        " (" + std::to_string(v_dim) + "): not supported");
  if (h.n_head % h.n_head_kv)
    bad(key("attention.head_count") + " (" + std::to_string(h.n_head) + ") must be a multiple of " +
        key("attention.head_count_kv") + " (" + std::to_string(h.n_head_kv) + ")");
  if (h.n_rot != h.head_dim)
    bad(key("rope.dimension_count") + " (" + std::to_string(h.n_rot) + ") must equal the head size (" +
        std::to_string(h.head_dim) + ")");
  if (h.head_dim % 2) bad(key("attention.key_length") + " (" + std::to_string(h.head_dim) + ") must be even for RoPE");
  if (h.n_expert_used > h.n_expert)
    bad(key("expert_used_count") + " (" + std::to_string(h.n_expert_used) + ") > " + key("expert_count") + " (" +
        std::to_string(h.n_expert) + ")");
  if (!(h.rms_eps > 0.f)) bad(key("attention.layer_norm_rms_epsilon") + " must be > 0");

  // Counts are checked against what the file holds before anything is sized by them: a flipped
  // bit in block_count must be an error naming the key, not gigabytes of allocation.
  const size_t tensors = f.tensors().size();
  if (h.n_layer > tensors / 4)  // every layer has norms, attention and experts: many more tensors
    bad("metadata key '" + key("block_count") + "' is " + std::to_string(h.n_layer) + ", but the file holds only " +
        std::to_string(tensors) + " tensors (a layer needs at least 4)");

  // Layer kinds (fixtures/README "What a correct runtime does"): with a window, layer il is SWA
  // iff il % P != 0 and NoPE iff il % 4 == 0; without one every layer is RoPE + full attention.
  h.layers.resize(h.n_layer);
  for (uint32_t il = 0; il < h.n_layer; ++il) {
    LayerSpec& l = h.layers[il];
    if (h.sliding_window > 0) {
      l.sliding = h.swa_pattern == 0 || il % h.swa_pattern != 0;
      l.rope = il % 4 != 0;
      l.window = l.sliding ? h.sliding_window : 0;
    }
    l.rope_base = l.sliding ? h.rope_base_swa : h.rope_base;
  }
}

const GgufTensorInfo& Model::require(const std::string& name, std::vector<int64_t> shape) const {
  const GgufTensorInfo* t = file_->find_tensor(name);
  if (!t) throw Error(file_->path() + ": tensor '" + name + "' is missing");
  bool ok = t->n_dims == shape.size();
  for (size_t i = 0; ok && i < shape.size(); ++i) ok = t->ne[i] == shape[i];
  if (!ok)
    throw Error(file_->path() + ": tensor '" + name + "' has shape " + shape_str(t->ne, t->n_dims) +
                ", expected " + shape_str(shape.data(), uint32_t(shape.size())));
  return *t;
}

void Model::bind_tensors() {
  const Hparams& h = hp_;
  const std::string& p = file_->path();
  token_embd_ = file_->find_tensor("token_embd.weight");
  if (!token_embd_) throw Error(p + ": tensor 'token_embd.weight' is missing");
  if (token_embd_->n_dims != 2 || token_embd_->ne[0] != h.n_embd)
    throw Error(p + ": tensor 'token_embd.weight' has shape " +
                shape_str(token_embd_->ne, token_embd_->n_dims) + ", expected {" +
                std::to_string(h.n_embd) + ", n_vocab}");
  hp_.n_vocab = uint32_t(token_embd_->ne[1]);
  const int64_t E = h.n_embd, V = hp_.n_vocab;
  output_norm_ = &require("output_norm.weight", {E});
  output_ = file_->find_tensor("output.weight") ? &require("output.weight", {E, V}) : token_embd_;

  std::set<std::string> used = {"token_embd.weight", "output_norm.weight", "output.weight"};
  layers_.resize(h.n_layer);
  for (uint32_t il = 0; il < h.n_layer; ++il) {
    const std::string b = "blk." + std::to_string(il) + ".";
    auto req = [&](const char* n, std::vector<int64_t> s) -> const GgufTensorInfo* {
      used.insert(b + n);
      return &require(b + n, std::move(s));
    };
    LayerTensors& L = layers_[il];
    L.attn_norm = req("attn_norm.weight", {E});
    L.wq = req("attn_q.weight", {E, int64_t(h.q_dim())});
    L.wk = req("attn_k.weight", {E, int64_t(h.kv_dim())});
    L.wv = req("attn_v.weight", {E, int64_t(h.kv_dim())});
    L.wo = req("attn_output.weight", {int64_t(h.q_dim()), E});
    L.ffn_norm = req("ffn_norm.weight", {E});
    L.router = req("ffn_gate_inp.weight", {E, int64_t(h.n_expert)});
    L.gate_exps = req("ffn_gate_exps.weight", {E, int64_t(h.n_ff_exp), int64_t(h.n_expert)});
    L.up_exps = req("ffn_up_exps.weight", {E, int64_t(h.n_ff_exp), int64_t(h.n_expert)});
    // PowerInfer's converter can store down transposed (--transpose-down): {n_embd, n_ff, n_expert},
    // one row per neuron; it is used as it is (where n_embd = n_ff the shapes cannot tell: llama.cpp's)
    const GgufTensorInfo* down = file_->find_tensor(b + "ffn_down_exps.weight");
    const bool neuron_rows = down && h.n_embd != h.n_ff_exp && down->n_dims == 3 && down->ne[0] == E &&
                             down->ne[1] == int64_t(h.n_ff_exp);
    L.down_exps = neuron_rows ? req("ffn_down_exps.weight", {E, int64_t(h.n_ff_exp), int64_t(h.n_expert)})
                              : req("ffn_down_exps.weight", {int64_t(h.n_ff_exp), E, int64_t(h.n_expert)});
    for (const GgufTensorInfo* t : {L.attn_norm, L.ffn_norm})
      if (t->type != PMOE_DTYPE_F32)
        throw Error(p + ": tensor '" + t->name + "' must be f32 (norm weights), got " +
                    ggml_type_name(t->type));
  }
  if (output_norm_->type != PMOE_DTYPE_F32)
    throw Error(p + ": tensor 'output_norm.weight' must be f32");
  // Like llama.cpp, refuse tensors we would silently ignore (biases, dense FFNs, fused QKV):
  // ignoring them would give a wrong answer without a word.
  for (const GgufTensorInfo& t : file_->tensors())
    if (!used.count(t.name))
      throw Error(p + ": tensor '" + t.name + "' is not part of the SmallThinker layout pocketmoe runs");
}

const GgufTensorInfo& Model::expert_tensor(uint32_t il, ExpertMatrix m) const {
  const LayerTensors& L = layers_.at(il);
  switch (m) {
    case ExpertMatrix::Gate: return *L.gate_exps;
    case ExpertMatrix::Up: return *L.up_exps;
    default: return *L.down_exps;
  }
}

uint64_t Model::expert_matrix_bytes(uint32_t il, ExpertMatrix m) const {
  const GgufTensorInfo& t = expert_tensor(il, m);
  return t.size / uint64_t(t.ne[2]);
}

uint64_t Model::expert_offset(uint32_t il, ExpertMatrix m, uint32_t e) const {
  return expert_tensor(il, m).offset + uint64_t(e) * expert_matrix_bytes(il, m);
}

uint64_t Model::expert_bytes(uint32_t il) const {
  return expert_matrix_bytes(il, ExpertMatrix::Gate) + expert_matrix_bytes(il, ExpertMatrix::Up) +
         expert_matrix_bytes(il, ExpertMatrix::Down);
}

uint64_t Model::total_expert_bytes() const {
  uint64_t s = 0;
  for (uint32_t il = 0; il < hp_.n_layer; ++il) s += expert_bytes(il) * hp_.n_expert;
  return s;
}

uint64_t Model::dense_bytes() const {
  uint64_t s = 0;
  for (const GgufTensorInfo& t : file_->tensors()) s += t.size;
  return s - total_expert_bytes();
}

ExpertLayout expert_layout(const Model& model) {
  const Hparams& h = model.hp();
  ExpertLayout l{model.file().path(), h.n_expert, h.n_expert_used, {}};
  for (uint32_t il = 0; il < h.n_layer; ++il) {
    auto& matrices = l.layers.emplace_back();
    for (ExpertMatrix m : {ExpertMatrix::Gate, ExpertMatrix::Up, ExpertMatrix::Down}) {
      const GgufTensorInfo& t = model.expert_tensor(il, m);
      matrices[size_t(m)] = {t.offset, model.expert_matrix_bytes(il, m), t.type, t.ne[0], t.ne[1]};
    }
  }
  return l;
}

std::string describe(const LayerSpec& l) {
  std::string s = l.sliding ? "swa(" + std::to_string(l.window) + ")" : "full";
  return s + (l.rope ? "+rope" : "+nope");
}

}  // namespace pmoe
