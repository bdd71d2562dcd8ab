// cpu-onednn: the default compute backend. oneDNN runs the f32/bf16 matrix products of batched
// (prefill) work; the plugin's own kernels (kernels*.cpp) handle the GGUF block types, for one
// token and for batches alike (tiles of one weight row by several tokens), and the small
// element-wise ops. Threads come from OpenMP, which oneDNN shares.
#include "kernels.hpp"
#include "sparse_ffn.hpp"

#include <pocketmoe/cpp/plugin.hpp>

#include <oneapi/dnnl/dnnl.hpp>
#include <omp.h>
#include <immintrin.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cmath>
#include <cstdio>
#include <unistd.h>
#include <cstdlib>
#include <map>
#include <memory>
#include <new>
#include <string>
#include <tuple>
#include <vector>

namespace pmoe::cpu {
namespace {

using sdk::StatusError;

struct Buffer {
  uint8_t* data;
  uint64_t size;
  bool owned;
  bool host_visible;  // storage reads land in it and the host flushes what it wrote
  bool flushed = false;  // the host has called buffer_flush_range on it (a 1.0 host never does)
};

/// compute.sparse_ffn (docs/reglu-sparsity.md).
enum class SparseFfn { off, on, automatic };


// Multiply-adds below which an op runs on the calling thread alone.
constexpr int64_t kMinParallelWork = int64_t(1) << 16;
// Output rows per parallel task.
constexpr int64_t kRowBlock = 16;
// Tokens per task of the sparse down kernel. Its tasks are groups of 128 rows, and a thread calls
// the kernel once for all its consecutive groups of the same tokens: each active neuron's column
// in one run (one call per 512 rows read 256-byte pieces of each and ran 1.3x slower), and only
// where a thread's share ends inside an expert is the expert's column split.
constexpr int64_t kSparseTokens = 4;
// sparse_ffn: auto takes the sparse path for an expert whose routed tokens activate at most this
// fraction of its neurons (measured, docs/reglu-sparsity.md: 4B decode with every expert sparse
// 1.06-1.07x at 42%, 50% and 59% active; the Q4_0 kernels alone break even at about 75%).
constexpr double kAutoMaxActive = 0.6;
// auto runs gate first (to measure activity) only where no expert has more routed tokens than one
// sparse down task takes: in prefill the union of many tokens' active neurons leaves little to
// skip, and gate and up in separate passes cost pp512 0.93-0.96x (4B, 42% active per token).

[[noreturn]] void fail(const std::string& what) {
  throw StatusError(PMOE_ERR_INVALID_ARGUMENT, what);
}

class CpuBackend final : public sdk::Compute {
 public:
  CpuBackend(const pmoe_host* host, const sdk::Options& o)
      : host_(host), engine_(dnnl::engine::kind::cpu, 0), stream_(engine_) {
    threads_ = int(o.get_int("threads", 0));
    if (threads_ <= 0) threads_ = omp_get_max_threads();  // all cores, or OMP_NUM_THREADS
    dnnl_min_rows_ = int(o.get_int("onednn_min_tokens", 4));
    const std::string sparse = o.get_string("sparse_ffn", "auto");
    if (sparse != "auto" && sparse != "on" && sparse != "off")
      throw StatusError(PMOE_ERR_INVALID_ARGUMENT, "sparse_ffn: '" + sparse + "' is not auto, on or off");
    sparse_ffn_ = sparse == "on" ? SparseFfn::on : sparse == "off" ? SparseFfn::off : SparseFfn::automatic;
    if (const char* cap = std::getenv("PMOE_CPU_MAX_ISA"); cap && *cap && !parse_isa(cap))
      throw StatusError(PMOE_ERR_INVALID_ARGUMENT, std::string("PMOE_CPU_MAX_ISA='") + cap +
                                                       "' is not one of scalar, avx2, avx512_vnni, avx512_vbmi");
    sdk::log(host_, PMOE_LOG_INFO, "cpu-onednn",
             "threads=" + std::to_string(threads_) + " kernels=" + isa_name(kernel_isa()) + " sparse_ffn=" + sparse);
  }
  ~CpuBackend() override = default;

  void* buffer_alloc(uint64_t size, uint32_t flags) override {
    const uint64_t rounded = (std::max<uint64_t>(size, 1) + 4095) & ~uint64_t(4095);
    void* p = std::aligned_alloc(4096, rounded);
    if (!p) throw StatusError(PMOE_ERR_OUT_OF_MEMORY, "cannot allocate " + std::to_string(size) + " bytes");
    return new Buffer{static_cast<uint8_t*>(p), size, true, (flags & PMOE_BUFFER_HOST_VISIBLE) != 0};
  }
  void* buffer_wrap(void* ptr, uint64_t size, uint32_t) override {
    return new Buffer{static_cast<uint8_t*>(ptr), size, false, false};
  }
  void buffer_free(void* b) noexcept override {
    auto* buf = static_cast<Buffer*>(b);
    if (buf) forget_relaid(buf->data, buf->size);
    if (buf && buf->owned) std::free(buf->data);
    delete buf;
  }
  void* buffer_host_ptr(void* b) noexcept override { return static_cast<Buffer*>(b)->data; }
  void buffer_write(void* b, uint64_t off, const void* src, uint64_t size) override {
    auto* buf = static_cast<Buffer*>(b);
    if (off > buf->size || size > buf->size - off) fail("buffer_write out of bounds");
    forget_relaid(buf->data + off, size);
    std::memcpy(buf->data + off, src, size);
  }
  void buffer_flush_range(void* b, uint64_t off, uint64_t size) override {
    auto* buf = static_cast<Buffer*>(b);
    if (off > buf->size || size > buf->size - off) fail("buffer_flush_range out of bounds");
    buf->flushed = true;
    forget_relaid(buf->data + off, size);  // a storage read replaced what was there
  }
  void buffer_read(void* b, uint64_t off, void* dst, uint64_t size) override {
    auto* buf = static_cast<Buffer*>(b);
    if (off > buf->size || size > buf->size - off) fail("buffer_read out of bounds");
    std::memcpy(dst, buf->data + off, size);
  }

  void get_props(pmoe_compute_props& p) override {
    p.device_type = PMOE_DEVICE_CPU;
    p.unified_memory = 1;
    std::snprintf(p.name, sizeof p.name, "CPU, %d threads, %s kernels", threads_, isa_name(kernel_isa()));
    const uint64_t ram = uint64_t(sysconf(_SC_PHYS_PAGES)) * uint64_t(sysconf(_SC_PAGESIZE));
    p.device_memory = p.host_visible_memory = ram;
    p.max_buffer_size = 0;  // no limit but memory
    p.alignment = 1;
  }
  void check_op(const pmoe_op& op) override {
    auto weight = [&](const pmoe_tensor& t) {
      if (!tile_kernel(t.dtype, Order::gemv))
        throw StatusError(PMOE_ERR_NOT_SUPPORTED, std::string(pmoe_op_name(op.kind)) + " has no kernel for " + type_name(t.dtype));
    };
    switch (op.kind) {
      case PMOE_OP_MATMUL: weight(op.src[0]); return;
      case PMOE_OP_MOE_EXPERT: for (int i = 0; i < 3; ++i) weight(op.src[i]); return;
      case PMOE_OP_GET_ROWS:
        if (pmoe_dtype_block_bytes(op.src[0].dtype) == 0)
          throw StatusError(PMOE_ERR_NOT_SUPPORTED, "get_rows cannot read " + type_name(op.src[0].dtype));
        return;
      case PMOE_OP_RMS_NORM: case PMOE_OP_ADD: case PMOE_OP_ROPE_NEOX: case PMOE_OP_ATTENTION:
      case PMOE_OP_MOE_COMBINE: case PMOE_OP_COPY:
        return;
      default: throw StatusError(PMOE_ERR_NOT_SUPPORTED, "unknown op kind " + std::to_string(op.kind));
    }
  }

