// The memory budget is honoured: a model whose experts (153 MiB) far exceed the budget (16 MiB)
// runs with peak RSS <= dense weights + budget + the stated fixed overhead (docs/expert-cache.md),
// measured on the real CLI in its own process. The same model without a budget must exceed that
// bound, so the check can fail.
#include <doctest/doctest.h>

#include <nlohmann/json.hpp>

#include <cstdlib>
#include <filesystem>
#include <fstream>

namespace {
const std::string kBuild = PMOE_BUILD_DIR;
const std::string kCli = kBuild + "/bin/pocketmoe";
constexpr uint64_t kMiB = 1 << 20;
constexpr uint64_t kFixedOverhead = 48 * kMiB;  // runtime, plugins, libraries, KV + scratch at 64 tokens

nlohmann::json run_json(const std::string& args) {
  const std::string out = kBuild + "/test-configs/rss-stats.json";
  const std::string cmd = kCli + " run " + args + " --stats-json " + out + " > /dev/null 2>&1";
  REQUIRE_MESSAGE(std::system(cmd.c_str()) == 0, cmd);
  return nlohmann::json::parse(std::ifstream(out));
}
}  // namespace

TEST_CASE("peak RSS stays within dense + budget + fixed overhead") {
  std::filesystem::create_directories(kBuild + "/test-configs");
  const std::string model = kBuild + "/test-configs/rss-model.gguf";
  if (!std::filesystem::exists(model)) {
    const std::string synth = kCli + " synth -o " + model +
                              " --shape tiny --type q8_0 --layers 6 --embd 512 --experts 32 --expert-ffn 512 --top-k 4 > /dev/null 2>&1";
    REQUIRE(std::system(synth.c_str()) == 0);
  }
  const std::string cfg = kBuild + "/test-configs/rss.yaml";
  std::ofstream(cfg) << "cache: { policy: lru, budget: 16MiB }\n";
  const std::string common = "-m " + model + " -p 'hello world' -n 48 --temp 0 --ctx-size 64 -t 1";
  const uint64_t dense = 3'460'000;  // `pocketmoe info`: 3.3 MiB dense for this shape
  const uint64_t bound = dense + 16 * kMiB + kFixedOverhead;

  const auto streamed = run_json(common + " -c " + cfg);
  INFO("streamed peak RSS " << streamed["peak_rss_bytes"].get<uint64_t>() / kMiB << " MiB, bound " << bound / kMiB);
  CHECK(streamed["streaming"] == true);
  CHECK(streamed["misses"].get<uint64_t>() > 0);
  CHECK(streamed["peak_rss_bytes"].get<uint64_t>() <= bound);
  // the decode phase's own counters: a part of the totals, adding up the same way
  const auto& d = streamed["decode"];
  CHECK(d["hits"].get<uint64_t>() + d["misses"].get<uint64_t>() == d["uses"].get<uint64_t>());
  CHECK(d["uses"].get<uint64_t>() > 0);
  CHECK(d["uses"].get<uint64_t>() < streamed["uses"].get<uint64_t>());
  CHECK(d["stall_seconds"].get<double>() <= streamed["stall_seconds"].get<double>());
  CHECK(d["stall_fraction"].get<double>() >= 0.0);
  CHECK(d["stall_fraction"].get<double>() < 1.0);

  const auto resident = run_json(common);
  INFO("resident peak RSS " << resident["peak_rss_bytes"].get<uint64_t>() / kMiB << " MiB");
  CHECK(resident["peak_rss_bytes"].get<uint64_t>() > bound);
}
