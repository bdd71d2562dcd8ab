#pragma once
// Runs this executable as a child process (`pocketmoe run ...`), for commands that measure whole
// runs: each in a fresh process, with its own expert cache and peak RSS (bench, probe).
#include "common/error.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

extern char** environ;

namespace pmoe::cli {

/// Runs `pocketmoe <args>` with stdout discarded and stderr written to `log`, and returns the
/// JSON it wrote to `stats` (its --stats-json). Throws pmoe::Error with the log when it fails,
/// and, with `timeout_s` > 0, kills it past that and throws TimeoutError.
struct TimeoutError : Error {
  using Error::Error;
};
inline nlohmann::json run_child(const std::vector<std::string>& args, const std::string& stats, const std::string& log,
                                double timeout_s = 0) {
  std::string self = std::filesystem::read_symlink("/proc/self/exe").string();
  std::vector<char*> argv{self.data()};
  for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 2, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  pid_t pid;
  const int rc = posix_spawn(&pid, self.c_str(), &fa, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) throw Error("cannot start " + self + ": " + std::strerror(rc));
  bool killed = false;
  if (timeout_s > 0) {  // a pidfd becomes readable when the child exits
    const int pfd = int(::syscall(SYS_pidfd_open, pid, 0));
    if (pfd >= 0) {
      pollfd p{pfd, POLLIN, 0};
      int n;
      while ((n = ::poll(&p, 1, int(timeout_s * 1000))) < 0 && errno == EINTR) {
      }
      if (n == 0) killed = ::kill(pid, SIGKILL) == 0;
      ::close(pfd);
    }
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (killed) throw TimeoutError("no result within " + std::to_string(timeout_s) + " s");
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    std::ifstream f(log);
    std::stringstream ss;
    ss << f.rdbuf();
    throw Error("the run failed (" +
                (WIFEXITED(status) ? "exit " + std::to_string(WEXITSTATUS(status)) : std::string("killed by a signal")) +
                "):\n" + ss.str());
  }
  std::ifstream f(stats);
  return nlohmann::json::parse(f);
}

}  // namespace pmoe::cli