  void execute(std::span<const pmoe_op> ops) override {
    omp_set_num_threads(threads_);
    for (size_t i = 0; i < ops.size(); ++i) {
      try {
        if (ops[i].kind == PMOE_OP_MOE_EXPERT) {
          // consecutive experts run together: two parallel regions for all of them, not three each
          size_t j = i;
          while (j + 1 < ops.size() && ops[j + 1].kind == PMOE_OP_MOE_EXPERT) ++j;
          moe_experts(ops.subspan(i, j - i + 1), i);
          i = j;
        } else if (const size_t n = ops[i].kind == PMOE_OP_MATMUL ? products_group(ops.subspan(i)) : 1; n > 1) {
          // products of the same activations (q, k and v) in one parallel pass
          std::vector<Product> ps;
          for (const size_t end = i + n; i < end; ++i) ps.push_back(product_of(ops[i]));  // (an error names op i)
          --i;
          products(ps);
        } else {
          run(ops[i]);
        }
      } catch (const StatusError& e) {
        throw StatusError(e.code(), "op " + std::to_string(i) + " (" + pmoe_op_name(ops[i].kind) + "): " + e.what());
      }
    }
  }

 private:
  // ---- tensor access ----------------------------------------------------------------------
  template <class T = uint8_t>
  T* ptr(const pmoe_tensor& t, const char* role) {
    auto* buf = static_cast<Buffer*>(static_cast<void*>(t.buffer));
    if (!buf) fail(std::string(role) + ": no buffer");
    if (t.ne[0] <= 0 || t.ne[1] <= 0 || t.ne[2] <= 0 || t.ne[3] <= 0)
      fail(std::string(role) + ": empty or negative shape");
    const uint64_t span = pmoe_tensor_extent(&t);
    if (span == 0) fail(std::string(role) + ": unsupported dtype " + std::to_string(t.dtype) + " or row size");
    if (t.offset > buf->size || span > buf->size - t.offset)
      fail(std::string(role) + ": view exceeds its buffer");
    return reinterpret_cast<T*>(buf->data + t.offset);
  }
  static std::string type_name(uint32_t t) {
    return pmoe_dtype_name(t) ? pmoe_dtype_name(t) : "dtype " + std::to_string(t);
  }
  static void need_type(const pmoe_tensor& t, uint32_t type, const char* role) {
    if (t.dtype != type) fail(std::string(role) + " must be " + pmoe_dtype_name(type) + ", got " + type_name(t.dtype));
  }

  // ---- matrix products --------------------------------------------------------------------
  /// Prepare `T` activation rows (floats, row stride `xs` floats) for `wtype`'s dot kernel;
  /// returns them and their row stride in bytes (the floats themselves where no conversion is needed).
  /// `parallel`: split the rows among the threads (a batch's activations, before its product).
  const uint8_t* prepare(uint32_t wtype, Order order, const float* x, int64_t in, int64_t T, int64_t xs,
                         std::vector<uint8_t>& scratch, uint64_t& row_bytes, bool parallel = false) {
    row_bytes = prepared_row_bytes(wtype, in, order);
    if (row_bytes == 0) {
      row_bytes = uint64_t(xs) * 4;
      return reinterpret_cast<const uint8_t*>(x);
    }
    scratch.resize(row_bytes * uint64_t(T));
    uint8_t* dst = scratch.data();
    const uint64_t rb = row_bytes;
    auto row = [&](int64_t t) { prepare_row(wtype, order, x + t * xs, dst + uint64_t(t) * rb, in); };
    if (parallel && T >= 8 && threads_ > 1) {  // (an OpenMP region, even serialized, costs microseconds)
#pragma omp parallel for schedule(static) num_threads(threads_)
      for (int64_t t = 0; t < T; ++t) row(t);
    } else {
      for (int64_t t = 0; t < T; ++t) row(t);
    }
    return dst;
  }

  /// Y[t][o] (+)= W[o] · X[t] for o < out, t < T. X rows of `in` floats with stride xs; Y stride ys.
  struct Product {
    const uint8_t* w;
    uint32_t wtype;
    uint64_t w_row;
    int64_t in, out;
    const float* x;
    int64_t xs, T;
    float* y;
    int64_t ys;
    bool acc;
  };

  /// Products that write none of each other's operands, in one parallel pass (a decode layer's q,
  /// k and v: one fork instead of three, and no core idles at the end of the small ones). Each
  /// is cut into blocks of kRowBlock rows, shared out by cost; every block is computed as alone.
  void products(std::span<const Product> ps) {
    struct Prepared {
      const Product* p;
      Order order;
      const uint8_t* xa;
      uint64_t xrow;
      int64_t gemm_cols;
    };
    std::vector<Prepared> todo;
    std::vector<Prepared> prepared;  // each product's activations, shared by those of the same format (q, k and v)
    if (product_scratch_.size() < ps.size()) product_scratch_.resize(ps.size());
    std::vector<int64_t>& cum = product_cost_;  // per row block: running cost (rows times inputs and tokens)
    cum.assign(1, 0);
    for (size_t k = 0; k < ps.size(); ++k) {
      const Product& p = ps[k];
      // llama.cpp's MUL_MAT runs a repacked weight's gemm on all but the last T % 4 tokens
      const Order order = sum_order(p.wtype, p.out);
      uint64_t xrow = 0;
      const uint8_t* xa = nullptr;
      for (const Prepared& e : prepared)
        if (e.p->wtype == p.wtype && e.order == order && e.p->x == p.x && e.p->in == p.in && e.p->T == p.T && e.p->xs == p.xs)
          xa = e.xa, xrow = e.xrow;
      if (!xa) {
        xa = prepare(p.wtype, order, p.x, p.in, p.T, p.xs, product_scratch_[k], xrow, true);
        prepared.push_back({&p, order, xa, xrow, 0});
      }
      if (!p.acc && p.T >= dnnl_min_rows_ && matmul_onednn(p.w, p.wtype, p.w_row, p.in, p.out, xa, xrow, p.T, p.y, p.ys))
        continue;
      int64_t gemm_cols = order == Order::gemv && p.T >= 4 ? p.T - p.T % 4 : 0;
      if (p.wtype == PMOE_DTYPE_F32 && p.T >= 2 && p.in % 16 == 0) gemm_cols = p.T;  // llamafile's tinyBLAS
      todo.push_back({&p, order, xa, xrow, gemm_cols});
      for (int64_t o = 0; o < p.out; o += kRowBlock) cum.push_back(cum.back() + std::min(kRowBlock, p.out - o) * p.in * p.T);
    }
    if (todo.empty()) return;
    // Fork only for work worth it: a parallel region costs microseconds, more when cores are shared.
    const bool par = threads_ > 1 && cum.back() >= kMinParallelWork;
#pragma omp parallel num_threads(threads_) if (par)
    {
      const auto [lo, hi] = my_share(cum);
      size_t block = 0;  // global index of the first block of todo[k]
      for (const Prepared& d : todo) {
        const Product& p = *d.p;
        const size_t n = size_t((p.out + kRowBlock - 1) / kRowBlock);
        const size_t b0 = std::max(lo, block), b1 = std::min(hi, block + n);
        // one token: this thread's consecutive blocks in one call (the 16-row kernel prefetches
        // the next rows); more: a block at a time, which stays in L1 while the tokens go by
        for (size_t b = b0; b < b1; b = p.T == 1 ? b1 : b + 1)
          tile_rows(p.wtype, d.order, d.gemm_cols, p.w, p.w_row, p.in, int64_t(b - block) * kRowBlock,
                    std::min(p.out, int64_t(p.T == 1 ? b1 - block : b + 1 - block) * kRowBlock), d.xa, d.xrow, p.T, p.y,
                    p.ys, p.acc);
        block += n;
      }
    }
  }

