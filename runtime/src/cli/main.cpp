// pocketmoe: dispatch to a subcommand (see commands.hpp).
#include <pocketmoe/abi.h>

#include <cstdio>
#include <iostream>
#include <string>
#include <string_view>
#include <vector>

#include "cli/cli_common.hpp"
#include "cli/commands.hpp"
#include "config/yaml_util.hpp"

using namespace pmoe::cli;

static void usage(std::ostream& os) {
  os << "usage: pocketmoe <command> [options]\n"
        "       pocketmoe --help | --version\n\ncommands:\n";
  for (const auto& c : kCommands) {
    std::string name = c.name;
    os << "  " << name << std::string(name.size() < 12 ? 12 - name.size() : 1, ' ') << c.summary
       << "\n";
  }
  os << "\n'pocketmoe <command> --help' describes a command.\n";
}

int main(int argc, char** argv) {
  if (argc < 2) {
    usage(std::cerr);
    return kExitUsage;
  }
  std::string_view cmd = argv[1];
  if (cmd == "--help" || cmd == "-h" || cmd == "help") {
    usage(std::cout);
    return kExitOk;
  }
  if (cmd == "--version" || cmd == "-V") {
    std::cout << "pocketmoe " << PMOE_VERSION << " (plugin ABI " << PMOE_ABI_MAJOR << "."
              << PMOE_ABI_MINOR << ")\n";
    return kExitOk;
  }
  pmoe::install_interrupt_handlers();
  for (const auto& c : kCommands)
    if (cmd == c.name) return c.run(argc - 1, argv + 1);

  std::vector<std::string_view> names;
  for (const auto& c : kCommands) names.push_back(c.name);
  std::cerr << "pocketmoe: unknown " << (cmd.starts_with("-") ? "option" : "command") << " '" << cmd
            << "'" << pmoe::yaml::did_you_mean(cmd, names) << "\nsee pocketmoe --help\n";
  return kExitUsage;
}
