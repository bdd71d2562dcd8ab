// pocketmoe chat: a multi-turn conversation in the terminal. The KV cache is kept between turns:
// each turn evaluates only its own tokens (the end of the previous answer, the user's message and
// the assistant header), never the history again.
#include "cli/generate.hpp"
#include "cli/model_options.hpp"
#include "cli/sampler_options.hpp"

#include <poll.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <csignal>
#include <iomanip>
#include <optional>

namespace pmoe::cli {
namespace {

/// Lines from stdin that an interruption can cut short: it waits with poll(), so Ctrl-C at the
/// prompt is seen at once even though the handlers restart interrupted reads.
class LineReader {
 public:
  /// The next line without its newline; nullopt at the end of input or on an interruption.
  std::optional<std::string> next() {
    for (;;) {
      if (const size_t nl = buf_.find('\n'); nl != std::string::npos) {
        std::string line = buf_.substr(0, nl);
        buf_.erase(0, nl + 1);
        return line;
      }
      if (eof_) {
        if (buf_.empty()) return std::nullopt;
        return std::exchange(buf_, {});
      }
      pollfd p{STDIN_FILENO, POLLIN, 0};
      const int r = ::poll(&p, 1, 100);
      if (interrupted()) return std::nullopt;
      if (r <= 0) continue;
      char b[4096];
      const ssize_t n = ::read(STDIN_FILENO, b, sizeof b);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) eof_ = true;
      else buf_.append(b, size_t(n));
    }
  }

 private:
  std::string buf_;
  bool eof_ = false;
};

struct TurnStats {
  size_t prompt_tokens = 0;
  int64_t generated = 0;
  double prompt_s = 0, gen_s = 0;
};

}  // namespace

int cmd_chat(int argc, char** argv) {
  return run_command("chat", [&] {
    SessionOptions so;
    ModelArgs model_args;
    SamplerArgs sampler_args;
    std::string system;
    int64_t n_predict = -1;
    po::options_description opts("options");
    add_model_options(opts, so, model_args);
    opts.add_options()
      ("system", po::value(&system), "system message")
      ("n-predict,n", po::value(&n_predict)->default_value(-1), "most tokens per answer (-1: until end of text or context)");
    add_sampler_options(opts, sampler_args);
    opts.add_options()("help,h", "this help");
    reject_llama_cli_habits(argc, argv);
    auto vm = parse_args(argc, argv, opts);
    if (vm.count("help"))
      return print_help("chat -m MODEL [-c CONFIG] [--system TEXT]",
                        "Chat with the model in the terminal. Commands: /exit, /reset (forget the conversation),\n"
                        "/stats. Ctrl-C stops an answer; at the prompt it (or Ctrl-D) ends the chat.", opts);
    po::notify(vm);
    apply_model_options(vm, model_args, so);
    check_range("-n", n_predict, int64_t(-1), int64_t(1) << 24);
    Sampler sampler(apply_sampler_options(sampler_args));

    Session s(so);
    const Tokenizer& tok = s.tokenizer();
    Engine& eng = s.engine();
    if (tok.uses_builtin_chatml()) std::cerr << "note: the model has no ChatML chat template; using ChatML anyway\n";
    const bool tty = ::isatty(STDIN_FILENO);
    std::cerr << "chat: /exit ends it, /reset forgets the conversation, /stats shows the numbers; Ctrl-C stops an answer\n";

    using clock = std::chrono::steady_clock;
    LineReader input;
    std::vector<float> logits;
    TurnStats last;
    int turns = 0;
    for (;;) {
      if (tty) std::cout << "\n> " << std::flush;
      const std::optional<std::string> line = input.next();
      if (!line || *line == "/exit") break;
      if (*line == "/reset") {
        eng.reset();
        std::cout << "[the conversation is forgotten]\n" << std::flush;
        continue;
      }
      if (*line == "/stats") {
        const CacheStats c = cache_totals(s);
        std::cout << std::fixed << std::setprecision(2) << "[context " << eng.n_past() << " / " << eng.n_ctx()
                  << " tokens | " << turns << " turns | last turn: prompt " << last.prompt_tokens << " tokens, "
                  << (last.prompt_s > 0 ? double(last.prompt_tokens) / last.prompt_s : 0.0) << " tok/s, answer "
                  << last.generated << " tokens, " << (last.gen_s > 0 ? double(last.generated) / last.gen_s : 0.0)
                  << " tok/s";
        if (s.expert_cache())
          std::cout << " | experts: hit rate " << (c.uses ? 100.0 * double(c.hits) / double(c.uses) : 100.0)
                    << "%, read " << format_bytes(c.bytes_read);
        std::cout << "]\n" << std::flush;
        continue;
      }
      if (line->starts_with("/")) {
        std::cout << "[unknown command " << *line << ": /exit, /reset, /stats]\n" << std::flush;
        continue;
      }
      if (line->empty()) continue;
      // the turn's text: close the previous answer (its end-of-text token was sampled, not
      // evaluated), then the user's message and the assistant's header
      const bool first = eng.n_past() == 0;
      std::vector<ChatMessage> msgs;
      if (first && !system.empty()) msgs.push_back({"system", system});
      msgs.push_back({"user", *line});
      const std::string text = (first ? "" : "<|im_end|>\n") + tok.format_chat(msgs, true);
      const std::vector<int32_t> ids = tok.encode(text, first, true);
      if (eng.n_past() + ids.size() >= eng.n_ctx()) {
        std::cout << "[the context is full (" << eng.n_ctx() << " tokens): /reset starts over, --ctx-size sets it]\n" << std::flush;
        continue;
      }
      for (int32_t id : ids) sampler.accept(id);
      last = {};
      last.prompt_tokens = ids.size();
      const auto t0 = clock::now();
      logits.clear();
      eng.eval(ids, false, logits);
      const auto t1 = clock::now();
      StreamDecoder out(tok);
      const int64_t limit = n_predict < 0 ? int64_t(eng.n_ctx()) : n_predict;
      const GenerationEnd end = generate(eng, sampler, tok, logits, limit, last.generated, [&](int32_t id) {
        if (!tok.is_end_of_generation(id)) std::cout << out.push(id) << std::flush;
      });
      std::cout << out.flush() << "\n";
      last.prompt_s = std::chrono::duration<double>(t1 - t0).count();
      last.gen_s = std::chrono::duration<double>(clock::now() - t1).count();
      ++turns;
      if (end == GenerationEnd::interrupted) {
        if (interrupt_signal() != SIGINT) break;  // SIGTERM ends the chat
        clear_interrupt();
        std::cout << "[stopped]\n";
      } else if (end == GenerationEnd::context_full) {
        std::cout << "[the context is full (" << eng.n_ctx() << " tokens): /reset starts over]\n";
      }
      std::cout.flush();
    }
    std::cout.flush();
    return interrupted() ? kExitInterrupted : kExitOk;
  });
}

}  // namespace pmoe::cli