  /// Y[t][o] (+)= W[o] · X[t] for o in [o0, o1), or for o = rows[i], i in [o0, o1) (ascending):
  /// the one inner loop of every product. The block of weight rows stays in L1 while tiles of
  /// kTileCols tokens go by; each tile decodes a weight row (or two, for types with a two-row
  /// kernel) once for all its tokens. Tokens before `gemm_cols` are summed in llama.cpp's gemm order.
  static void tile_rows(uint32_t wtype, Order order, int64_t gemm_cols, const uint8_t* w, uint64_t w_row, int64_t in,
                        int64_t o0, int64_t o1, const uint8_t* xa, uint64_t xrow, int64_t T, float* y, int64_t ys,
                        bool acc, const int32_t* rows = nullptr) {
    auto row = [rows](int64_t i) { return rows ? int64_t(rows[i]) : i; };
    static_assert(kTileCols == 4, "a tile must not straddle the gemm/gemv boundary (a multiple of 4)");
    // (tiles before gemm_cols sum in gemm order, which every kernel of the call's order has too)
    const TileFn tile = tile_kernel(wtype, order);
    const PairTileFn pair = pair_tile_kernel(wtype, order);
    float part[2 * kTileCols];
    // 16 rows at a time where the type has such kernels: rows i..i+15's byte offsets from row o0
    // (false, nothing written, where they do not fit in 32 bits)
    int32_t off[16], next[16];
    auto offsets = [&](int64_t i, int32_t* o) {
      if ((row(i + 15) - row(o0) + 1) * int64_t(w_row) > INT32_MAX) return false;
      for (int k = 0; k < 16; ++k) o[k] = int32_t((row(i + k) - row(o0)) * int64_t(w_row));
      return true;
    };
    auto store16 = [&](int64_t t, const float* out) {
      for (int k = 0; k < 16; ++k) {
        float& dst = y[t * ys + row(o0 + k)];
        dst = acc ? dst + out[k] : out[k];
      }
    };
    const Rows16TileFn tile16 = T > 1 ? rows16_tile_kernel(wtype, order) : nullptr;
    if (T == 1 && gemm_cols == 0) {  // one token
      if (const Rows16Fn rows16 = rows16_kernel(wtype, order))
        for (; o0 + 16 <= o1 && offsets(o0, off); o0 += 16) {
          // a row list: name the next rows to prefetch
          const bool more = rows && o0 + 32 <= o1 && offsets(o0 + 16, next);
          float out[16];
          rows16(w + uint64_t(row(o0)) * w_row, off, more ? next : nullptr, xa, in, out);
          store16(0, out);
        }
    } else if (tile16 && (gemm_cols == 0 || rows16_tile_kernel(wtype, Order::gemm) == tile16)) {
      for (; o0 + 16 <= o1 && offsets(o0, off); o0 += 16)  // the 16 rows stay in L1 while the tiles go by
        for (int64_t t0 = 0; t0 < T; t0 += kTileCols) {
          const int nc = int(std::min<int64_t>(kTileCols, T - t0));
          float out[16 * kTileCols];
          tile16(w + uint64_t(row(o0)) * w_row, off, xa + uint64_t(t0) * xrow, xrow, nc, in, out);
          for (int c = 0; c < nc; ++c) store16(t0 + c, out + 16 * c);
        }
    }
    for (int64_t t0 = 0; t0 < T; t0 += kTileCols) {
      const int nc = int(std::min<int64_t>(kTileCols, T - t0));
      const Order o_tile = t0 < gemm_cols ? Order::gemm : order;
      auto store = [&](int64_t o, const float* p) {
        for (int c = 0; c < nc; ++c) {
          float& dst = y[(t0 + c) * ys + o];
          dst = acc ? dst + p[c] : p[c];
        }
      };
      int64_t i = o0;
      if (pair)  // the second row may be any later one: the kernel takes the distance
        for (; i + 1 < o1; i += 2) {
          const int64_t r0 = row(i), r1 = row(i + 1);
          pair(w + uint64_t(r0) * w_row, uint64_t(r1 - r0) * w_row, xa + uint64_t(t0) * xrow, xrow, nc, in, o_tile, part);
          store(r0, part), store(r1, part + kTileCols);
        }
      for (; i < o1; ++i) {
        tile(w + uint64_t(row(i)) * w_row, xa + uint64_t(t0) * xrow, xrow, nc, in, o_tile, part);
        store(row(i), part);
      }
    }
  }

  /// Y = X W^T through oneDNN's bf16 matmul (brgemm on AVX-512 BF16/AMX), with X already rounded
  /// to bf16. False where this oneDNN or CPU has none: our kernel does it then.
  bool matmul_onednn(const uint8_t* w, uint32_t wtype, uint64_t w_row, int64_t in, int64_t out,
                     const uint8_t* x, uint64_t xrow, int64_t T, float* y, int64_t ys) {
    using namespace dnnl;
    using dims = memory::dims;
    using dt = memory::data_type;
    if (wtype != PMOE_DTYPE_BF16 || !dnnl_bf16_) return false;
    const memory::desc src_md(dims{T, in}, dt::bf16, dims{int64_t(xrow) / 2, 1});
    // W is `out` rows of `in` values: as an {in, out} matrix it has strides {1, row}.
    const memory::desc w_md(dims{in, out}, dt::bf16, dims{1, int64_t(w_row) / 2});
    const memory::desc dst_md(dims{T, out}, dt::f32, dims{ys, 1});
    const auto key = std::make_tuple(T, in, out, int64_t(xrow), int64_t(w_row), ys);
    auto it = dnnl_cache_.find(key);
    if (it == dnnl_cache_.end()) {
      try {
        auto pd = matmul::primitive_desc(matmul::desc(src_md, w_md, dst_md), engine_);
        it = dnnl_cache_.emplace(key, dnnl::matmul(pd)).first;
      } catch (const dnnl::error& e) {
        dnnl_bf16_ = false;
        sdk::log(host_, PMOE_LOG_INFO, "cpu-onednn", std::string("oneDNN bf16 matmul unavailable (") + e.what() + "); using the plugin's bf16 kernel");
        return false;
      }
    }
    memory src(src_md, engine_, const_cast<uint8_t*>(x));
    memory wm(w_md, engine_, const_cast<uint8_t*>(w));
    memory dst(dst_md, engine_, y);
    it->second.execute(stream_, {{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, wm}, {DNNL_ARG_DST, dst}});
    stream_.wait();
    return true;
  }

  // ---- ops --------------------------------------------------------------------------------
  void run(const pmoe_op& op) {
    switch (op.kind) {
      case PMOE_OP_GET_ROWS: return get_rows(op);
      case PMOE_OP_RMS_NORM: return rms_norm(op);
      case PMOE_OP_MATMUL: return matmul_op(op);
      case PMOE_OP_ADD: return add(op);
      case PMOE_OP_ROPE_NEOX: return rope(op);
      case PMOE_OP_ATTENTION: return attention(op);
      case PMOE_OP_MOE_EXPERT: return moe_experts({&op, 1}, 0);
      case PMOE_OP_MOE_COMBINE: return moe_combine(op);
      case PMOE_OP_COPY: return copy(op);
      default: throw StatusError(PMOE_ERR_NOT_SUPPORTED, "unknown op kind " + std::to_string(op.kind));
    }
  }

  void get_rows(const pmoe_op& op) {
    const pmoe_tensor &tab = op.src[0], &ids = op.src[1], &dst = op.dst;
    need_type(ids, PMOE_DTYPE_I32, "ids");
    need_type(dst, PMOE_DTYPE_F32, "dst");
    const uint8_t* t = ptr(tab, "table");
    const int32_t* id = ptr<int32_t>(ids, "ids");
    float* d = ptr<float>(dst, "dst");
    if (dst.ne[0] != tab.ne[0] || dst.ne[1] != ids.ne[0]) fail("shape mismatch");
    for (int64_t r = 0; r < ids.ne[0]; ++r) {
      if (id[r] < 0 || id[r] >= tab.ne[1])
        fail("row id " + std::to_string(id[r]) + " out of range [0, " + std::to_string(tab.ne[1]) + ")");
      dequantize_row(tab.dtype, t + uint64_t(id[r]) * tab.nb[1], d + r * (dst.nb[1] / 4), tab.ne[0]);
    }
  }

