// Speed of the cpu-onednn tile kernels alone, one thread, per weight type: a 1536 x 768 weight
// matrix (an expert's gate: 1.2M weights, resident in L2/L3) against 1 and 4 prepared activation
// rows. Prints GMAC/s and, for one row, the GB/s of weights the kernel consumes: what decode needs
// is the machine's memory bandwidth per core, what prefill needs is MACs. Median of 7 runs.
// Usage: pmoe_bench_kernels [TYPES...] (default: the types of Q4_K_M, Q4_0 and Q8_0 files);
// PMOE_CPU_MAX_ISA caps the kernel set as usual.
#include "kernels.hpp"
#include "sparse_ffn.hpp"
#include "bench_timing.hpp"
#include "../tests/unit/quant_reference.hpp"

#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

using namespace pmoe::cpu;
using pmoe::bench::median;
using pmoe::bench::run_times;

namespace {
/// `bytes` of random weights of `type` with sane scales (denormal or NaN scales would slow the
/// float units down and say nothing about the kernels).
std::vector<uint8_t> weights(std::mt19937& rng, uint32_t type, uint64_t bytes) {
  if (pmoe_dtype_block_elems(type) > 1) return pmoe::testref::random_blocks(rng, type, bytes / pmoe_dtype_block_bytes(type));
  std::vector<uint8_t> w(bytes);
  std::uniform_real_distribution<float> val(-0.1f, 0.1f);
  for (uint64_t i = 0; i + 4 <= bytes; i += 4) {
    const float v = val(rng);
    if (type == PMOE_DTYPE_F32) std::memcpy(&w[i], &v, 4);
    const uint16_t h[2] = {type == PMOE_DTYPE_F16 ? pmoe_fp32_to_fp16(v) : pmoe_fp32_to_bf16(v), 0};
    if (type != PMOE_DTYPE_F32) std::memcpy(&w[i], h, 4);
  }
  return w;
}
/// Rows o0..o1 of `w` times nc prepared columns, as the backend runs them (16 rows at a time for
/// one column where the type has such a kernel, else two rows at a time for types with a two-row kernel); returns a sum of outputs so that the work is not optimized away.
float rows_product(uint32_t type, const uint8_t* w, uint64_t row, int64_t o0, int64_t o1, const uint8_t* x,
                   uint64_t stride, int nc, int64_t n, Order order) {
  const TileFn tile = tile_kernel(type, order);
  const PairTileFn pair = pair_tile_kernel(type, order);
  float out[2 * kTileCols], sink = 0;
  int64_t o = o0;
  if (const Rows16Fn rows16 = nc == 1 ? rows16_kernel(type, order) : nullptr) {
    int32_t off[16];
    for (int k = 0; k < 16; ++k) off[k] = int32_t(k * int64_t(row));
    for (float r16[16]; o + 16 <= o1; o += 16) {
      rows16(w + uint64_t(o) * row, off, nullptr, x, n, r16);
      sink += r16[0];
    }
  }
  if (pair)
    for (; o + 1 < o1; o += 2) {
      pair(w + uint64_t(o) * row, row, x, stride, nc, n, order, out);
      sink += out[0];
    }
  for (; o < o1; ++o) {
    tile(w + uint64_t(o) * row, x, stride, nc, n, order, out);
    sink += out[0];
  }
  return sink;
}
/// Median seconds of 3 runs of part(th, nt) on nt threads at once (th = 0..nt-1).
template <class Part>
double threads_time(int nt, Part&& part) {
  return median(run_times(3, [&] {
    std::vector<std::thread> pool;
    for (int th = 0; th < nt; ++th) pool.emplace_back([&, th] { part(th, nt); });
    for (auto& p : pool) p.join();
  }));
}

/// Median seconds of per_matrix(m) for m < count, the matrices split between nt threads.
template <class PerMatrix>
double matrices_time(int nt, int64_t count, PerMatrix&& per_matrix) {
  return threads_time(nt, [&](int th, int of) {
    for (int64_t m = count * th / of; m < count * (th + 1) / of; ++m) per_matrix(m);
  });
}

/// Sparse ReGLU `down` (docs/reglu-sparsity.md) against the dense gemv, decode from DRAM: 256 MiB
/// of `type` expert `down` matrices (1536 rows of 768 neurons), one activation row with a fraction
/// of neurons active, split over 1 and 2 threads. Milliseconds per 256 MiB, and the dense bytes
/// over that time (what the dense kernel would need to stream to keep up).
void sparse_down_from_memory(std::mt19937& rng, uint32_t type) {
  const int64_t n_out = 1536, n_in = 768;
  if (!neuron_major_supported(type, n_out, n_in)) return;
  const char* name = pmoe_dtype_name(type);
  const uint64_t bytes = pmoe_dtype_row_bytes(type, n_in) * n_out;
  const int64_t count = int64_t((256ull << 20) / bytes);
  const std::vector<uint8_t> dense = weights(rng, type, bytes * uint64_t(count));
  std::vector<uint8_t> major(dense.size());
  const double t_relayout = median(run_times(3, [&] {
    for (int64_t m = 0; m < count; ++m) relayout_neuron_major(type, &dense[uint64_t(m) * bytes], &major[uint64_t(m) * bytes], n_out, n_in);
  }));
  std::printf("\nre-layout of %s down matrices into neuron-major (1 thread): %.2f GB/s, %.0f us per 4B expert\n", name,
              double(dense.size()) / t_relayout / 1e9, t_relayout / double(count) * 1e6);
  std::printf("\nsparse down (%s, %lld x %lld, neuron-major) vs dense gemv, 256 MiB from memory, 1 row:\n", name,
              (long long)n_out, (long long)n_in);
  std::printf("active  threads  dense ms  sparse ms  dense GB/s  sparse: dense-equivalent GB/s\n");
  for (double active : {1.0, 0.6, 0.4, 0.2, 0.1}) {
    std::vector<float> a(size_t(n_in), 0.f);
    std::vector<int32_t> list;
    for (int64_t o = 0; o < n_in; ++o)
      if (double(rng() % 1000) < active * 1000) a[size_t(o)] = float(int(rng() % 2001) - 1000) * 1e-3f, list.push_back(int32_t(o));
    std::vector<uint8_t> act(sparse_act_bytes(type, n_in));
    prepare_sparse_act(type, a.data(), act.data(), n_in);
    const Order order = sum_order(type, n_out);
    std::vector<uint8_t> xp(prepared_row_bytes(type, n_in, order));
    prepare_row(type, order, a.data(), xp.data(), n_in);
    const SparseDownFn fn = sparse_down_kernel(type);
    for (int nt = 1; nt <= 2; ++nt) {
      auto timed = [&](auto&& per_matrix) { return matrices_time(nt, count, per_matrix); };
      const double td = timed([&](int64_t m) {
        if (rows_product(type, &dense[uint64_t(m) * bytes], bytes / n_out, 0, n_out, xp.data(), 0, 1, n_in, order) == 42.f)
          std::puts("");
      });
      const double ts = timed([&](int64_t m) {
        float y[1536];
        // all rows in one call, as a thread's merged groups of an expert mostly are (whole columns)
        fn(&major[uint64_t(m) * bytes], n_out, n_in, act.data(), list.data(), int64_t(list.size()), 0, n_out, y);
        if (y[0] == 42.f) std::puts("");
      });
      std::printf("%6.2f %8d %9.2f %10.2f %11.2f %11.2f\n", double(list.size()) / n_in, nt, td * 1e3, ts * 1e3,
                  double(dense.size()) / td / 1e9, double(dense.size()) / ts / 1e9);
    }
  }
}

/// Sparse ReGLU `up` (docs/reglu-sparsity.md) against the dense gemv, decode from DRAM: 256 MiB of
/// Q4_0 expert `up` matrices (768 rows of 1536), only the active rows, 16 at a time as the
/// backend's row lists run (each call naming the next 16 to prefetch), split over 1 and 2 threads.
void sparse_up_from_memory(std::mt19937& rng) {
  const int64_t n_rows = 768, n = 1536;
  const uint64_t row = pmoe_dtype_row_bytes(PMOE_DTYPE_Q4_0, n), bytes = row * n_rows;
  const int64_t count = int64_t((256ull << 20) / bytes);
  const std::vector<uint8_t> w = weights(rng, PMOE_DTYPE_Q4_0, bytes * uint64_t(count));
  std::vector<float> x(size_t(n), 0.5f);
  const Order order = sum_order(PMOE_DTYPE_Q4_0, n_rows);
  std::vector<uint8_t> xp(prepared_row_bytes(PMOE_DTYPE_Q4_0, n, order));
  prepare_row(PMOE_DTYPE_Q4_0, order, x.data(), xp.data(), n);
  const Rows16Fn fn = rows16_kernel(PMOE_DTYPE_Q4_0, order);
  if (!fn) {
    std::puts("\nsparse up: this kernel set has no 16-row kernel");
    return;
  }
  std::printf("\nsparse up (Q4_0, %lld x %lld, listed rows) vs dense gemv, 256 MiB from memory, 1 row:\n", (long long)n_rows,
              (long long)n);
  std::printf("active  threads  dense ms  sparse ms  dense GB/s  sparse: dense-equivalent GB/s\n");
  for (double active : {1.0, 0.6, 0.4, 0.2}) {
    std::vector<int32_t> list;
    for (int64_t o = 0; o < n_rows; ++o)
      if (double(rng() % 1000) < active * 1000) list.push_back(int32_t(o));
    const int64_t listed = int64_t(list.size()) / 16 * 16;
    for (int nt = 1; nt <= 2; ++nt) {
      auto timed = [&](auto&& per_matrix) { return matrices_time(nt, count, per_matrix); };
      const double td = timed([&](int64_t m) {
        if (rows_product(PMOE_DTYPE_Q4_0, &w[uint64_t(m) * bytes], row, 0, n_rows, xp.data(), 0, 1, n, order) == 42.f)
          std::puts("");
      });
      const double ts = timed([&](int64_t m) {
        const uint8_t* base = &w[uint64_t(m) * bytes];
        float out[16];
        int32_t off[16], next[16];
        for (int64_t i = 0; i < listed; i += 16) {
          for (int k = 0; k < 16; ++k) off[k] = int32_t(uint64_t(list[size_t(i + k)] - list[size_t(i)]) * row);
          const bool more = i + 32 <= listed;
          if (more)
            for (int k = 0; k < 16; ++k) next[k] = int32_t(uint64_t(list[size_t(i + 16 + k)] - list[size_t(i)]) * row);
          fn(base + uint64_t(list[size_t(i)]) * row, off, more ? next : nullptr, xp.data(), n, out);
          if (out[0] == 42.f) std::puts("");
        }
      });
      std::printf("%6.2f %8d %9.2f %10.2f %11.2f %11.2f\n", double(listed) / n_rows, nt, td * 1e3, ts * 1e3,
                  double(w.size()) / td / 1e9, double(w.size()) / ts / 1e9);
    }
  }
}

/// One decode query's attention (the 4B's 12 heads of 128 over 2 KV heads, f32 cache), one
/// thread, at growing contexts: microseconds per call and the K/V bytes it reads per second.
void attention_decode() {
  std::printf("\nattention, one query, 12 heads of 128 (2 KV heads), 1 thread:\n");
  std::printf("context  us/call  K+V GB/s\n");
  std::mt19937 rng(3);
  std::normal_distribution<float> nd(0.f, 1.f);
  const int64_t hd = 128, n_head = 12, n_kv_head = 2, ks = hd * n_kv_head;
  const AttendFn fn = attend_kernel();
  for (int64_t ctx : {128, 512, 2048}) {
    std::vector<float> q(static_cast<size_t>(hd * n_head)), k(static_cast<size_t>(ctx * ks)), v(k.size()), out(q.size());
    for (auto* t : {&q, &k, &v})
      for (float& x : *t) x = nd(rng);
    std::vector<float> w(static_cast<size_t>(ctx + 17)), lanes(static_cast<size_t>(64 * hd));
    std::vector<double> wide(static_cast<size_t>(hd));
    const AttendScratch scratch{w.data(), lanes.data(), wide.data()};
    const int64_t p = ctx - 1, n_vec = std::min<int64_t>(ctx, (p / 32 + 1) * 32);
    const double t = median(run_times(7, [&] {
      for (int rep = 0; rep < 20; ++rep)
        for (int64_t h = 0; h < n_head; ++h) {
          const int64_t kv = h / (n_head / n_kv_head) * hd;  // the head's KV head
          fn(q.data() + h * hd, k.data() + kv, ks, v.data() + kv, ks, hd, 0, p, 0.088f, false, n_vec, out.data() + h * hd,
             scratch);
        }
    })) / 20;
    std::printf("%7lld %8.2f %9.2f\n", (long long)ctx, t * 1e6, double(2 * k.size() * 4) / t / 1e9);
  }
}
}  // namespace

