// Experts streamed from storage through the bounded cache: output identical to everything in RAM
// for every storage x policy x budget x lookahead x direct-I/O choice; statistics that add up;
// budgets that are too small; storage faults.
#include <doctest/doctest.h>

#include "backend_under_test.hpp"

#include "common/error.hpp"
#include "engine/session.hpp"

#include <nlohmann/json.hpp>

#include <chrono>
#include <cstring>
#include <future>
#include <thread>
#include <filesystem>
#include <memory>
#include <fstream>

using namespace pmoe;
namespace fs = std::filesystem;

namespace {
[[maybe_unused]] const bool kSkipped = pmoe::test::skip_without_device();  // before any test runs
const std::string kFix = PMOE_FIXTURES_DIR;
const std::string kBuild = PMOE_BUILD_DIR;

std::vector<int32_t> tokens_of(const std::string& seq, const std::string& dir = kFix + "/logits") {
  std::ifstream f(dir + "/" + seq + ".tokens.json");
  REQUIRE(f.good());
  return nlohmann::json::parse(f).get<std::vector<int32_t>>();
}

/// The storage plugins this build has.
std::vector<std::string> available_storages() {
  std::vector<std::string> storages = {"storage-posix"};
  PluginRegistry reg;
  if (reg.find("storage-uring", PMOE_KIND_STORAGE)) storages.push_back("storage-uring");
  return storages;
}

/// Streamed and resident runs both use the backend under test (backend_under_test.hpp).
std::string write_config(const std::string& name, const std::string& yaml) {
  const fs::path dir = fs::path(kBuild) / "test-configs";
  fs::create_directories(dir);
  const std::string p = (dir / (name + ".yaml")).string();
  std::ofstream(p) << "plugin_paths: [" << kBuild << "/test-plugins/fault]\n" << pmoe::test::backend_config_section() << yaml;
  return p;
}

struct Run {
  std::vector<float> logits;
  CacheStats stats;
  uint32_t slots = 0;
  uint64_t slot_bytes = 0;
  uint64_t distinct_uses = 0;  // distinct experts per layer step, from the router
};

Run run(const std::string& model, const std::string& config, const std::vector<int32_t>& toks, bool sequential,
        uint32_t ubatch = 8) {
  SessionOptions o;
  o.model_path = model.find('/') != std::string::npos ? model : kFix + "/models/" + model + ".gguf";
  o.config_path = config.empty() && !pmoe::test::backend_config_section().empty() ? write_config("resident", "") : config;
  o.load_tokenizer = false;
  o.engine.n_ctx = uint32_t(toks.size());
  o.engine.ubatch = ubatch;  // the same chunking as the streamed runs (prefill_chunk 8)
  Session s(o);
  Run r;
  s.engine().set_routing_observer([&](const RoutingEvent& ev) {
    std::vector<int32_t> e(ev.experts.begin(), ev.experts.end());
    std::sort(e.begin(), e.end());
    r.distinct_uses += uint64_t(std::unique(e.begin(), e.end()) - e.begin());
  });
  if (sequential)
    for (int32_t t : toks) s.engine().eval(std::span(&t, 1), true, r.logits);
  else
    s.engine().eval(toks, true, r.logits);
  if (ExpertCache* c = s.expert_cache()) {
    r.stats = c->total_stats();
    r.slots = c->capacity();
    r.slot_bytes = c->slot_bytes();
  }
  return r;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * 4) == 0;
}

uint64_t expert_slot_bytes(const std::string& model) {
  // slot size with direct I/O (the larger one: reads are rounded out to the block size)
  const std::string cfg = write_config("probe", "storage: { plugin: storage-posix, direct_io: true }\n"
                                                "cache: { policy: lru, budget: 64MiB }\n");
  Run r = run(model, cfg, {1, 2}, false);
  return r.slot_bytes;
}
}  // namespace