  void rms_norm(const pmoe_op& op) {
    const pmoe_tensor &src = op.src[0], &w = op.src[1], &dst = op.dst;
    need_type(src, PMOE_DTYPE_F32, "src");
    need_type(w, PMOE_DTYPE_F32, "weight");
    need_type(dst, PMOE_DTYPE_F32, "dst");
    if (w.ne[0] != src.ne[0] || dst.ne[0] != src.ne[0] || dst.ne[1] != src.ne[1]) fail("shape mismatch");
    const float* s = ptr<float>(src, "src");
    const float* g = ptr<float>(w, "weight");
    float* d = ptr<float>(dst, "dst");
    const int64_t n = src.ne[0];
    const float eps = op.f[0];
    for (int64_t r = 0; r < src.ne[1]; ++r) {
      const float* x = s + r * int64_t(src.nb[1] / 4);
      float* y = d + r * int64_t(dst.nb[1] / 4);
      double sum = 0.0;  // ggml accumulates the mean square in double
      for (int64_t i = 0; i < n; ++i) sum += double(x[i] * x[i]);
      const float scale = 1.0f / std::sqrt(float(sum / double(n)) + eps);
      for (int64_t i = 0; i < n; ++i) y[i] = (x[i] * scale) * g[i];
    }
  }

  /// A MATMUL op's product, validated.
  Product product_of(const pmoe_op& op) {
    const pmoe_tensor &w = op.src[0], &x = op.src[1], &dst = op.dst;
    need_type(x, PMOE_DTYPE_F32, "src1");
    need_type(dst, PMOE_DTYPE_F32, "dst");
    if (x.ne[0] != w.ne[0] || dst.ne[0] != w.ne[1] || dst.ne[1] != x.ne[1])
      fail("shape mismatch: W {" + std::to_string(w.ne[0]) + ", " + std::to_string(w.ne[1]) +
           "} x {" + std::to_string(x.ne[0]) + ", " + std::to_string(x.ne[1]) + "} -> {" +
           std::to_string(dst.ne[0]) + ", " + std::to_string(dst.ne[1]) + "}");
    if (!tile_kernel(w.dtype, Order::gemv)) fail("unsupported weight type " + type_name(w.dtype));
    return {ptr(w, "weights"), w.dtype, w.nb[1], w.ne[0], w.ne[1], ptr<float>(x, "src1"), int64_t(x.nb[1] / 4),
            x.ne[1], ptr<float>(dst, "dst"), int64_t(dst.nb[1] / 4), op.i[0] != 0};
  }

  void matmul_op(const pmoe_op& op) {
    const Product p = product_of(op);
    products({&p, 1});
  }

  /// How many MATMUL ops from ops[0] can run as one products() call: they read the same
  /// activations, and none writes what another reads or writes (whole buffers' byte ranges).
  static size_t products_group(std::span<const pmoe_op> ops) {
    auto range = [](const pmoe_tensor& t) {
      return std::pair{t.buffer, std::pair{t.offset, t.offset + pmoe_tensor_extent(&t)}};
    };
    auto overlap = [&](const pmoe_tensor& a, const pmoe_tensor& b) {
      const auto [ba, ra] = range(a);
      const auto [bb, rb] = range(b);
      return ba == bb && ra.first < rb.second && rb.first < ra.second;
    };
    const pmoe_tensor& x = ops[0].src[1];
    size_t n = 1;
    for (; n < ops.size(); ++n) {
      const pmoe_op& op = ops[n];
      if (op.kind != PMOE_OP_MATMUL || std::memcmp(&op.src[1], &x, sizeof x) != 0) break;
      bool clash = false;
      for (size_t k = 0; k <= n; ++k)
        for (size_t l = 0; l <= n; ++l)
          clash |= overlap(ops[k].dst, k == l ? x : ops[l].dst) || (k != l && overlap(ops[k].dst, ops[l].src[0]));
      if (clash) break;
    }
    return n;
  }

  void add(const pmoe_op& op) {
    const pmoe_tensor &a = op.src[0], &b = op.src[1], &dst = op.dst;
    for (auto* t : {&a, &b, &dst}) need_type(*t, PMOE_DTYPE_F32, "operand");
    if (a.ne[0] != b.ne[0] || a.ne[0] != dst.ne[0] || a.ne[1] != b.ne[1] || a.ne[1] != dst.ne[1])
      fail("shape mismatch");
    const float* pa = ptr<float>(a, "src0");
    const float* pb = ptr<float>(b, "src1");
    float* pd = ptr<float>(dst, "dst");
    for (int64_t r = 0; r < a.ne[1]; ++r) {
      const float* ra = pa + r * int64_t(a.nb[1] / 4);
      const float* rb = pb + r * int64_t(b.nb[1] / 4);
      float* rd = pd + r * int64_t(dst.nb[1] / 4);
      for (int64_t i = 0; i < a.ne[0]; ++i) rd[i] = ra[i] + rb[i];
    }
  }

  void copy(const pmoe_op& op) {
    need_type(op.src[0], PMOE_DTYPE_F32, "src0");
    need_type(op.dst, PMOE_DTYPE_F32, "dst");
    if (op.src[0].ne[0] != op.dst.ne[0] || op.src[0].ne[1] != op.dst.ne[1]) fail("shape mismatch");
    const float* s = ptr<float>(op.src[0], "src0");
    float* d = ptr<float>(op.dst, "dst");
    for (int64_t r = 0; r < op.dst.ne[1]; ++r)
      std::memcpy(d + r * int64_t(op.dst.nb[1] / 4), s + r * int64_t(op.src[0].nb[1] / 4),
                  size_t(op.dst.ne[0]) * 4);
  }

  void rope(const pmoe_op& op) {
    const pmoe_tensor &dst = op.dst, &pos = op.src[0];
    need_type(dst, PMOE_DTYPE_F32, "dst");
    need_type(pos, PMOE_DTYPE_I32, "positions");
    const int64_t hd = dst.ne[0], n_heads = dst.ne[1], T = dst.ne[2];
    const int64_t n_rot = op.i[0];
    if (pos.ne[0] != T) fail("positions must have one entry per token");
    if (n_rot <= 0 || n_rot > hd || n_rot % 2) fail("bad n_rot " + std::to_string(n_rot));
    float* d = ptr<float>(dst, "dst");
    const int32_t* p = ptr<int32_t>(pos, "positions");
    const float theta_scale = std::pow(op.f[0], -2.0f / float(n_rot));
    std::vector<float> cs(static_cast<size_t>(n_rot));
    for (int64_t t = 0; t < T; ++t) {
      // ggml's recipe: float angles built by repeated multiplication (matters at long context)
      float theta = float(p[t]);
      for (int64_t i = 0; i < n_rot; i += 2) {
        cs[size_t(i)] = std::cos(theta);
        cs[size_t(i) + 1] = std::sin(theta);
        theta *= theta_scale;
      }
      for (int64_t h = 0; h < n_heads; ++h) {
        float* x = d + t * int64_t(dst.nb[2] / 4) + h * int64_t(dst.nb[1] / 4);
        for (int64_t i = 0; i < n_rot; i += 2) {
          const int64_t ic = i / 2;
          const float c = cs[size_t(i)], s = cs[size_t(i) + 1];
          const float x0 = x[ic], x1 = x[ic + n_rot / 2];
          x[ic] = x0 * c - x1 * s;
          x[ic + n_rot / 2] = x0 * s + x1 * c;
        }
      }
    }
  }

