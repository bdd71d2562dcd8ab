// pocketmoe bench: A/B-test configs on one model. Every run is a fresh `pocketmoe run` process
// (its own expert cache, its own peak RSS, cold unless --warm); configs rotate from round to
// round; results are medians, and ratios to the first config get bootstrap intervals.
#include "bench/machine.hpp"
#include "bench/report.hpp"
#include "bench/stats.hpp"
#include "cli/child_run.hpp"
#include "cli/cli_common.hpp"
#include "common/atomic_file.hpp"
#include "common/format.hpp"
#include "config/config.hpp"
#include "gguf/gguf.hpp"
#include "tokenizer/tokenizer.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <sstream>

namespace pmoe::cli {
namespace {
namespace fs = std::filesystem;
using nlohmann::json;

struct BenchConfig {
  std::string path, name, text;
};

/// Reads the file once, so that all its pages are in the page cache (`--warm`).
void read_into_page_cache(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error(path + ": cannot open");
  std::vector<char> buf(1 << 20);
  while (f.read(buf.data(), std::streamsize(buf.size())) || f.gcount() > 0) {
  }
}

/// A prompt of exactly `n` tokens (with BOS, if the model adds one) for this model's tokenizer.
std::string prompt_of_tokens(const std::string& model, uint32_t n) {
  const Tokenizer tok = Tokenizer::from_gguf(*GgufFile::open(model));
  static const char* words[] = {" the", " small", " thinker", " reads", " experts", " from", " flash", " while",
                                " attention", " runs", " on", " a", " laptop", " with", " little", " memory"};
  std::string text;
  for (size_t i = 0; tok.encode(text, true, true).size() < n; ++i) {
    std::string next = text + words[i % std::size(words)];
    if (tok.encode(next, true, true).size() > n) next = text + " a";  // one token closes the gap
    if (tok.encode(next, true, true).size() > n) break;
    text = std::move(next);
  }
  const size_t got = tok.encode(text, true, true).size();
  if (got != n) throw Error("cannot build a prompt of " + std::to_string(n) + " tokens for this tokenizer (got " + std::to_string(got) + ")");
  return text;
}

/// The figures of one run, from `run`'s stats JSON.
json run_metrics(const json& r) {
  const double wall = r["prompt_seconds"].get<double>() + r["decode_seconds"].get<double>();
  const uint64_t uses = r["uses"], hits = r["hits"], gen = r["generated_tokens"];
  std::vector<double> lat = r["token_seconds"];
  if (!lat.empty()) lat.erase(lat.begin());  // the first is sampling after the prompt, no decode step
  json m;
  m["prefill_tps"] = r["prompt_tokens_per_second"];
  m["decode_tps"] = r["decode_tokens_per_second"];
  m["ttft_s"] = r["time_to_first_token_seconds"];
  m["latency_p50_s"] = bench::percentile(lat, 50);
  m["latency_p95_s"] = bench::percentile(lat, 95);
  m["latency_p99_s"] = bench::percentile(lat, 99);
  m["hit_rate"] = uses ? double(hits) / double(uses) : 1.0;
  m["read_bytes_per_token"] = gen ? double(r["decode"]["bytes_read"].get<uint64_t>()) / double(gen) : 0.0;
  m["read_bytes_per_second"] = double(r["bytes_read"].get<uint64_t>()) / wall;  // over wall time
  m["stall_share"] = r["stall_seconds"].get<double>() / wall;
  m["peak_rss_bytes"] = r["peak_rss_bytes"];
  return m;
}

// The table's columns: metric key, heading, scale, printf format.
struct Column {
  const char* key;
  const char* heading;
  double scale;
  const char* fmt;
};
const Column kColumns[] = {
    {"prefill_tps", "prefill t/s", 1, "%11.2f"},   {"decode_tps", "decode t/s", 1, "%10.2f"},
    {"ttft_s", "TTFT ms", 1e3, "%8.1f"},           {"latency_p50_s", "p50 ms", 1e3, "%7.1f"},
    {"latency_p95_s", "p95 ms", 1e3, "%7.1f"},     {"latency_p99_s", "p99 ms", 1e3, "%7.1f"},
    {"hit_rate", "hit %", 100, "%6.1f"},           {"read_bytes_per_token", "MiB/tok", 1.0 / (1 << 20), "%8.2f"},
    {"read_bytes_per_second", "read MiB/s", 1.0 / (1 << 20), "%10.1f"},
    {"stall_share", "stall %", 100, "%7.1f"},      {"peak_rss_bytes", "RSS MiB", 1.0 / (1 << 20), "%8.0f"},
};

/// Progress on a terminal (one line redrawn), plain lines otherwise.
class Progress {
 public:
  explicit Progress(size_t total) : total_(total), tty_(::isatty(2)) {}
  void start(size_t round, size_t rounds, const std::string& name) {
    if (!tty_) return;
    const int width = 30, filled = int(width * done_ / total_);
    std::fprintf(stderr, "\r[%s%s] %zu/%zu runs, round %zu/%zu: %-24s", std::string(size_t(filled), '#').c_str(),
                 std::string(size_t(width - filled), ' ').c_str(), done_, total_, round, rounds, name.c_str());
  }
  void finish(size_t round, size_t rounds, const std::string& name, const json& m) {
    ++done_;
    if (tty_) {
      if (done_ == total_) std::fprintf(stderr, "\r%*s\r", 100, "");
      return;
    }
    std::fprintf(stderr, "round %zu/%zu %s: prefill %.2f tok/s, decode %.2f tok/s, hit rate %.1f%%\n", round, rounds,
                 name.c_str(), m["prefill_tps"].get<double>(), m["decode_tps"].get<double>(),
                 100 * m["hit_rate"].get<double>());
  }

