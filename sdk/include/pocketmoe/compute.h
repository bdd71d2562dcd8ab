/*
 * pocketmoe SDK: compute backends.
 *
 * A compute backend owns device memory (buffers) and executes lists of operations on tensors that
 * live in those buffers. The host records the work of one step (a layer's attention block, one
 * expert's FFN) as an array of pmoe_op and hands it over in one `execute` call, so a GPU backend
 * can turn it into one command buffer and one queue submission. `execute` may return before the
 * work is done; results are visible to `buffer_read` / host pointers after `sync`. A CPU backend
 * may simply run the ops inside `execute`. Since ABI 1.2, `submit` returns a ticket per
 * submission and `wait(ticket)` waits for just that much work, so the host can keep recording
 * (each expert as its weights land) and hand a slot back to the expert cache when the ticket
 * that read it completes, instead of draining the device with `sync`.
 *
 * Tensors: a pmoe_tensor names a region of a buffer plus a type and up to 4 dimensions, GGUF order
 * (ne[0] contiguous). Weight tensors may be of any pmoe_dtype; activations are F32, positions and
 * row indices I32. A 2-D weight {in, out} is `out` rows of `in` values and is applied as y = W x.
 * Activations are {n, n_tokens}: one contiguous row of n values per token.
 *
 * Buffers: `buffer_alloc` returns memory aligned to at least 4 KiB. With PMOE_BUFFER_HOST_VISIBLE
 * it must be mappable (buffer_host_ptr non-NULL): the runtime reads expert weights from storage
 * straight into such buffers (O_DIRECT) and a GPU uses them in place where the hardware allows.
 * `buffer_wrap` (optional) adopts host memory, such as the read-only mapping of a GGUF file,
 * without copying; a backend that cannot returns PMOE_ERR_NOT_SUPPORTED and the host copies.
 *
 * Threading: the host calls one instance from one thread at a time.
 */
#ifndef POCKETMOE_COMPUTE_H
#define POCKETMOE_COMPUTE_H

#include "abi.h"
#include "dtype.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct pmoe_compute pmoe_compute; /**< opaque backend instance */
typedef struct pmoe_buffer pmoe_buffer;   /**< opaque buffer handle */

/** buffer_alloc / buffer_wrap flags. */
#define PMOE_BUFFER_HOST_VISIBLE 0x1u /**< host pointer required (storage reads land in it) */
#define PMOE_BUFFER_READ_ONLY 0x2u    /**< weights: never written by ops */

/** get_props: what kind of device runs the ops. */
typedef enum pmoe_device_type {
  PMOE_DEVICE_CPU = 0,
  PMOE_DEVICE_INTEGRATED_GPU = 1, /**< shares system RAM with the CPU */
  PMOE_DEVICE_DISCRETE_GPU = 2,   /**< own memory behind a bus: host-visible memory is slow to it */
  PMOE_DEVICE_OTHER = 3
} pmoe_device_type;

/** Device properties (ABI 1.2, get_props). The host sets struct_size; the backend fills what
 *  lies inside it. Sizes are bytes; 0 means "unknown / no limit". */
typedef struct pmoe_compute_props {
  uint32_t struct_size;
  uint32_t device_type;         /**< pmoe_device_type */
  char name[128];               /**< e.g. "AMD Ryzen 7 7840U (avx512_vnni)", "Intel(R) Graphics (RPL-P)" */
  uint32_t unified_memory;      /**< 1: host-visible buffers are as fast for the device as any */
  uint32_t reserved;
  uint64_t device_memory;       /**< device-local memory (the system RAM for a CPU or an iGPU) */
  uint64_t host_visible_memory; /**< memory usable for PMOE_BUFFER_HOST_VISIBLE buffers */
  uint64_t max_buffer_size;     /**< largest single buffer_alloc */
  uint64_t alignment;           /**< tensor offsets within a buffer must be multiples of this */
} pmoe_compute_props;

