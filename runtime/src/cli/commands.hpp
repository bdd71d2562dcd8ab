#pragma once
// The subcommands of `pocketmoe`. To add one: write `int cmd_xxx(int argc, char** argv)` in
// runtime/src/cli/cmd_xxx.cpp (argv[0] is the command name; use cli_common.hpp's run_command),
// declare it below and add one line to kCommands.

namespace pmoe::cli {

struct Command {
  const char* name;
  const char* summary;
  int (*run)(int argc, char** argv);
};

int cmd_plugins(int argc, char** argv);
int cmd_synth(int argc, char** argv);
int cmd_run(int argc, char** argv);
int cmd_logits(int argc, char** argv);
int cmd_tokenize(int argc, char** argv);
int cmd_info(int argc, char** argv);
int cmd_bench(int argc, char** argv);
int cmd_bench_storage(int argc, char** argv);
int cmd_probe(int argc, char** argv);
int cmd_serve(int argc, char** argv);
int cmd_chat(int argc, char** argv);

inline const Command kCommands[] = {
    {"run", "generate text from a prompt", cmd_run},
    {"serve", "serve the model over an OpenAI-compatible HTTP API (chat, completions, streaming, metrics)", cmd_serve},
    {"chat", "chat with the model in the terminal (multi-turn, the KV cache kept between turns)", cmd_chat},
    {"logits", "write the logits of a token sequence (correctness checks)", cmd_logits},
    {"tokenize", "print the token ids of a text", cmd_tokenize},
    {"info", "describe a model file", cmd_info},
    {"bench", "A/B-test configs on a model: medians, ratios with confidence intervals, HTML report", cmd_bench},
    {"bench-storage", "random expert-sized reads through each storage plugin: GB/s and latency per queue depth", cmd_bench_storage},
    {"probe", "measure this machine briefly and recommend a config for a model", cmd_probe},
    {"plugins", "list the plugins found in the search paths and check that they load", cmd_plugins},
    {"synth", "write a synthetic SmallThinker GGUF (random weights, real layout)", cmd_synth},
};

}  // namespace pmoe::cli