TEST_CASE("offloading never changes a bit: storage x policy x budget x lookahead x direct I/O") {
  const auto toks = tokens_of("st-a.random");
  std::vector<std::string> policies = {"lru"};
  if (pmoe::test::backend_config_section().empty()) {  // which policy runs is the host's business: checked once, on the default backend
    PluginRegistry reg;
    for (const char* p : {"lfu", "s3fifo", "arc", "router"})
      if (reg.find(p, PMOE_KIND_CACHE_POLICY)) policies.push_back(p);
  }
  const std::vector<std::string> storages = available_storages();
  std::vector<const char*> models = {"st-a-q8_0", "st-a-q4_0", "st-b-f32"};
  if (!pmoe::test::backend_config_section().empty()) models.resize(1);  // another backend: one model (a software GPU is slow)
  for (const char* model : models) {
    const Run ref_batch = run(model, "", toks, false), ref_seq = run(model, "", toks, true);
    const uint64_t slot = expert_slot_bytes(model);
    // minimum (one layer's top-k), a middle size, and everything resident
    for (uint64_t budget : {2 * slot, 5 * slot, 48 * slot + slot})
      for (const auto& storage : storages)
        for (const char* direct : {"false", "true"})
          for (uint32_t lookahead : {0u, 3u})  // 3: the first layer routes 3 ahead, later ones 2
            for (const auto& policy : policies) {
              const std::string cfg = write_config(
                  "matrix", "storage: { plugin: " + storage + ", direct_io: " + direct + " }\n" +
                                "cache: { policy: " + policy + ", budget: " + std::to_string(budget) + " }\n" +
                                "prefetch: { lookahead: " + std::to_string(lookahead) + " }\n");
              INFO(std::string(model) << " " << storage << " direct_io=" << std::string(direct) << " policy=" << policy << " budget="
                         << budget << " lookahead=" << lookahead);
              const Run b = run(model, cfg, toks, false);
              CHECK(same_bits(b.logits, ref_batch.logits));
              CHECK(b.stats.uses > 0);
              if (lookahead == 0 && policy == "lru") {
                const Run q = run(model, cfg, toks, true);
                CHECK(same_bits(q.logits, ref_seq.logits));
                // the baseline without pre-attention reads computes the same
                const std::string late = write_config(
                    "matrix-late", "storage: { plugin: " + storage + ", direct_io: " + direct + " }\n" +
                                       "cache: { policy: lru, budget: " + std::to_string(budget) + " }\n" +
                                       "prefetch: { pre_attention: false }\n");
                CHECK(same_bits(run(model, late, toks, true).logits, ref_seq.logits));
              }
            }
  }
}

TEST_CASE("statistics add up") {
  const auto toks = tokens_of("st-a.text");
  const uint64_t slot = expert_slot_bytes("st-a-q8_0");
  SUBCASE("no prefetch: every use is a hit or a demand read, bytes = misses x expert read") {
    const std::string cfg = write_config("stats", "cache: { policy: lru, budget: " + std::to_string(3 * slot) + " }\n");
    const Run r = run("st-a-q8_0", cfg, toks, false);
    CHECK(r.stats.uses == r.distinct_uses);
    CHECK(r.stats.hits + r.stats.misses == r.stats.uses);
    CHECK(r.stats.prefetches == 0);
    CHECK(r.stats.misses > 0);
    CHECK(r.stats.bytes_read % r.stats.misses == 0);  // every miss reads the same rounded extents
    CHECK(r.stats.bytes_read / r.stats.misses <= r.slot_bytes);
  }
  SUBCASE("everything fits: each expert is read once") {
    const std::string cfg = write_config("stats", "cache: { policy: lru, budget: 1GiB }\n");
    const Run r = run("st-a-q8_0", cfg, toks, false);
    CHECK(r.slots == 6 * 8);
    CHECK(r.stats.misses <= 48);
    CHECK(r.stats.hits + r.stats.misses == r.stats.uses);
  }
  SUBCASE("lookahead: prefetch hits are hits, wasted ones were read") {
    const std::string cfg = write_config("stats", "cache: { policy: lru, budget: " + std::to_string(12 * slot) +
                                                      " }\nprefetch: { lookahead: 1 }\n");
    const Run r = run("st-a-q8_0", cfg, toks, true);
    CHECK(r.stats.prefetches > 0);
    CHECK(r.stats.prefetch_hits <= r.stats.hits);
    CHECK(r.stats.prefetch_hits + r.stats.prefetch_wasted <= r.stats.prefetches);
    CHECK(r.stats.hits + r.stats.misses == r.stats.uses);
    CHECK(r.stats.bytes_read == (r.stats.misses + r.stats.prefetches) * (r.stats.bytes_read / (r.stats.misses + r.stats.prefetches)));
  }
}

