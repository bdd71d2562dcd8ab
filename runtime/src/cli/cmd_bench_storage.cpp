// pocketmoe bench-storage: the storage plugins alone, reading expert-sized random ranges of a
// file at queue depths 1..64, buffered and with O_DIRECT: is io_uring worth it on this disk?
#include "bench/machine.hpp"
#include "bench/storage_sweep.hpp"
#include "cli/cli_common.hpp"
#include "common/atomic_file.hpp"
#include "common/format.hpp"
#include "config/config.hpp"
#include "plugin/instances.hpp"

#include <nlohmann/json.hpp>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace pmoe::cli {
namespace {

/// Queue depths from "1,4,16,64".
std::vector<uint32_t> parse_depths(const std::string& s) {
  std::vector<uint32_t> out;
  std::stringstream ss(s);
  for (std::string item; std::getline(ss, item, ',');) {
    size_t used = 0;
    unsigned long v = 0;
    try {
      v = std::stoul(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != item.size() || v < 1 || v > 1024) throw UsageError("--qd: '" + item + "' is not a queue depth (1..1024)");
    out.push_back(uint32_t(v));
  }
  if (out.empty()) throw UsageError("--qd: no queue depth");
  return out;
}

struct Candidate {
  std::string label;
  std::string config_path;  // "" = built-in defaults with storage `plugin`
  PluginChoice choice;
  std::vector<std::string> plugin_paths;
};

}  // namespace

int cmd_bench_storage(int argc, char** argv) {
  return run_command("bench-storage", [&] {
    std::string file, depths = "1,4,16,64", json_out, modes = "both";
    std::vector<std::string> configs;
    double seconds = 1.0;
    uint64_t read_bytes = 0;
    po::options_description opts("options");
    opts.add_options()
      ("config,c", po::value(&configs), "measure the storage section of this config (repeat; default: every storage plugin found, default options)")
      ("qd", po::value(&depths)->default_value("1,4,16,64"), "queue depths, comma-separated")
      ("seconds", po::value(&seconds)->default_value(1.0), "seconds per measurement")
      ("io", po::value(&modes)->default_value("both"), "both | direct | buffered")
      ("read-size", po::value(&read_bytes), "bytes per read for a file that is not a model (default 400KiB)")
      ("json", po::value(&json_out), "write the results as JSON")
      ("help,h", "this help");
    po::options_description hidden;
    hidden.add_options()("file", po::value(&file));
    po::options_description all;
    all.add(opts).add(hidden);
    po::positional_options_description pos;
    pos.add("file", 1);
    auto vm = parse_args(argc, argv, all, pos);
    if (vm.count("help"))
      return print_help("bench-storage [-c CONFIG ...] FILE [--qd 1,4,16,64] [--seconds S] [--io both|direct|buffered]",
                        "Random reads of expert-sized ranges of FILE (a GGUF model: its real expert matrices) through "
                        "each storage plugin: GB/s and latency percentiles per queue depth, with and without O_DIRECT. "
                        "The page cache is dropped for the file before each measurement.",
                        opts);
    po::notify(vm);
    if (file.empty()) throw UsageError("no FILE to read");
    if (!std::filesystem::is_regular_file(file)) throw Error(file + ": not a regular file");
    if (!(seconds > 0 && seconds <= 600)) throw UsageError("--seconds must be in (0, 600]");
    if (modes != "both" && modes != "direct" && modes != "buffered") throw UsageError("--io must be both, direct or buffered");
    check_output_path("--json", json_out);
    const std::vector<uint32_t> qds = parse_depths(depths);

    uint64_t typical = 0;
    std::vector<bench::ReadRange> ranges;
    try {
      ranges = bench::expert_ranges(file, &typical);
    } catch (const Error&) {  // not a GGUF file: plain ranges
    }
    const bool model = !ranges.empty();
    if (!model) {
      typical = read_bytes ? read_bytes : 400 << 10;
      ranges = bench::plain_ranges(std::filesystem::file_size(file), typical, 4096);
    }

    std::vector<Candidate> candidates;
    for (const std::string& path : configs) {
      const Config cfg = load_config(path);
      candidates.push_back({std::filesystem::path(path).stem().string() + ": " + cfg.storage.name, path, cfg.storage,
                            cfg.plugin_paths});
    }
    if (candidates.empty()) {
      PluginRegistry reg;
      for (const PluginManifest& m : reg.manifests())
        for (const ImplManifest& impl : m.provides)
          if (impl.kind == PMOE_KIND_STORAGE) {
            PluginChoice c;
            c.name = impl.name;
            candidates.push_back({impl.name, "", c, {}});
          }
    }

    const bench::MachineInfo machine = bench::machine_info(file);
    std::printf("%s: %s, %s random reads of %s (%s)\ndisk: %s (%s, %s on %s)\n", file.c_str(),
                format_bytes(std::filesystem::file_size(file)).c_str(), model ? "expert-matrix" : "4 KiB-aligned",
                format_bytes(typical).c_str(), model ? (std::to_string(ranges.size()) + " ranges").c_str() : "random",
                machine.disk.model.c_str(), machine.disk.device.c_str(), machine.disk.filesystem.c_str(),
                machine.disk.mount_point.c_str());
    std::printf("%-28s %-8s %4s %9s %9s %10s %10s %10s\n", "storage", "io", "qd", "GB/s", "reads/s", "p50 us", "p95 us",
                "p99 us");
    nlohmann::json results = nlohmann::json::array();
    for (const Candidate& c : candidates) {
      PluginRegistry reg(c.plugin_paths);
      std::unique_ptr<StorageBackend> storage;
      try {
        storage = std::make_unique<StorageBackend>(StorageBackend::create(reg, c.choice));
      } catch (const Error& e) {  // e.g. io_uring refused here: say so, measure the others
        std::printf("%-28s unavailable: %s\n", c.label.c_str(), e.what());
        results.push_back({{"storage", c.label}, {"error", e.what()}});
        continue;
      }
      for (bool direct : {false, true}) {
        if ((direct && modes == "buffered") || (!direct && modes == "direct")) continue;
        for (uint32_t qd : qds) {
          const bench::SweepPoint p = bench::random_reads(*storage, file, ranges, qd, direct, seconds);
          const char* io = direct ? "direct" : "buffered";
          if (!p.error.empty()) {
            std::printf("%-28s %-8s %4u unavailable: %s\n", c.label.c_str(), io, qd, p.error.c_str());
            results.push_back({{"storage", c.label}, {"direct", direct}, {"queue_depth", qd}, {"error", p.error}});
            break;  // the same for every depth
          }
          std::printf("%-28s %-8s %4u %9.3f %9.0f %10.0f %10.0f %10.0f%s\n", c.label.c_str(), io, qd, p.gb_per_s(),
                      double(p.reads) / p.seconds, p.p50_us, p.p95_us, p.p99_us,
                      p.errors ? ("  (" + std::to_string(p.errors) + " read errors)").c_str() : "");
          std::fflush(stdout);
          results.push_back({{"storage", c.label}, {"direct", direct}, {"queue_depth", qd}, {"reads", p.reads},
                             {"bytes", p.bytes}, {"seconds", p.seconds}, {"gb_per_s", p.gb_per_s()},
                             {"p50_us", p.p50_us}, {"p95_us", p.p95_us}, {"p99_us", p.p99_us}, {"errors", p.errors}});
        }
      }
    }
    if (!json_out.empty()) {
      const nlohmann::json doc{{"file", file}, {"read_bytes", typical}, {"expert_ranges", model},
                               {"machine", bench::to_json(machine)}, {"results", results}};
      write_file_atomically(json_out, [&](std::ostream& f) { f << doc.dump(1) << "\n"; });
    }
    return kExitOk;
  });
}

}  // namespace pmoe::cli
