// Expert-cache replacement policies: the built-in lru and the cache-policies plugin (lfu, s3fifo,
// arc, router). Every policy is chosen by config text and loaded through PluginRegistry +
// CachePolicyInstance, exactly as the engine loads it. The contract of cache_policy.h
// (tests/conformance/cache_policy_conformance.hpp, also the standalone suite's) is checked for every
// policy and option variant; then each policy's own behaviour; then hit rates on a skewed
// synthetic routing trace against random eviction.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <map>
#include <numeric>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "../conformance/cache_policy_conformance.hpp"
#include "common/error.hpp"
#include "config/config.hpp"
#include "experts/lru_policy.hpp"
#include "plugin/instances.hpp"
#include "plugin/registry.hpp"

using pmoe::CachePolicyInstance;
using namespace pmoe::conformance;

namespace {

// Built-ins join every registry these tests build, as they do the Session's.
[[maybe_unused]] const bool builtins_registered = (pmoe::register_lru_policy(), true);

pmoe::PluginRegistry& registry() {
  static pmoe::PluginRegistry reg({PMOE_BUILD_DIR "/lib/pocketmoe"}, false);
  return reg;
}

/// The policy a config file `cache: {policy: NAME, OPTIONS}` selects, created like the engine does.
CachePolicyInstance make(const std::string& name, const pmoe_cache_shape& s,
                         const std::string& options = "") {
  std::string text = "cache: {policy: " + name + (options.empty() ? "" : ", " + options) + "}\n";
  pmoe::Config cfg = pmoe::parse_config(text, "test.yaml");
  return CachePolicyInstance::create(registry(), cfg.cache_policy, s);
}

/// Every policy with its default options, and a few option settings that change its mechanics.
struct Variant {
  std::string name, options;
};
const std::vector<Variant> kVariants{
    {"lru", ""},
    {"lfu", ""},
    {"lfu", "aging_period: 5"},
    {"s3fifo", ""},
    {"s3fifo", "small_fraction: 0.5"},
    {"s3fifo", "small_fraction: 0.01"},
    {"arc", ""},
    {"router", ""},
    {"router", "decay: 0, weight: 1, recency: 0"},
    {"router", "decay: 0.5, weight: 0, recency: 3"},
};
std::string label(const Variant& v) {
  return v.options.empty() ? v.name : v.name + " {" + v.options + "}";
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Discovery and options

TEST_CASE("cache policies: the plugin's manifest lists every policy with its options") {
  auto& reg = registry();
  std::map<std::string, std::vector<std::string>> expect{
      {"lru", {}},
      {"lfu", {"aging_period"}},
      {"s3fifo", {"small_fraction"}},
      {"arc", {}},
      {"router", {"decay", "weight", "recency"}}};
  for (const auto& entry : expect) {
    const std::string& name = entry.first;  // (a structured binding cannot be CAPTUREd on clang 14)
    const std::vector<std::string>& opts = entry.second;
    CAPTURE(name);
    const pmoe::ImplManifest* spec = reg.find(name, PMOE_KIND_CACHE_POLICY);
    REQUIRE(spec != nullptr);
    std::vector<std::string> got;
    for (const auto& o : spec->options) {
      got.push_back(o.name);
      CHECK_FALSE(o.doc.empty());
      CHECK_FALSE(o.default_value.empty());
    }
    CHECK(got == opts);
    auto p = make(name, shape(8));
    CHECK(p.name() == name);
    CHECK(p.wants_routing());
  }
}

TEST_CASE("cache policies: bad options fail with a message naming the option") {
  auto fails = [](const std::string& name, const std::string& opts) {
    try {
      make(name, shape(8), opts);
    } catch (const pmoe::Error& e) {
      return std::string(e.what());
    }
    return std::string("(no error)");
  };
  auto has = [](const std::string& hay, const std::string& needle) {
    return hay.find(needle) != std::string::npos;
  };
  std::string m = fails("s3fifo", "small_fraction: 0.95");
  CHECK_MESSAGE(has(m, "'small_fraction' must be a decimal in 0.01..0.9, got '0.95'"), m);
  m = fails("s3fifo", "small_fraction: tenth");
  CHECK_MESSAGE(has(m, "'small_fraction' must be a decimal"), m);
  m = fails("router", "decay: 1");
  CHECK_MESSAGE(has(m, "'decay' must be a decimal in 0..0.999, got '1'"), m);
  m = fails("router", "weight: -0.5");
  CHECK_MESSAGE(has(m, "'weight' must be a decimal in 0..1"), m);
  m = fails("lfu", "aging_period: -1");  // the manifest's min, checked before the library loads
  CHECK_MESSAGE(has(m, "below the minimum 0"), m);
  m = fails("arc", "p: 3");
  CHECK_MESSAGE(has(m, "test.yaml:1:"), m);
  // Valid edges are accepted.
  CHECK_NOTHROW(make("s3fifo", shape(8), "small_fraction: 0.9"));
  CHECK_NOTHROW(make("router", shape(8), "decay: 0.999, weight: 0"));
  CHECK_NOTHROW(make("lfu", shape(8), "aging_period: 1"));
}

// ---------------------------------------------------------------------------------------------
// Conformance: the same contract for every policy

TEST_CASE("cache policies: conformance of every policy") {
  for (const auto& var : kVariants) {
    for (uint64_t capacity : {1, 3, 12}) {
      CAPTURE(label(var));
      CAPTURE(capacity);
      contract_run([&](const pmoe_cache_shape& s) { return make(var.name, s, var.options); }, capacity,
                   1000 * capacity + var.options.size());
    }
  }
}

TEST_CASE("cache policies: edge cases of the contract for every policy") {
  for (const auto& var : kVariants) {
    CAPTURE(label(var));
    contract_edges([&](const pmoe_cache_shape& s) { return make(var.name, s, var.options); });
  }
}

// ---------------------------------------------------------------------------------------------
// What each policy is for

TEST_CASE("lfu: a frequently used expert outlives a recently used one") {
  for (const char* name : {"lfu", "lru"}) {
    auto p = make(name, shape(4));
    insert(p, {K(0, 0), K(0, 1)});
    for (uint64_t t = 1; t <= 10; ++t) access(p, {K(0, 0)}, t);  // hot, but long ago
    access(p, {K(0, 1)}, 11);                                    // used once, just now
    uint64_t first = victims(p)[0];
    if (std::string(name) == "lfu")
      CHECK(first == K(0, 1));
    else
      CHECK(first == K(0, 0));  // the contrast: LRU drops the hot one
  }
  // Equal counts: the older use goes first.
  auto p = make("lfu", shape(4));
  insert(p, {K(0, 0), K(0, 1), K(0, 2)});
  access(p, {K(0, 2), K(0, 0), K(0, 1)}, 1);
  access(p, {K(0, 2)}, 2);
  CHECK(victims(p) == std::vector<uint64_t>{K(0, 0), K(0, 1), K(0, 2)});
  // Counts survive an eviction: a hot expert that comes back keeps its rank.
  evict(p, {K(0, 2)});
  insert(p, {K(0, 3), K(0, 2)});
  CHECK(victims(p)[0] == K(0, 3));
}

TEST_CASE("lfu: aging lets a formerly hot expert go") {
  auto run = [](const std::string& opts) {
    auto p = make("lfu", shape(3), opts);
    insert(p, {K(0, 0), K(0, 1), K(0, 2)});
    for (uint64_t t = 0; t < 40; ++t) access(p, {K(0, 0)}, t);            // hot in an old topic
    for (uint64_t t = 40; t < 70; ++t) access(p, {K(0, 1), K(0, 2)}, t);  // the new topic
    return victims(p)[0];
  };
  CHECK(run("aging_period: 16") == K(0, 0));          // halvings wore the old lead (40 vs 30) down
  CHECK(run("aging_period: 1000000000") == K(0, 1));  // without aging the old lead stays
}

TEST_CASE("s3fifo: one-hit wonders are evicted from the small queue first") {
  // 7 hot experts used every token plus 4 experts used once and never again: 11 distinct uses per
  // token in 10 slots. LRU thrashes on the cycle; S3-FIFO keeps the hot ones in M and lets the
  // one-time experts pass through S.
  auto run = [](const std::string& name, const std::string& opts, bool check_victims_are_wonders) {
    auto p = make(name, shape(10, 1, 1000, 1), opts);
    std::set<uint64_t> resident;
    size_t hot_hits = 0, hot_uses = 0;
    uint32_t next_wonder = 100;
    for (uint64_t t = 0; t < 200; ++t) {
      std::vector<uint64_t> seq;
      for (uint32_t h = 0; h < 7; ++h) seq.push_back(K(0, h));
      for (int w = 0; w < 4; ++w) seq.push_back(K(0, next_wonder++));
      for (uint64_t k : seq) {
        bool hot = PMOE_KEY_EXPERT(k) < 7;
        if (resident.count(k)) {
          if (t >= 20 && hot) ++hot_hits;
        } else {
          if (resident.size() == 10) {
            uint64_t v = victims(p, 1).at(0);
            if (check_victims_are_wonders && t >= 20) REQUIRE(PMOE_KEY_EXPERT(v) >= 7);
            evict(p, {v});
            resident.erase(v);
          }
          insert(p, {k});
          resident.insert(k);
        }
        if (t >= 20 && hot) ++hot_uses;
        access(p, {k}, t);
      }
    }
    return static_cast<double>(hot_hits) / static_cast<double>(hot_uses);
  };
  CHECK(run("s3fifo", "small_fraction: 0.3", true) == 1.0);
  CHECK(run("s3fifo", "", true) == 1.0);
  CHECK(run("lru", "", false) < 0.5);
}

TEST_CASE("s3fifo: a key that comes back from the ghost queue goes to the main queue") {
  auto p = make("s3fifo", shape(4), "small_fraction: 0.25");  // S: 1 slot, M: 3
  insert(p, {K(0, 0), K(0, 1), K(0, 2), K(0, 3)});            // warm-up: S full -> the rest into M
  access(p, {K(0, 0), K(0, 1), K(0, 2), K(0, 3)}, 1);
  CHECK(victims(p)[0] == K(0, 0));  // S's tail, never reused
  evict(p, {K(0, 0)});              // -> ghost
  insert(p, {K(0, 4)});             // new: into S
  access(p, {K(0, 4)}, 2);
  CHECK(victims(p)[0] == K(0, 4));
  evict(p, {K(0, 4)});
  insert(p, {K(0, 0)});  // remembered by the ghost: straight into M, behind the others
  access(p, {K(0, 0)}, 3);
  std::vector<uint64_t> v = victims(p);
  CHECK(v.back() == K(0, 0));
}

TEST_CASE("arc: a scan of one-time experts does not flush the reused ones") {
  auto p = make("arc", shape(4));
  std::set<uint64_t> resident{K(0, 0), K(0, 1)};
  insert(p, {K(0, 0), K(0, 1)});
  access(p, {K(0, 0), K(0, 1)}, 0);
  access(p, {K(0, 0), K(0, 1)}, 1);  // reused: T2
  for (uint32_t e = 10; e < 30; ++e) {
    if (resident.size() == 4) {
      uint64_t v = victims(p, 1).at(0);
      CHECK(PMOE_KEY_EXPERT(v) >= 10);
      evict(p, {v});
      resident.erase(v);
    }
    insert(p, {K(0, e)});
    access(p, {K(0, e)}, e);
    resident.insert(K(0, e));
  }
  CHECK(resident.count(K(0, 0)));
  CHECK(resident.count(K(0, 1)));
}

TEST_CASE("router: experts with high gating probability are kept") {
  auto p = make("router", shape(4, 1, 8, 2));
  insert(p, {K(0, 0), K(0, 1), K(0, 2), K(0, 3)});
  std::vector<float> probs{0.5f, 0.3f, 0.05f, 0.01f, 0.04f, 0.04f, 0.03f, 0.03f};
  for (uint64_t t = 0; t < 30; ++t) {
    p.on_routing(0, probs.data(), 1, 8);
    // Equal use; expert 0 has the oldest use.
    access(p, {K(0, 3), K(0, 2), K(0, 1), K(0, 0)}, t);
  }
  CHECK(victims(p) == std::vector<uint64_t>{K(0, 3), K(0, 2), K(0, 1), K(0, 0)});
  // Prefill: several tokens in one call are averaged.
  std::vector<float> two{0.1f, 0.1f, 0.1f, 0.7f, 0, 0, 0, 0, 0.1f, 0.1f, 0.1f, 0.7f, 0, 0, 0, 0};
  for (uint64_t t = 30; t < 130; ++t) {
    p.on_routing(0, two.data(), 2, 8);
    access(p, {K(0, 3), K(0, 2), K(0, 1), K(0, 0)}, t);
  }
  CHECK(victims(p).back() == K(0, 3));  // the decay let the ranking follow the shift
}

TEST_CASE("router: without routing it ranks by the moving average of use") {
  auto p = make("router", shape(3, 1, 8, 1), "decay: 0.9");
  insert(p, {K(0, 0), K(0, 1), K(0, 2)});
  for (uint64_t t = 1; t <= 20; ++t) access(p, {K(0, 0)}, t);
  access(p, {K(0, 1)}, 21);
  access(p, {K(0, 2)}, 22);
  std::vector<uint64_t> v = victims(p);
  CHECK(v.back() == K(0, 0));   // used every tick beats used once, even most recently
  CHECK(v.front() == K(0, 1));  // equal-ish single uses: the decayed, older one first
}

// ---------------------------------------------------------------------------------------------
// Hit rates on a synthetic skewed trace

namespace {

/// One routing decision per (token, layer): gating probabilities and the top-k chosen.
struct Trace {
  uint32_t layers, experts, top_k;
  std::vector<std::vector<float>> probs;      // [step][expert], step = token * layers + layer
  std::vector<std::vector<uint32_t>> chosen;  // [step][top_k]
};

/// Zipf(s) popularity over each layer's experts (a random permutation per layer, re-drawn at
/// `shift_at`); a token's router logits are log(popularity) + Gumbel noise, so its top-k is a
/// popularity-weighted draw without replacement and its softmax is what the router would report.
Trace make_trace(uint32_t tokens, double s, uint32_t shift_every, uint64_t seed,
                 double repeat = 0) {
  Trace tr{8, 32, 4, {}, {}};
  std::mt19937_64 rng(seed);
  std::vector<std::vector<double>> logw(tr.layers, std::vector<double>(tr.experts));
  auto draw_popularity = [&] {
    for (auto& lw : logw) {
      std::vector<uint32_t> perm(tr.experts);
      std::iota(perm.begin(), perm.end(), 0u);
      std::shuffle(perm.begin(), perm.end(), rng);
      for (uint32_t r = 0; r < tr.experts; ++r) lw[perm[r]] = -s * std::log(r + 1.0);
    }
  };
  draw_popularity();
  std::uniform_real_distribution<double> u(1e-12, 1.0);
  for (uint32_t t = 0; t < tokens; ++t) {
    if (t > 0 && t % shift_every == 0) draw_popularity();
    for (uint32_t l = 0; l < tr.layers; ++l) {
      if (t > 0 && u(rng) < repeat) {  // the token routes like the previous one
        tr.probs.push_back(tr.probs[tr.probs.size() - tr.layers]);
        tr.chosen.push_back(tr.chosen[tr.chosen.size() - tr.layers]);
        continue;
      }
      std::vector<double> logit(tr.experts);
      for (uint32_t e = 0; e < tr.experts; ++e) logit[e] = logw[l][e] - std::log(-std::log(u(rng)));
      std::vector<uint32_t> idx(tr.experts);
      std::iota(idx.begin(), idx.end(), 0u);
      std::partial_sort(idx.begin(), idx.begin() + tr.top_k, idx.end(),
                        [&](uint32_t a, uint32_t b) { return logit[a] > logit[b]; });
      idx.resize(tr.top_k);
      double mx = *std::max_element(logit.begin(), logit.end()), sum = 0;
      std::vector<float> p(tr.experts);
      for (uint32_t e = 0; e < tr.experts; ++e) sum += std::exp(logit[e] - mx);
      for (uint32_t e = 0; e < tr.experts; ++e)
        p[e] = static_cast<float>(std::exp(logit[e] - mx) / sum);
      tr.probs.push_back(std::move(p));
      tr.chosen.push_back(std::move(idx));
    }
  }
  return tr;
}

/// What picks victims in the replay: a policy instance, random choice, or Belady's optimum.
struct Evictor {
  virtual ~Evictor() = default;
  virtual void routing(uint32_t, const std::vector<float>&) {}
  virtual void inserted(const std::vector<uint64_t>&) {}
  virtual void accessed(const std::vector<uint64_t>&, uint64_t) {}
  virtual void evicted(const std::vector<uint64_t>&) {}
  /// Candidates best first; `resident` is the cache's content, `step` the current trace step.
  virtual std::vector<uint64_t> candidates(const std::set<uint64_t>& resident, size_t step) = 0;
};

struct PolicyEvictor : Evictor {
  CachePolicyInstance p;
  explicit PolicyEvictor(CachePolicyInstance&& inst) : p(std::move(inst)) {}
  void routing(uint32_t l, const std::vector<float>& pr) override {
    p.on_routing(l, pr.data(), 1, static_cast<uint32_t>(pr.size()));
  }
  void inserted(const std::vector<uint64_t>& k) override { p.on_insert(k); }
  void accessed(const std::vector<uint64_t>& k, uint64_t t) override { p.on_access(k, t); }
  void evicted(const std::vector<uint64_t>& k) override { p.on_evict(k); }
  std::vector<uint64_t> candidates(const std::set<uint64_t>& r, size_t) override {
    return victims(p, r.size());
  }
};

struct RandomEvictor : Evictor {
  std::mt19937_64 rng{99};
  std::vector<uint64_t> candidates(const std::set<uint64_t>& r, size_t) override {
    std::vector<uint64_t> v(r.begin(), r.end());
    std::shuffle(v.begin(), v.end(), rng);
    return v;
  }
};

struct OptEvictor : Evictor {
  std::map<uint64_t, std::vector<size_t>> uses;  // key -> steps that use it
  explicit OptEvictor(const Trace& tr) {
    for (size_t i = 0; i < tr.chosen.size(); ++i)
      for (uint32_t e : tr.chosen[i]) uses[K(static_cast<uint32_t>(i % tr.layers), e)].push_back(i);
  }
  std::vector<uint64_t> candidates(const std::set<uint64_t>& r, size_t step) override {
    auto next = [&](uint64_t k) {
      const auto& u = uses[k];
      auto it = std::upper_bound(u.begin(), u.end(), step);
      return it == u.end() ? SIZE_MAX : *it;
    };
    std::vector<uint64_t> v(r.begin(), r.end());
    std::stable_sort(v.begin(), v.end(), [&](uint64_t a, uint64_t b) { return next(a) > next(b); });
    return v;
  }
};

/// Replays the trace like the engine: route, pin the hits, evict the best unpinned candidates, load
/// the misses, use all. Returns the hit rate after the first `warmup` tokens.
double replay(const Trace& tr, uint64_t capacity, Evictor& ev, uint32_t warmup) {
  std::set<uint64_t> resident;
  size_t hits = 0, uses = 0;
  for (size_t i = 0; i < tr.chosen.size(); ++i) {
    const uint32_t layer = static_cast<uint32_t>(i % tr.layers);
    const uint64_t tick = i / tr.layers;
    ev.routing(layer, tr.probs[i]);
    std::vector<uint64_t> use, pinned, miss;
    for (uint32_t e : tr.chosen[i]) {
      use.push_back(K(layer, e));
      (resident.count(use.back()) ? pinned : miss).push_back(use.back());
    }
    if (tick >= warmup) hits += pinned.size(), uses += use.size();
    if (resident.size() + miss.size() > capacity) {
      size_t need = resident.size() + miss.size() - capacity;
      std::vector<uint64_t> out;
      for (uint64_t k : ev.candidates(resident, i))
        if (out.size() < need && !std::count(pinned.begin(), pinned.end(), k)) out.push_back(k);
      REQUIRE(out.size() == need);
      ev.evicted(out);
      for (uint64_t k : out) resident.erase(k);
    }
    ev.inserted(miss);
    resident.insert(miss.begin(), miss.end());
    ev.accessed(use, tick);
  }
  return static_cast<double>(hits) / static_cast<double>(uses);
}

/// The traces of the comparison: 8 layers x 32 experts, top-4, Zipf popularity.
std::vector<std::pair<std::string, Trace>> scenarios(bool more) {
  const uint32_t tokens = 3000;
  std::vector<std::pair<std::string, Trace>> sc;
  sc.emplace_back("stationary", make_trace(tokens, 1.0, UINT32_MAX, 7));
  sc.emplace_back("shifts", make_trace(tokens, 1.0, 500, 7));  // popularity re-drawn / 500 tokens
  sc.emplace_back("repeats", make_trace(tokens, 1.0, UINT32_MAX, 7, 0.5));  // 50%: as last token
  if (more) {
    sc.emplace_back("zipf 0.7", make_trace(tokens, 0.7, UINT32_MAX, 7));
    sc.emplace_back("zipf 1.3", make_trace(tokens, 1.3, UINT32_MAX, 7));
  }
  return sc;
}

std::string cell(double rate) {
  char b[32];
  std::snprintf(b, sizeof b, " %9.1f%%", 100 * rate);
  return b;
}

std::string padded(std::string s, size_t n) {
  s.resize(std::max(n, s.size()), ' ');
  return s;
}

constexpr uint64_t kCapacity = 8 * 32 / 4;  // 25% of the experts
constexpr uint32_t kWarmup = 200;           // tokens not counted

}  // namespace

TEST_CASE("cache policies: hit rates on a skewed routing trace beat random eviction") {
  auto sc = scenarios(false);
  std::string table = "hit rate, 8 layers x 32 experts, top-4, Zipf 1.0, capacity 64 (25%), " +
                      std::to_string(3000 - kWarmup) + " tokens after warm-up\n" +
                      padded("  policy", 12);
  for (const auto& [name, tr] : sc) table += padded("", 11 - name.size()) + name;
  table += "\n";
  std::vector<double> random_rate;
  std::string random_row = padded("  random", 12), opt_row = padded("  opt", 12);
  for (const auto& [name, tr] : sc) {
    RandomEvictor r;
    random_rate.push_back(replay(tr, kCapacity, r, kWarmup));
    random_row += cell(random_rate.back());
    OptEvictor o(tr);
    opt_row += cell(replay(tr, kCapacity, o, kWarmup));
  }
  table += random_row + "\n";
  for (const char* policy : {"lru", "lfu", "s3fifo", "arc", "router"}) {
    table += padded(std::string("  ") + policy, 12);
    for (size_t i = 0; i < sc.size(); ++i) {
      PolicyEvictor ev(make(policy, shape(kCapacity, 8, 32, 4)));
      double rate = replay(sc[i].second, kCapacity, ev, kWarmup);
      table += cell(rate);
      CAPTURE(policy);
      CAPTURE(sc[i].first);
      // "repeats" is for information: under strong token-to-token locality pure frequency (lfu) is
      // no better than random, which the docs report rather than hide.
      if (sc[i].first != "repeats") CHECK(rate > random_rate[i] + 0.03);
    }
    table += "\n";
  }
  table += opt_row + "  (Belady, knows the future)\n";
  MESSAGE(table);
}

// Tuning aid, not a test: `test_cache_policies -tc='*sweep*' --no-skip` prints hit rates of option
// settings on more traces (how the defaults in cache-policies.yaml were chosen).
TEST_CASE("cache policies: option sweep" * doctest::skip()) {
  auto sc = scenarios(true);
  std::string head = padded("", 38);
  for (const auto& [name, tr] : sc) head += padded("", 11 - name.size()) + name;
  std::printf("%s\n", head.c_str());
  std::vector<Variant> vs;
  for (const char* d : {"0.9", "0.95", "0.98", "0.99"})
    for (const char* r : {"0", "0.15", "0.3"})
      vs.push_back({"router", std::string("decay: ") + d + ", recency: " + r});
  for (const char* w : {"0", "1"}) vs.push_back({"router", std::string("weight: ") + w});
  for (const char* a : {"256", "1024", "4096", "1000000000"})
    vs.push_back({"lfu", std::string("aging_period: ") + a});
  for (const char* f : {"0.05", "0.1", "0.2", "0.3"})
    vs.push_back({"s3fifo", std::string("small_fraction: ") + f});
  vs.push_back({"arc", ""});
  vs.push_back({"lru", ""});
  for (const auto& v : vs) {
    std::string line = padded(label(v), 38);
    for (const auto& [name, tr] : sc) {
      PolicyEvictor ev(make(v.name, shape(kCapacity, 8, 32, 4), v.options));
      line += cell(replay(tr, kCapacity, ev, kWarmup));
    }
    std::printf("%s\n", line.c_str());
  }
}