  void attention(const pmoe_op& op) {
    const pmoe_tensor &q = op.src[0], &k = op.src[1], &v = op.src[2], &pos = op.src[3], &dst = op.dst;
    for (auto* t : {&q, &k, &v, &dst}) need_type(*t, PMOE_DTYPE_F32, "operand");
    need_type(pos, PMOE_DTYPE_I32, "positions");
    const int64_t n_head = op.i[0], n_head_kv = op.i[1], hd = op.i[2], window = op.i[3];
    const int64_t T = q.ne[1], n_kv = k.ne[1];
    if (n_head <= 0 || n_head_kv <= 0 || n_head % n_head_kv) fail("bad head counts");
    if (q.ne[0] != hd * n_head || dst.ne[0] != hd * n_head || dst.ne[1] != T ||
        k.ne[0] != hd * n_head_kv || v.ne[0] != hd * n_head_kv || v.ne[1] != n_kv || pos.ne[0] != T)
      fail("shape mismatch");
    const float* pq = ptr<float>(q, "q");
    const float* pk = ptr<float>(k, "k");
    const float* pv = ptr<float>(v, "v");
    const int32_t* pp = ptr<int32_t>(pos, "positions");
    float* pd = ptr<float>(dst, "dst");
    for (int64_t t = 0; t < T; ++t)
      if (pp[t] < 0 || pp[t] >= n_kv) fail("query position " + std::to_string(pp[t]) + " has no key row");
    const float scale = op.f[0];
    const int64_t group = n_head / n_head_kv;
    const int64_t qs = int64_t(q.nb[1] / 4), ks = int64_t(k.nb[1] / 4), vs = int64_t(v.nb[1] / 4),
                  ds = int64_t(dst.nb[1] / 4);
    // llama.cpp's attention without flash attention, in its order: KQ is vec_dot (the permuted q
    // is not contiguous, so llamafile passes), the softmax runs over the keys in blocks of 16 with
    // ggml's exp, masked keys count as exact zeros, and KQV is llamafile's tinyBLAS for a batch of
    // queries and vec_dot for one.
    const AttendFn attend = attend_kernel();
    const bool batch = T >= 2;
    // (one query's 64 lanes cost about as much as 64 more keys)
    const bool par = threads_ > 1 && T * n_head * (pp[T - 1] + 1 + (batch ? 0 : 64)) * hd >= kMinParallelWork;
#pragma omp parallel num_threads(threads_) if (par)
    {
      // per thread, kept across calls: no allocation, no clearing (the kernel writes what it
      // reads); sized to the longest context seen, it lives as long as the OpenMP thread
      thread_local std::unique_ptr<float[]> w, lanes;
      thread_local std::unique_ptr<double[]> wide;
      thread_local size_t n_w = 0, n_lanes = 0;
      if (n_w < size_t(pp[T - 1] + 17)) n_w = size_t(pp[T - 1] + 17) * 2, w.reset(new float[n_w]);
      if (n_lanes < size_t(64 * hd)) n_lanes = size_t(64 * hd), lanes.reset(new float[n_lanes]), wide.reset(new double[size_t(hd)]);
      const AttendScratch scratch{w.get(), lanes.get(), wide.get()};
#pragma omp for schedule(dynamic, 1)
      for (int64_t th = 0; th < T * n_head; ++th) {
        const int64_t t = th / n_head, h = th % n_head, kvh = h / group;
        const int64_t p = pp[t];
        const int64_t j0 = window > 0 ? std::max<int64_t>(0, p - window + 1) : 0;
        // one query alone sums over llama.cpp's key count, padded to 32 (and capped by the cache)
        const int64_t n_vec = std::min<int64_t>(n_kv, (p / 32 + 1) * 32);
        attend(pq + t * qs + h * hd, pk + kvh * hd, ks, pv + kvh * hd, vs, hd, j0, p, scale, batch, n_vec,
               pd + t * ds + h * hd, scratch);
      }
    }
  }

  /// This thread's share [lo, hi) of tasks with running costs `cum` (cum[0] = 0, one entry more
  /// than tasks): contiguous ranges of about equal cost, since experts differ in tokens and equal
  /// counts of tasks would leave one core idle while the other still works.
  static std::pair<size_t, size_t> my_share(const std::vector<int64_t>& cum) {
    const int nt = omp_get_num_threads(), me = omp_get_thread_num();
    const size_t n = cum.size() - 1;
    auto bound = [&](int k) {
      return k >= nt ? n : size_t(std::lower_bound(cum.begin(), cum.end(), cum.back() * k / nt) - cum.begin());
    };
    return {bound(me), bound(me + 1)};
  }

  /// A task of moe_experts' `down` stage: rows [row0, row1) of job's tokens [token0, token1)
  /// (the dense kernel takes all tokens; sparse ones a few, and whole groups of kNeuronGroup rows).
  struct DownTask {
    size_t job;
    int64_t token0, token1, row0, row1;
  };

  /// One expert's work in moe_experts: validated pointers, and buffers kept across calls (a
  /// batch's hot expert can take hundreds of tokens; fresh allocations would fault in pages).
  struct ExpertJob {
    const pmoe_tensor *g, *u, *d;
    const uint8_t *gp, *up_w, *dp;
    const float* x;
    const int32_t* tok;
    int64_t xs, R, n_embd, n_ff;
    Order og, ou, od;                  // llama.cpp's MUL_MAT_ID order of each matrix
    std::vector<float> xr;             // the routed tokens' rows
    std::vector<uint8_t> xq, xuq, aq;  // prepared for gate, for up when its format differs, for down
    const uint8_t* xg = nullptr;  // gate's input: xr itself or xq
    const uint8_t* xu = nullptr;  // up's input: xg, or xuq when up's format differs
    const uint8_t* a = nullptr;
    uint64_t xrow = 0, xurow = 0, arow = 0;
    std::vector<float> gate, up;
    float* y;
    int64_t ys;
    int32_t* activity = nullptr;  // src5: the layer's [active, computed(, relaid, relayout us)] counters
    int64_t active = 0;
    // sparse ReGLU: gate first, then `up` only for `rows`, `down` over each token's active neurons
    bool sparse = false;  // up for `rows` only
    const uint8_t* major = nullptr;  // `down` neuron-major, or null: the dense kernel with zeros
    const uint8_t* relayout_from = nullptr;  // set when `major` is to be made in this call
    bool neuron_rows = false;  // `down` stored one row per neuron: neuron_rows_down()
    std::vector<float> down_row;  // its dequantized row (sized before the parallel part)
    std::vector<int32_t> rows;              // neurons active for some token
    std::vector<int32_t> token_active;      // each token's active neurons, one list after another
    std::vector<int64_t> token_first;       // R + 1 offsets into token_active
    std::vector<uint8_t> a8;                // each token's activation row for the neuron-major down
    std::vector<uint8_t> relayout_tmp;      // the dense matrix while it is re-laid in place
    int64_t relayout_ns = 0;
  };

  /// Neuron-major `down` matrices (sparse_ffn.hpp) by the address of the dense one: re-laid in
  /// place in host-visible buffers (expert slots, whose every storage read the host flushes), a
  /// copy elsewhere (the GGUF mapping is never written). A write or flush over one forgets it.
  struct Relaid {
    std::unique_ptr<uint8_t[]> copy;  // null: in place
    uint64_t size;
  };
  std::map<uintptr_t, Relaid> relaid_;

  void forget_relaid(const uint8_t* p, uint64_t size) noexcept {
    const uintptr_t lo = reinterpret_cast<uintptr_t>(p), hi = lo + size;
    auto it = relaid_.lower_bound(lo);
    if (it != relaid_.begin() && std::prev(it)->first + std::prev(it)->second.size > lo) --it;
    while (it != relaid_.end() && it->first < hi) it = relaid_.erase(it);
  }

  /// The neuron-major form of job j's `down`, or null where its type or shape has none or it was
  /// not made yet and `create` is false. One to make gets its place now and j.relayout_from, for
  /// the parallel part to fill. Host-visible memory the host has never flushed gets none: its
  /// bytes may change unannounced (a host without buffer_flush_range), so no layout could be kept.
  const uint8_t* neuron_major(const Buffer& buf, ExpertJob& j, bool create) {
    j.relayout_from = nullptr;
    const uint64_t size = uint64_t(j.n_embd) * j.d->nb[1];
    if (!neuron_major_supported(j.d->dtype, j.n_embd, j.n_ff) || j.d->nb[1] != pmoe_dtype_row_bytes(j.d->dtype, j.n_ff) ||
        (buf.host_visible && !buf.flushed))
      return nullptr;
    const uintptr_t key = reinterpret_cast<uintptr_t>(j.dp);
    if (auto it = relaid_.find(key); it != relaid_.end() && it->second.size == size)
      return it->second.copy ? it->second.copy.get() : j.dp;
    if (!create) return nullptr;
    forget_relaid(j.dp, size);
    Relaid r{nullptr, size};
    if (buf.host_visible) j.relayout_tmp.resize(size);  // (the parallel part must not allocate)
    else r.copy.reset(new uint8_t[size]);
    const uint8_t* major = r.copy ? r.copy.get() : j.dp;
    relaid_.emplace(key, std::move(r));
    j.relayout_from = j.dp;
    return major;
  }

