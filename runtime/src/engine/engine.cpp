#include "engine/engine.hpp"

#include "common/error.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace pmoe {

namespace {
pmoe_op make_op(pmoe_op_kind kind, const pmoe_tensor& dst, std::initializer_list<pmoe_tensor> src) {
  pmoe_op op{};
  op.kind = kind;
  op.dst = dst;
  for (const pmoe_tensor& s : src) op.src[op.n_src++] = s;
  return op;
}
uint64_t align_up(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }
// MOE_EXPERT's src5 per layer: active neurons, neurons computed, matrices re-laid, microseconds
constexpr uint64_t kActivityCounters = 4;
}  // namespace

Engine::Engine(const Model& model, ComputeBackend& compute, EngineOptions o)
    : model_(model), compute_(compute) {
  const Hparams& h = model.hp();
  n_ctx_ = o.n_ctx ? o.n_ctx : std::min<uint32_t>(h.n_ctx_train, 4096);
  ubatch_ = std::max<uint32_t>(1, std::min(o.ubatch ? o.ubatch : kDefaultPrefillChunk, n_ctx_));
  // Logit rows per lm_head call: bounded so a 150k vocabulary does not need a huge buffer.
  logit_rows_ = std::clamp<uint32_t>(uint32_t((64u << 20) / (uint64_t(h.n_vocab) * 4)), 1, ubatch_);

  check_backend_supports();
  const GgufFile& f = model.file();
  // Weights stay where they are: the backend adopts the read-only mapping when it can.
  weights_ = compute_.wrap(const_cast<uint8_t*>(f.base()), f.file_size(), PMOE_BUFFER_READ_ONLY);
  if (!weights_) upload_weights(o.experts_streamed);
  kv_ = compute_.alloc(uint64_t(h.n_layer) * 2 * n_ctx_ * h.kv_dim() * 4, 0);

  uint64_t off = 0;
  auto reserve = [&](Region& r, uint64_t bytes) {
    r.offset = off;
    off = align_up(off + bytes, 256);
  };
  const uint64_t U = ubatch_, K = h.n_expert_used;
  reserve(x_, U * h.n_embd * 4);
  reserve(n1_, U * std::max(h.n_embd, h.q_dim()) * 4);
  reserve(q_, U * h.q_dim() * 4);
  reserve(attn_, U * h.q_dim() * 4);
  reserve(n2_, U * h.n_embd * 4);
  reserve(router_, U * h.n_expert * 4);
  reserve(ey_, U * K * h.n_embd * 4);
  reserve(tok_ids_, U * 4);
  reserve(pos_, U * 4);
  reserve(route_tok_, U * K * 4);
  reserve(comb_idx_, U * K * 4);
  reserve(comb_w_, U * K * 4);
  reserve(logits_, uint64_t(logit_rows_) * h.n_vocab * 4);
  reserve(activity_, uint64_t(h.n_layer) * kActivityCounters * 4);
  act_ = compute_.alloc(off, 0);  // device-local: the host only writes and reads it through the backend
  activity_totals_.assign(h.n_layer, {});
  const std::vector<int32_t> zeros(size_t(h.n_layer) * kActivityCounters, 0);
  compute_.write(act_, activity_.offset, zeros.data(), zeros.size() * 4);
}

void Engine::collect_activity() {
  std::vector<int32_t> c(activity_totals_.size() * kActivityCounters);
  compute_.read(act_, activity_.offset, c.data(), c.size() * 4);
  bool any = false;
  for (size_t il = 0; il < activity_totals_.size(); ++il) {
    const int32_t* l = &c[il * kActivityCounters];
    ReluActivity& t = activity_totals_[il];
    t.active += uint64_t(l[0]), t.computed += uint64_t(l[1]), t.relaid += uint64_t(l[2]), t.relayout_us += uint64_t(l[3]);
    any |= l[1] != 0;
  }
  if (any) {  // zeroed after every chunk: the device's 32-bit counters never overflow
    std::fill(c.begin(), c.end(), 0);
    compute_.write(act_, activity_.offset, c.data(), c.size() * 4);
  }
}

