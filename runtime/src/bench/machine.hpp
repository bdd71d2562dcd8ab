#pragma once
// What a benchmark ran on, for its report: CPU, memory, the disk and filesystem under a file,
// kernel. Read from /proc and /sys; a field that cannot be read is left empty (or 0).
#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

namespace pmoe::bench {

struct DiskInfo {
  std::string mount_point, filesystem, device, model;  // model: /sys/block/<disk>/device/model
  bool rotational = false;
};

struct MachineInfo {
  std::string cpu, kernel;
  uint32_t cores = 0;
  uint64_t ram_total = 0, ram_available = 0;
  DiskInfo disk;  // under the model file
};

/// The machine, with the disk that holds `path`.
MachineInfo machine_info(const std::string& path);
/// The mount, filesystem and block device holding `path`.
DiskInfo disk_of(const std::string& path);
nlohmann::json to_json(const MachineInfo& m);

}  // namespace pmoe::bench
