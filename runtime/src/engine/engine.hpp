#pragma once
// The SmallThinker forward pass, expressed as batches of compute-ABI ops (one execute for the
// router, one for the rest of the layer), so any compute backend runs it. Owns the KV cache.
#include "model/model.hpp"
#include "experts/expert_cache.hpp"
#include "plugin/compute_backend.hpp"

#include <cstdint>
#include <functional>
#include <span>
#include <vector>

namespace pmoe {

struct EngineOptions {
  uint32_t n_ctx = 0;    // KV-cache positions; 0 = min(context_length, 4096)
  uint32_t ubatch = 256; // tokens per forward chunk during prefill
};

/// Expert choice of one layer for a chunk of tokens: experts[t * k + j], best first.
struct RoutingEvent {
  uint32_t layer;
  uint32_t n_tokens;
  uint32_t first_position;
  std::span<const int32_t> experts;
  std::span<const float> weights;
};

class Engine {
 public:
  Engine(const Model& model, ComputeBackend& compute, EngineOptions options = {});
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  /// Feed `tokens` at the next positions (appending to the KV cache). Appends to `logits` one row
  /// of n_vocab floats per token when `all_logits`, else only the row of the last token.
  void eval(std::span<const int32_t> tokens, bool all_logits, std::vector<float>& logits);
  /// Forget the context (positions restart at 0).
  void reset() { n_past_ = 0; }
  uint32_t n_past() const { return n_past_; }
  uint32_t n_ctx() const { return n_ctx_; }
  const Model& model() const { return model_; }

  /// Stream experts through `cache` instead of reading them from the mapped file; route
  /// `lookahead` later layers ahead and prefetch their likely experts. nullptr: all resident.
  void set_expert_cache(ExpertCache* cache, uint32_t lookahead, bool pre_attention = true);
  ExpertCache* expert_cache() const { return cache_; }

  /// Called after each layer's routing decision (tests, statistics, cache policies).
  void set_routing_observer(std::function<void(const RoutingEvent&)> f) { observer_ = std::move(f); }

 private:
  struct Region {
    uint64_t offset = 0;
  };
  enum class Logits { None, Last, All };
  void eval_chunk(const int32_t* tokens, uint32_t n, Logits want, std::vector<float>& logits);
  void route(uint32_t il, uint32_t n);
  void top_k(const float* router_logits, uint32_t n, std::vector<int32_t>& sel, std::vector<float>& w,
             std::vector<float>* probs) const;
  /// A chunk's routes grouped by expert: (expert, first row in ey), rows in expert order.
  struct ExpertSpans {
    std::vector<std::pair<uint32_t, uint32_t>> list;
    uint32_t rows = 0;
  };
  struct StreamState {
    ExpertCache* cache = nullptr;
    size_t next = 0;                  // next span (expert) to acquire
    std::vector<uint64_t> pending;    // acquired, not yet computed
    std::vector<size_t> pending_span;
    explicit StreamState(ExpertCache* c) : cache(c) {}
    StreamState(const StreamState&) = delete;
    StreamState& operator=(const StreamState&) = delete;
    ~StreamState() {  // after an error: unpin what was acquired, so the session can go on
      for (uint64_t k : pending) cache->release(PMOE_KEY_LAYER(k), PMOE_KEY_EXPERT(k));
    }
  };
  void acquire_more(uint32_t il, const ExpertSpans& spans, StreamState& st);
  void run_experts_streamed(uint32_t il, const ExpertSpans& spans, const pmoe_tensor& n2, StreamState& st);
  /// The MOE_EXPERT op of span `s`, with the expert's weights `w` (mapped file or cache slot).
  pmoe_op expert_op(const ExpertSpans& spans, size_t s, const ExpertView& w, const pmoe_tensor& n2) const;
  ExpertView resident_expert(uint32_t il, uint32_t e) const;
  /// Layers whose routers run ahead at layer `il` (empty without a cache or lookahead).
  std::vector<uint32_t> lookahead_layers(uint32_t il) const;
  /// Prefetch the top-k experts of `layers` from their router logits in `ahead_`.
  void prefetch_ahead(std::span<const uint32_t> layers, uint32_t n);
  pmoe_tensor weight(const GgufTensorInfo& t) const;
  pmoe_tensor act(Region r, uint32_t dtype, int64_t ne0, int64_t ne1, uint64_t row_offset = 0) const;
  pmoe_tensor kv(uint32_t il, bool v, uint32_t first, uint32_t n) const;

  const Model& model_;
  ComputeBackend& compute_;
  uint32_t n_ctx_ = 0, ubatch_ = 0, logit_rows_ = 0;
  uint32_t n_past_ = 0;
  pmoe_buffer* weights_ = nullptr;  // the whole GGUF mapping (or a copy of it)
  pmoe_buffer* kv_ = nullptr;
  pmoe_buffer* act_ = nullptr;
  pmoe_buffer* ahead_ = nullptr;    // router logits of the lookahead layers, [lookahead][ubatch][n_expert]
  Region x_, n1_, q_, attn_, n2_, router_, ey_, tok_ids_, pos_, route_tok_, comb_idx_, comb_w_, logits_;
  // host-side routing of the current chunk
  std::vector<float> router_host_;
  std::vector<int32_t> sel_;
  std::vector<float> sel_w_;
  std::vector<float> probs_;
  ExpertCache* cache_ = nullptr;
  uint32_t lookahead_ = 0;
  bool pre_attention_ = true;
  std::function<void(const RoutingEvent&)> observer_;
};

}  // namespace pmoe