void Engine::upload_weights(bool dense_only) {
  const GgufFile& f = model_.file();
  std::vector<uint64_t> experts;  // file offsets of expert tensors
  if (dense_only)
    for (uint32_t il = 0; il < model_.hp().n_layer; ++il)
      for (ExpertMatrix m : {ExpertMatrix::Gate, ExpertMatrix::Up, ExpertMatrix::Down})
        experts.push_back(model_.expert_tensor(il, m).offset);
  uint64_t total = 0;
  std::vector<const GgufTensorInfo*> uploads;
  for (const GgufTensorInfo& t : f.tensors()) {
    if (std::find(experts.begin(), experts.end(), t.offset) != experts.end()) continue;
    placed_[t.offset] = total;
    total = align_up(total + t.size, 256);
    uploads.push_back(&t);
  }
  weights_ = compute_.alloc(std::max<uint64_t>(total, 256), PMOE_BUFFER_READ_ONLY);
  for (const GgufTensorInfo* t : uploads) compute_.write(weights_, placed_[t->offset], f.base() + t->offset, t->size);
}

uint64_t Engine::placed(uint64_t file_offset) const {
  if (placed_.empty()) return file_offset;  // the whole file is the buffer
  const auto it = placed_.find(file_offset);
  if (it == placed_.end()) throw Error("internal: tensor at file offset " + std::to_string(file_offset) + " was not uploaded");
  return it->second;
}

void Engine::check_backend_supports() const {
  const Hparams& h = model_.hp();
  auto w = [](const GgufTensorInfo& t) { return pmoe_tensor_2d(nullptr, 0, t.type, t.ne[0], t.ne[1]); };
  auto a = [](int64_t n) { return pmoe_tensor_2d(nullptr, 0, PMOE_DTYPE_F32, n, 1); };
  const pmoe_tensor ids = pmoe_tensor_2d(nullptr, 0, PMOE_DTYPE_I32, 1, 1);
  // (op, the tensor it is named by)
  std::vector<std::pair<pmoe_op, const GgufTensorInfo*>> need;
  need.push_back({make_op(PMOE_OP_GET_ROWS, a(h.n_embd), {w(model_.token_embd()), ids}), &model_.token_embd()});
  need.push_back({make_op(PMOE_OP_MATMUL, a(h.n_vocab), {w(model_.output()), a(h.n_embd)}), &model_.output()});
  pmoe_op rms = make_op(PMOE_OP_RMS_NORM, a(h.n_embd), {a(h.n_embd), a(h.n_embd)});
  rms.f[0] = h.rms_eps;
  need.push_back({rms, nullptr});
  need.push_back({make_op(PMOE_OP_ADD, a(h.n_embd), {a(h.n_embd), a(h.n_embd)}), nullptr});
  pmoe_op att = make_op(PMOE_OP_ATTENTION, a(h.q_dim()), {a(h.q_dim()), a(h.kv_dim()), a(h.kv_dim()), ids});
  att.i[0] = h.n_head, att.i[1] = h.n_head_kv, att.i[2] = h.head_dim;
  need.push_back({att, nullptr});
  pmoe_op rope = make_op(PMOE_OP_ROPE_NEOX, a(h.q_dim()), {ids});
  rope.i[0] = h.n_rot;
  need.push_back({rope, nullptr});
  need.push_back({make_op(PMOE_OP_MOE_COMBINE, a(h.n_embd), {a(h.n_embd), ids, a(h.n_expert_used)}), nullptr});
  for (uint32_t il = 0; il < h.n_layer; ++il) {
    const LayerTensors& L = model_.layer(il);
    for (const GgufTensorInfo* t : {L.router, L.wq, L.wk, L.wv, L.wo})
      need.push_back({make_op(PMOE_OP_MATMUL, a(t->ne[1]), {w(*t), a(t->ne[0])}), t});
    const GgufTensorInfo& g = model_.expert_tensor(il, ExpertMatrix::Gate);
    need.push_back({make_op(PMOE_OP_MOE_EXPERT, a(h.n_embd),
                            {w(g), w(model_.expert_tensor(il, ExpertMatrix::Up)),
                             w(model_.expert_tensor(il, ExpertMatrix::Down)), a(h.n_embd), ids}),
                    &g});
  }
  for (const auto& [op, t] : need) {
    const std::string why = compute_.unsupported(op);
    if (why.empty()) continue;
    std::string types;
    for (uint32_t i = 0; i < op.n_src; ++i) types += std::string(i ? "," : "") + pmoe_dtype_name(op.src[i].dtype);
    throw Error("compute backend '" + compute_.name() + "' cannot run " + model_.file().path() + ": op " +
                pmoe_op_name(op.kind) + " with " + types + (t ? " (tensor '" + t->name + "')" : "") + ": " + why);
  }
}

