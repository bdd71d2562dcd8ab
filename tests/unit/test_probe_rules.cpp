// The rules `pocketmoe probe` recommends a config by (docs/probe.md), on made-up measurements.
#include "bench/recommend.hpp"
#include "config/config.hpp"

#include <doctest/doctest.h>

using namespace pmoe::bench;

namespace {
constexpr uint64_t MiB = 1 << 20, GiB = 1ull << 30;

// A 4B-A0.6B-like model: 32 layers x 32 experts of 1.9 MiB (top 4), 284 MiB dense.
ModelNeeds model_4b() {
  return {2200 * MiB, 284 * MiB, 32ull * 32 * 1945 * 1024, 1945 * 1024, 32, 32, 4};
}

Measurements disk(double posix_direct, double uring_direct, double buffered) {
  Measurements x;
  for (uint32_t qd : {1u, 8u, 32u}) {
    x.disk.push_back({"storage-posix", true, qd, posix_direct, 3000});
    x.disk.push_back({"storage-uring", true, qd, uring_direct, 2500});
    x.disk.push_back({"storage-posix", false, qd, buffered, 4000});
  }
  return x;
}
}  // namespace

TEST_CASE("a model that fits what is available runs in RAM, with nothing to stream") {
  Measurements x = disk(1.0, 1.2, 0.9);
  x.ram_available = 8 * GiB;
  const Recommendation r = recommend_memory_and_storage(model_4b(), x);
  CHECK_FALSE(r.streamed);
  CHECK(r.budget.reason.find("everything in RAM") != std::string::npos);
}

TEST_CASE("under 1 GiB: experts stream, the budget is what is left after reserve and dense weights") {
  Measurements x = disk(1.0, 1.2, 0.9);
  x.ram_available = 1 * GiB;
  const ModelNeeds m = model_4b();
  const Recommendation r = recommend_memory_and_storage(m, x);
  REQUIRE(r.streamed);
  CHECK(r.budget_bytes == (GiB - memory_reserve(GiB) - m.dense_bytes) / MiB * MiB);
  CHECK(r.budget.value == std::to_string(r.budget_bytes / MiB) + "MiB");
  CHECK(r.warnings.empty());
  // io_uring reads 20% faster with O_DIRECT at the decode queue depth: it wins, direct I/O on
  CHECK(r.storage.value == "storage-uring");
  CHECK(r.direct_io.value == "true");
}

TEST_CASE("storage: a plugin must be clearly faster to win; O_DIRECT only if it keeps up with buffered") {
  Measurements x = disk(1.0, 1.03, 0.9);  // 3%: noise, the first (portable) one stays
  x.ram_available = 1 * GiB;
  CHECK(recommend_memory_and_storage(model_4b(), x).storage.value == "storage-posix");
  Measurements slow_direct = disk(0.5, 0.5, 1.0);  // O_DIRECT at half the buffered speed
  slow_direct.ram_available = 1 * GiB;
  const Recommendation r = recommend_memory_and_storage(model_4b(), slow_direct);
  CHECK(r.direct_io.value == "false");
  CHECK(r.storage.value == "storage-posix");
  Measurements no_direct;  // O_DIRECT failed everywhere: buffered reads
  no_direct.ram_available = 1 * GiB;
  no_direct.disk.push_back({"storage-posix", false, 8, 0.8, 4000});
  CHECK(recommend_memory_and_storage(model_4b(), no_direct).direct_io.value == "false");
}

TEST_CASE("too little memory for one token's experts: a warning, and at least that budget") {
  Measurements x = disk(1.0, 1.0, 1.0);
  x.ram_available = 600 * MiB;
  const ModelNeeds m = model_4b();
  const Recommendation r = recommend_memory_and_storage(m, x);
  REQUIRE(r.streamed);
  CHECK(r.budget_bytes >= uint64_t(m.n_layer) * m.n_expert_used * m.expert_bytes);
  REQUIRE(r.warnings.size() == 1);
  CHECK(r.warnings[0].find("one token's experts") != std::string::npos);
}

TEST_CASE("compute: the fastest measured backend; the CPU wins near-ties; lookahead covers the read latency") {
  Measurements x = disk(1.0, 1.2, 0.9);
  x.ram_available = 1 * GiB;
  const ModelNeeds m = model_4b();
  Recommendation r = recommend_memory_and_storage(m, x);
  x.compute = {{"cpu-onednn", "", "cpu", 20.0, ""}, {"vulkan", "0", "vulkan iGPU", 20.5, ""}};
  recommend_compute(m, x, r);
  CHECK(r.compute.value == "cpu-onednn");
  // 20 tok/s over 32 layers: 1562 us per layer; uring's p95 2500 us -> 2 layers ahead
  CHECK(r.lookahead.value == "2");
  x.compute[1].decode_tps = 30;
  Recommendation g = recommend_memory_and_storage(m, x);
  recommend_compute(m, x, g);
  CHECK(g.compute.value == "vulkan");
  CHECK(g.vulkan_device == "0");
  x.compute = {{"cpu-onednn", "", "cpu", 0, "no 8 tokens within 8 s"}};
  Recommendation none = recommend_memory_and_storage(m, x);
  recommend_compute(m, x, none);
  CHECK(none.compute.value == "cpu-onednn");
  CHECK(none.lookahead.value == "4");  // nothing measured: the default
}

TEST_CASE("the written config loads, comments and all") {
  Measurements x = disk(1.0, 1.2, 0.9);
  x.ram_available = 1 * GiB;
  x.compute = {{"vulkan", "Intel", "vulkan Intel", 30.0, ""}};
  const ModelNeeds m = model_4b();
  Recommendation r = recommend_memory_and_storage(m, x);
  recommend_compute(m, x, r);
  const std::string yaml = config_yaml(r, "header line 1\nheader: with a colon");
  const pmoe::Config c = pmoe::parse_config(yaml, "probe.yaml");
  CHECK(c.compute.name == "vulkan");
  CHECK(c.storage.name == "storage-uring");
  CHECK(c.storage_fallback == "storage-posix");
  CHECK(c.cache_budget == r.budget_bytes);
  CHECK(c.prefetch_lookahead == uint32_t(std::stoi(r.lookahead.value)));
  CHECK(c.prefill_chunk == 0);  // not recommended: the one default serves RAM and streamed runs
}
