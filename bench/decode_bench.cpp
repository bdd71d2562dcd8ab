// Decode speed with the whole model in RAM, against the memory-bandwidth bound.
//
// Synthesizes the 4B-A0.6B shape in Q4_0 and Q8_0 (with routing skew; reused when present),
// then per model: prompt of P random tokens, G greedy decode steps, several runs. Prints the
// median decode tokens/s next to the bound = measured read bandwidth / bytes read per decoded
// token (embedding row, every layer's norms, attention, router and top-k experts, output norm,
// lm_head, and the KV cache rows attention reads), and their ratio. DESIGN.md §8 asks >= 90%.
// Also prints the best run and the load average: on a shared machine the OpenMP threads of the
// compute backend lose badly to other jobs, and the best run is then the better estimate.
#include <boost/program_options.hpp>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <random>
#include <sstream>

#include "common/error.hpp"
#include "engine/sampler.hpp"
#include "engine/session.hpp"
#include "synth/synth.hpp"
#include "bench_common.hpp"

namespace fs = std::filesystem;
namespace po = boost::program_options;
using namespace pmoe;
using namespace pmoe::bench;

int main(int argc, char** argv) try {
  // Bind the compute threads to cores (unless the caller chose): on a small shared machine an
  // unbound team gets migrated and preempted, and run-to-run spread swamps what is measured.
  // libgomp reads this when the compute plugin loads it, which is after this line.
  setenv("OMP_PROC_BIND", "true", 0);
  po::options_description opts("pmoe_bench_decode options");
  opts.add_options()("help,h", "show this help")(
      "models", po::value<std::string>(),
      "model directory (default $PMOE_BENCH_MODELS or <build>/bench-models)")(
      "shape", po::value<std::string>()->default_value("4b-a0.6b"), "synth preset")(
      "types", po::value<std::string>()->default_value("q4_0,q8_0"),
      "comma-separated weight types")("uniform",
                                      "near-uniform routing instead of the realistic skew")(
      "prompt,p", po::value<uint32_t>()->default_value(64), "prompt tokens")(
      "gen,n", po::value<uint32_t>()->default_value(128), "decoded tokens per run")(
      "runs,r", po::value<int>()->default_value(5), "timed runs per model (after one warm-up)")(
      "threads,t", po::value<unsigned>()->default_value(2),
      "compute threads (and bandwidth threads)")("config,c", po::value<std::string>(),
                                                 "config file (overrides --threads for compute)");
  po::variables_map vm;
  po::store(po::parse_command_line(argc, argv, opts), vm);
  if (vm.count("help")) {
    std::cout << opts;
    return 0;
  }
  const uint32_t prompt = vm["prompt"].as<uint32_t>(), gen = vm["gen"].as<uint32_t>();
  const int runs = std::max(1, vm["runs"].as<int>());
  const unsigned threads = std::max(1u, vm["threads"].as<unsigned>());
  const bool skew = !vm.count("uniform");
  const std::string shape = vm["shape"].as<std::string>();
  fs::path dir = vm.count("models")                 ? fs::path(vm["models"].as<std::string>())
                 : std::getenv("PMOE_BENCH_MODELS") ? fs::path(std::getenv("PMOE_BENCH_MODELS"))
                                                    : fs::path(PMOE_BUILD_DIR) / "bench-models";
  fs::create_directories(dir);
  std::string config;
  if (vm.count("config")) {
    config = vm["config"].as<std::string>();
  } else {
    config = (dir / ("bench-threads" + std::to_string(threads) + ".yaml")).string();
    std::ofstream(config) << "compute: { plugin: cpu-onednn, threads: " << threads << " }\n";
  }

  std::printf(
      "pocketmoe decode benchmark: %s%s, prompt %u, decode %u, %u threads (OMP_PROC_BIND=%s), median of %d runs\n",
      shape.c_str(), skew ? " (routing skew)" : " (uniform routing)", prompt, gen, threads,
      std::getenv("OMP_PROC_BIND"), runs);
  const double load = load_average();
  if (load > 0.5)
    std::printf("warning: load average %.2f before the start: other jobs compete for the cores, "
                "medians will be low (compare 'best')\n", load);
  const std::vector<double> bw_runs = read_bandwidth(threads, 5);
  const double bw = median(bw_runs);
  std::printf("memory read bandwidth: %.2f GB/s (%u threads summing 1 GiB, median of 5: %s)\n\n",
              bw, threads, list(bw_runs, "%.2f").c_str());
  std::printf("type   file GiB  weights MB/tok  KV MB/tok  bound tok/s  decode tok/s  of bound  "
              "best tok/s  of bound  prefill tok/s  load  decode runs\n");

  std::stringstream types(vm["types"].as<std::string>());
  for (std::string type; std::getline(types, type, ',');) {
    synth::Options so;
    so.shape = synth::preset(shape);
    so.shape.type = synth::parse_type(type);
    so.routing_skew = skew;
    const fs::path path =
        dir / ("synth-" + shape + "-" + type + (skew ? "-skew" : "-uniform") + ".gguf");
    if (!fs::exists(path)) {
      std::fprintf(stderr, "synthesizing %s\n", path.c_str());
      synth::write_model(so, path.string(), synth::stderr_progress("synth " + type));
    }

    SessionOptions sopt;
    sopt.model_path = path.string();
    sopt.config_path = config;
    sopt.engine.n_ctx = prompt + gen + 1;
    sopt.load_tokenizer = false;
    Session s(sopt);
    Engine& eng = s.engine();
    const Model& m = s.model();
    fault_in(m);

    std::mt19937 rng(7);
    std::vector<int32_t> toks(prompt);
    for (int32_t& t : toks) t = int32_t(rng() % m.hp().n_vocab);
    std::vector<double> decode_tps, prefill_tps;
    std::vector<int32_t> first_out, out;
    std::vector<float> logits;
    for (int r = 0; r <= runs; ++r) {  // run 0 warms up
      eng.reset();
      logits.clear();
      auto t0 = Clock::now();
      eng.eval(toks, false, logits);
      const double t_prefill = seconds_since(t0);
      out.assign(1, argmax(logits));
      t0 = Clock::now();
      for (uint32_t i = 0; i < gen; ++i) {
        logits.clear();
        eng.eval(std::span(&out.back(), 1), false, logits);
        out.push_back(argmax(logits));
      }
      const double t_decode = seconds_since(t0);
      if (r == 0) {
        first_out = out;
        continue;
      }
      if (out != first_out) std::fprintf(stderr, "warning: run %d decoded different tokens\n", r);
      decode_tps.push_back(gen / t_decode);
      prefill_tps.push_back(prompt / t_prefill);
    }

    const ActiveBytes ab = active_bytes(m, prompt, gen);
    const double bound = bw * 1e9 / (ab.weights + ab.kv), tps = median(decode_tps);
    const double best = *std::max_element(decode_tps.begin(), decode_tps.end());
    std::printf("%-6s %8.2f %14.1f %9.1f %11.1f %12.1f %8.0f%% %11.1f %8.0f%% %14.1f %5.2f  %s\n",
                type.c_str(), double(m.file().file_size()) / (1u << 30), ab.weights / 1e6,
                ab.kv / 1e6, bound, tps, 100 * tps / bound, best, 100 * best / bound,
                median(prefill_tps), load_average(), list(decode_tps, "%.1f").c_str());
    std::fflush(stdout);
  }
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "error: %s\n", e.what());
  return 1;
}
