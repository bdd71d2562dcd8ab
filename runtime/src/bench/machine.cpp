#include "bench/machine.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <cpuid.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <fstream>
#include <sstream>
#include <thread>

namespace pmoe::bench {
namespace fs = std::filesystem;

namespace {
std::string first_line(const fs::path& p) {
  std::ifstream f(p);
  std::string s;
  std::getline(f, s);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\n')) s.pop_back();
  return s;
}

// "Key:   value" of a /proc file such as cpuinfo or meminfo
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

DiskInfo disk_of(const std::string& path) {
  DiskInfo d;
  std::error_code ec;
  const std::string real = fs::weakly_canonical(fs::absolute(path, ec), ec).string();
  // the longest mount point above the file (mountinfo: id parent maj:min root mount opts ... - fs source)
  std::ifstream mi("/proc/self/mountinfo");
  std::string line, dev_id;
  while (std::getline(mi, line)) {
    std::istringstream ls(line);
    std::string id, parent, majmin, root, mount, rest;
    ls >> id >> parent >> majmin >> root >> mount;
    const size_t dash = line.find(" - ");
    if (dash == std::string::npos) continue;
    std::istringstream tail(line.substr(dash + 3));
    std::string fstype, source;
    tail >> fstype >> source;
    const bool above = real == mount || mount == "/" || real.rfind(mount + "/", 0) == 0;
    if (above && mount.size() >= d.mount_point.size()) d.mount_point = mount, d.filesystem = fstype, d.device = source;
  }
  struct stat st {};
  if (::stat(real.c_str(), &st) != 0) return d;
  // /sys/dev/block/MAJ:MIN is the partition or disk; a partition's parent directory is the disk
  fs::path sys = fs::path("/sys/dev/block") / (std::to_string(major(st.st_dev)) + ":" + std::to_string(minor(st.st_dev)));
  sys = fs::canonical(sys, ec);
  if (ec) return d;
  if (fs::exists(sys / "partition")) sys = sys.parent_path();
  d.model = first_line(sys / "device" / "model");
  if (d.model.empty()) d.model = sys.filename().string();  // a virtual device (dm, loop, nvme namespace)
  d.rotational = first_line(sys / "queue" / "rotational") == "1";
  return d;
}

uint64_t memory_available() {
  uint64_t m = meminfo_bytes("MemAvailable");
  if (const uint64_t left = cgroup_memory_left(); left && left < m) m = left;
  return m;
}

MachineInfo machine_info(const std::string& path) {
  MachineInfo m;
  m.cpu = proc_field("/proc/cpuinfo", "model name");
  m.cores = std::thread::hardware_concurrency();
  m.ram_total = meminfo_bytes("MemTotal");
  m.ram_available = memory_available();
  struct utsname u {};
  if (::uname(&u) == 0) m.kernel = std::string(u.sysname) + " " + u.release;
  m.disk = disk_of(path);
  m.cpu_features = cpu_features();
  return m;
}

nlohmann::json to_json(const MachineInfo& m) {
  return {{"cpu", m.cpu},
          {"cores", m.cores},
          {"ram_total_bytes", m.ram_total},
          {"ram_available_bytes", m.ram_available},
          {"kernel", m.kernel},
          {"cpu_features", m.cpu_features},
          {"disk",
           {{"mount_point", m.disk.mount_point}, {"filesystem", m.disk.filesystem}, {"device", m.disk.device},
            {"model", m.disk.model}, {"rotational", m.disk.rotational}}}};
}

void drop_page_cache(const std::string& path) {
  if (const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC); fd >= 0) {
    ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    ::close(fd);
  }
}

uint64_t process_status_bytes(const std::string& field) {
  const std::string v = proc_field("/proc/self/status", field + ":");
  return v.empty() ? 0 : std::stoull(v) * 1024;  // "123456 kB"
}

std::vector<std::string> cpu_features() {
  unsigned a, b, c, d;
  std::vector<std::string> out;
  if (!__get_cpuid_count(1, 0, &a, &b, &c, &d)) return out;
  const bool osxsave = c & (1u << 27), fma = c & (1u << 12), f16c = c & (1u << 29);
  uint64_t xcr0 = 0;
  if (osxsave) {
    unsigned lo, hi;
    __asm__("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    xcr0 = (uint64_t(hi) << 32) | lo;
  }
  const bool ymm = (xcr0 & 0x6) == 0x6, zmm = (xcr0 & 0xE6) == 0xE6, tiles = (xcr0 & 0x60000) == 0x60000;
  unsigned a7 = 0, b7 = 0, c7 = 0, d7 = 0, a71 = 0, b71 = 0, c71 = 0, d71 = 0;
  __get_cpuid_count(7, 0, &a7, &b7, &c7, &d7);
  __get_cpuid_count(7, 1, &a71, &b71, &c71, &d71);
  auto add = [&](bool present, const char* name) {
    if (present) out.push_back(name);
  };
  add(ymm && (b7 & (1u << 5)), "avx2");
  add(ymm && fma, "fma");
  add(ymm && f16c, "f16c");
  add(zmm && (b7 & (1u << 16)), "avx512f");
  add(zmm && (b7 & (1u << 30)), "avx512bw");
  add(zmm && (b7 & (1u << 31)), "avx512vl");
  add(zmm && (b7 & (1u << 17)), "avx512dq");
  add(zmm && (c7 & (1u << 11)), "avx512_vnni");
  add(zmm && (c7 & (1u << 1)), "avx512_vbmi");
  add(zmm && (a71 & (1u << 5)), "avx512_bf16");
  add(tiles && (d7 & (1u << 24)), "amx_tile");
  add(tiles && (d7 & (1u << 25)), "amx_int8");
  add(tiles && (d7 & (1u << 22)), "amx_bf16");
  return out;
}

double memory_read_bandwidth(uint64_t bytes, unsigned threads, int passes) {
  threads = std::max(1u, threads);
  const size_t n = size_t(bytes / 8 / threads * threads);
  std::unique_ptr<uint64_t[]> buf(new uint64_t[n]);
  for (size_t i = 0; i < n; ++i) buf[i] = i;  // touch every page (and not the zero page)
  double best = 0;
  volatile uint64_t sink = 0;
  for (int p = 0; p < passes; ++p) {
    std::vector<std::thread> pool;
    std::vector<uint64_t> sums(threads);
    const auto t0 = std::chrono::steady_clock::now();
    for (unsigned t = 0; t < threads; ++t)
      pool.emplace_back([&, t] {
        const uint64_t* x = buf.get() + n / threads * t;
        uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;  // independent chains, so the loads overlap
        for (size_t i = 0; i + 4 <= n / threads; i += 4) s0 += x[i], s1 += x[i + 1], s2 += x[i + 2], s3 += x[i + 3];
        sums[t] = s0 + s1 + s2 + s3;
      });
    for (std::thread& th : pool) th.join();
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    for (uint64_t v : sums) sink = sink + v;
    best = std::max(best, double(n * 8) / s);
  }
  return best;
}

}  // namespace pmoe::bench