int main(int argc, char** argv) {
  std::vector<uint32_t> types = {PMOE_DTYPE_Q4_K, PMOE_DTYPE_Q6_K, PMOE_DTYPE_Q4_0, PMOE_DTYPE_Q8_0, PMOE_DTYPE_Q5_K,
                                 PMOE_DTYPE_Q3_K, PMOE_DTYPE_IQ4_XS, PMOE_DTYPE_F32};
  if (argc > 1) {
    types.clear();
    for (int i = 1; i < argc; ++i)
      for (uint32_t t = 0; t < 40; ++t)
        if (pmoe_dtype_name(t) && argv[i] == std::string(pmoe_dtype_name(t))) types.push_back(t);
  }
  const int64_t n = 1536, rows = 768;
  std::mt19937 rng(1);
  std::printf("kernels %s, %lld x %lld weights, 1 thread, median of 7\n", isa_name(kernel_isa()), (long long)rows, (long long)n);
  std::printf("type     order    1 row GMAC/s  GB/s    4 rows GMAC/s\n");
  for (uint32_t type : types) {
    const uint64_t row = pmoe_dtype_row_bytes(type, uint64_t(n));
    const std::vector<uint8_t> w = weights(rng, type, row * rows);
    std::vector<float> x(size_t(n) * kTileCols);
    for (auto& v : x) v = float(int(rng() % 2001) - 1000) * 1e-3f;
    for (Order order : {Order::vec_dot, Order::gemv, Order::gemm}) {
      // only the orders this type's products use (vec_dot, or gemv and gemm where repacked; F32 all)
      if (order != Order::vec_dot && sum_order(type, rows) == Order::vec_dot && type != PMOE_DTYPE_F32) continue;
      if (order == Order::vec_dot && sum_order(type, rows) != Order::vec_dot) continue;
      const uint64_t xb = prepared_row_bytes(type, n, order), stride = xb ? xb : uint64_t(n) * 4;
      std::vector<uint8_t> xp(stride * kTileCols);
      for (int c = 0; c < kTileCols; ++c) {
        if (xb) prepare_row(type, order, x.data() + c * n, xp.data() + c * stride, n);
        else std::memcpy(xp.data() + c * stride, x.data() + c * n, size_t(n) * 4);
      }
      double gmacs[2];
      for (int ci = 0; ci < 2; ++ci) {
        const int nc = ci ? kTileCols : 1;
        float sink = 0;
        const double t = median(
            run_times(7, [&] { sink += rows_product(type, w.data(), row, 0, rows, xp.data(), stride, nc, n, order); }));
        if (sink == 42.f) std::puts("");
        gmacs[ci] = double(n) * double(rows) * nc / t / 1e9;
      }
      const char* on = order == Order::vec_dot ? "vec_dot" : order == Order::gemv ? "gemv" : "gemm";
      std::printf("%-8s %-8s %13.2f %6.2f %16.2f\n", pmoe_dtype_name(type), on, gmacs[0],
                  gmacs[0] * double(row) / double(n), gmacs[1]);
    }
  }
  // decode from DRAM: one activation row against 256 MiB of weights, split over 1 and 2 threads
  std::printf("\nstreaming 256 MiB of weights from memory (decode), 1 row, GB/s of weights:\n");
  std::printf("type     1 thread  2 threads\n");
  for (uint32_t type : types) {
    const uint64_t row = pmoe_dtype_row_bytes(type, uint64_t(n));
    const int64_t big_rows = int64_t((256ull << 20) / row) / 8 * 8;  // a multiple of 8: repacked types stay so
    const std::vector<uint8_t> w = weights(rng, type, row * uint64_t(big_rows));
    std::vector<float> x(size_t(n), 0.5f);
    const Order order = sum_order(type, big_rows);
    const uint64_t xb = prepared_row_bytes(type, n, order);
    std::vector<uint8_t> xp(xb ? xb : uint64_t(n) * 4);
    if (xb) prepare_row(type, order, x.data(), xp.data(), n);
    else std::memcpy(xp.data(), x.data(), size_t(n) * 4);
    double gbs[2];
    for (int nt = 1; nt <= 2; ++nt) {
      const double t = threads_time(nt, [&](int th, int of) {
        const float sink = rows_product(type, w.data(), row, big_rows * th / of / 2 * 2, big_rows * (th + 1) / of / 2 * 2,
                                        xp.data(), 0, 1, n, order);
        if (sink == 42.f) std::puts("");
      });
      gbs[nt - 1] = double(w.size()) / t / 1e9;
    }
    std::printf("%-8s %8.2f %10.2f\n", pmoe_dtype_name(type), gbs[0], gbs[1]);
  }
  sparse_down_from_memory(rng, PMOE_DTYPE_Q4_0);
  sparse_down_from_memory(rng, PMOE_DTYPE_Q4_K);
  sparse_up_from_memory(rng);
  attention_decode();
  return 0;
}
