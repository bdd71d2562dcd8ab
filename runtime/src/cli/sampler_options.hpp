#pragma once
// The sampling options of the commands that generate (run, chat), with llama-cli's names and
// defaults, checked the same way for both.
#include "cli/cli_common.hpp"
#include "engine/sampler.hpp"

#include <random>

namespace pmoe::cli {

struct SamplerArgs {
  SamplerParams params;
  int64_t seed = -1;
};

inline void add_sampler_options(po::options_description& opts, SamplerArgs& a) {
  SamplerParams& sp = a.params;
  opts.add_options()
    ("temp", po::value(&sp.temperature)->default_value(0.8f, "0.8"), "temperature, 0..100 (0 = greedy)")
    ("top-k", po::value(&sp.top_k)->default_value(40), "top-k (0 = off)")
    ("top-p", po::value(&sp.top_p)->default_value(0.95f, "0.95"), "top-p, 0..1 (1 = off)")
    ("min-p", po::value(&sp.min_p)->default_value(0.05f, "0.05"), "min-p, 0..1 (0 = off)")
    ("repeat-penalty", po::value(&sp.repeat_penalty)->default_value(1.0f, "1"), "repetition penalty, > 0 (1 = off)")
    ("repeat-last-n", po::value(&sp.repeat_last_n)->default_value(64), "tokens the penalties look back")
    ("presence-penalty", po::value(&sp.presence_penalty)->default_value(0.0f, "0"), "subtracted from tokens seen, -2..2")
    ("frequency-penalty", po::value(&sp.frequency_penalty)->default_value(0.0f, "0"), "subtracted per occurrence, -2..2")
    ("seed,s", po::value(&a.seed)->default_value(-1), "random seed (-1: a random one, printed)");
}

/// Checks the ranges and picks the seed (a random one, printed, for -1).
inline SamplerParams apply_sampler_options(const SamplerArgs& a) {
  SamplerParams sp = a.params;
  check_range("--temp", sp.temperature, 0.f, 100.f);
  check_range("--top-p", sp.top_p, 0.f, 1.f);
  check_range("--min-p", sp.min_p, 0.f, 1.f);
  check_range("--repeat-penalty", sp.repeat_penalty, 1e-3f, 100.f);
  check_range("--presence-penalty", sp.presence_penalty, -2.f, 2.f);
  check_range("--frequency-penalty", sp.frequency_penalty, -2.f, 2.f);
  check_range("--top-k", sp.top_k, 0, 1 << 24);
  check_range("--repeat-last-n", sp.repeat_last_n, 0, 1 << 24);
  check_range("--seed", a.seed, int64_t(-1), int64_t(UINT32_MAX));
  sp.seed = a.seed >= 0 ? uint64_t(a.seed) : std::random_device{}();
  if (a.seed < 0) std::cerr << "seed: " << sp.seed << " (-s " << sp.seed << " repeats this run)\n";
  return sp;
}

}  // namespace pmoe::cli
