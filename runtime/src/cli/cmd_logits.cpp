// pocketmoe logits: raw logits of a token sequence, the interface of the correctness checks.
#include "cli/model_options.hpp"
#include "common/atomic_file.hpp"

#include <nlohmann/json.hpp>

#include <chrono>
#include <fstream>
#include <sstream>

namespace pmoe::cli {

namespace {
std::vector<int32_t> parse_token_list(const std::string& s) {
  std::vector<int32_t> ids;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    try {
      size_t end = 0;
      ids.push_back(std::stoi(item, &end));
      if (end != item.size()) throw std::invalid_argument(item);
    } catch (const std::exception&) {
      throw UsageError("--tokens: '" + item + "' is not a token id");
    }
  }
  return ids;
}

std::vector<int32_t> read_token_file(const std::string& path) {
  std::ifstream f(path);
  if (!f) throw Error(path + ": cannot open");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(f);
  } catch (const nlohmann::json::parse_error& e) {
    throw Error(path + ": byte " + std::to_string(e.byte) + ": not valid JSON");
  }
  if (!j.is_array()) throw Error(path + ": expected a JSON array of token ids");
  std::vector<int32_t> ids;
  for (size_t i = 0; i < j.size(); ++i) {
    if (!j[i].is_number_integer()) throw Error(path + ": element " + std::to_string(i) + " is not an integer");
    ids.push_back(j[i].get<int32_t>());
  }
  return ids;
}
}  // namespace

int cmd_logits(int argc, char** argv) {
  return run_command("logits", [&] {
    SessionOptions so;
    ModelArgs model_args;
    so.load_tokenizer = false;
    std::string tokens, tokens_file, out, stats_json;
    bool sequential = false;
    po::options_description opts("options");
    add_model_options(opts, so, model_args);
    opts.add_options()
      ("tokens", po::value(&tokens), "comma-separated token ids")
      ("tokens-file", po::value(&tokens_file), "JSON array of token ids")
      ("out,o", po::value(&out), "output: float32 little-endian [n_tokens][n_vocab], no header")
      ("sequential", po::bool_switch(&sequential), "feed one token at a time through the KV cache")
      ("stats-json", po::value(&stats_json), "write expert-cache statistics as JSON")
      ("help,h", "this help");
    reject_llama_cli_habits(argc, argv);
    auto vm = parse_args(argc, argv, opts);
    if (vm.count("help"))
      return print_help("logits -m MODEL (--tokens 1,2,3 | --tokens-file F.json) --out OUT.bin",
                        "Write the logits of every input position.", opts);
    po::notify(vm);
    apply_model_options(vm, model_args, so);
    if (tokens.empty() == tokens_file.empty()) throw UsageError("give exactly one of --tokens and --tokens-file");
    if (out.empty()) throw UsageError("--out is required");
    check_output_path("--out", out);
    check_output_path("--stats-json", stats_json);
    const std::vector<int32_t> ids = tokens.empty() ? read_token_file(tokens_file) : parse_token_list(tokens);
    if (ids.empty()) throw UsageError("no tokens given");
    if (so.engine.n_ctx == 0) so.engine.n_ctx = uint32_t(ids.size());
    Session s(so);
    uint64_t expert_uses = 0;
    s.engine().set_routing_observer([&](const RoutingEvent& ev) { expert_uses += distinct_experts(ev); });
    const auto t0 = std::chrono::steady_clock::now();
    std::vector<float> logits;
    logits.reserve(ids.size() * s.model().hp().n_vocab);
    if (sequential)
      for (int32_t id : ids) {
        throw_if_interrupted();
        s.engine().eval(std::span(&id, 1), true, logits);
      }
    else
      s.engine().eval(ids, true, logits);
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (!stats_json.empty()) {
      nlohmann::json j = cache_stats_json(s, expert_uses, secs);
      j["tokens"] = ids.size();
      j["seconds"] = secs;
      j["decode_tokens_per_second"] = sequential ? double(ids.size()) / secs : 0.0;
      j["peak_rss_bytes"] = peak_rss_bytes();
      write_file_atomically(stats_json, [&](std::ostream& f) { f << j.dump(2) << "\n"; });
    }
    write_file_atomically(
        out, [&](std::ostream& f) { f.write(reinterpret_cast<const char*>(logits.data()), std::streamsize(logits.size() * 4)); },
        std::ios::binary);
    return kExitOk;
  });
}

}  // namespace pmoe::cli
