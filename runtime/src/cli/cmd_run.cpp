// pocketmoe run: generate text, streaming it, then a stats line (like llama-cli).
#include "cli/generate.hpp"
#include "cli/model_options.hpp"
#include "cli/sampler_options.hpp"
#include "cli/commands.hpp"
#include "common/atomic_file.hpp"
#include "config/yaml_util.hpp"
#include "engine/sampler.hpp"

#include <nlohmann/json.hpp>

#include <chrono>
#include <fstream>
#include <iomanip>
#include <random>

namespace pmoe::cli {
namespace {

bool is_conversation_flag(std::string_view a) {
  return a == "-cnv" || a == "--conversation" || a == "-i" || a == "--interactive";
}

bool wants_conversation(int argc, char** argv) {
  for (int i = 1; i < argc; ++i)
    if (is_conversation_flag(argv[i])) return true;
  return false;
}

/// llama-cli's conversation mode: `run -cnv [-p SYSTEM]` is `chat [--system SYSTEM]`.
int run_as_chat(int argc, char** argv) {
  static char chat_name[] = "chat", system_opt[] = "--system";
  std::vector<char*> args{chat_name};
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    if (is_conversation_flag(a)) continue;
    args.push_back(a == "-p" || a == "--prompt" ? system_opt : argv[i]);
  }
  return cmd_chat(int(args.size()), args.data());
}

}  // namespace