  /// j.major: neuron_major() of job j's `down`. An allocation that fails leaves the job on the
  /// dense `down` instead of throwing (this runs inside the parallel region too).
  void use_neuron_major(ExpertJob& j, bool create) noexcept {
    try {
      j.major = neuron_major(*static_cast<Buffer*>(static_cast<void*>(j.d->buffer)), j, create);
    } catch (const std::bad_alloc&) {
      j.major = nullptr, j.relayout_from = nullptr;
    }
  }

  /// Re-lays job j's `down` where neuron_major() asked for it (in the parallel part), timed.
  static void relayout(ExpertJob& j) {
    const auto t0 = std::chrono::steady_clock::now();
    const uint64_t size = uint64_t(j.n_embd) * j.d->nb[1];
    const uint8_t* src = j.relayout_from;
    if (src == j.major) {  // in place: from a copy of the dense matrix (sized by neuron_major)
      std::memcpy(j.relayout_tmp.data(), src, size);
      src = j.relayout_tmp.data();
    }
    relayout_neuron_major(j.d->dtype, src, const_cast<uint8_t*>(j.major), j.n_embd, j.n_ff);
    j.relayout_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0).count();
  }

  /// Job j's routed token rows, and those prepared for gate and up.
  void prepare_inputs(ExpertJob& j) {
    j.xr.resize(size_t(j.R * j.n_embd));
    for (int64_t r = 0; r < j.R; ++r)
      std::memcpy(&j.xr[size_t(r * j.n_embd)], j.x + j.tok[r] * j.xs, size_t(j.n_embd) * 4);
    // float weights read the rows in j.xr as they are; block types their quantized copy
    j.xg = prepare(j.g->dtype, j.og, j.xr.data(), j.n_embd, j.R, j.n_embd, j.xq, j.xrow);
    j.xu = j.xg, j.xurow = j.xrow;
    if (j.u->dtype != j.g->dtype)  // each its own format (same dtype and shape: same order)
      j.xu = prepare(j.u->dtype, j.ou, j.xr.data(), j.n_embd, j.R, j.n_embd, j.xuq, j.xurow);
  }

  /// Whether each thread may run whole experts of the group, with no barrier between the stages
  /// (decode): as many experts for every thread, few tokens each (the stages' costs then differ
  /// little between experts), and no `down` twice (one expert's re-layout would race the other's
  /// reading).
  bool whole_experts(std::span<const ExpertJob> jobs) const {
    if (jobs.size() % size_t(threads_) != 0) return false;
    for (size_t k = 0; k < jobs.size(); ++k) {
      if (jobs[k].R > kSparseTokens) return false;
      for (size_t i = 0; i < k; ++i)
        if (jobs[i].dp == jobs[k].dp) return false;
    }
    return true;
  }

  /// Job j's gate rows [o0, o1), all its tokens.
  static void gate_rows(ExpertJob& j, int64_t o0, int64_t o1) {
    tile_rows(j.g->dtype, j.og, 0, j.gp, j.g->nb[1], j.n_embd, o0, o1, j.xg, j.xrow, j.R, j.gate.data(), j.n_ff, false);
  }
  /// Job j's up rows [o0, o1) (a sparse job: the listed rows j.rows[o0 .. o1)), all its tokens.
  static void up_rows(ExpertJob& j, int64_t o0, int64_t o1) {
    tile_rows(j.u->dtype, j.ou, 0, j.up_w, j.u->nb[1], j.n_embd, o0, o1, j.xu, j.xurow, j.R, j.up.data(), j.n_ff, false,
              j.sparse ? j.rows.data() : nullptr);
  }
  /// Job j's down rows [r0, r1): every token through the dense kernel, or tokens [t0, t1) each over
  /// its active neurons (neuron-major).
  static void down_rows(ExpertJob& j, int64_t t0, int64_t t1, int64_t r0, int64_t r1) {
    if (j.neuron_rows) return neuron_rows_down(j, t0, t1);
    if (!j.major) {
      tile_rows(j.d->dtype, j.od, 0, j.dp, j.d->nb[1], j.n_ff, r0, r1, j.a, j.arow, j.R, j.y, j.ys, false);
      return;
    }
    const uint64_t arow = sparse_act_bytes(j.d->dtype, j.n_ff);
    const SparseDownFn sparse_down = sparse_down_kernel(j.d->dtype);
    for (int64_t t = t0; t < t1; ++t)
      sparse_down(j.major, j.n_embd, j.n_ff, &j.a8[t * arow], j.token_active.data() + j.token_first[size_t(t)],
                  j.token_first[size_t(t) + 1] - j.token_first[size_t(t)], r0, r1, j.y + t * j.ys);
  }

  /// Job j's `down` stored one row per neuron (PowerInfer's --transpose-down), tokens [t0, t1), all
  /// rows: y = sum of a_n * row_n over the neurons whose activation is not 0, in ascending order, in
  /// float (each row dequantized once for all the tokens). Dense and sparse sum the same terms, so
  /// give the same bits; there is no llama.cpp order to follow (llama.cpp does not read the layout).
  static void neuron_rows_down(ExpertJob& j, int64_t t0, int64_t t1) {
    std::vector<float>& row = j.down_row;
    for (int64_t t = t0; t < t1; ++t) std::fill(j.y + t * j.ys, j.y + t * j.ys + j.n_embd, 0.f);
    for (int64_t n = 0; n < j.n_ff; ++n) {
      bool any = false;
      for (int64_t t = t0; t < t1; ++t) any |= j.gate[size_t(t * j.n_ff + n)] != 0.f;
      if (!any) continue;
      dequantize_row(j.d->dtype, j.dp + uint64_t(n) * j.d->nb[1], row.data(), j.n_embd);
      for (int64_t t = t0; t < t1; ++t) {
        const float a = j.gate[size_t(t * j.n_ff + n)];
        if (a == 0.f) continue;
        float* y = j.y + t * j.ys;
        for (int64_t i = 0; i < j.n_embd; ++i) y[i] += a * row[size_t(i)];
      }
    }
  }

  /// One expert from start to end on this thread: the same kernels on the same rows as the staged
  /// path, so the same bits, without the barriers between its stages (2-11 us each per layer) and
  /// with gate, up and the activations in this core's caches.
  void whole_expert(ExpertJob& j, bool gate_first) {
    prepare_inputs(j);
    gate_rows(j, 0, j.n_ff);
    if (gate_first) {
      active_neurons(j);
      j.sparse = pays_sparse(j);
      if (j.sparse)  // the first rows of `up` on their way while the rest is planned
        for (size_t r = 0; r < std::min<size_t>(16, j.rows.size()); ++r)
          for (uint64_t b = 0; b < j.u->nb[1]; b += 64)
            _mm_prefetch(reinterpret_cast<const char*>(j.up_w + uint64_t(j.rows[r]) * j.u->nb[1] + b), _MM_HINT_T0);
    }
    if (sparse_ffn_ != SparseFfn::off) {
#pragma omp critical(pmoe_relaid)
      use_neuron_major(j, j.sparse);
    }
    if (j.relayout_from) relayout(j);
    up_rows(j, 0, j.sparse ? int64_t(j.rows.size()) : j.n_ff);
    reglu(j);
    down_rows(j, 0, j.R, 0, j.n_embd);
  }

