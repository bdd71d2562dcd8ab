// pocketmoe probe: measure this machine briefly (memory, disk, compute devices) and, with a
// model, recommend a config from the measurements (rules: bench/recommend.hpp, docs/probe.md).
#include "bench/machine.hpp"
#include "bench/recommend.hpp"
#include "bench/storage_sweep.hpp"
#include "cli/child_run.hpp"
#include "cli/cli_common.hpp"
#include "common/atomic_file.hpp"
#include "common/format.hpp"
#include "config/config.hpp"
#include "model/model.hpp"
#include "plugin/compute_backend.hpp"
#include "plugin/instances.hpp"

#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>

namespace pmoe::cli {
namespace {
namespace fs = std::filesystem;
using nlohmann::json;

/// A scratch file of `bytes` in `dir` for the disk test when no model is given (removed after).
struct ScratchFile {
  fs::path path;
  ScratchFile(const fs::path& dir, uint64_t bytes) : path(dir / (".pocketmoe-probe-" + std::to_string(::getpid()))) {
    std::ofstream f(path, std::ios::binary);
    std::vector<char> chunk(1 << 20);
    std::mt19937_64 rng(1);
    for (char& c : chunk) c = char(rng());  // incompressible, whatever the filesystem does
    for (uint64_t w = 0; w < bytes; w += chunk.size()) f.write(chunk.data(), std::streamsize(chunk.size()));
    f.close();
    if (!f) throw Error(path.string() + ": cannot write the disk test file");
    if (const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC); fd >= 0) {  // written back, so droppable
      ::fsync(fd);
      ::close(fd);
    }
  }
  ~ScratchFile() {
    std::error_code ec;
    fs::remove(path, ec);
  }
};

struct VulkanDevice {
  std::string index, name;
  uint32_t type = 0;
  uint64_t memory = 0;
};

const char* device_type_name(uint32_t t) {
  switch (t) {
    case PMOE_DEVICE_INTEGRATED_GPU: return "integrated GPU";
    case PMOE_DEVICE_DISCRETE_GPU: return "discrete GPU";
    case PMOE_DEVICE_CPU: return "CPU";
    default: return "other";
  }
}

/// The Vulkan devices, by asking the vulkan compute plugin for device 0, 1, ... in turn.
std::vector<VulkanDevice> vulkan_devices(PluginRegistry& reg, std::string& why_none) {
  std::vector<VulkanDevice> out;
  if (!reg.find("vulkan", PMOE_KIND_COMPUTE)) {
    why_none = "the vulkan plugin is not installed";
    return out;
  }
  for (int i = 0; i < 16; ++i) {
    PluginChoice choice;
    choice.name = "vulkan";
    choice.options = {{"device", std::to_string(i)}};
    choice.option_locs = {SourceLoc{"probe", 0, 0}};
    try {
      const ComputeBackend be = ComputeBackend::create(reg, choice);
      out.push_back({std::to_string(i), be.props().name, be.props().device_type, be.props().device_memory});
    } catch (const Error& e) {
      if (i == 0) why_none = e.what();
      break;
    }
  }
  return out;
}

}  // namespace