int cmd_run(int argc, char** argv) {
  return run_command("run", [&] {
    SessionOptions so;
    ModelArgs model_args;
    SamplerArgs sampler_args;
    std::string prompt, prompt_file, stats_json, system;
    int64_t n_predict = 128;
    bool chat = false, show_special = false;
    po::options_description opts("options");
    add_model_options(opts, so, model_args);
    opts.add_options()
      ("prompt,p", po::value(&prompt), "prompt text (-: read it from stdin)")
      ("file,f", po::value(&prompt_file), "read the prompt from a file")
      ("n-predict,n", po::value(&n_predict)->default_value(128), "tokens to generate (-1: until end of text or context)");
    add_sampler_options(opts, sampler_args);
    opts.add_options()
      ("chat", po::bool_switch(&chat), "format the prompt as a chat turn (ChatML)")
      ("system", po::value(&system), "system message for --chat")
      ("special", po::bool_switch(&show_special), "print special tokens")
      ("stats-json", po::value(&stats_json), "write run statistics as JSON")
      ("help,h", "this help");
    if (wants_conversation(argc, argv)) return run_as_chat(argc, argv);
    reject_llama_cli_habits(argc, argv);
    auto vm = parse_args(argc, argv, opts);
    if (vm.count("help"))
      return print_help("run -m MODEL (-p PROMPT | -p - | -f FILE) [-n N] [--temp T] [--chat]",
                        "Generate text. -cnv or -i starts an interactive chat instead (pocketmoe chat), as in llama-cli.", opts);
    po::notify(vm);
    apply_model_options(vm, model_args, so);
    check_range("-n", n_predict, int64_t(-1), int64_t(1) << 24);
    const SamplerParams sp = apply_sampler_options(sampler_args);
    check_output_path("--stats-json", stats_json);
    if (vm.count("prompt") + vm.count("file") != 1) throw UsageError("give the prompt with -p TEXT, -p - (stdin) or -f FILE");
    if (vm.count("file")) prompt = yaml::read_file(prompt_file);
    else if (prompt == "-") prompt = std::string(std::istreambuf_iterator<char>(std::cin), {});

    Session s(so);
    const Tokenizer& tok = s.tokenizer();
    std::string text = prompt;
    if (chat) {
      if (tok.uses_builtin_chatml())
        std::cerr << "note: the model has no ChatML chat template; using ChatML anyway\n";
      std::vector<ChatMessage> msgs;
      if (!system.empty()) msgs.push_back({"system", system});
      msgs.push_back({"user", prompt});
      text = tok.format_chat(msgs, true);
    }
    const std::vector<int32_t> ids = tok.encode(text, true, true);
    if (ids.empty()) throw UsageError("the prompt has no tokens");
    Engine& eng = s.engine();
    if (ids.size() >= eng.n_ctx()) throw Error("the prompt (" + std::to_string(ids.size()) + " tokens) does not fit the context (" + std::to_string(eng.n_ctx()) + ")");
    uint64_t expert_uses = 0;
    eng.set_routing_observer([&](const RoutingEvent& ev) { expert_uses += distinct_experts(ev); });

    using clock = std::chrono::steady_clock;
    Sampler sampler(sp);
    for (int32_t id : ids) sampler.accept(id);
    std::vector<float> logits;
    const auto t0 = clock::now();
    eng.eval(ids, false, logits);
    const auto t1 = clock::now();
    const CacheStats at_decode_start = cache_totals(s);
    const uint64_t uses_at_decode_start = expert_uses;
    StreamDecoder out(tok, show_special);
    if (!chat) std::cout << prompt;
    std::cout.flush();
    int64_t generated = 0;
    const int64_t limit = n_predict < 0 ? int64_t(eng.n_ctx() - ids.size()) : n_predict;
    // per generated token: id, seconds since the previous token (the first: since the prompt's
    // end), and the expert-cache stall in that time (`pocketmoe bench` reads these)
    std::vector<int32_t> gen_ids;
    std::vector<double> token_s, token_stall_s;
    double ttft = 0;
    auto last = t1;
    double last_stall = at_decode_start.stall_seconds;
    const GenerationEnd end = generate(eng, sampler, tok, logits, limit, generated, [&](int32_t next) {
      const auto now = clock::now();
      if (gen_ids.empty()) ttft = std::chrono::duration<double>(now - t0).count();
      const double stall = cache_totals(s).stall_seconds;
      gen_ids.push_back(next);
      token_s.push_back(std::chrono::duration<double>(now - last).count());
      token_stall_s.push_back(stall - last_stall);
      last = now, last_stall = stall;
      if (!tok.is_end_of_generation(next)) std::cout << out.push(next) << std::flush;
    });
    std::cout << out.flush() << "\n";
    std::cout.flush();
    const auto t2 = clock::now();
    const bool context_full = end == GenerationEnd::context_full;
    if (context_full)
      std::cerr << "\n[the context is full (" << eng.n_ctx() << " tokens): generation stopped; --ctx-size sets it]\n";
    if (interrupted()) std::cerr << "\n[interrupted]\n";
    const double prompt_s = std::chrono::duration<double>(t1 - t0).count();
    const double gen_s = std::chrono::duration<double>(t2 - t1).count();
    const double prompt_tps = double(ids.size()) / prompt_s, gen_tps = generated / std::max(gen_s, 1e-9);
    const uint64_t rss = peak_rss_bytes();
    CacheStats decode = cache_totals(s) - at_decode_start;
    if (!s.expert_cache()) decode.uses = decode.hits = expert_uses - uses_at_decode_start;  // all resident
    const double decode_stall = decode.stall_seconds / std::max(gen_s, 1e-9);  // share of decode time
    std::cerr << std::fixed << std::setprecision(2) << "\nprompt: " << ids.size() << " tokens, "
              << prompt_tps << " tok/s (chunks of " << eng.ubatch() << ") | generated: " << generated << " tokens, " << gen_tps
              << " tok/s | peak RSS " << double(rss) / (1 << 20) << " MiB\n"
              << cache_summary(s, expert_uses);
    if (s.expert_cache())
      std::cerr << " | decode: hit rate " << (decode.uses ? 100.0 * double(decode.hits) / double(decode.uses) : 100.0)
                << "%, stall " << 100.0 * decode_stall << "% of decode time";
    std::cerr << "\n";
    if (!stats_json.empty()) {
      nlohmann::json j = cache_stats_json(s, expert_uses, prompt_s + gen_s);
      j["prompt_tokens"] = ids.size();
      j["prompt_seconds"] = prompt_s;
      j["prompt_tokens_per_second"] = prompt_tps;
      j["prefill_chunk"] = eng.ubatch();
      j["reglu_active_fraction"] = reglu_activity_json(eng);
      j["generated_tokens"] = generated;
      j["decode_seconds"] = gen_s;
      j["decode_tokens_per_second"] = gen_tps;
      j["decode"] = cache_counters_json(decode, gen_s);  // the cache during decode alone (prefill excluded)
      j["decode"]["stall_fraction"] = decode_stall;
      j["peak_rss_bytes"] = rss;
      j["interrupted"] = interrupted();
      j["context_full"] = context_full;
      j["time_to_first_token_seconds"] = ttft;
      j["generated_ids"] = gen_ids;
      j["token_seconds"] = token_s;
      j["token_stall_seconds"] = token_stall_s;
      j["compute_device"] = s.compute().props().name;
      j["compute_submit_seconds"] = s.compute().times().submit_seconds;  // host time in submit, all phases
      j["compute_wait_seconds"] = s.compute().times().wait_seconds;
      write_file_atomically(stats_json, [&](std::ostream& f) { f << j.dump(2) << "\n"; });
    }
    return interrupted() ? kExitInterrupted : kExitOk;
  });
}

}  // namespace pmoe::cli
