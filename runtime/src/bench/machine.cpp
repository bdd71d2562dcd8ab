#include "bench/machine.hpp"

#include "common/procfs.hpp"

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