Engine::~Engine() {
  try {
    reap_all();
  } catch (...) {  // a failed device: the slots stay pinned, the cache is torn down anyway
  }
  if (ahead_) compute_.free(ahead_);
  compute_.free(act_);
  compute_.free(kv_);
  compute_.free(weights_);
}

void Engine::set_expert_cache(ExpertCache* cache, uint32_t lookahead, bool pre_attention) {
  cache_ = cache;
  lookahead_ = cache ? lookahead : 0;
  pre_attention_ = pre_attention;
  if (ahead_) compute_.free(ahead_);
  ahead_ = nullptr;
  if (lookahead_) ahead_ = compute_.alloc(uint64_t(lookahead_) * ubatch_ * model_.hp().n_expert * 4, 0);
}

pmoe_tensor Engine::weight(const GgufTensorInfo& t) const {
  return pmoe_tensor_2d(weights_, placed(t.offset), t.type, t.ne[0], t.ne[1]);
}

ExpertView Engine::resident_expert(uint32_t il, uint32_t e) const {
  auto view = [&](ExpertMatrix m) {
    const GgufTensorInfo& t = model_.expert_tensor(il, m);
    const uint64_t at = placed(t.offset) + (model_.expert_offset(il, m, e) - t.offset);
    return pmoe_tensor_2d(weights_, at, t.type, t.ne[0], t.ne[1]);
  };
  return {view(ExpertMatrix::Gate), view(ExpertMatrix::Up), view(ExpertMatrix::Down)};
}

pmoe_op Engine::expert_op(uint32_t il, const ExpertSpans& spans, size_t s, const ExpertView& w,
                          const pmoe_tensor& n2) const {
  const uint32_t first = spans.list[s].second;
  const uint32_t count = (s + 1 < spans.list.size() ? spans.list[s + 1].second : spans.rows) - first;
  return make_op(PMOE_OP_MOE_EXPERT, act(ey_, PMOE_DTYPE_F32, model_.hp().n_embd, count, first),
                 {w.gate, w.up, w.down, n2,
                  pmoe_tensor_2d(act_, route_tok_.offset + uint64_t(first) * 4, PMOE_DTYPE_I32, count, 1),
                  pmoe_tensor_2d(act_, activity_.offset + uint64_t(il) * kActivityCounters * 4, PMOE_DTYPE_I32,
                                 kActivityCounters, 1)});
}

pmoe_tensor Engine::act(Region r, uint32_t dtype, int64_t ne0, int64_t ne1, uint64_t row_offset) const {
  const uint64_t row = pmoe_dtype_row_bytes(dtype, uint64_t(ne0));
  return pmoe_tensor_2d(act_, r.offset + row_offset * row, dtype, ne0, ne1);
}

