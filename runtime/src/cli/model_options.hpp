#pragma once
// Options shared by the commands that run a model (run, logits, bench): -m, -c, -t, --ctx-size.
#include "cli/cli_common.hpp"
#include "engine/session.hpp"

#include <cstdio>
#include <fstream>
#include <string>

namespace pmoe::cli {

inline void add_model_options(po::options_description& opts, SessionOptions& s) {
  opts.add_options()
    ("model,m", po::value(&s.model_path), "GGUF model file (default: `model:` of the config)")
    ("config,c", po::value(&s.config_path), "YAML config (default: built-in: cpu-onednn, everything in RAM)")
    ("threads,t", po::value(&s.threads), "compute threads (overrides the config)")
    ("ctx-size", po::value(&s.engine.n_ctx), "context size in tokens (default: min(model's, 4096))")
    ("ubatch", po::value(&s.engine.ubatch)->default_value(256), "tokens per prefill chunk");
}

/// Peak resident set size of this process in bytes (VmHWM), 0 if unknown.
inline uint64_t peak_rss_bytes() {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("VmHWM:", 0) == 0) return std::stoull(line.substr(6)) * 1024;
  return 0;
}

}  // namespace pmoe::cli
