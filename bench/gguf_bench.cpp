// llama-bench's measurements on any GGUF file, so both run the same tests on the same file:
// pp<N> = one batch of N random tokens into an empty context, tg<N> = N tokens decoded one at a
// time from an empty context. One warm-up run, then the median of --reps timed runs. Prints one
// line per test ("file test tok/s [runs]") and, for tg, the memory-bandwidth bound: bytes one
// decode step reads / the machine's read bandwidth (measured first, same thread count).
// bench/vs-llama.sh runs it and llama-bench in interleaved rounds.
#include <boost/program_options.hpp>
#include <cstdlib>
#include <iostream>
#include <random>
#include <sstream>

#include "bench_common.hpp"
#include "engine/sampler.hpp"
#include "engine/session.hpp"

namespace po = boost::program_options;
using namespace pmoe;
using namespace pmoe::bench;

namespace {
std::vector<uint32_t> parse_list(const std::string& s) {
  std::vector<uint32_t> v;
  std::stringstream in(s);
  for (std::string x; std::getline(in, x, ',');)
    if (!x.empty()) v.push_back(uint32_t(std::stoul(x)));
  return v;
}
}  // namespace

int main(int argc, char** argv) try {
  setenv("OMP_PROC_BIND", "true", 0);  // as decode_bench: steadier on a small shared machine
  po::options_description opts("pmoe_bench_gguf options");
  opts.add_options()("help,h", "show this help")("model,m", po::value<std::vector<std::string>>()->required(), "GGUF file(s)")(
      "n-prompt,p", po::value<std::string>()->default_value("64,512"), "prompt sizes (pp tests), comma-separated")(
      "n-gen,n", po::value<std::string>()->default_value("128"), "generated tokens (tg tests), comma-separated")(
      "reps,r", po::value<int>()->default_value(3), "timed runs per test (after one warm-up)")(
      "threads,t", po::value<int>()->default_value(2), "compute threads")(
      "ubatch,u", po::value<uint32_t>()->default_value(512), "tokens per forward chunk (llama-bench's n_ubatch)")(
      "config,c", po::value<std::string>()->default_value(""), "config file (default: built-in, all in RAM)");
  po::variables_map vm;
  po::store(po::parse_command_line(argc, argv, opts), vm);
  if (vm.count("help")) {
    std::cout << opts;
    return 0;
  }
  po::notify(vm);
  const auto pp = parse_list(vm["n-prompt"].as<std::string>()), tg = parse_list(vm["n-gen"].as<std::string>());
  const int reps = std::max(1, vm["reps"].as<int>());
  uint32_t longest = 1;
  for (uint32_t n : pp) longest = std::max(longest, n);
  for (uint32_t n : tg) longest = std::max(longest, n);

  const double bw = median(read_bandwidth(unsigned(std::max(1, vm["threads"].as<int>())), 3)) * 1e9;
  for (const std::string& path : vm["model"].as<std::vector<std::string>>()) {
    SessionOptions so;
    so.model_path = path;
    so.config_path = vm["config"].as<std::string>();
    so.threads = vm["threads"].as<int>();
    so.engine.n_ctx = longest + 1;
    so.engine.ubatch = vm["ubatch"].as<uint32_t>();
    so.load_tokenizer = false;
    Session s(so);
    Engine& eng = s.engine();
    fault_in(s.model());
    std::mt19937 rng(42);
    std::vector<float> logits;
    auto timed = [&](auto&& body) {
      std::vector<double> tps;
      for (int r = 0; r <= reps; ++r) {  // run 0 warms up
        eng.reset();
        logits.clear();
        const auto t0 = Clock::now();
        const uint32_t n = body();
        if (r) tps.push_back(n / seconds_since(t0));
      }
      return tps;
    };
    for (uint32_t n : pp) {
      std::vector<int32_t> toks(n);
      for (int32_t& t : toks) t = int32_t(rng() % s.model().hp().n_vocab);
      const auto tps = timed([&] {
        eng.eval(toks, false, logits);
        return n;
      });
      std::printf("%s pp%u %.2f  [%s]\n", path.c_str(), n, median(tps), list(tps, "%.2f").c_str());
      std::fflush(stdout);
    }
    auto activity = [&] {  // ReGLU neurons {active, computed} so far
      std::pair<double, double> s;
      for (const Engine::ReluActivity& l : eng.reglu_activity()) s.first += double(l.active), s.second += double(l.computed);
      return s;
    };
    for (uint32_t n : tg) {
      const auto before = activity();
      const auto tps = timed([&] {
        int32_t t = int32_t(rng() % s.model().hp().n_vocab);
        for (uint32_t i = 0; i < n; ++i) {
          logits.clear();
          eng.eval(std::span(&t, 1), false, logits);
          t = argmax(logits);
        }
        return n;
      });
      const ActiveBytes ab = active_bytes(s.model(), 0, n);
      const auto after = activity();
      const double active = after.second > before.second ? (after.first - before.first) / (after.second - before.second) : 1.0;
      std::printf("%s tg%u %.2f  [%s]  %.1f MB/token at %.1f GB/s: bound %.1f tok/s  active %.3f  sparse-skippable %.1f MB\n",
                  path.c_str(), n, median(tps), list(tps, "%.2f").c_str(), (ab.weights + ab.kv) / 1e6, bw / 1e9,
                  bw / (ab.weights + ab.kv), active, ab.sparse_skippable / 1e6);
      std::fflush(stdout);
    }
  }
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "error: %s\n", e.what());
  return 1;
}