  /// Experts of one layer: their inputs prepared, gate and up of all of them, ReGLU, then down,
  /// each stage one parallel pass; or, where whole_experts() allows (decode), each thread runs
  /// whole experts. Each expert's rows are computed the same way whether it runs
  /// alone or in a group, so the result does not depend on how the host batches experts.
  /// With sparse_ffn on (auto: where no expert has more than kSparseTokens tokens), gate runs
  /// first; an expert whose measured activity makes it pay (or every
  /// one, `on`) then computes `up` only for the neurons some token activates and sums `down` over
  /// each token's active neurons (neuron-major, re-laid on first use) or over all with the others'
  /// activations 0 (dense layout). The same bits as the dense path every way (docs/reglu-sparsity.md).
  void moe_experts(std::span<const pmoe_op> group, size_t first_index) {
    if (jobs_.size() < group.size()) jobs_.resize(group.size());
    int64_t work = 0;
    int64_t most_tokens = 0;  // of one expert
    for (size_t k = 0; k < group.size(); ++k) {  // validation first: nothing throws in parallel
      const pmoe_op& op = group[k];
      const pmoe_tensor &g = op.src[0], &u = op.src[1], &dn = op.src[2], &x = op.src[3], &tok = op.src[4], &dst = op.dst;
      auto where = [&](const std::string& what) { return "op " + std::to_string(first_index + k) + " (moe_expert): " + what; };
      if (x.dtype != PMOE_DTYPE_F32 || tok.dtype != PMOE_DTYPE_I32 || dst.dtype != PMOE_DTYPE_F32)
        fail(where("x and dst must be f32, tok i32"));
      const int64_t n_embd = x.ne[0], n_ff = g.ne[1], R = tok.ne[0];
      // `down` is {n_ff, n_embd}, or {n_embd, n_ff}: one row per neuron (PowerInfer's --transpose-down)
      const bool neuron_rows = n_embd != n_ff && dn.ne[0] == n_embd && dn.ne[1] == n_ff;
      if (g.ne[0] != n_embd || u.ne[0] != n_embd || u.ne[1] != n_ff ||
          (!neuron_rows && (dn.ne[0] != n_ff || dn.ne[1] != n_embd)) || dst.ne[0] != n_embd || dst.ne[1] != R)
        fail(where("shape mismatch"));
      for (const pmoe_tensor* t : {&g, &u, &dn})
        if (!tile_kernel(t->dtype, Order::gemv)) fail(where("unsupported weight type " + type_name(t->dtype)));
      ExpertJob& j = jobs_[k];
      j.g = &g, j.u = &u, j.d = &dn, j.R = R, j.n_embd = n_embd, j.n_ff = n_ff, j.neuron_rows = neuron_rows;
      j.gp = ptr(g, "gate"), j.up_w = ptr(u, "up"), j.dp = ptr(dn, "down");
      j.x = ptr<float>(x, "x"), j.xs = int64_t(x.nb[1] / 4), j.tok = ptr<int32_t>(tok, "tok");
      for (int64_t r = 0; r < R; ++r)
        if (j.tok[r] < 0 || j.tok[r] >= x.ne[1]) fail(where("token row " + std::to_string(j.tok[r]) + " out of range"));
      // experts are llama.cpp's MUL_MAT_ID: the gemv order (for a repacked type) for every token
      j.og = sum_order(g.dtype, n_ff), j.ou = sum_order(u.dtype, n_ff), j.od = sum_order(dn.dtype, n_embd);
      j.y = ptr<float>(dst, "dst");
      j.ys = int64_t(dst.nb[1] / 4);
      j.activity = nullptr;
      if (op.n_src > 5) {
        if (op.src[5].dtype != PMOE_DTYPE_I32 || op.src[5].ne[0] < 2) fail(where("src5 (activity) must be i32 {2}"));
        j.activity = ptr<int32_t>(op.src[5], "activity");
      }
      j.sparse = false, j.major = nullptr, j.relayout_from = nullptr;
      j.gate.resize(size_t(R * n_ff));
      j.up.resize(size_t(R * n_ff));
      if (neuron_rows) j.down_row.resize(size_t(n_embd));
      work += 3 * R * n_ff * n_embd;
      most_tokens = std::max(most_tokens, R);
    }
    const bool gate_first = sparse_ffn_ == SparseFfn::on || (sparse_ffn_ == SparseFfn::automatic && most_tokens <= kSparseTokens);
    const std::span<ExpertJob> jobs(jobs_.data(), group.size());
    if (whole_experts(jobs)) {
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads_) if (threads_ > 1 && work >= kMinParallelWork)
      for (size_t k = 0; k < jobs.size(); ++k) whole_expert(jobs[k], gate_first);
      add_activity(group, jobs);
      return;
    }
    if (!gate_first && sparse_ffn_ != SparseFfn::off)  // a `down` re-laid in place (an expert slot) stays so
      for (ExpertJob& j : jobs) use_neuron_major(j, false);
    // task lists with their running costs: gate (and up, without sparse_ffn) by row blocks; once
    // gate has run, up and the re-layouts, then down. A row block costs about its tokens plus a
    // fixed part for decoding the weights.
    std::vector<std::pair<size_t, int64_t>> t1;
    std::vector<std::tuple<size_t, int64_t, int64_t>> t_up;  // (job, first, end): rows, or first -1: re-layout
    std::vector<DownTask> t2;
    std::vector<int64_t> c1{0}, c_up{0}, c2{0};
    for (size_t k = 0; k < jobs.size(); ++k)
      for (int64_t b = 0; b < (jobs[k].n_ff + kRowBlock - 1) / kRowBlock; ++b)
        t1.emplace_back(k, b), c1.push_back(c1.back() + (jobs[k].R + 3) * (gate_first ? 1 : 2));
    const bool par = threads_ > 1 && work >= kMinParallelWork;
#pragma omp parallel num_threads(threads_) if (par)
    {
#pragma omp for schedule(dynamic, 1)
      for (size_t k = 0; k < jobs.size(); ++k) prepare_inputs(jobs[k]);
      const auto [lo1, hi1] = my_share(c1);
      for (size_t i = lo1; i < hi1; ++i) {
        ExpertJob& j = jobs[t1[i].first];
        const int64_t o0 = t1[i].second * kRowBlock, o1 = std::min(j.n_ff, o0 + kRowBlock);
        gate_rows(j, o0, o1);
        if (!gate_first) up_rows(j, o0, o1);  // (not sparse: every row)
      }
      if (gate_first) {
#pragma omp barrier
#pragma omp for schedule(dynamic, 1)
        for (size_t k = 0; k < jobs.size(); ++k) active_neurons(jobs[k]);
#pragma omp single
        plan_sparse(jobs, t_up, c_up);
        const auto [lo, hi] = my_share(c_up);
        for (size_t i = lo, next; i < hi; i = next) {
          const auto [k, first, end] = t_up[i];
          ExpertJob& j = jobs[k];
          next = i + 1;
          if (first < 0) {
            relayout(j);
            continue;
          }
          // this thread's following rows of the job (listed or not) in one call: the 16-row kernel
          // prefetches each 16 rows' successors, and a call's first 16 start cold
          int64_t last = end;
          while (next < hi && std::get<0>(t_up[next]) == k && std::get<1>(t_up[next]) == last) last = std::get<2>(t_up[next++]);
          up_rows(j, first, last);
        }
      }
#pragma omp barrier
#pragma omp for schedule(dynamic, 1)
      for (size_t k = 0; k < jobs.size(); ++k) reglu(jobs[k]);
#pragma omp single
      for (size_t k = 0; k < jobs.size(); ++k) {
        const ExpertJob& j = jobs[k];
        if (j.neuron_rows) {  // one task: rows are dequantized whole (K-quant blocks span 256)
          t2.push_back({k, 0, j.R, 0, j.n_embd}), c2.push_back(c2.back() + j.R * (j.n_embd / kRowBlock) + 3);
          continue;
        }
        if (!j.major) {
          for (int64_t b = 0; b < (j.n_embd + kRowBlock - 1) / kRowBlock; ++b)
            t2.push_back({k, 0, j.R, b * kRowBlock, std::min(j.n_embd, (b + 1) * kRowBlock)}), c2.push_back(c2.back() + j.R + 3);
          continue;
        }
        // up to kSparseTokens tokens by groups of kNeuronGroup rows, each costing a fixed part per
        // row block and the active neurons' pieces of column
        for (int64_t t = 0; t < j.R; t += kSparseTokens) {
          const int64_t t_end = std::min(j.R, t + kSparseTokens);
          const int64_t active = j.token_first[size_t(t_end)] - j.token_first[size_t(t)];
          for (int64_t g = 0; g < j.n_embd; g += kNeuronGroup)
            t2.push_back({k, t, t_end, g, g + kNeuronGroup}),
                c2.push_back(c2.back() + kNeuronGroup / kRowBlock * (1 + 4 * active / j.n_ff));
        }
      }

      const auto [lo2, hi2] = my_share(c2);
      for (size_t i = lo2, next; i < hi2; i = next) {
        const DownTask& d = t2[i];
        ExpertJob& j = jobs[d.job];
        next = i + 1;
        // a neuron-major job: this thread's groups of the same tokens in one call (each column read in one run)
        if (j.major)
          while (next < hi2 && t2[next].job == d.job && t2[next].token0 == d.token0) ++next;
        down_rows(j, d.token0, d.token1, d.row0, t2[next - 1].row1);
      }
    }
    add_activity(group, jobs);
  }

