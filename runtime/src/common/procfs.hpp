#pragma once
// What the kernel says about this machine and process, from /proc and /sys: how much memory a run
// may still take (the engine's choice of weights.load) and the benchmarks' machine reports.
#include <cstdint>
#include <filesystem>
#include <string>

namespace pmoe {

/// The first line of a file, trailing spaces and newlines dropped; "" if it cannot be read.
std::string first_line(const std::filesystem::path& p);
/// The value of a "Key:   value" line of a /proc file such as cpuinfo or meminfo; "" if none.
std::string proc_field(const char* file, const std::string& key);
/// A /proc/meminfo field ("MemTotal", "MemAvailable") in bytes, 0 if unknown.
uint64_t meminfo_bytes(const std::string& key);
/// Bytes of memory this process may still take: MemAvailable, within this cgroup's memory.max
/// (whose inactive page cache counts as free: the kernel reclaims it first).
uint64_t memory_available();

}  // namespace pmoe