int cmd_probe(int argc, char** argv) {
  return run_command("probe", [&] {
    std::string model, config_out, json_out, dir = ".";
    double seconds = 0.25;
    po::options_description opts("options");
    opts.add_options()
      ("model,m", po::value(&model), "recommend a config for this model (its disk is the one measured)")
      ("write-config", po::value(&config_out), "write the recommendation as a commented config (needs -m)")
      ("json", po::value(&json_out), "write the measurements and the recommendation as JSON")
      ("dir", po::value(&dir)->default_value("."), "without -m: measure the disk under this directory")
      ("seconds", po::value(&seconds)->default_value(0.25), "seconds per disk measurement")
      ("help,h", "this help");
    auto vm = parse_args(argc, argv, opts);
    if (vm.count("help"))
      return print_help("probe [-m MODEL] [--write-config OUT.yaml] [--json OUT.json]",
                        "Measure this machine briefly (memory bandwidth, random reads of the disk, compute devices) "
                        "and, with a model, recommend a compute plugin, storage plugin, budget, lookahead and prefill "
                        "chunk, each with the measurement behind it (docs/probe.md).",
                        opts);
    po::notify(vm);
    if (!config_out.empty() && model.empty()) throw UsageError("--write-config needs a model (-m)");
    if (!model.empty() && !fs::is_regular_file(model)) throw Error(model + ": not a regular file");
    if (model.empty() && !fs::is_directory(dir)) throw Error(dir + ": not a directory");
    if (!(seconds > 0 && seconds <= 10)) throw UsageError("--seconds must be in (0, 10]");
    check_output_path("--write-config", config_out);
    check_output_path("--json", json_out);
    const auto t0 = std::chrono::steady_clock::now();

    const bench::MachineInfo machine = bench::machine_info(model.empty() ? dir : model);
    std::string features;
    for (const std::string& f : machine.cpu_features) features += " " + f;
    std::printf("CPU      %s, %u threads;%s\n", machine.cpu.c_str(), machine.cores, features.c_str());
    std::printf("RAM      %s total, %s available\n", format_bytes(machine.ram_total).c_str(),
                format_bytes(machine.ram_available).c_str());
    bench::Measurements x;
    x.ram_available = machine.ram_available;
    const uint64_t bw_bytes = std::min<uint64_t>(256 << 20, machine.ram_available / 8);
    const double bw1 = bench::memory_read_bandwidth(bw_bytes, 1, 3), bwn = bench::memory_read_bandwidth(bw_bytes, machine.cores, 3);
    x.memory_gb_per_s = bwn / 1e9;
    std::printf("memory   read %.1f GB/s (1 thread), %.1f GB/s (%u threads)\n", bw1 / 1e9, bwn / 1e9, machine.cores);

    // disk: random expert-sized reads through every storage plugin, buffered and O_DIRECT
    std::unique_ptr<ScratchFile> scratch;
    std::string file = model;
    std::vector<bench::ReadRange> ranges;
    if (!model.empty()) ranges = bench::expert_ranges(model);
    if (ranges.empty()) {
      if (model.empty()) {
        scratch = std::make_unique<ScratchFile>(dir, 64 << 20);
        file = scratch->path.string();
      }
      ranges = bench::plain_ranges(fs::file_size(file), 400 << 10, 4096);
    }
    std::printf("disk     %s (%s, %s on %s)\n", machine.disk.model.c_str(), machine.disk.device.c_str(),
                machine.disk.filesystem.c_str(), machine.disk.mount_point.c_str());
    PluginRegistry reg;
    json storage_json = json::array();
    bool direct_works = false;
    for (const PluginManifest& man : reg.manifests())
      for (const ImplManifest& impl : man.provides) {
        if (impl.kind != PMOE_KIND_STORAGE) continue;
        PluginChoice choice;
        choice.name = impl.name;
        std::unique_ptr<StorageBackend> st;
        try {
          st = std::make_unique<StorageBackend>(StorageBackend::create(reg, choice));
        } catch (const Error& e) {
          std::printf("         %-14s does not work here: %s\n", impl.name.c_str(), e.what());
          storage_json.push_back({{"plugin", impl.name}, {"works", false}, {"error", e.what()}});
          continue;
        }
        std::string line;
        for (bool direct : {false, true})
          for (uint32_t qd : {1u, 8u, 32u}) {
            const bench::SweepPoint p = bench::random_reads(*st, file, ranges, qd, direct, seconds);
            if (!p.error.empty()) {
              line += std::string(direct ? " | O_DIRECT: " : " | buffered: ") + p.error;
              break;
            }
            direct_works |= direct && p.errors == 0;
            x.disk.push_back({impl.name, direct, qd, p.gb_per_s(), p.p95_us});
            char buf[96];
            std::snprintf(buf, sizeof buf, "%s qd%u %.2f GB/s", qd == 1 ? (direct ? " | O_DIRECT" : " buffered") : ",",
                          qd, p.gb_per_s());
            line += buf;
          }
        std::printf("         %-14s%s\n", impl.name.c_str(), line.c_str());
        storage_json.push_back({{"plugin", impl.name}, {"works", true}});
      }
    std::printf("         O_DIRECT %s on %s\n", direct_works ? "works" : "does not work", machine.disk.filesystem.c_str());

    std::string why_no_vulkan;
    const std::vector<VulkanDevice> gpus = vulkan_devices(reg, why_no_vulkan);
    if (gpus.empty()) std::printf("vulkan   no device: %s\n", why_no_vulkan.c_str());
    for (const VulkanDevice& d : gpus)
      std::printf("vulkan   device %s: %s (%s, %s)\n", d.index.c_str(), d.name.c_str(), device_type_name(d.type),
                  format_bytes(d.memory).c_str());

    json doc = {{"machine", bench::to_json(machine)},
                {"memory_read_gb_per_s", {{"one_thread", bw1 / 1e9}, {"all_threads", bwn / 1e9}}},
                {"storage", storage_json},
                {"o_direct_works", direct_works}};
    doc["disk"] = json::array();
    for (const bench::DiskPoint& p : x.disk)
      doc["disk"].push_back({{"plugin", p.plugin}, {"direct", p.direct}, {"queue_depth", p.queue_depth},
                             {"gb_per_s", p.gb_per_s}, {"p95_us", p.p95_us}});
    doc["vulkan_devices"] = json::array();
    for (const VulkanDevice& d : gpus)
      doc["vulkan_devices"].push_back({{"index", d.index}, {"name", d.name}, {"type", device_type_name(d.type)}, {"memory_bytes", d.memory}});

    if (!model.empty()) {
      const bench::ModelNeeds needs = [&] {  // the model is closed again before the trial runs
        const auto m = Model::load(model);
        const Hparams& h = m->hp();
        return bench::ModelNeeds{fs::file_size(model), m->dense_bytes(), m->total_expert_bytes(), m->expert_bytes(0),
                                 h.n_layer, h.n_expert, h.n_expert_used};
      }();
      bench::Recommendation rec = bench::recommend_memory_and_storage(needs, x);
      // compute: a short decode on each candidate, configured as recommended so far
      std::vector<bench::ComputePoint> candidates = {{"cpu-onednn", "", "cpu-onednn", 0, ""}};
      for (const VulkanDevice& d : gpus)
        candidates.push_back({"vulkan", d.index, "vulkan " + d.name, 0,
                              d.type == PMOE_DEVICE_CPU ? "software Vulkan, not measured" : ""});
      const fs::path work = fs::temp_directory_path() / ("pocketmoe-probe-" + std::to_string(::getpid()));
      fs::create_directories(work);
      for (bench::ComputePoint& c : candidates) {
        if (!c.note.empty()) continue;
        bench::Recommendation trial = rec;
        trial.compute.value = c.plugin;
        trial.vulkan_device = c.device;
        if (rec.streamed) {  // this process stays alive beside the trial: leave it its memory
          const uint64_t mine = bench::process_status_bytes("VmRSS") + (32 << 20);
          trial.budget_bytes = rec.budget_bytes > 2 * mine ? rec.budget_bytes - mine : rec.budget_bytes / 2;
          trial.budget.value = std::to_string(trial.budget_bytes >> 20) + "MiB";
        }
        const std::string cfg = (work / "trial.yaml").string(), stats = (work / "stats.json").string();
        std::ofstream(cfg) << bench::config_yaml(trial, "probe trial");
        bench::drop_page_cache(model);  // a cold start, and no cached pages left over to count against a limit
        try {
          const json out = run_child({"run", "-m", model, "-c", cfg, "-p", "The small thinker reads", "-n", "8", "--temp",
                                      "1", "--stats-json", stats},
                                     stats, (work / "log.txt").string(), 8.0);
          c.decode_tps = out["decode_tokens_per_second"];
        } catch (const TimeoutError&) {
          c.note = "no 8 tokens within 8 s";
        } catch (const Error& e) {
          c.note = std::string("failed: ") + e.what();
        }
        x.compute.push_back(c);
      }
      for (const bench::ComputePoint& c : candidates)
        if (!c.note.empty() && c.decode_tps == 0 &&
            std::none_of(x.compute.begin(), x.compute.end(), [&](const auto& y) { return y.label == c.label; }))
          x.compute.push_back(c);
      std::error_code ec;
      fs::remove_all(work, ec);
      bench::recommend_compute(needs, x, rec);

      std::printf("\nrecommended for %s (%s: %s dense, %s experts):\n", model.c_str(),
                  format_bytes(needs.file_bytes).c_str(), format_bytes(needs.dense_bytes).c_str(),
                  format_bytes(needs.expert_bytes_total).c_str());
      auto show = [](const char* what, const bench::Choice& c) {
        if (!c.value.empty()) std::printf("  %-14s %-16s %s\n", what, c.value.c_str(), c.reason.c_str());
      };
      show("compute", rec.compute);
      show("budget", {rec.streamed ? rec.budget.value : "all in RAM", rec.budget.reason});
      if (rec.streamed) {
        show("storage", rec.storage);
        show("direct_io", rec.direct_io);
        show("lookahead", rec.lookahead);
      }
      for (const std::string& w : rec.warnings) std::printf("  warning: %s\n", w.c_str());
      const std::string yaml = bench::config_yaml(rec, "Written by `pocketmoe probe -m " + model + "` on " + machine.cpu +
                                                           ", " + format_bytes(machine.ram_total) + " RAM.\n" +
                                                           "Every choice below comes from a measurement on that machine (docs/probe.md).");
      parse_config(yaml, config_out.empty() ? "probe" : config_out);  // what we write must load
      if (!config_out.empty()) {
        write_file_atomically(config_out, [&](std::ostream& f) { f << yaml; });
        std::printf("wrote %s\n", config_out.c_str());
      }
      doc["recommendation"] = {{"compute", rec.compute.value}, {"vulkan_device", rec.vulkan_device},
                               {"streamed", rec.streamed}, {"storage", rec.storage.value},
                               {"direct_io", rec.direct_io.value}, {"budget", rec.budget.value},
                               {"lookahead", rec.lookahead.value},
                               {"warnings", rec.warnings}, {"config", yaml}};
      doc["compute"] = json::array();
      for (const bench::ComputePoint& c : x.compute)
        doc["compute"].push_back({{"label", c.label}, {"decode_tps", c.decode_tps}, {"note", c.note}});
    }
    const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    doc["seconds"] = took;
    std::printf("(probe took %.1f s)\n", took);
    if (!json_out.empty()) {
      write_file_atomically(json_out, [&](std::ostream& f) { f << doc.dump(1) << "\n"; });
    }
    return kExitOk;
  });
}

}  // namespace pmoe::cli