  /// After the parallel part: the jobs' activity into their counters (experts of a layer share them).
  static void add_activity(std::span<const pmoe_op> group, std::span<const ExpertJob> jobs) {
    for (size_t k = 0; k < jobs.size(); ++k) {
      const ExpertJob& j = jobs[k];
      if (!j.activity) continue;
      j.activity[0] += int32_t(j.active), j.activity[1] += int32_t(j.R * j.n_ff);
      if (j.relayout_from && group[k].src[5].ne[0] >= 4)  // the re-layout's cost: matrices, microseconds
        j.activity[2] += 1, j.activity[3] += int32_t(j.relayout_ns / 1000);
    }
  }

  /// Whether job j, its active neurons listed, takes the sparse path: sparse_ffn on, or auto and
  /// few enough neurons active.
  bool pays_sparse(const ExpertJob& j) const {
    return sparse_ffn_ == SparseFfn::on || double(j.rows.size()) <= kAutoMaxActive * double(j.n_ff);
  }

  /// The neurons some routed token activates (gate > 0 or NaN), in order.
  static void active_neurons(ExpertJob& j) {
    j.rows.resize(size_t(j.n_ff) + 16);
    j.rows.resize(size_t(cpu::active_neurons(j.gate.data(), j.R, j.n_ff, j.n_ff, j.rows.data())));
  }

  /// After gate, each job's way (serial: it may add a re-layout): sparse where sparse_ffn is on,
  /// or auto and few enough neurons are active; the neuron-major `down` then, or already made.
  /// Adds the up rows (and re-layouts, first = -1) to the task list. Runs inside the parallel
  /// region (use_neuron_major does not throw).
  void plan_sparse(std::span<ExpertJob> jobs, std::vector<std::tuple<size_t, int64_t, int64_t>>& tasks,
                   std::vector<int64_t>& cost) {
    for (ExpertJob& j : jobs) {
      j.sparse = pays_sparse(j);
      use_neuron_major(j, j.sparse);
    }
    // a dense job sharing its `down` with a later sparse one (the same expert twice) reads the
    // neuron-major form too, which that one is about to make in place
    for (ExpertJob& j : jobs)
      if (!j.major) use_neuron_major(j, false);
    for (size_t k = 0; k < jobs.size(); ++k) {
      const ExpertJob& j = jobs[k];
      // listed rows in tasks of 4 blocks (the shares' granularity; a thread runs its consecutive
      // tasks of a job as one call)
      const int64_t n = j.sparse ? int64_t(j.rows.size()) : j.n_ff, step = j.sparse ? 4 * kRowBlock : kRowBlock;
      for (int64_t i = 0; i < n; i += step) {
        const int64_t end = std::min(n, i + step);
        tasks.emplace_back(k, i, end), cost.push_back(cost.back() + (end - i + kRowBlock - 1) / kRowBlock * (j.R + 3));
      }
      if (j.relayout_from) tasks.emplace_back(k, -1, -1), cost.push_back(cost.back() + j.n_embd / 4);
    }
  }

  /// ReGLU, a = relu(gate) * up, counting active neurons, and the activations prepared for down.
  /// A sparse job's `up` holds only the rows some token activates, and a neuron-major `down` takes
  /// each token's list of active neurons: for those, inactive activations are set to 0 and the
  /// lists made (dense: 0 * up, of either sign: the same quantized value, and no float sum that
  /// starts at +0 tells the two apart).
  void reglu(ExpertJob& j) {
    int64_t active = 0;
    if (!j.sparse && !j.major) {  // up has every row, down the dense layout
      for (size_t i = 0; i < j.gate.size(); ++i) {
        active += j.gate[i] > 0;
        j.gate[i] = std::max(j.gate[i], 0.f) * j.up[i];
      }
    } else {
      // (`up` rows not computed hold stale values, never read)
      j.token_active.resize(size_t(j.R * j.n_ff) + 16);
      j.token_first.assign(1, 0);
      for (int64_t t = 0; t < j.R; ++t) {
        const int64_t n = reglu_listed(&j.gate[size_t(t * j.n_ff)], &j.up[size_t(t * j.n_ff)], j.n_ff,
                                       &j.token_active[size_t(j.token_first.back())]);
        active += n;
        j.token_first.push_back(j.token_first.back() + (j.major ? n : 0));
      }
    }
    j.active = active;
    if (j.neuron_rows) return;  // down takes the floats
    if (j.major) {
      const uint64_t arow = sparse_act_bytes(j.d->dtype, j.n_ff);
      j.a8.resize(j.R * arow);
      for (int64_t t = 0; t < j.R; ++t) prepare_sparse_act(j.d->dtype, &j.gate[size_t(t * j.n_ff)], &j.a8[t * arow], j.n_ff);
    } else {
      j.a = prepare(j.d->dtype, j.od, j.gate.data(), j.n_ff, j.R, j.n_ff, j.aq, j.arow);
    }
  }

  void moe_combine(const pmoe_op& op) {
    const pmoe_tensor &y = op.src[0], &idx = op.src[1], &w = op.src[2], &dst = op.dst;
    need_type(y, PMOE_DTYPE_F32, "expert outputs");
    need_type(idx, PMOE_DTYPE_I32, "idx");
    need_type(w, PMOE_DTYPE_F32, "weights");
    need_type(dst, PMOE_DTYPE_F32, "dst");
    const int64_t n = dst.ne[0], T = dst.ne[1], K = idx.ne[0];
    if (y.ne[0] != n || idx.ne[1] != T || w.ne[0] != K || w.ne[1] != T) fail("shape mismatch");
    const float* py = ptr<float>(y, "expert outputs");
    const int32_t* pi = ptr<int32_t>(idx, "idx");
    const float* pw = ptr<float>(w, "weights");
    float* pd = ptr<float>(dst, "dst");
    for (int64_t t = 0; t < T; ++t)
      for (int64_t j = 0; j < K; ++j)
        if (pi[t * K + j] < 0 || pi[t * K + j] >= y.ne[1]) fail("route index out of range");
    std::vector<float> sum(static_cast<size_t>(n));
    for (int64_t t = 0; t < T; ++t) {
      std::fill(sum.begin(), sum.end(), 0.f);
      for (int64_t j = 0; j < K; ++j) {
        const float wj = pw[t * K + j];
        const float* yr = py + pi[t * K + j] * int64_t(y.nb[1] / 4);
        for (int64_t i = 0; i < n; ++i) sum[size_t(i)] += wj * yr[i];
      }
      float* d = pd + t * int64_t(dst.nb[1] / 4);
      for (int64_t i = 0; i < n; ++i) d[i] += sum[size_t(i)];
    }
  }

  const pmoe_host* host_;
  int threads_ = 1;
  int dnnl_min_rows_ = 4;
  bool dnnl_bf16_ = true;  // until oneDNN says it has no bf16 matmul here
  dnnl::engine engine_;
  dnnl::stream stream_;
  std::map<std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t, int64_t>, dnnl::matmul> dnnl_cache_;
  std::vector<std::vector<uint8_t>> product_scratch_;  // products(): each product's prepared activations
  std::vector<int64_t> product_cost_;
  std::vector<ExpertJob> jobs_;
  SparseFfn sparse_ffn_ = SparseFfn::automatic;
};

}  // namespace
}  // namespace pmoe::cpu

PMOE_PLUGIN("cpu-onednn", PMOE_PLUGIN_VERSION,
            pmoe::sdk::compute_impl<pmoe::cpu::CpuBackend>(
                "cpu-onednn", "CPU: oneDNN f32/bf16 matmul + AVX2/AVX-512 kernels for the GGUF block types (Q4_0..Q8_0, K-quants, IQ4)"))