TEST_CASE("a prefetch never evicts an expert predicted for this step; the prediction expires with it") {
  // Four slots, plain LRU. In decode's cyclic layer order the least recently used entries are
  // those of the next layers, so without the protection the prefetch below would evict (0, 0).
  auto session = [](uint64_t budget) {
    SessionOptions o;
    o.model_path = kFix + "/models/st-a-q8_0.gguf";
    o.config_path = write_config("expected", "cache: { policy: lru, budget: " + std::to_string(budget) + " }\n");
    o.load_tokenizer = false;
    return std::make_unique<Session>(o);
  };
  const uint64_t slot = session(64 << 20)->expert_cache()->slot_bytes();
  auto s = session(4 * slot);
  ExpertCache& c = *s->expert_cache();
  REQUIRE(c.capacity() == 4);
  auto use = [&](uint32_t layer, uint32_t expert) {
    const std::optional<ExpertLease> lease = c.acquire(layer, expert);
    REQUIRE(lease);
    c.wait_any(std::span(&*lease, 1));
    c.release(*lease);
  };
  for (uint32_t e = 0; e < 4; ++e) use(0, e);  // full; LRU order (0,0) (0,1) (0,2) (0,3)
  auto misses = [&] { return c.total_stats().misses; };

  c.prefetch(0, 0, 1);  // resident: now expected in this step
  use(1, 5);            // evicts (0,1), the oldest entry not expected
  const uint64_t before = misses();
  use(0, 0);
  CHECK(misses() == before);  // (0,0) survived
  use(0, 1);
  CHECK(misses() == before + 1);  // (0,1) was the victim

  // now (0,3) (1,5) (0,0) (0,1), oldest first
  c.prefetch(0, 0, 1);  // expected again, and not used in this step
  c.next_tick();        // the prediction is stale now: (0,0) is an ordinary entry again
  use(1, 5);
  use(0, 3);  // hits: (0,0) (0,1) (1,5) (0,3)
  use(2, 7);  // evicts (0,0)
  const uint64_t after = misses();
  use(0, 0);
  CHECK(misses() == after + 1);
}

TEST_CASE("downloaded file types stream bit for bit: K-quant mixes under a small budget, both storage plugins") {
  // llama-quantize's Q4_K_M (q4_K, q5_K, q6_K and q8_0 tensors, down in two types across layers)
  // and Q2_K (q2_K, q3_K, ...): expert slices of every type read on their own into cache slots
  const std::vector<int32_t> toks = tokens_of("st-k.random", kFix + "/quant/logits");
  const std::vector<std::string> storages = available_storages();
  for (const char* name : {"st-k-q4_k_m", "st-k-q2_k"}) {
    const std::string model = kFix + "/quant/models/" + name + ".gguf";
    const Run ref_batch = run(model, "", toks, false), ref_seq = run(model, "", toks, true);
    const uint64_t slot = expert_slot_bytes(model);
    for (const auto& storage : storages)
      for (const char* direct : {"false", "true"}) {
        const std::string cfg = write_config("kquant", "storage: { plugin: " + storage + ", direct_io: " + direct + " }\n" +
                                                           "cache: { policy: lru, budget: " + std::to_string(3 * slot) + " }\n" +
                                                           "prefetch: { lookahead: 2 }\n");
        INFO(name << " " << storage << " direct_io=" << std::string(direct));
        const Run b = run(model, cfg, toks, false), q = run(model, cfg, toks, true);
        CHECK(same_bits(b.logits, ref_batch.logits));
        CHECK(same_bits(q.logits, ref_seq.logits));
        CHECK(b.stats.misses > 0);  // really streamed
      }
  }
}

TEST_CASE("a budget below one layer's top-k is an error that states the minimum") {
  const std::string cfg = write_config("small", "cache: { policy: lru, budget: 16KiB }\n");
  SessionOptions o;
  o.model_path = kFix + "/models/st-a-q8_0.gguf";
  o.config_path = cfg;
  o.load_tokenizer = false;
  CHECK_THROWS_WITH_AS(Session{o}, doctest::Contains("is too small: one layer's top-2 experts need 2 slots"), Error);
  CHECK_THROWS_WITH_AS(Session{o}, doctest::Contains("so the minimum is"), Error);
}