/** A view of a buffer. Contiguous rows: nb[1] = bytes of one row, nb[2] = nb[1] * ne[1], ... */
typedef struct pmoe_tensor {
  pmoe_buffer* buffer;
  uint64_t offset;   /**< bytes from the start of the buffer */
  uint32_t dtype;    /**< pmoe_dtype */
  uint32_t reserved;
  int64_t ne[4];     /**< elements per dimension, unused = 1 */
  uint64_t nb[4];    /**< byte stride per dimension (nb[0] = bytes of one block) */
} pmoe_tensor;

/** Operation kinds. Values are stable; new ones are only added (a backend answers an unknown
 *  kind with PMOE_ERR_NOT_SUPPORTED). `src[i]` and parameters as documented per kind. */
typedef enum pmoe_op_kind {
  /** dst{n, r} = src0[ids[r]] converted to F32. src0: table {n, rows} any dtype; src1: ids I32 {r}. */
  PMOE_OP_GET_ROWS = 1,
  /** dst = src0 / sqrt(mean(src0^2) + eps) * src1, per row. src1: weight F32 {n}. f[0] = eps. */
  PMOE_OP_RMS_NORM = 2,
  /** dst{out, t} (+)= src0 · src1: src0 weight {in, out} any dtype, src1 F32 {in, t}.
   *  i[0] = 1 to accumulate into dst instead of overwriting. */
  PMOE_OP_MATMUL = 3,
  /** dst = src0 + src1, element-wise, same shapes, F32. */
  PMOE_OP_ADD = 4,
  /** NEOX rotary embedding, in place on dst {head_dim, n_heads, t}: dims i and i + n_rot/2 rotate
   *  by pos * base^(-2i/n_rot). src0: positions I32 {t}. i[0] = n_rot, f[0] = base.
   *  Angles are built like ggml: float32, theta_{i+1} = theta_i * base^(-2/n_rot). */
  PMOE_OP_ROPE_NEOX = 5,
  /** Causal attention with GQA. dst F32 {head_dim * n_head, t}. src0: q F32 {head_dim * n_head, t};
   *  src1: K cache F32 {head_dim * n_head_kv, n_kv}; src2: V cache, same shape; src3: positions of
   *  the queries I32 {t}. Key row j holds position j. Query at position p attends to keys
   *  j <= p, and with a window w > 0 only to p - j < w. i[0] = n_head, i[1] = n_head_kv,
   *  i[2] = head_dim, i[3] = window (0 = none). f[0] = scale. */
  PMOE_OP_ATTENTION = 6,
  /** One expert of a ReGLU MoE layer, over the tokens routed to it. For each route r:
   *  dst[:, r] = down · (relu(gate · x) ⊙ (up · x)) with x = src3[:, tok[r]].
   *  src0 gate {n_embd, n_ff}, src1 up {n_embd, n_ff}, src2 down {n_ff, n_embd}: any dtype.
   *  src2 may instead be {n_embd, n_ff} (n_embd != n_ff): one row per neuron, as PowerInfer's
   *  --transpose-down stores it (since ABI 1.3): a backend that does not read that layout refuses
   *  it in supports_op; the host never sends it to a backend built for an older minor.
   *  src3: x F32 {n_embd, t}. src4: tok I32 {n_routes}. dst F32 {n_embd, n_routes}.
   *  Experts write separate rows, so they may run in any order (as their weights arrive).
   *  Optional (n_src = 6; older plugins ignore it): src5, I32 {2} or {4}, activity counters of a
   *  layer: a backend that counts adds the number of active neurons (gate > 0) to [0] and the
   *  number of neurons it computed (n_ff per route) to [1]; one that does not leaves them, and the
   *  host then reports no activity. Counting must not depend on the order experts run in. With
   *  {4}, a backend that re-lays weights for sparse kernels when they first arrive adds the
   *  matrices it re-laid to [2] and the microseconds that took to [3]. */
  PMOE_OP_MOE_EXPERT = 7,
  /** Weighted sum of expert outputs in a fixed order, so the result never depends on which expert
   *  ran first: dst[:, t] += sum_{j < k} w[j, t] * src0[:, idx[j, t]] (the sum is formed first,
   *  j ascending, then added). src0: expert outputs F32 {n_embd, n_routes}; src1: idx I32 {k, t};
   *  src2: w F32 {k, t}. dst F32 {n_embd, t}. */
  PMOE_OP_MOE_COMBINE = 9,
  /** dst = src0 (F32 copy of the same number of elements, e.g. into a KV-cache row range). */
  PMOE_OP_COPY = 8
} pmoe_op_kind;

