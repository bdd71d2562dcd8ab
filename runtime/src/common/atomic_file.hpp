#pragma once
// Output files appear whole or not at all: written to PATH.tmp, renamed over PATH when complete,
// and the .tmp removed when anything fails (a writer that checks for interruptions included).
#include "common/error.hpp"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>

namespace pmoe {

/// Calls write(std::ofstream&) on PATH.tmp, then renames it to `path`; throws pmoe::Error naming
/// the file when writing, closing or renaming fails.
template <class Write>
void write_file_atomically(const std::string& path, Write write, std::ios::openmode mode = std::ios::out) {
  const std::string tmp = path + ".tmp";
  struct Remove {
    const std::string& p;
    bool armed = true;
    ~Remove() {
      if (armed) std::remove(p.c_str());
    }
  } remove{tmp};
  {
    std::ofstream f(tmp, mode | std::ios::trunc);
    if (!f) throw Error(tmp + ": cannot create: " + std::strerror(errno));
    write(f);
    f.close();
    if (!f) throw Error(tmp + ": write failed: " + std::strerror(errno));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) throw Error(path + ": cannot rename " + tmp + " to it: " + std::strerror(errno));
  remove.armed = false;
}

}  // namespace pmoe