pmoe_tensor Engine::kv(uint32_t il, bool v, uint32_t first, uint32_t n) const {
  const uint64_t row = uint64_t(model_.hp().kv_dim()) * 4;
  const uint64_t base = (uint64_t(il) * 2 + (v ? 1 : 0)) * n_ctx_ * row;
  return pmoe_tensor_2d(kv_, base + first * row, PMOE_DTYPE_F32, model_.hp().kv_dim(), n);
}

void Engine::eval(std::span<const int32_t> tokens, bool all_logits, std::vector<float>& logits) {
  if (tokens.empty()) return;
  if (uint64_t(n_past_) + tokens.size() > n_ctx_)
    throw Error("context is full: " + std::to_string(n_past_) + " + " +
                std::to_string(tokens.size()) + " tokens exceed the context size " +
                std::to_string(n_ctx_) + " (raise --ctx-size)");
  for (int32_t t : tokens)
    if (t < 0 || uint32_t(t) >= model_.hp().n_vocab)
      throw Error("token id " + std::to_string(t) + " is outside the vocabulary [0, " +
                  std::to_string(model_.hp().n_vocab) + ")");
  for (size_t i = 0; i < tokens.size(); i += ubatch_) {
    const uint32_t n = uint32_t(std::min<size_t>(ubatch_, tokens.size() - i));
    const bool last_chunk = i + n == tokens.size();
    eval_chunk(tokens.data() + i, n, all_logits ? Logits::All : last_chunk ? Logits::Last : Logits::None,
               logits);
  }
}

void Engine::top_k(const float* logits, uint32_t n, std::vector<int32_t>& sel, std::vector<float>& w,
                   std::vector<float>* probs) const {
  const Hparams& h = model_.hp();
  const uint32_t E = h.n_expert, K = h.n_expert_used;
  sel.resize(size_t(n) * K);
  w.resize(size_t(n) * K);
  if (probs) probs->resize(size_t(n) * E);
  std::vector<float> p(E);
  std::vector<int32_t> order(E);
  for (uint32_t t = 0; t < n; ++t) {
    const float* r = logits + size_t(t) * E;
    if (h.gating == Gating::Softmax) {  // as ggml: max-shifted exp, double sum, scaled by 1/sum
      const float mx = *std::max_element(r, r + E);
      double sum = 0.0;
      for (uint32_t e = 0; e < E; ++e) sum += (p[e] = std::exp(r[e] - mx));
      const float inv = float(1.0 / sum);
      for (uint32_t e = 0; e < E; ++e) p[e] *= inv;
    } else {
      for (uint32_t e = 0; e < E; ++e) p[e] = 1.f / (1.f + std::exp(-r[e]));
    }
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return p[a] > p[b]; });
    double sum = 0.0;  // as ggml_sum_rows
    for (uint32_t j = 0; j < K; ++j) sum += p[order[j]];
    const float wsum = std::max(float(sum), 6.103515625e-5f);
    for (uint32_t j = 0; j < K; ++j) {
      sel[size_t(t) * K + j] = order[j];
      w[size_t(t) * K + j] = p[order[j]] / wsum;
    }
    if (probs) std::copy(p.begin(), p.end(), probs->begin() + long(size_t(t) * E));
  }
}

void Engine::route(uint32_t il, uint32_t n) {
  const uint32_t E = model_.hp().n_expert;
  router_host_.resize(size_t(n) * E);
  compute_.read(act_, router_.offset, router_host_.data(), router_host_.size() * 4);
  top_k(router_host_.data(), n, sel_, sel_w_, cache_ ? &probs_ : nullptr);
  if (cache_) cache_->on_routing(il, probs_.data(), n, E);
  if (observer_) observer_({il, n, n_past_, sel_, sel_w_});
}