TEST_CASE("storage faults: retried where right, else a clear error; never a wrong token or a hang") {
  const auto toks = tokens_of("st-a.pattern");
  const Run ref = run("st-a-q4_0", "", toks, false);
  const uint64_t slot = expert_slot_bytes("st-a-q4_0");
  const std::string budget = "cache: { policy: lru, budget: " + std::to_string(3 * slot) + " }\n";
  auto fault_cfg = [&](const std::string& opts, const std::string& extra = "") {
    return write_config("fault", "storage: { plugin: fault-storage, " + opts + " }\n" + budget + extra);
  };
  SUBCASE("an EIO that goes away is retried: identical output") {
    const Run r = run("st-a-q4_0", fault_cfg("fault: eio_once, fail_every: 3"), toks, false);
    CHECK(same_bits(r.logits, ref.logits));
  }
  SUBCASE("a persistent EIO names file, offset and expert") {
    CHECK_THROWS_WITH_AS(run("st-a-q4_0", fault_cfg("fault: eio, fail_every: 5"), toks, false),
                         doctest::Contains("st-a-q4_0.gguf' (offset"), Error);
    CHECK_THROWS_WITH_AS(run("st-a-q4_0", fault_cfg("fault: eio, fail_every: 5"), toks, false),
                         doctest::Contains("io (Input/output error)"), Error);
  }
  SUBCASE("a short read reported as success is caught, retried, then reported") {
    CHECK_THROWS_WITH_AS(run("st-a-q4_0", fault_cfg("fault: short, fail_every: 1"), toks, false),
                         doctest::Contains("(short read)"), Error);
  }
  SUBCASE("a read slower than the timeout is an error, not a hang") {
    CHECK_THROWS_WITH_AS(
        run("st-a-q4_0", fault_cfg("fault: slow, fail_every: 4, delay_ms: 1500", "prefetch: { read_timeout_ms: 300 }\n"), toks, false),
        doctest::Contains("did not complete within 300 ms"), Error);
  }
  SUBCASE("after a timeout the session goes on: the entry is read again, not left loading") {
    SessionOptions o;
    o.model_path = kFix + "/models/st-a-q4_0.gguf";
    // One token: layer 0 reads its top-2 experts as reads 1-6 (3 matrices each). Read 5, of the
    // second expert, is slow and times out; its re-read (reads 7-9) is not slow.
    const std::vector<int32_t> one(toks.begin(), toks.begin() + 1);
    o.config_path = fault_cfg("fault: slow, fail_every: 5, delay_ms: 600", "prefetch: { read_timeout_ms: 200 }\n");
    o.load_tokenizer = false;
    o.engine.n_ctx = uint32_t(toks.size());
    o.engine.ubatch = 8;
    Session s(o);
    std::vector<float> logits;
    CHECK_THROWS_WITH_AS(s.engine().eval(one, true, logits), doctest::Contains("did not complete within 200 ms"), Error);
    std::this_thread::sleep_for(std::chrono::milliseconds(800));  // the late read lands
    // The timed-out expert is read again; every attempt completes or times out again, so this
    // ends. A hang (an entry left loading) is caught by the 60 s limit.
    auto again = std::async(std::launch::async, [&] {
      s.engine().reset();
      logits.clear();
      try {
        s.engine().eval(one, true, logits);
      } catch (const Error&) {
      }
    });
    const bool ended = again.wait_for(std::chrono::seconds(60)) == std::future_status::ready;
    CHECK(ended);
    if (!ended) {  // a hung engine thread cannot be joined
      std::fputs("FAIL: eval after a read timeout hung for 60 s\n", stderr);
      std::_Exit(1);
    }
  }
  SUBCASE("slow reads within the timeout only cost time") {
    const Run r = run("st-a-q4_0", fault_cfg("fault: slow, fail_every: 40, delay_ms: 50"), toks, false);
    CHECK(same_bits(r.logits, ref.logits));
    CHECK(r.stats.stall_seconds > 0.04);
  }
}
