#include "bench/machine.hpp"

#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/utsname.h>

#include <filesystem>
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

MachineInfo machine_info(const std::string& path) {
  MachineInfo m;
  m.cpu = proc_field("/proc/cpuinfo", "model name");
  m.cores = std::thread::hardware_concurrency();
  m.ram_total = meminfo_bytes("MemTotal");
  m.ram_available = meminfo_bytes("MemAvailable");
  struct utsname u {};
  if (::uname(&u) == 0) m.kernel = std::string(u.sysname) + " " + u.release;
  m.disk = disk_of(path);
  return m;
}

nlohmann::json to_json(const MachineInfo& m) {
  return {{"cpu", m.cpu},
          {"cores", m.cores},
          {"ram_total_bytes", m.ram_total},
          {"ram_available_bytes", m.ram_available},
          {"kernel", m.kernel},
          {"disk",
           {{"mount_point", m.disk.mount_point}, {"filesystem", m.disk.filesystem}, {"device", m.disk.device},
            {"model", m.disk.model}, {"rotational", m.disk.rotational}}}};
}

}  // namespace pmoe::bench
