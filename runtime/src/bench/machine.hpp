#pragma once
// What a benchmark ran on, for its report: CPU, memory, the disk and filesystem under a file,
// kernel. Read from /proc and /sys; a field that cannot be read is left empty (or 0).
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace pmoe::bench {

struct DiskInfo {
  std::string mount_point, filesystem, device, model;  // model: /sys/block/<disk>/device/model
  bool rotational = false;
};

struct MachineInfo {
  std::string cpu, kernel;
  std::vector<std::string> cpu_features;  // cpu_features()
  uint32_t cores = 0;
  uint64_t ram_total = 0, ram_available = 0;  // available: also within this cgroup's memory.max
  DiskInfo disk;  // under the model file
};

/// The machine, with the disk that holds `path`.
MachineInfo machine_info(const std::string& path);
/// The mount, filesystem and block device holding `path`.
DiskInfo disk_of(const std::string& path);
nlohmann::json to_json(const MachineInfo& m);

/// Drops `path`'s pages from the page cache (POSIX_FADV_DONTNEED on our own descriptor: no root
/// needed), so the next read of it is cold; a file that cannot be opened is left alone.
void drop_page_cache(const std::string& path);

/// A "Name:   N kB" line of /proc/self/status in bytes ("VmRSS", "VmHWM"), 0 if unknown.
uint64_t process_status_bytes(const std::string& field);

/// The vector extensions the kernels care about, from CPUID: avx2 fma f16c avx512f avx512bw
/// avx512vl avx512dq avx512_vnni avx512_vbmi avx512_bf16 amx_tile amx_int8 amx_bf16 (those present,
/// and usable: the OS saves their registers).
std::vector<std::string> cpu_features();

/// Memory read bandwidth in bytes/s: `threads` threads summing disjoint parts of a `bytes` buffer
/// (touched first), the best of `passes`.
double memory_read_bandwidth(uint64_t bytes, unsigned threads, int passes = 5);

}  // namespace pmoe::bench