 private:
  size_t total_, done_ = 0;
  bool tty_;
};

}  // namespace

int cmd_bench(int argc, char** argv) {
  return run_command("bench", [&] {
    std::string model, prompt, json_out, report_out;
    std::vector<std::string> config_paths;
    int rounds = 5, n_predict = 64, prompt_tokens = 0, threads = 0;
    uint32_t seed = 1;
    bool warm = false;
    po::options_description opts("options");
    opts.add_options()
      ("model,m", po::value(&model)->required(), "GGUF model file")
      ("config,c", po::value(&config_paths)->required(), "a config to compare (repeat: -c A.yaml -c B.yaml; the first is the baseline)")
      ("rounds", po::value(&rounds)->default_value(5), "runs of every config, in an order rotating per round")
      ("prompt,p", po::value(&prompt), "prompt text")
      ("prompt-tokens", po::value(&prompt_tokens), "a generated prompt of this many tokens (default 64 without -p)")
      ("n-predict,n", po::value(&n_predict)->default_value(64), "tokens to generate per run")
      ("seed", po::value(&seed)->default_value(1), "sampling seed (temperature 1: every config must generate the same tokens)")
      ("threads,t", po::value(&threads), "compute threads (overrides the configs)")
      ("warm", po::bool_switch(&warm), "keep the model file in the page cache (default: drop it before every run)")
      ("json", po::value(&json_out), "write every run and the summary as JSON")
      ("report", po::value(&report_out), "write a self-contained HTML report")
      ("help,h", "this help");
    auto vm = parse_args(argc, argv, opts);
    if (vm.count("help"))
      return print_help("bench -m MODEL -c A.yaml [-c B.yaml ...] [--rounds N] [-p PROMPT | --prompt-tokens N] [-n N]",
                        "A/B-test configs: each runs once per round as a fresh, cold process; prints medians and, "
                        "against the first config, ratios with 95% bootstrap intervals.",
                        opts);
    po::notify(vm);
    if (rounds < 1 || rounds > 1000) throw UsageError("--rounds must be 1..1000");
    if (n_predict < 1) throw UsageError("-n must be at least 1");
    if (vm.count("prompt") && vm.count("prompt-tokens")) throw UsageError("give -p or --prompt-tokens, not both");
    if (prompt_tokens < 0) throw UsageError("--prompt-tokens must be positive");
    if (!fs::is_regular_file(model)) throw Error(model + ": not a regular file");
    check_output_path("--json", json_out);
    check_output_path("--report", report_out);

    std::vector<BenchConfig> configs;
    for (const std::string& p : config_paths) {
      load_config(p);  // reject a bad config now, with its line and column, not in round 1
      std::ifstream f(p);
      std::stringstream ss;
      ss << f.rdbuf();
      configs.push_back({p, fs::path(p).stem().string(), ss.str()});
    }
    for (size_t i = 0; i < configs.size(); ++i)  // two configs of one name: tell them apart by path
      for (size_t j = 0; j < configs.size(); ++j)
        if (i != j && configs[i].name == configs[j].name) configs[i].name = configs[i].path;
    if (!vm.count("prompt")) prompt = prompt_of_tokens(model, uint32_t(prompt_tokens ? prompt_tokens : 64));

    const fs::path work = fs::temp_directory_path() / ("pocketmoe-bench-" + std::to_string(::getpid()));
    fs::create_directories(work);
    struct Cleanup {
      fs::path dir;
      ~Cleanup() { std::error_code ec; fs::remove_all(dir, ec); }
    } cleanup{work};

    const size_t K = configs.size();
    std::vector<std::vector<json>> metrics(K);  // [config][round]
    std::vector<std::vector<json>> raw(K);
    json runs = json::array();
    if (warm) read_into_page_cache(model);
    Progress progress(K * size_t(rounds));
    for (int r = 0; r < rounds; ++r)
      for (size_t k = 0; k < K; ++k) {
        const size_t c = (k + size_t(r)) % K;  // rotate, so no config always runs first or after another
        progress.start(size_t(r) + 1, size_t(rounds), configs[c].name);
        if (!warm) bench::drop_page_cache(model);
        const std::string stats = (work / "stats.json").string(), log = (work / "stderr.txt").string();
        std::vector<std::string> args = {"run", "-m", model, "-c", configs[c].path, "-p", prompt, "-n",
                                         std::to_string(n_predict), "--temp", "1", "--seed", std::to_string(seed),
                                         "--stats-json", stats};
        if (threads > 0) args.insert(args.end(), {"-t", std::to_string(threads)});
        json out;
        try {
          out = run_child(args, stats, log);
        } catch (const Error& e) {
          throw Error("config " + configs[c].path + ", round " + std::to_string(r + 1) + ": " + e.what());
        }
        const json m = run_metrics(out);
        progress.finish(size_t(r) + 1, size_t(rounds), configs[c].name, m);
        metrics[c].push_back(m);
        raw[c].push_back(out);
        runs.push_back({{"config", configs[c].name}, {"round", r + 1}, {"position", k + 1}, {"metrics", m},
                        {"prompt_tokens", out["prompt_tokens"]}, {"generated_tokens", out["generated_tokens"]},
                        {"compute_device", out["compute_device"]}, {"token_seconds", out["token_seconds"]},
                        {"compute_submit_seconds", out["compute_submit_seconds"]},
                        {"compute_wait_seconds", out["compute_wait_seconds"]},
                        {"token_stall_seconds", out["token_stall_seconds"]}, {"layers", out.value("layers", json::array())}});
      }

    // offloading must never change output: every run on one compute device generates the same
    // tokens (another backend computes other last bits, so may legitimately sample others)
    std::vector<std::string> differing, differing_against;
    for (size_t c = 0; c < K; ++c) {
      size_t ref = 0;  // the first config on this device
      while (raw[ref][0]["compute_device"] != raw[c][0]["compute_device"]) ++ref;
      for (const json& out : raw[c])
        if (out["generated_ids"] != raw[ref][0]["generated_ids"] || out["compute_device"] != raw[c][0]["compute_device"]) {
          differing.push_back(configs[c].name);
          differing_against.push_back(configs[c].name + (ref == c ? " (its own runs)" : " (against " + configs[ref].name + ")"));
          break;
        }
    }

    // the table: medians per config
    const bench::MachineInfo machine = bench::machine_info(model);
    std::printf("model %s (%s), prompt %zu tokens, %d generated, %d rounds, %s\n", model.c_str(),
                format_bytes(fs::file_size(model)).c_str(), size_t(raw[0][0]["prompt_tokens"]), n_predict, rounds,
                warm ? "warm page cache" : "cold (page cache dropped before each run)");
    std::printf("%-24s", "config (medians)");
    for (const Column& col : kColumns) std::printf(" %*s", int(std::strlen(col.heading) > 7 ? std::strlen(col.heading) : 7), col.heading);
    std::printf("\n");
    json summary = json::array();
    for (size_t c = 0; c < K; ++c) {
      json med;
      std::printf("%-24s", configs[c].name.c_str());
      for (const Column& col : kColumns) {
        std::vector<double> v;
        for (const json& m : metrics[c]) v.push_back(m[col.key].get<double>());
        med[col.key] = bench::median(v);
        std::printf(" ");
        std::printf(col.fmt, med[col.key].get<double>() * col.scale);
      }
      std::printf("\n");
      summary.push_back({{"config", configs[c].name}, {"path", configs[c].path}, {"text", configs[c].text},
                         {"compute_device", raw[c][0]["compute_device"]}, {"medians", med}});
    }
    // against the baseline, paired by round
    json comparisons = json::array();
    for (size_t c = 1; c < K; ++c)
      for (auto [key, verb] : {std::pair{"decode_tps", "decodes"}, std::pair{"prefill_tps", "prefills"}}) {
        std::vector<double> a, b;
        for (int r = 0; r < rounds; ++r) {
          a.push_back(metrics[0][size_t(r)][key].get<double>());
          b.push_back(metrics[c][size_t(r)][key].get<double>());
        }
        const bench::Ratio ratio = bench::paired_ratio(a, b);
        const std::string v = bench::verdict(configs[c].name, configs[0].name, verb, ratio);
        std::printf("%s\n", v.c_str());
        comparisons.push_back({{"config", configs[c].name}, {"baseline", configs[0].name}, {"metric", key},
                               {"ratio", ratio.median}, {"ci95", {ratio.lo, ratio.hi}}, {"differs", ratio.differs()},
                               {"verdict", v}});
      }
    if (rounds < 5 && K > 1) std::printf("(%d rounds: the intervals are rough; use --rounds 5 or more)\n", rounds);
    std::fflush(stdout);
    if (!differing.empty()) {
      std::string list;
      for (const std::string& n : differing_against) list += (list.empty() ? "" : ", ") + n;
      std::fprintf(stderr, "\n*** OUTPUT DIFFERS: %s generated other tokens than round 1 of the first config on the "
                           "same compute device, with the same seed.\n"
                           "*** Offloading must never change output: this is a bug; please report it.\n\n",
                   list.c_str());
    }

    json doc = {{"machine", bench::to_json(machine)},
                {"model", {{"path", model}, {"bytes", fs::file_size(model)}}},
                {"settings", {{"rounds", rounds}, {"prompt_tokens", raw[0][0]["prompt_tokens"]}, {"n_predict", n_predict},
                              {"seed", seed}, {"warm", warm}, {"threads", threads}}},
                {"summary", summary},
                {"comparisons", comparisons},
                {"identical_tokens", differing.empty()},
                {"differing_configs", differing},
                {"runs", runs}};
    if (!json_out.empty()) {
      write_file_atomically(json_out, [&](std::ostream& f) { f << doc.dump(1) << "\n"; });
    }
    if (!report_out.empty()) write_file_atomically(report_out, [&](std::ostream& f) { f << bench::html_report(doc); });
    return differing.empty() ? kExitOk : kExitError;
  });
}

}  // namespace pmoe::cli
