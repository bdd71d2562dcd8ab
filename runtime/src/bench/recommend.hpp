#pragma once
// The rules of `pocketmoe probe`: from what was measured on this machine to a config (compute
// plugin, storage plugin, budget, lookahead, prefill chunk), each with its reason. Pure
// functions of the measurements, so the rules are tested on their own (docs/probe.md).
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace pmoe::bench {

/// What the model needs (from its GGUF).
struct ModelNeeds {
  uint64_t file_bytes = 0, dense_bytes = 0, expert_bytes_total = 0;
  uint64_t expert_bytes = 0;  // one expert (gate + up + down)
  uint32_t n_layer = 0, n_expert = 0, n_expert_used = 0;
};

/// One storage plugin's random expert reads at one queue depth.
struct DiskPoint {
  std::string plugin;
  bool direct = false;
  uint32_t queue_depth = 0;
  double gb_per_s = 0, p95_us = 0;
};

/// One compute candidate's measured decode speed (0 with `note` when it gave no result).
struct ComputePoint {
  std::string plugin;  // "cpu-onednn", "vulkan"
  std::string device;  // the vulkan `device:` option ("" for the CPU)
  std::string label;   // what to print: plugin and device name
  double decode_tps = 0;
  std::string note;    // why there is no figure (timed out, failed)
};

struct Measurements {
  uint64_t ram_available = 0;
  double memory_gb_per_s = 0;  // all threads
  std::vector<DiskPoint> disk;
  std::vector<ComputePoint> compute;
};

struct Choice {
  std::string value, reason;
};
struct Recommendation {
  Choice compute;                 // plugin name
  std::string vulkan_device;      // for compute = vulkan
  bool streamed = false;          // experts stream through a cache (else everything in RAM)
  Choice storage;                 // plugin (streamed only)
  Choice direct_io;               // "true"/"false"
  Choice budget;                  // bytes as text ("768MiB"); "0" in RAM
  uint64_t budget_bytes = 0;
  Choice lookahead;
  std::vector<std::string> warnings;
};

/// Queue depth the storage choice is judged at: the reads in flight while decoding (top-k
/// experts of the next layer, three matrices each).
uint32_t decode_queue_depth(const ModelNeeds& m);

/// Memory kept free for the OS, the KV cache and activations: 512 MiB plus 10% of what is
/// available.
uint64_t memory_reserve(uint64_t available);

/// The storage/budget part, from memory and disk figures (the compute part needs a measured
/// decode speed, which itself runs with this part: see recommend_compute).
Recommendation recommend_memory_and_storage(const ModelNeeds& m, const Measurements& x);

/// Completes `r` with the compute plugin (the fastest measured) and the lookahead, which
/// depends on the measured time per layer.
void recommend_compute(const ModelNeeds& m, const Measurements& x, Recommendation& r);

/// The recommendation as a commented YAML config.
std::string config_yaml(const Recommendation& r, const std::string& header);

}  // namespace pmoe::bench