std::vector<uint32_t> Engine::lookahead_layers(uint32_t il) const {
  // The first layer routes all `lookahead_` layers ahead; later ones only the new farthest layer
  // and, as a refined guess, the next one (its reads are the most urgent). So a layer reads at
  // most two extra routers whatever the lookahead: each is a dense f32 matrix, and reading N of
  // them per layer cost more decode time than the reads they hid.
  std::vector<uint32_t> layers;
  if (!cache_ || !pre_attention_) return layers;  // no prefetching at all: the A/B baseline
  for (uint32_t j = 1; j <= lookahead_ && il + j < model_.hp().n_layer; ++j)
    if (il == 0 || j == 1 || j == lookahead_) layers.push_back(il + j);
  return layers;
}

void Engine::prefetch_ahead(std::span<const uint32_t> layers, uint32_t n) {
  // Later layers' routers were applied to this layer's input with its own router: their residual
  // stream is not known yet, but it stays close, so their choice is a good guess.
  const uint64_t block = uint64_t(n) * model_.hp().n_expert;  // floats of one layer's router logits
  std::vector<float> logits(layers.size() * block);
  compute_.read(ahead_, 0, logits.data(), logits.size() * 4);
  std::vector<int32_t> sel;
  std::vector<float> w;
  for (size_t i = 0; i < layers.size(); ++i) {
    top_k(logits.data() + i * block, n, sel, w, nullptr);
    // Priority = the layer that needs it, so storage serves the earliest-needed read first (an
    // older guess for a nearer layer before a newer one for a farther layer).
    for (int32_t e : sel) cache_->prefetch(layers[i], uint32_t(e), layers[i] + 1);
  }
}

void Engine::reap(bool block) {
  if (block && !in_flight_.empty()) compute_.wait(in_flight_.front().ticket);
  size_t n = 0;  // tickets complete in order
  while (n < in_flight_.size() && compute_.done(in_flight_[n].ticket)) ++n;
  for (size_t i = 0; i < n; ++i) cache_->release(in_flight_[i].lease);
  in_flight_.erase(in_flight_.begin(), in_flight_.begin() + long(n));
}

void Engine::reap_all() {
  if (in_flight_.empty()) return;
  compute_.wait(in_flight_.back().ticket);
  reap(false);
}

void Engine::acquire_more(uint32_t il, const ExpertSpans& spans, StreamState& st) {
  reap(false);
  while (st.next < spans.list.size()) {
    const std::optional<ExpertLease> lease = cache_->acquire(il, spans.list[st.next].first);
    if (!lease) break;
    st.pending.push_back(*lease);
    st.pending_span.push_back(st.next++);
  }
}

void Engine::run_experts_streamed(uint32_t il, const ExpertSpans& spans, const pmoe_tensor& n2,
                                  StreamState& st) {
  acquire_more(il, spans, st);  // all but the first wave were acquired before attention
  while (!st.pending.empty() || st.next < spans.list.size()) {
    if (st.pending.empty()) {
      // No slot could be had: free ours once the device is done with them, or else wait for the
      // loading prefetches that took the rest.
      if (!in_flight_.empty())
        reap(true);
      else
        cache_->wait_for_slot();
      acquire_more(il, spans, st);
      continue;
    }
    // each expert is submitted as soon as its own weights have landed; no waiting for the device
    const size_t i = cache_->wait_any(st.pending);
    const pmoe_op op = expert_op(il, spans, st.pending_span[i], cache_->view(st.pending[i]), n2);
    in_flight_.push_back({compute_.submit({&op, 1}), st.pending[i]});
    st.pending.erase(st.pending.begin() + long(i));
    st.pending_span.erase(st.pending_span.begin() + long(i));
    acquire_more(il, spans, st);
  }
}

