#include "common/procfs.hpp"

#include <algorithm>
#include <fstream>

namespace pmoe {
namespace fs = std::filesystem;

std::string first_line(const fs::path& p) {
  std::ifstream f(p);
  std::string s;
  std::getline(f, s);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\n')) s.pop_back();
  return s;
}

std::string proc_field(const char* file, const std::string& key) {
  std::ifstream f(file);
  std::string line;
  while (std::getline(f, line))
    if (line.rfind(key, 0) == 0) {
      const size_t colon = line.find(':');
      if (colon == std::string::npos) continue;
      const size_t start = line.find_first_not_of(" \t", colon + 1);
      return start == std::string::npos ? "" : line.substr(start);
    }
  return "";
}

uint64_t meminfo_bytes(const std::string& key) {
  const std::string v = proc_field("/proc/meminfo", key + ":");
  return v.empty() ? 0 : std::stoull(v) * 1024;  // "123456 kB"
}

namespace {
/// What this process's memory cgroup still allows (limit - usage + the inactive page cache it
/// would reclaim first), 0 when unlimited: v2's memory.max/current/stat, or v1's
/// memory.limit_in_bytes/usage_in_bytes/stat.
uint64_t cgroup_memory_left() {
  std::ifstream f("/proc/self/cgroup");  // "0::/path" (v2) or "N:memory,...:/path" (v1)
  for (std::string line; std::getline(f, line);) {
    const size_t a = line.find(':'), b = line.find(':', a + 1);
    if (a == std::string::npos || b == std::string::npos) continue;
    const std::string controllers = line.substr(a + 1, b - a - 1), path = line.substr(b + 1);
    const bool v2 = controllers.empty(), v1 = ("," + controllers + ",").find(",memory,") != std::string::npos;
    if (!v1 && !v2) continue;
    const fs::path dir = fs::path(v2 ? "/sys/fs/cgroup" : "/sys/fs/cgroup/memory") / path.substr(1);
    const std::string max = first_line(dir / (v2 ? "memory.max" : "memory.limit_in_bytes"));
    const std::string used = first_line(dir / (v2 ? "memory.current" : "memory.usage_in_bytes"));
    if (max.empty() || max == "max" || used.empty() || max.size() >= 19) continue;  // v1 says "unlimited" as ~2^63
    const uint64_t m = std::stoull(max), u = std::stoull(used);
    uint64_t inactive = 0;  // page cache counts in usage (a warm model file's pages too)
    std::ifstream stat(dir / "memory.stat");
    for (std::string key, value; stat >> key >> value;)
      if (key == (v2 ? "inactive_file" : "total_inactive_file")) inactive = std::stoull(value);
    return std::max<uint64_t>(1, (m > u ? m - u : 0) + std::min(inactive, u));
  }
  return 0;
}
}  // namespace

uint64_t memory_available() {
  uint64_t m = meminfo_bytes("MemAvailable");
  if (const uint64_t left = cgroup_memory_left(); left && left < m) m = left;
  return m;
}

}  // namespace pmoe
