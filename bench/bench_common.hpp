// Shared by the benchmarks: timing and medians (bench_timing.hpp), the machine's read bandwidth
// and the bytes one decode step reads (the physical bound every decode figure is printed next to).
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <pthread.h>
#include <sched.h>
#include <thread>
#include <vector>

#include "bench_timing.hpp"
#include "model/model.hpp"

#include <pocketmoe/dtype.h>

namespace pmoe::bench {

// Read bandwidth: `threads` threads each sum their slice of a 1 GiB buffer; bytes / wall time.
inline std::vector<double> read_bandwidth(unsigned threads, int runs) {
  const size_t n = (size_t(1) << 30) / sizeof(uint64_t);
  std::vector<uint64_t> buf(n);
  for (size_t i = 0; i < n; ++i) buf[i] = i;  // touch every page
  std::vector<uint64_t> sink(threads);
  std::vector<double> gbs;
  for (int r = 0; r <= runs; ++r) {  // run 0 warms up
    const auto t0 = Clock::now();
    std::vector<std::thread> pool;
    for (unsigned t = 0; t < threads; ++t)
      pool.emplace_back([&, t] {
        // on its own core, as the compute threads are (OMP_PROC_BIND)
        cpu_set_t one;
        CPU_ZERO(&one);
        CPU_SET(t % std::max(1u, std::thread::hardware_concurrency()), &one);
        pthread_setaffinity_np(pthread_self(), sizeof one, &one);
        const uint64_t* p = buf.data() + n / threads * t;
        const size_t m = n / threads;
        uint64_t a[8] = {};
        for (size_t i = 0; i < m; i += 8)
          for (int j = 0; j < 8; ++j) a[j] += p[i + j];
        sink[t] = a[0] + a[1] + a[2] + a[3] + a[4] + a[5] + a[6] + a[7];
      });
    for (auto& t : pool) t.join();
    if (r)
      gbs.push_back(double(n / threads * threads * sizeof(uint64_t)) / seconds_since(t0) / 1e9);
  }
  if (std::find(sink.begin(), sink.end(), 42) != sink.end()) std::puts("");  // keep the sums
  return gbs;
}

inline double load_average() {  // 1-minute load average; 0 if unknown
  double l = 0;
  std::ifstream("/proc/loadavg") >> l;
  return l;
}

struct ActiveBytes {
  double weights = 0, kv = 0;
  // of `weights`, what sparse ReGLU kernels leave unread per unit of inactive neurons: the rows of
  // `up`, and of a neuron-major `down` its 4-bit values (Q4_0: 16 of a block's 18 bytes; Q4_K,
  // where the AVX-512 kernels run: 128 of a super-block's 144)
  double sparse_skippable = 0;
};

// Bytes one decode step reads, averaged over the steps at positions [first, first + steps).
inline ActiveBytes active_bytes(const Model& m, uint32_t first, uint32_t steps) {
  const Hparams& h = m.hp();
  ActiveBytes a;
  a.weights =
      double(m.token_embd().size) / h.n_vocab + double(m.output_norm().size + m.output().size);
  for (uint32_t il = 0; il < h.n_layer; ++il) {
    const LayerTensors& L = m.layer(il);
    for (const GgufTensorInfo* t : {L.attn_norm, L.wq, L.wk, L.wv, L.wo, L.ffn_norm, L.router})
      a.weights += double(t->size);
    a.weights += double(h.n_expert_used) * double(m.expert_bytes(il));
    const GgufTensorInfo &up = m.expert_tensor(il, ExpertMatrix::Up), &down = m.expert_tensor(il, ExpertMatrix::Down);
    // down skips the 4-bit part of neuron-major Q4_0/Q4_K columns, or whole rows where it is stored
    // one row per neuron (--transpose-down), of any type
    const bool neuron_rows = down.ne[0] == int64_t(h.n_embd) && h.n_embd != h.n_ff_exp;
    a.sparse_skippable += double(h.n_expert_used) / h.n_expert *
                          (double(up.size) + (neuron_rows                     ? double(down.size)
                                              : down.type == PMOE_DTYPE_Q4_0 ? double(down.size) * 16 / 18
                                              : down.type == PMOE_DTYPE_Q4_K ? double(down.size) * 128 / 144
                                                                             : 0.0));
    for (uint32_t p = first; p < first + steps; ++p) {  // f32 K and V rows of the visible keys
      const uint32_t w = h.layers[il].window;
      const uint32_t keys = w ? std::min(p + 1, w) : p + 1;
      a.kv += 2.0 * keys * h.kv_dim() * 4 / steps;
    }
  }
  return a;
}

/// Touch every page of the model's mapping, so the first timed run does not pay for page faults.
inline void fault_in(const Model& m) {
  const uint8_t* p = m.file().base();
  uint64_t acc = 0;
  for (uint64_t off = 0; off < m.file().file_size(); off += 4096) acc += p[off];
  if (acc == 42) std::puts("");
}

}  // namespace pmoe::bench