/** Readable name of an op kind ("matmul", "moe_expert", ...); "unknown" for others. */
static inline const char* pmoe_op_name(uint32_t kind) {
  switch (kind) {
    case PMOE_OP_GET_ROWS: return "get_rows";
    case PMOE_OP_RMS_NORM: return "rms_norm";
    case PMOE_OP_MATMUL: return "matmul";
    case PMOE_OP_ADD: return "add";
    case PMOE_OP_ROPE_NEOX: return "rope_neox";
    case PMOE_OP_ATTENTION: return "attention";
    case PMOE_OP_MOE_EXPERT: return "moe_expert";
    case PMOE_OP_MOE_COMBINE: return "moe_combine";
    case PMOE_OP_COPY: return "copy";
  }
  return "unknown";
}

#define PMOE_OP_MAX_SRC 6

/** One operation. Unused sources are zeroed. */
typedef struct pmoe_op {
  uint32_t kind;  /**< pmoe_op_kind */
  uint32_t n_src;
  pmoe_tensor dst;
  pmoe_tensor src[PMOE_OP_MAX_SRC];
  int64_t i[4];   /**< integer parameters, per kind */
  float f[4];     /**< float parameters, per kind */
} pmoe_op;

/** Whether a MOE_EXPERT op's `down` (src2) is stored one row per neuron ({n_embd, n_ff}, ABI 1.3)
 *  rather than llama.cpp's {n_ff, n_embd}: its rows are gate's row length. */
static inline int pmoe_moe_down_neuron_rows(const pmoe_op* op) { return op->src[2].ne[0] != op->src[0].ne[1]; }

