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

inline const Command kCommands[] = {
    {"plugins", "list the plugins found in the search paths and check that they load", cmd_plugins},
};

}  // namespace pmoe::cli
