// pocketmoe synth: write a synthetic SmallThinker GGUF (random weights, real layout and sizes),
// optionally with realistic routing skew, and measure its routing through the forward pass.
#include <pocketmoe/dtype.h>

#include <chrono>
#include <cstdio>
#include <iostream>
#include <optional>

#include "cli/cli_common.hpp"
#include "cli/commands.hpp"
#include "engine/session.hpp"
#include "synth/routing_stats.hpp"
#include "synth/synth.hpp"

namespace pmoe::cli {
namespace {

/// Runs 64 random tokens through the model just written and prints the fraction of ReGLU
/// neurons that were inactive, overall and the range over layers.
void print_measured_sparsity(const std::string& model, float target) {
  SessionOptions so;
  so.model_path = model;
  so.engine.n_ctx = 64;
  so.load_tokenizer = false;
  Session session(so);
  (void)synth::measure_routing(session.engine(), 64);
  uint64_t active = 0, total = 0;
  double lo = 1, hi = 0;
  for (const auto& [a, t, relaid, us] : session.engine().reglu_activity()) {
    if (!t) continue;
    active += a, total += t;
    lo = std::min(lo, 1 - double(a) / double(t)), hi = std::max(hi, 1 - double(a) / double(t));
  }
  if (total)
    std::printf("ReGLU sparsity: %.3f of the neurons inactive on 64 random tokens (target %.2f; layers %.3f..%.3f)\n",
                1 - double(active) / double(total), double(target), lo, hi);
}

}  // namespace

int cmd_synth(int argc, char** argv) {
  return run_command("synth", [&] {
    po::options_description main("options");
    main.add_options()("help,h", "show this help")("output,o", po::value<std::string>(),
                                                   "write the model here")(
        "shape", po::value<std::string>()->default_value("tiny"),
        "preset: tiny | 4b-a0.6b | 21b-a3b")(
        "type", po::value<std::string>(),
        "f32 | f16 | bf16 | q8_0 | q4_0 (preset: tiny f32, others q4_0)")(
        "vocab-from", po::value<std::string>(), "copy tokenizer.* from this GGUF (sets --vocab)")(
        "routing-skew", "hot and cold experts like the real models (default: near-uniform)")(
        "reglu-sparsity", po::value<float>()->default_value(0.6f, "0.6"),
        "fraction of expert neurons inactive (gate <= 0) on typical inputs, 0..0.99 (0: unbiased gates, "
        "about 0.5); the real fraction is measured and printed")(
        "seed", po::value<uint64_t>()->default_value(1), "weights seed")(
        "threads,t", po::value<unsigned>()->default_value(0), "generator threads (0 = all cores)")(
        "report-routing", po::value<uint32_t>(),
        "then run N random tokens and print the expert distribution")(
        "model,m", po::value<std::string>(), "no synthesis: report the routing of this model")(
        "config,c", po::value<std::string>(), "config for the routing run (default: built-in)");
    po::options_description shape("shape overrides (win over the preset)");
    shape.add_options()("layers", po::value<uint32_t>(), "block_count")(
        "embd", po::value<uint32_t>(), "embedding_length")(
        "heads", po::value<uint32_t>(), "attention.head_count")("kv-heads", po::value<uint32_t>(),
                                                                "attention.head_count_kv")(
        "head-dim", po::value<uint32_t>(), "attention.key_length = value_length")(
        "experts", po::value<uint32_t>(), "expert_count")(
        "top-k", po::value<uint32_t>(), "expert_used_count")("expert-ffn", po::value<uint32_t>(),
                                                             "expert_feed_forward_length")(
        "vocab", po::value<uint32_t>(), "tokens (built-in BPE padded with [PAD] tokens)")(
        "ctx", po::value<uint32_t>(), "context_length")(
        "sliding-window", po::value<uint32_t>(), "attention.sliding_window (0 = none, 4B layout)")(
        "swa-pattern", po::value<uint32_t>(), "attention.sliding_window_pattern")(
        "gating", po::value<std::string>(), "softmax | sigmoid")("rope-base", po::value<float>(),
                                                                 "rope.freq_base");
    po::options_description all;
    all.add(main).add(shape);
    auto vm = parse_args(argc, argv, all);
    if (vm.count("help"))
      return print_help(
          "synth -o OUT.gguf [--shape S] [--type T] [--routing-skew] [--report-routing N] ...\n"
          "       pocketmoe synth -m MODEL.gguf --report-routing N",
          "Writes a SmallThinker GGUF with random weights in the real layout (llama.cpp loads it): "
          "tied output, f32 norms and routers, a small byte-level BPE vocabulary unless "
          "--vocab-from. With --routing-skew most experts of each layer are rarely chosen and a "
          "few hot ones take most tokens, as in the real models. See docs/synth.md.",
          all);
    po::notify(vm);

    std::string model;
    if (vm.count("model")) {
      if (vm.count("output")) throw UsageError("give either -o (synthesize) or -m (report only)");
      if (!vm.count("report-routing")) throw UsageError("-m MODEL needs --report-routing N");
      model = vm["model"].as<std::string>();
    } else {
      if (!vm.count("output")) throw UsageError("missing -o OUT.gguf");
      synth::Options o;
      o.shape = synth::preset(vm["shape"].as<std::string>());
      synth::Shape& s = o.shape;
      auto u32 = [&](const char* k, uint32_t& dst) {
        if (vm.count(k)) dst = vm[k].as<uint32_t>();
      };
      u32("layers", s.n_layer);
      u32("embd", s.n_embd);
      u32("heads", s.n_head);
      u32("kv-heads", s.n_head_kv);
      u32("head-dim", s.head_dim);
      u32("experts", s.n_expert);
      u32("top-k", s.n_expert_used);
      u32("expert-ffn", s.n_ff_exp);
      u32("vocab", s.n_vocab);
      u32("ctx", s.n_ctx);
      u32("sliding-window", s.sliding_window);
      if (vm.count("swa-pattern")) s.swa_pattern = vm["swa-pattern"].as<uint32_t>();
      if (vm.count("rope-base")) s.rope_base = vm["rope-base"].as<float>();
      if (vm.count("gating")) {
        const std::string g = vm["gating"].as<std::string>();
        if (g != "softmax" && g != "sigmoid")
          throw UsageError("--gating must be softmax or sigmoid, got '" + g + "'");
        s.gating = g == "softmax" ? Gating::Softmax : Gating::Sigmoid;
      }
      if (vm.count("type")) s.type = synth::parse_type(vm["type"].as<std::string>());
      if (vm.count("vocab-from")) {
        if (vm.count("vocab")) throw UsageError("--vocab and --vocab-from exclude each other");
        o.vocab_from = vm["vocab-from"].as<std::string>();
      }
      o.routing_skew = vm.count("routing-skew") > 0;
      o.reglu_sparsity = check_range("--reglu-sparsity", vm["reglu-sparsity"].as<float>(), 0.f, 0.99f);
      o.seed = vm["seed"].as<uint64_t>();
      o.threads = vm["threads"].as<unsigned>();
      model = vm["output"].as<std::string>();
      check_output_path("-o", model);

      const auto t0 = std::chrono::steady_clock::now();
      const synth::Result r =
          synth::write_model(o, model, synth::stderr_progress("synth " + s.name));
      const double secs =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      std::printf(
          "wrote %s: %s %s%s, %.3f B params, %u tensors, vocab %u (%u merges), %.2f GiB in %.1f "
          "s\n",
          model.c_str(), s.name.c_str(), pmoe_dtype_name(s.type),
          o.routing_skew ? " routing-skew" : "", double(r.n_params) / 1e9, r.n_tensors, r.n_vocab,
          r.n_merges, double(r.file_bytes) / (1u << 30), secs);
      if (o.reglu_sparsity > 0) print_measured_sparsity(model, o.reglu_sparsity);
    }

    if (vm.count("report-routing")) {
      const uint32_t n = vm["report-routing"].as<uint32_t>();
      if (n == 0) throw UsageError("--report-routing needs at least 1 token");
      SessionOptions so;
      so.model_path = model;
      if (vm.count("config")) so.config_path = vm["config"].as<std::string>();
      so.engine.n_ctx = std::min<uint32_t>(n, 4096);
      so.load_tokenizer = false;
      Session session(so);
      std::cout << synth::measure_routing(session.engine(), n).report();
    }
    return kExitOk;
  });
}

}  // namespace pmoe::cli