void Engine::eval_chunk(const int32_t* tokens, uint32_t n, Logits want, std::vector<float>& logits) {
  const Hparams& h = model_.hp();
  const uint32_t K = h.n_expert_used, E = h.n_expert;
  const int64_t D = h.n_embd;
  std::vector<int32_t> pos(n);
  std::iota(pos.begin(), pos.end(), int32_t(n_past_));
  compute_.write(act_, tok_ids_.offset, tokens, uint64_t(n) * 4);
  compute_.write(act_, pos_.offset, pos.data(), uint64_t(n) * 4);

  const pmoe_tensor x = act(x_, PMOE_DTYPE_F32, D, n);
  const pmoe_tensor positions = act(pos_, PMOE_DTYPE_I32, n, 1);
  std::vector<pmoe_op> ops;
  ops.push_back(make_op(PMOE_OP_GET_ROWS, x, {weight(model_.token_embd()), act(tok_ids_, PMOE_DTYPE_I32, n, 1)}));
  compute_.submit(ops);

  for (uint32_t il = 0; il < h.n_layer; ++il) {
    const LayerTensors& L = model_.layer(il);
    const LayerSpec& spec = h.layers[il];
    // 1. the router reads the raw layer input, before attention (so do the lookahead layers' ones)
    ops.assign({make_op(PMOE_OP_MATMUL, act(router_, PMOE_DTYPE_F32, E, n), {weight(*L.router), x})});
    const std::vector<uint32_t> ahead = lookahead_layers(il);
    for (size_t i = 0; i < ahead.size(); ++i)
      ops.push_back(make_op(PMOE_OP_MATMUL, pmoe_tensor_2d(ahead_, i * n * E * 4, PMOE_DTYPE_F32, E, n),
                            {weight(*model_.layer(ahead[i]).router), x}));
    compute_.wait(compute_.submit(ops));  // the one wait of a layer: routing happens on the host
    reap(false);                            // (so every earlier expert is done too)
    route(il, n);
    // routes grouped by expert; each expert writes its own rows of ey
    std::vector<int32_t> route_tok(size_t(n) * K), comb_idx(size_t(n) * K);
    ExpertSpans spans;
    uint32_t& row = spans.rows;
    for (uint32_t e = 0; e < E; ++e) {
      const uint32_t first = row;
      for (uint32_t t = 0; t < n; ++t)
        for (uint32_t j = 0; j < K; ++j)
          if (sel_[size_t(t) * K + j] == int32_t(e)) {
            route_tok[row] = int32_t(t);
            comb_idx[size_t(t) * K + j] = int32_t(row);
            ++row;
          }
      if (row > first) spans.list.emplace_back(e, first);
    }
    compute_.write(act_, route_tok_.offset, route_tok.data(), uint64_t(row) * 4);
    compute_.write(act_, comb_idx_.offset, comb_idx.data(), uint64_t(n) * K * 4);
    compute_.write(act_, comb_w_.offset, sel_w_.data(), uint64_t(n) * K * 4);
    // demand reads go out now, so they overlap the attention block
    StreamState stream(cache_);
    if (cache_ && pre_attention_) {
      acquire_more(il, spans, stream);
      if (!ahead.empty()) prefetch_ahead(ahead, n);
    }

    // 2. attention block
    ops.clear();
    const pmoe_tensor n1 = act(n1_, PMOE_DTYPE_F32, D, n);
    pmoe_op norm = make_op(PMOE_OP_RMS_NORM, n1, {x, weight(*L.attn_norm)});
    norm.f[0] = h.rms_eps;
    ops.push_back(norm);
    const pmoe_tensor q = act(q_, PMOE_DTYPE_F32, h.q_dim(), n);
    const pmoe_tensor kc = kv(il, false, n_past_, n), vc = kv(il, true, n_past_, n);
    ops.push_back(make_op(PMOE_OP_MATMUL, q, {weight(*L.wq), n1}));
    ops.push_back(make_op(PMOE_OP_MATMUL, kc, {weight(*L.wk), n1}));
    ops.push_back(make_op(PMOE_OP_MATMUL, vc, {weight(*L.wv), n1}));
    if (spec.rope) {
      for (auto [t, heads] : {std::pair{q, h.n_head}, std::pair{kc, h.n_head_kv}}) {
        pmoe_tensor v3 = t;  // {head_dim, heads, n}
        v3.ne[0] = h.head_dim;
        v3.ne[1] = heads;
        v3.ne[2] = n;
        v3.nb[1] = uint64_t(h.head_dim) * 4;
        v3.nb[2] = t.nb[1];
        v3.nb[3] = v3.nb[2] * n;
        pmoe_op r = make_op(PMOE_OP_ROPE_NEOX, v3, {positions});
        r.i[0] = h.n_rot;
        r.f[0] = spec.rope_base;
        ops.push_back(r);
      }
    }
    const pmoe_tensor attn = act(attn_, PMOE_DTYPE_F32, h.q_dim(), n);
    pmoe_op a = make_op(PMOE_OP_ATTENTION, attn,
                        {q, kv(il, false, 0, n_past_ + n), kv(il, true, 0, n_past_ + n), positions});
    a.i[0] = h.n_head;
    a.i[1] = h.n_head_kv;
    a.i[2] = h.head_dim;
    a.i[3] = spec.window;
    a.f[0] = 1.0f / std::sqrt(float(h.head_dim));
    ops.push_back(a);
    ops.push_back(make_op(PMOE_OP_MATMUL, n1, {weight(*L.wo), attn}));
    ops.push_back(make_op(PMOE_OP_ADD, x, {x, n1}));  // h = x + attn_out
    const pmoe_tensor n2 = act(n2_, PMOE_DTYPE_F32, D, n);
    pmoe_op fnorm = make_op(PMOE_OP_RMS_NORM, n2, {x, weight(*L.ffn_norm)});
    fnorm.f[0] = h.rms_eps;
    ops.push_back(fnorm);

    const pmoe_op combine = make_op(PMOE_OP_MOE_COMBINE, x,
                                    {act(ey_, PMOE_DTYPE_F32, D, row), act(comb_idx_, PMOE_DTYPE_I32, K, n),
                                     act(comb_w_, PMOE_DTYPE_F32, K, n)});
    // 3. experts, then their weighted sum in a fixed order
    if (cache_) {
      // the attention block runs while the expert reads submitted above are in flight
      compute_.submit(ops);
      run_experts_streamed(il, spans, n2, stream);
      compute_.submit({&combine, 1});
      continue;
    }
    for (size_t s = 0; s < spans.list.size(); ++s)
      ops.push_back(expert_op(il, spans, s, resident_expert(il, spans.list[s].first), n2));
    ops.push_back(combine);
    compute_.submit(ops);
  }

  // 4. output norm + lm_head, for every row or just the last
  const uint32_t first_row = want == Logits::All ? 0 : want == Logits::Last ? n - 1 : n;
  for (uint32_t r0 = first_row; r0 < n; r0 += logit_rows_) {
    const uint32_t rows = std::min(logit_rows_, n - r0);
    const pmoe_tensor xn = act(n1_, PMOE_DTYPE_F32, D, rows);
    pmoe_op norm = make_op(PMOE_OP_RMS_NORM, xn, {act(x_, PMOE_DTYPE_F32, D, rows, r0), weight(model_.output_norm())});
    norm.f[0] = h.rms_eps;
    ops.assign({norm, make_op(PMOE_OP_MATMUL, act(logits_, PMOE_DTYPE_F32, h.n_vocab, rows),
                              {weight(model_.output()), xn})});
    compute_.wait(compute_.submit(ops));
    const size_t at = logits.size();
    logits.resize(at + size_t(rows) * h.n_vocab);
    compute_.read(act_, logits_.offset, logits.data() + at, uint64_t(rows) * h.n_vocab * 4);
  }
  reap_all();  // no logits wanted: nothing waited since the last layer's experts
  collect_activity();
  n_past_ += n;
  if (cache_) cache_->next_tick();
}

}  // namespace pmoe
