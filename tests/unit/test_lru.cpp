#include <doctest/doctest.h>

#include <algorithm>
#include <vector>

#include "experts/lru_policy.hpp"
#include "plugin/instances.hpp"
#include "plugin/registry.hpp"

using pmoe::LruPolicy;

namespace {

// Built-ins join every registry these tests build, as they do the Session's.
[[maybe_unused]] const bool builtins_registered = (pmoe::register_lru_policy(), true);

pmoe_cache_shape shape(uint64_t capacity = 8) {
  return {sizeof(pmoe_cache_shape), 4, 16, 2, capacity};
}

std::vector<uint64_t> victims(pmoe::sdk::CachePolicy& p, size_t max = 100) {
  std::vector<uint64_t> out(max);
  out.resize(p.victims(out.data(), max));
  return out;
}

uint64_t K(uint32_t layer, uint32_t expert) { return PMOE_EXPERT_KEY(layer, expert); }

}  // namespace

TEST_CASE("lru: victims are least recently used first") {
  pmoe::sdk::Options none(nullptr);
  LruPolicy lru(nullptr, none, shape());
  CHECK(victims(lru).empty());

  std::vector<uint64_t> ins{K(0, 1), K(0, 2), K(1, 3)};
  lru.on_insert(ins);
  CHECK(lru.size() == 3);
  CHECK(victims(lru) == std::vector<uint64_t>{K(0, 1), K(0, 2), K(1, 3)});

  std::vector<uint64_t> hit{K(0, 1)};
  lru.on_access(hit, 1);
  CHECK(victims(lru) == std::vector<uint64_t>{K(0, 2), K(1, 3), K(0, 1)});
  CHECK(victims(lru, 1) == std::vector<uint64_t>{K(0, 2)});  // max respected
  CHECK(victims(lru, 0).empty());

  // Accesses in one batch are ordered: the last one is the most recent.
  std::vector<uint64_t> batch{K(1, 3), K(0, 2)};
  lru.on_access(batch, 2);
  CHECK(victims(lru) == std::vector<uint64_t>{K(0, 1), K(1, 3), K(0, 2)});

  std::vector<uint64_t> ev{K(1, 3)};
  lru.on_evict(ev);
  CHECK(lru.size() == 2);
  CHECK(victims(lru) == std::vector<uint64_t>{K(0, 1), K(0, 2)});
}

TEST_CASE("lru: victims() does not change state; unknown keys are ignored") {
  pmoe::sdk::Options none(nullptr);
  LruPolicy lru(nullptr, none, shape());
  std::vector<uint64_t> ins{1, 2, 3};
  lru.on_insert(ins);
  auto v1 = victims(lru);
  CHECK(victims(lru) == v1);
  std::vector<uint64_t> unknown{99};
  lru.on_access(unknown, 1);
  lru.on_evict(unknown);
  CHECK(lru.size() == 3);
  CHECK(victims(lru) == v1);
  // Re-inserting a resident key refreshes it instead of duplicating it.
  std::vector<uint64_t> again{1};
  lru.on_insert(again);
  CHECK(victims(lru) == std::vector<uint64_t>{2, 3, 1});
}

TEST_CASE("lru: a long run keeps the exact LRU order") {
  pmoe::sdk::Options none(nullptr);
  LruPolicy lru(nullptr, none, shape(64));
  std::vector<uint64_t> reference;  // front = LRU, naive model
  uint64_t seed = 7;
  for (int step = 0; step < 5000; ++step) {
    seed = seed * 6364136223846793005ull + 1442695040888963407ull;
    uint64_t key = (seed >> 33) % 48;
    bool resident = std::find(reference.begin(), reference.end(), key) != reference.end();
    std::vector<uint64_t> one{key};
    if (!resident) {
      if (reference.size() == 32) {
        std::vector<uint64_t> v(1);
        REQUIRE(lru.victims(v.data(), 1) == 1);
        REQUIRE(v[0] == reference.front());
        lru.on_evict(v);
        reference.erase(reference.begin());
      }
      lru.on_insert(one);
      reference.push_back(key);
    } else {
      lru.on_access(one, static_cast<uint64_t>(step));
      reference.erase(std::find(reference.begin(), reference.end(), key));
      reference.push_back(key);
    }
  }
  CHECK(victims(lru) == reference);
}

TEST_CASE("lru: the built-in goes through the same ABI table as a plugin policy") {
  pmoe::PluginRegistry reg({}, false);
  const pmoe::ImplManifest* spec = reg.find("lru", PMOE_KIND_CACHE_POLICY);
  REQUIRE(spec != nullptr);
  CHECK(spec->options.empty());
  pmoe::LoadedImpl li = reg.load("lru", PMOE_KIND_CACHE_POLICY);
  CHECK(li.manifest->builtin);
  CHECK(li.manifest->library_path == "(built-in)");
  auto* vt = static_cast<const pmoe_cache_policy_vtable*>(li.vtable);
  CHECK(vt->struct_size == sizeof(pmoe_cache_policy_vtable));

  pmoe::CachePolicyInstance p(li, {}, reg.host(), shape());
  CHECK(p.name() == "lru");
  CHECK(p.wants_routing());  // the C++ layer always fills on_routing (a no-op for LRU)
  std::vector<uint64_t> ins{K(2, 0), K(2, 1), K(2, 2)}, hit{K(2, 0)};
  p.on_insert(ins);
  p.on_access(hit, 1);
  std::vector<float> probs(16, 1.0f / 16);
  p.on_routing(2, probs.data(), 1, 16);
  std::vector<uint64_t> out(8);
  out.resize(p.victims(out));
  CHECK(out == std::vector<uint64_t>{K(2, 1), K(2, 2), K(2, 0)});
}