typedef struct pmoe_compute_vtable {
  uint32_t struct_size; /**< sizeof(pmoe_compute_vtable) the plugin was built with */
  uint32_t reserved;

  /** Make an instance with the options of the config's `compute:` section (e.g. threads). */
  pmoe_status (*create)(const pmoe_host* host, const pmoe_options* options, pmoe_compute** out,
                        pmoe_error* err);
  /** Free the instance; every buffer has been freed. */
  void (*destroy)(pmoe_compute* c);

  /** Allocate `size` bytes, aligned to at least 4096, with PMOE_BUFFER_* flags. */
  pmoe_status (*buffer_alloc)(pmoe_compute* c, uint64_t size, uint32_t flags, pmoe_buffer** out,
                              pmoe_error* err);
  /** Optional: adopt `size` bytes of host memory at `ptr` (alive until buffer_free) without a
   *  copy. NULL or PMOE_ERR_NOT_SUPPORTED: the host allocates and uploads instead. */
  pmoe_status (*buffer_wrap)(pmoe_compute* c, void* ptr, uint64_t size, uint32_t flags,
                             pmoe_buffer** out, pmoe_error* err);
  void (*buffer_free)(pmoe_compute* c, pmoe_buffer* b);
  /** Host address of the buffer, or NULL if it is not host-visible. */
  void* (*buffer_host_ptr)(pmoe_compute* c, pmoe_buffer* b);
  /** Copy host memory into / out of a buffer (ordered with execute: a read sees earlier ops). */
  pmoe_status (*buffer_write)(pmoe_compute* c, pmoe_buffer* b, uint64_t offset, const void* src,
                              uint64_t size, pmoe_error* err);
  pmoe_status (*buffer_read)(pmoe_compute* c, pmoe_buffer* b, uint64_t offset, void* dst,
                             uint64_t size, pmoe_error* err);

  /** Run `n` ops in order. Errors name the op index and what is wrong (unsupported dtype, shape). */
  pmoe_status (*execute)(pmoe_compute* c, const pmoe_op* ops, size_t n, pmoe_error* err);
  /** Wait until all executed work is finished and visible to the host. */
  pmoe_status (*sync)(pmoe_compute* c, pmoe_error* err);

  /* ---- ABI 1.2 (all optional: check with PMOE_HAS_MEMBER; the host falls back as noted) ---- */

  /** Describe the device (fills the members of `*props` that lie inside props->struct_size, which
   *  the host sets). Absent: the host assumes a CPU with unified memory and no size limits. */
  pmoe_status (*get_props)(pmoe_compute* c, pmoe_compute_props* props, pmoe_error* err);
  /** Can this instance run `op`? Only the kind, i[], f[] and the tensors' dtypes and shapes are
   *  meaningful (buffers may be NULL). The host asks at load time for every op a model needs, and
   *  refuses the config then, naming op, dtype and tensor. PMOE_OK: yes; PMOE_ERR_NOT_SUPPORTED
   *  with a message saying what is missing: no. Absent: the ABI 1.0 ops and dtypes of its minor. */
  pmoe_status (*supports_op)(pmoe_compute* c, const pmoe_op* op, pmoe_error* err);
  /** Like `execute`, and also return a ticket for this submission. Tickets grow by submission and
   *  complete in order: once ticket t is complete, so are all before it. A backend that runs ops
   *  inside the call returns tickets that are already complete. Absent: the host calls `execute`
   *  and waits with `sync`. */
  pmoe_status (*submit)(pmoe_compute* c, const pmoe_op* ops, size_t n, uint64_t* ticket,
                        pmoe_error* err);
  /** Wait up to `timeout_ns` for `ticket` (and so every earlier one) to complete; its results are
   *  then visible to buffer_read and host pointers. PMOE_OK: complete; PMOE_ERR_TIMEOUT: not yet
   *  (a timeout of 0 polls); anything else: the work failed. Absent: `sync`. */
  pmoe_status (*wait)(pmoe_compute* c, uint64_t ticket, uint64_t timeout_ns, pmoe_error* err);
  /** The host wrote `size` bytes at `offset` through buffer_host_ptr (e.g. a storage read landed
   *  in an expert slot): make them visible to the device before the next submission that uses
   *  them (non-coherent memory, or a staged upload to device-local memory). Absent: no-op. */
  pmoe_status (*buffer_flush_range)(pmoe_compute* c, pmoe_buffer* b, uint64_t offset,
                                    uint64_t size, pmoe_error* err);
} pmoe_compute_vtable;

/** A tensor view helper: contiguous rows of `ne0` values of `dtype`. */
static inline pmoe_tensor pmoe_tensor_2d(pmoe_buffer* b, uint64_t offset, uint32_t dtype,
                                         int64_t ne0, int64_t ne1) {
  pmoe_tensor t;
  memset(&t, 0, sizeof t);
  t.buffer = b;
  t.offset = offset;
  t.dtype = dtype;
  t.ne[0] = ne0;
  t.ne[1] = ne1;
  t.ne[2] = 1;
  t.ne[3] = 1;
  t.nb[0] = pmoe_dtype_block_bytes(dtype);
  t.nb[1] = pmoe_dtype_row_bytes(dtype, (uint64_t)ne0);
  t.nb[2] = t.nb[1] * (uint64_t)ne1;
  t.nb[3] = t.nb[2];
  return t;
}

/** Bytes a tensor view spans from its first byte (0 for an unknown dtype): what a backend checks
 *  against its buffer before touching it. */
static inline uint64_t pmoe_tensor_extent(const pmoe_tensor* t) {
  const uint64_t row = pmoe_dtype_row_bytes(t->dtype, (uint64_t)t->ne[0]);
  if (row == 0) return 0;
  return row + (uint64_t)(t->ne[1] - 1) * t->nb[1] + (uint64_t)(t->ne[2] - 1) * t->nb[2] +
         (uint64_t)(t->ne[3] - 1) * t->nb[3];
}

#ifdef __cplusplus
}
#endif
#endif /* POCKETMOE_COMPUTE_H */
