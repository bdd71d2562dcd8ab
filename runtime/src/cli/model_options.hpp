#pragma once
// Options shared by the commands that run a model (run, logits, bench): -m, -c, -t, --ctx-size.
#include "bench/machine.hpp"
#include "cli/cli_common.hpp"
#include "common/format.hpp"
#include "engine/session.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

namespace pmoe::cli {

/// The numbers of the model options as typed (signed and wide, so "-1" is not silently wrapped
/// into 4294967295); apply_model_options checks and stores them.
struct ModelArgs {
  int64_t threads = 0, ctx_size = 0, ubatch = 0;
};

inline void add_model_options(po::options_description& opts, SessionOptions& s, ModelArgs& a) {
  opts.add_options()
    ("model,m", po::value(&s.model_path), "GGUF model file (default: `model:` of the config)")
    ("config,c", po::value(&s.config_path), "YAML config (default: built-in: cpu-onednn, everything in RAM)")
    ("threads,t", po::value(&a.threads), "compute threads, 1..1024 (overrides the config)")
    ("ctx-size", po::value(&a.ctx_size), "context size in tokens, 1..1048576 (default: min(model's, 4096))")
    ("ubatch", po::value(&a.ubatch), "tokens per prefill chunk, 1..65536 (default: the config's prefetch.prefill_chunk, else 256; "
                                     "the same in RAM and streamed, so both give the same text)");
}

/// Checks the model options (ranges; a number where llama-cli habits put one, see
/// reject_llama_cli_habits) and stores them in `s`.
inline void apply_model_options(const po::variables_map& vm, const ModelArgs& a, SessionOptions& s) {
  if (vm.count("threads")) s.threads = int(check_range("--threads", a.threads, int64_t(1), int64_t(1024)));
  if (vm.count("ctx-size")) s.engine.n_ctx = uint32_t(check_range("--ctx-size", a.ctx_size, int64_t(1), int64_t(1) << 20));
  if (vm.count("ubatch")) s.engine.ubatch = uint32_t(check_range("--ubatch", a.ubatch, int64_t(1), int64_t(65536)));
  if (!s.config_path.empty() && !std::filesystem::exists(s.config_path) &&
      s.config_path.find_first_not_of("0123456789") == std::string::npos)
    throw UsageError("-c " + s.config_path + ": -c is the config file here (llama-cli's -c is the context size: use --ctx-size " +
                     s.config_path + ")");
}

/// Peak resident set size of this process in bytes (VmHWM), 0 if unknown.
inline uint64_t peak_rss_bytes() { return bench::process_status_bytes("VmHWM"); }

/// Experts one layer step needs: each distinct expert is loaded once per chunk, however many of
/// the chunk's tokens use it (the unit of `uses` in the statistics).
inline uint64_t distinct_experts(const RoutingEvent& ev) {
  std::vector<int32_t> e(ev.experts.begin(), ev.experts.end());
  std::sort(e.begin(), e.end());
  return uint64_t(std::unique(e.begin(), e.end()) - e.begin());
}

/// The counters of CacheStats as JSON. Hits split into demand hits (resident when first asked
/// for) and prefetch hits (there because a prefetch read them). `wall_seconds` > 0 adds the read
/// throughput over that wall time (summed per-read times overlap, so they would overstate it).
inline nlohmann::json cache_counters_json(const CacheStats& c, double wall_seconds = 0) {
  nlohmann::json j{{"uses", c.uses}, {"hits", c.hits}, {"demand_hits", c.hits - c.prefetch_hits},
                   {"misses", c.misses}, {"prefetches", c.prefetches}, {"prefetch_hits", c.prefetch_hits},
                   {"prefetch_wasted", c.prefetch_wasted}, {"bytes_read", c.bytes_read},
                   {"read_seconds", c.read_seconds}, {"stall_seconds", c.stall_seconds}};
  if (wall_seconds > 0) j["read_bytes_per_second"] = double(c.bytes_read) / wall_seconds;
  return j;
}

/// The fraction of ReGLU neurons that were active (gate > 0), overall and per layer, over every
/// expert use so far; null when the compute backend does not count them.
inline nlohmann::json reglu_activity_json(const Engine& e) {
  uint64_t active = 0, total = 0;
  nlohmann::json per_layer = nlohmann::json::array();
  uint64_t relaid = 0, relayout_us = 0;
  for (const Engine::ReluActivity& l : e.reglu_activity()) {
    active += l.active, total += l.computed, relaid += l.relaid, relayout_us += l.relayout_us;
    per_layer.push_back(l.computed ? nlohmann::json(double(l.active) / double(l.computed)) : nlohmann::json());
  }
  if (!total) return nullptr;
  // the sparse kernels' re-layout of `down` as experts enter memory (cpu-onednn, sparse_ffn)
  return {{"overall", double(active) / double(total)},
          {"per_layer", per_layer},
          {"relaid_matrices", relaid},
          {"relayout_seconds", double(relayout_us) * 1e-6}};
}

/// Totals of the expert cache so far (zero when every expert is resident).
inline CacheStats cache_totals(Session& s) {
  return s.expert_cache() ? s.expert_cache()->total_stats() : CacheStats{};
}

/// Expert-cache statistics: totals plus one entry per layer. With no cache every expert is
/// resident, so every use counts as a hit and nothing is read.
inline nlohmann::json cache_stats_json(Session& s, uint64_t uses_if_resident, double wall_seconds = 0) {
  ExpertCache* cache = s.expert_cache();
  CacheStats resident;
  resident.uses = resident.hits = uses_if_resident;
  nlohmann::json j = cache_counters_json(cache ? cache->total_stats() : resident, wall_seconds);
  j["streaming"] = cache != nullptr;
  j["weights_load"] = gguf_load_name(s.weights_load());
  if (!cache) return j;
  j["slots"] = cache->capacity();
  j["slot_bytes"] = cache->slot_bytes();
  j["layers"] = nlohmann::json::array();
  for (const CacheStats& c : cache->layer_stats()) j["layers"].push_back(cache_counters_json(c));
  return j;
}

/// One line for the end of a run.
inline std::string cache_summary(Session& s, uint64_t uses_if_resident) {
  ExpertCache* cache = s.expert_cache();
  if (!cache)
    return "experts: all resident (" + std::to_string(uses_if_resident) + " uses, none read) | weights " +
           (s.weights_load() == GgufLoad::read ? "read into memory" : "mapped");
  const CacheStats c = cache->total_stats();
  char buf[256];
  std::snprintf(buf, sizeof buf,
                "experts: %u slots of %s | hit rate %.1f%% (%llu/%llu) | prefetch %llu (hits %llu, wasted %llu) | read %s | stall %.3f s",
                cache->capacity(), format_bytes(cache->slot_bytes()).c_str(),
                c.uses ? 100.0 * double(c.hits) / double(c.uses) : 0.0, (unsigned long long)c.hits,
                (unsigned long long)c.uses, (unsigned long long)c.prefetches,
                (unsigned long long)c.prefetch_hits, (unsigned long long)c.prefetch_wasted,
                format_bytes(c.bytes_read).c_str(), c.stall_seconds);
  return buf;
}

}  // namespace pmoe::cli
