#pragma once
// The SmallThinker forward pass, expressed as batches of compute-ABI ops, so any compute backend
// runs it. Per layer the host waits once, for the router's logits (routing is decided on the
// host); attention, each expert (as its weights land) and the combine are submitted without
// waiting, and streamed experts' slots go back to the cache when their ticket completes.
// Owns the KV cache.
#include "model/model.hpp"
#include "experts/expert_cache.hpp"
#include "plugin/compute_backend.hpp"

#include <cstdint>
#include <array>
#include <functional>
#include <span>
#include <unordered_map>
#include <vector>

namespace pmoe {

/// A chunk this size reads each expert at most once per layer for 256 tokens: streamed prefill of
/// the 4B model at 1 GiB ran 3.2x faster than with chunks of 8, reading 1.8 GiB instead of 50.
inline constexpr uint32_t kDefaultPrefillChunk = 256;

struct EngineOptions {
  uint32_t n_ctx = 0;    // KV-cache positions; 0 = min(context_length, 4096)
  /// Tokens per forward chunk during prefill; 0 = kDefaultPrefillChunk. The kernels sum a batch
  /// in llama.cpp's order for its size, so the chunking is part of the result: RAM and streamed
  /// runs use the same one (Session: --ubatch, else the config's prefetch.prefill_chunk).
  uint32_t ubatch = 0;
  /// Experts will stream through an expert cache: a backend that cannot adopt the mapped file
  /// then gets only the dense tensors uploaded, never the experts.
  bool experts_streamed = false;
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
  uint32_t ubatch() const { return ubatch_; }
  const Model& model() const { return model_; }

  /// Stream experts through `cache` instead of reading them from the mapped file; route
  /// `lookahead` later layers ahead and prefetch their likely experts. nullptr: all resident.
  void set_expert_cache(ExpertCache* cache, uint32_t lookahead, bool pre_attention = true);
  ExpertCache* expert_cache() const { return cache_; }

  /// ReGLU activity per layer since construction, over every expert use: active neurons
  /// (gate > 0), neurons computed, and what re-laying weights for sparse kernels cost. All zero
  /// when the backend does not count (MOE_EXPERT's src5).
  struct ReluActivity {
    uint64_t active = 0, computed = 0, relaid = 0, relayout_us = 0;
  };
  const std::vector<ReluActivity>& reglu_activity() const { return activity_totals_; }

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
    std::vector<ExpertLease> pending; // acquired, not yet computed
    std::vector<size_t> pending_span;
    explicit StreamState(ExpertCache* c) : cache(c) {}
    StreamState(const StreamState&) = delete;
    StreamState& operator=(const StreamState&) = delete;
    ~StreamState() {  // after an error: unpin what was acquired, so the session can go on
      for (const ExpertLease& l : pending) cache->release(l);
    }
  };
  /// A streamed expert whose op was submitted: its slot stays pinned until `ticket` completes.
  struct InFlight {
    uint64_t ticket;
    ExpertLease lease;
  };
  /// Release the slots of completed submissions; with `block`, first wait for the oldest one.
  void reap(bool block);
  /// Wait for every submitted expert and release its slot.
  void reap_all();
  /// Refuse a backend that lacks an op or dtype this model needs (naming op, dtype, tensor).
  void check_backend_supports() const;
  /// Without buffer_wrap: upload the tensors the backend computes from (offsets in placed_).
  void upload_weights(bool dense_only);
  void acquire_more(uint32_t il, const ExpertSpans& spans, StreamState& st);
  void run_experts_streamed(uint32_t il, const ExpertSpans& spans, const pmoe_tensor& n2, StreamState& st);
  /// The MOE_EXPERT op of span `s`, with the expert's weights `w` (mapped file or cache slot).
  pmoe_op expert_op(uint32_t il, const ExpertSpans& spans, size_t s, const ExpertView& w, const pmoe_tensor& n2) const;
  /// Adds the device's activity counters to activity_totals_ and zeroes them.
  void collect_activity();
  ExpertView resident_expert(uint32_t il, uint32_t e) const;
  /// Layers whose routers run ahead at layer `il` (empty without a cache or lookahead).
  std::vector<uint32_t> lookahead_layers(uint32_t il) const;
  /// Prefetch the top-k experts of `layers` from their router logits in `ahead_`.
  void prefetch_ahead(std::span<const uint32_t> layers, uint32_t n);
  pmoe_tensor weight(const GgufTensorInfo& t) const;
  /// Where the tensor starting at file offset `file_offset` lies in weights_.
  uint64_t placed(uint64_t file_offset) const;
  pmoe_tensor act(Region r, uint32_t dtype, int64_t ne0, int64_t ne1, uint64_t row_offset = 0) const;
  pmoe_tensor kv(uint32_t il, bool v, uint32_t first, uint32_t n) const;

  const Model& model_;
  ComputeBackend& compute_;
  uint32_t n_ctx_ = 0, ubatch_ = 0, logit_rows_ = 0;
  uint32_t n_past_ = 0;
  pmoe_buffer* weights_ = nullptr;  // the whole GGUF mapping, or the uploaded tensors
  std::unordered_map<uint64_t, uint64_t> placed_;  // file offset -> weights_ offset (uploads only)
  std::vector<InFlight> in_flight_;
  pmoe_buffer* kv_ = nullptr;
  pmoe_buffer* act_ = nullptr;
  pmoe_buffer* ahead_ = nullptr;    // router logits of the lookahead layers, [lookahead][ubatch][n_expert]
  Region x_, n1_, q_, attn_, n2_, router_, ey_, tok_ids_, pos_, route_tok_, comb_idx_, comb_w_, logits_, activity_;
  std::vector<ReluActivity> activity_totals_;
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
