#pragma once
// Shared by every `pocketmoe <command>`: exit codes, help text and one wrapper that turns
// exceptions into messages and exit codes, so commands only write their happy path.
#include <boost/program_options.hpp>

#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <exception>
#include <iostream>
#include <sstream>
#include <stdexcept>
#include <string>

#include "common/error.hpp"
#include "common/interrupt.hpp"

namespace pmoe::cli {

namespace po = boost::program_options;

inline constexpr int kExitOk = 0;
inline constexpr int kExitError = 1;  // the command ran and failed (bad config, plugin error, I/O)
inline constexpr int kExitUsage = 2;  // the command line is wrong
inline constexpr int kExitInterrupted = 130;  // SIGINT or SIGTERM (128 + SIGINT, as shells report)

/// Thrown by a command for a bad command line that program_options cannot detect itself.
class UsageError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// Parses argv (argv[0] is the command name) into `vm`; positional args per `pos`.
inline po::variables_map parse_args(int argc, char** argv, const po::options_description& opts,
                                    const po::positional_options_description& pos = {}) {
  po::variables_map vm;
  po::store(po::command_line_parser(argc, argv).options(opts).positional(pos).run(), vm);
  return vm;
}

/// Prints "usage: pocketmoe <usage>" and the options; returns kExitOk.
inline int print_help(const std::string& usage, const std::string& summary,
                      const po::options_description& opts) {
  std::cout << "usage: pocketmoe " << usage << "\n\n" << summary << "\n\n" << opts;
  return kExitOk;
}

/// Throws a UsageError naming `option` unless a file can be written at `path` (its directory
/// exists and is writable): output paths are checked before the work, not after it.
inline void check_output_path(const std::string& option, const std::string& path) {
  if (path.empty()) return;
  const std::filesystem::path p(path);
  const std::filesystem::path dir = p.has_parent_path() ? p.parent_path() : ".";
  std::error_code ec;
  if (std::filesystem::is_directory(p, ec)) throw UsageError(option + " " + path + ": is a directory");
  if (!std::filesystem::is_directory(dir, ec)) throw UsageError(option + " " + path + ": no directory " + dir.string());
  if (::access(dir.c_str(), W_OK) != 0) throw UsageError(option + " " + path + ": directory " + dir.string() + " is not writable");
}

/// `v` if lo <= v <= hi, else a UsageError naming the option and the range (NaN is never in it).
template <class T>
T check_range(const std::string& option, T v, T lo, T hi) {
  if (!(v >= lo && v <= hi)) {
    std::ostringstream m;
    m << option << " " << v << " is out of range (" << lo << ".." << hi << ")";
    throw UsageError(m.str());
  }
  return v;
}

/// Options a llama-cli user types that mean something else here, or nothing: a UsageError that
/// says what to use instead, before program_options reads them as something they are not
/// ("-cnv" would be -c "nv", a config file).
inline void reject_llama_cli_habits(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "-cnv" || a == "--conversation" || a == "-i" || a == "--interactive")
      throw UsageError(a + ": llama-cli's interactive chat is `pocketmoe chat -m MODEL` (or `pocketmoe run -cnv`)");
    if (a == "-ngl" || a == "--n-gpu-layers" || a == "--gpu-layers")
      throw UsageError(a + ": pocketmoe does not split layers between devices; pick the compute device in the config "
                           "(compute: { plugin: vulkan }, e.g. configs/vulkan-igpu-1gb.yaml)");
    if (a == "-co" || a == "--color")
      throw UsageError(a + ": llama-cli's colored output; pocketmoe prints plain text (here -c is the config file)");
    if (a == "-fa" || a == "--flash-attn")
      throw UsageError(a + ": pocketmoe's attention needs no switch (its kernels already work in blocks)");
  }
}

/// Runs `body` (returning an exit code) for command `name`, mapping errors to exit codes:
/// usage errors -> 2 with a pointer to --help, anything else -> 1 with "error: <message>".
template <class F>
int run_command(const char* name, F&& body) {
  try {
    return body();
  } catch (const po::error& e) {
    std::cerr << "pocketmoe " << name << ": " << e.what() << "\nsee pocketmoe " << name
              << " --help\n";
    return kExitUsage;
  } catch (const UsageError& e) {
    std::cerr << "pocketmoe " << name << ": " << e.what() << "\nsee pocketmoe " << name
              << " --help\n";
    return kExitUsage;
  } catch (const Interrupted&) {
    std::cout.flush();
    std::cerr << "\npocketmoe " << name << ": interrupted\n";
    return kExitInterrupted;
  } catch (const std::exception& e) {
    if (interrupted()) {  // e.g. a child process killed by the same Ctrl-C
      std::cerr << "\npocketmoe " << name << ": interrupted\n";
      return kExitInterrupted;
    }
    std::cerr << "error: " << e.what() << "\n";
    return kExitError;
  }
}

}  // namespace pmoe::cli
