/*
 * pocketmoe SDK: expert-cache replacement policies.
 *
 * The runtime owns the cache: its memory, its slots, which expert sits where, what is pinned
 * because a computation or a read is using it. A policy only keeps the bookkeeping it needs to
 * rank resident entries and, when the runtime needs room, proposes victims. Calls are
 * batch-shaped: one call per layer step, not per expert.
 *
 * Keys: one cache entry is one expert of one layer, key = PMOE_EXPERT_KEY(layer, expert).
 *
 * Sequence the runtime guarantees for each key: on_insert (became resident) -> any number of
 * on_access -> on_evict (left the cache). `victims` only proposes; the runtime skips pinned
 * entries and then reports the ones it really removed through on_evict.
 *
 * Calls are serialised by the runtime (never concurrent on one instance).
 */
#ifndef POCKETMOE_CACHE_POLICY_H
#define POCKETMOE_CACHE_POLICY_H

#include "abi.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct pmoe_cache_policy pmoe_cache_policy; /**< opaque policy instance */

#define PMOE_EXPERT_KEY(layer, expert) ((((uint64_t)(layer)) << 32) | (uint32_t)(expert))
#define PMOE_KEY_LAYER(key) ((uint32_t)((key) >> 32))
#define PMOE_KEY_EXPERT(key) ((uint32_t)(key))

/** Shape of the cache the policy serves, passed to create. */
typedef struct pmoe_cache_shape {
  uint32_t struct_size;
  uint32_t n_layers;
  uint32_t n_experts;   /**< experts per layer */
  uint32_t top_k;       /**< experts used per token per layer */
  uint64_t capacity;    /**< entries (slots) the cache can hold */
} pmoe_cache_shape;

typedef struct pmoe_cache_policy_vtable {
  uint32_t struct_size; /**< sizeof(pmoe_cache_policy_vtable) the plugin was built with */
  uint32_t reserved;

  pmoe_status (*create)(const pmoe_host* host, const pmoe_options* options,
                        const pmoe_cache_shape* shape, pmoe_cache_policy** out, pmoe_error* err);
  void (*destroy)(pmoe_cache_policy* p);

  /** Entries became resident (loaded into a slot), in order. */
  void (*on_insert)(pmoe_cache_policy* p, const uint64_t* keys, size_t n);

  /** Entries were used by a computation (hits and freshly inserted misses alike), in order.
   *  `tick` grows by one per decode step or prefill chunk. */
  void (*on_access)(pmoe_cache_policy* p, const uint64_t* keys, size_t n, uint64_t tick);

  /** Entries left the cache. */
  void (*on_evict)(pmoe_cache_policy* p, const uint64_t* keys, size_t n);

  /** Propose up to `max` resident entries to evict, best victim first, without changing state.
   *  Returns how many were written to `out`. The runtime asks for more than it needs when some
   *  entries are pinned. */
  size_t (*victims)(pmoe_cache_policy* p, uint64_t* out, size_t max);

  /** Optional (may be NULL): the gating probabilities of every expert of `layer`, for
   *  `n_tokens` tokens, row-major [n_tokens][n_experts]. Router-aware policies use it to rank
   *  entries by how likely they are to be needed. */
  void (*on_routing)(pmoe_cache_policy* p, uint32_t layer, const float* probs, uint32_t n_tokens,
                     uint32_t n_experts);
} pmoe_cache_policy_vtable;

#ifdef __cplusplus
}
#endif
#endif /* POCKETMOE_CACHE_POLICY_H */
