#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "common/error.hpp"
#include "config/config.hpp"
#include "engine/session.hpp"

using pmoe::parse_config;
using pmoe::parse_size;

namespace {

// The message of the pmoe::Error that parsing `text` as "bad.yaml" throws ("" if none).
std::string error_of(const std::string& text) {
  try {
    parse_config(text, "bad.yaml");
  } catch (const pmoe::Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("config: a complete file") {
  auto cfg = parse_config(R"(# a typical laptop
model: models/smallthinker.gguf
compute:  { plugin: cpu-onednn, threads: 2 }
storage:
  plugin: storage-uring
  direct_io: true
  queue_depth: 64
cache:    { policy: lru, budget: 1GiB, decay: 0.5 }
prefetch: { lookahead: 1, prefill_chunk: 4 }
plugin_paths: [plugins, /opt/pocketmoe/plugins]
)",
                          "configs/laptop.yaml");
  CHECK(cfg.path == "configs/laptop.yaml");
  REQUIRE(cfg.model);
  CHECK(*cfg.model == "configs/models/smallthinker.gguf");  // relative to the config's dir
  CHECK(cfg.compute.name == "cpu-onednn");
  CHECK(cfg.compute.loc.str() == "configs/laptop.yaml:3:21");
  REQUIRE(cfg.compute.options.size() == 1);
  CHECK(cfg.compute.options[0] == std::pair<std::string, std::string>{"threads", "2"});
  CHECK(cfg.compute.option_locs[0].str() == "configs/laptop.yaml:3:33");
  CHECK(cfg.storage.name == "storage-uring");
  REQUIRE(cfg.storage.options.size() == 2);  // in file order, as written
  CHECK(cfg.storage.options[0] == std::pair<std::string, std::string>{"direct_io", "true"});
  CHECK(cfg.storage.options[1] == std::pair<std::string, std::string>{"queue_depth", "64"});
  CHECK(cfg.storage.option_locs[1].line == 7);
  CHECK(cfg.storage.option_locs[1].col == 3);
  CHECK(cfg.cache_policy.name == "lru");
  CHECK(cfg.cache_budget == (1ull << 30));
  REQUIRE(cfg.cache_policy.options.size() == 1);  // budget and policy are not options
  CHECK(cfg.cache_policy.options[0].first == "decay");
  CHECK(cfg.prefetch_lookahead == 1);
  CHECK(cfg.prefill_chunk == 4);
  CHECK(cfg.plugin_paths == std::vector<std::string>{"configs/plugins", "/opt/pocketmoe/plugins"});
}

TEST_CASE("config: defaults") {
  auto d = pmoe::default_config();
  CHECK(d.path.empty());
  CHECK(!d.model);
  CHECK(d.compute.name == "cpu-onednn");
  CHECK(d.storage.name == "storage-posix");
  CHECK(d.cache_policy.name == "lru");
  CHECK(d.cache_budget == 0);
  CHECK(d.prefetch_lookahead == 0);
  CHECK(d.prefill_chunk == 0);  // unset: --ubatch, else kDefaultPrefillChunk
  CHECK(d.compute.loc.str() == "<default config>");

  auto empty = parse_config("# nothing but a comment\n", "empty.yaml");
  CHECK(empty.compute.name == "cpu-onednn");
  CHECK(empty.path == "empty.yaml");
  // A section without its name key keeps the default implementation and takes options for it.
  auto opts = parse_config("compute: {threads: 3}\ncache:\n  budget: 512MiB\n", "x.yaml");
  CHECK(opts.compute.name == "cpu-onednn");
  CHECK(opts.compute.options.size() == 1);
  CHECK(opts.cache_budget == 512ull << 20);
  CHECK(parse_config("cache: {budget: 0}\n", "x.yaml").cache_budget == 0);
}

TEST_CASE("config: sizes") {
  CHECK(parse_size("1GiB") == 1073741824ull);
  CHECK(parse_size("512MiB") == 536870912ull);
  CHECK(parse_size("64KiB") == 65536ull);
  CHECK(parse_size("4096") == 4096ull);
  CHECK(parse_size("2GB") == 2000000000ull);
  CHECK(parse_size("1.5GiB") == 1610612736ull);
  CHECK(parse_size("0.5KB") == 500ull);
  CHECK(parse_size("1 GiB") == 1073741824ull);
  CHECK(parse_size("1gib") == 1073741824ull);
  CHECK(parse_size("3kB") == 3000ull);
  CHECK(parse_size("10B") == 10ull);
  CHECK(parse_size("2TiB") == 2ull << 40);
  CHECK(parse_size("0") == 0ull);
  CHECK(parse_size("18446744073709551615") == 18446744073709551615ull);
  for (const char* bad : {"", "GiB", "abc", "-1", "1XB", "1.5", "0.1KiB", "1.2.3", "1 G i B",
                          "18446744073709551616", "20000000TiB", "16777216TiB", ".", "1e9"}) {
    INFO(bad);
    CHECK_THROWS_AS(parse_size(bad), pmoe::Error);
  }
  CHECK_THROWS_WITH(parse_size("1XB"),
                    doctest::Contains("bad size '1XB': unknown unit 'xb'"));
  CHECK_THROWS_WITH(parse_size("0.1KiB"), doctest::Contains("not a whole number of bytes"));
  CHECK_THROWS_WITH(parse_size("20000000TiB"), doctest::Contains("too large"));
}

TEST_CASE("config: misspelled keys name file:line:col and suggest the right key") {
  CHECK(error_of("model: m.gguf\ncompute: {plugin: cpu-onednn}\nprefetch:\n  lookahed: 2\n") ==
        "bad.yaml:4:3: unknown key 'lookahed' in 'prefetch' (did you mean 'lookahead'?)");
  CHECK(error_of("model: m.gguf\n\ncahce:\n  policy: lru\n") ==
        "bad.yaml:3:1: unknown key 'cahce' at the top level (did you mean 'cache'?)");
  CHECK(error_of("prefetch: {lookahead: 1, prefil_chunk: 2}\n") ==
        "bad.yaml:1:26: unknown key 'prefil_chunk' in 'prefetch' (did you mean 'prefill_chunk'?)");
  // Nothing close: list what is allowed instead.
  CHECK(error_of("bananas: 3\n") ==
        "bad.yaml:1:1: unknown key 'bananas' at the top level; known keys: model compute storage "
        "cache prefetch plugin_paths weights");
  CHECK(error_of("cache: {policy: lru}\ncache: {policy: lru}\n") ==
        "bad.yaml:2:1: duplicate key 'cache' at the top level (first at bad.yaml:1:1)");
}

TEST_CASE("config: wrong types") {
  CHECK(error_of("compute: cpu-onednn\n") == "bad.yaml:1:10: 'compute' must be a map, got a scalar");
  CHECK(error_of("storage: [a, b]\n") == "bad.yaml:1:10: 'storage' must be a map, got a sequence");
  CHECK(error_of("cache:\n") == "bad.yaml:1:1: 'cache' must be a map, got empty");
  CHECK(error_of("model: {path: x}\n") == "bad.yaml:1:8: 'model' must be a scalar, got a map");
  CHECK(error_of("model:\n") == "bad.yaml:1:1: 'model' has no value");
  CHECK(error_of("compute: {plugin: [a]}\n") ==
        "bad.yaml:1:19: 'plugin' must be a scalar, got a sequence");
  CHECK(error_of("compute:\n  plugin: cpu-onednn\n  threads: [1, 2]\n") ==
        "bad.yaml:3:12: option 'threads' in 'compute' must be a scalar, got a sequence");
  CHECK(error_of("storage: {plugin: storage-posix, workers: }\n") ==
        "bad.yaml:1:34: option 'workers' in 'storage' has no value");
  CHECK(error_of("prefetch: {lookahead: two}\n") ==
        "bad.yaml:1:23: 'lookahead' must be a non-negative integer, got 'two'");
  CHECK(error_of("prefetch: {lookahead: 1.5}\n") ==
        "bad.yaml:1:23: 'lookahead' must be a non-negative integer, got '1.5'");
  CHECK(error_of("prefetch: {lookahead: -1}\n") ==
        "bad.yaml:1:23: 'lookahead' must be a non-negative integer, got '-1'");
  CHECK(error_of("prefetch: {lookahead: 99999999999}\n") ==
        "bad.yaml:1:23: 'lookahead' is too large: 99999999999 (maximum 1048576)");
  CHECK(error_of("prefetch: {prefill_chunk: 0}\n") == "bad.yaml:1:27: 'prefill_chunk' must be >= 1");
  CHECK(error_of("prefetch: 3\n") == "bad.yaml:1:11: 'prefetch' must be a map, got a scalar");
  CHECK(error_of("plugin_paths: /opt/x\n") ==
        "bad.yaml:1:15: 'plugin_paths' must be a sequence of directories, got a scalar");
  CHECK(error_of("plugin_paths: [ok, {a: 1}]\n") ==
        "bad.yaml:1:20: entries of 'plugin_paths' must be paths, got a map");
  CHECK(error_of("- a\n- b\n") == "bad.yaml:1:1: a config must be a map of sections, got a sequence");
  CHECK(error_of("compute: {plugin: ''}\n") == "bad.yaml:1:19: 'plugin' in 'compute' is empty");
  CHECK(error_of("weights: {load: hugepages}\n") == "bad.yaml:1:17: 'load' in 'weights' must be auto, mmap or read, got 'hugepages'");
  CHECK(error_of("weights: mmap\n") == "bad.yaml:1:10: 'weights' must be a map, got a scalar");
}

TEST_CASE("config: weights.load auto reads where every expert stays in RAM on the CPU and the file fits") {
  using pmoe::GgufLoad;
  using W = pmoe::Config::WeightsLoad;
  const uint64_t GiB = 1ull << 30;
  CHECK(pmoe::choose_weights_load(W::automatic, false, true, 2 * GiB, 8 * GiB) == GgufLoad::read);
  CHECK(pmoe::choose_weights_load(W::automatic, true, true, 2 * GiB, 8 * GiB) == GgufLoad::map);   // streamed
  CHECK(pmoe::choose_weights_load(W::automatic, false, false, 2 * GiB, 8 * GiB) == GgufLoad::map);  // a GPU copies
  CHECK(pmoe::choose_weights_load(W::automatic, false, true, 2 * GiB, 2 * GiB + GiB / 4) == GgufLoad::map);  // no room
  CHECK(pmoe::choose_weights_load(W::automatic, false, true, 2 * GiB, 0) == GgufLoad::map);  // unknown
  CHECK(pmoe::choose_weights_load(W::read, false, false, 2 * GiB, 0) == GgufLoad::read);
  CHECK(pmoe::choose_weights_load(W::mmap, false, true, 2 * GiB, 8 * GiB) == GgufLoad::map);
}

TEST_CASE("config: weights.load") {
  CHECK(parse_config("", "x.yaml").weights_load == pmoe::Config::WeightsLoad::automatic);
  CHECK(parse_config("weights: {load: mmap}\n", "x.yaml").weights_load == pmoe::Config::WeightsLoad::mmap);
  CHECK(parse_config("weights: {load: read}\n", "x.yaml").weights_load == pmoe::Config::WeightsLoad::read);
  CHECK(parse_config("weights: {load: auto}\n", "x.yaml").weights_load == pmoe::Config::WeightsLoad::automatic);
  CHECK(error_of("weights: {load: read}\ncache: {budget: 1GiB}\n") ==
        "bad.yaml:1:17: weights.load: read keeps every expert in memory, but cache.budget streams them from storage; use "
        "auto or mmap");
}

TEST_CASE("config: bad sizes") {
  CHECK(error_of("cache:\n  budget: 1XB\n") ==
        "bad.yaml:2:11: cache.budget: bad size '1XB': unknown unit 'xb' (write e.g. 4096, 64KiB, "
        "512MiB, 1.5GiB or 2GB)");
  CHECK(error_of("cache: {budget: lots}\n").starts_with("bad.yaml:1:17: cache.budget: bad size 'lots'"));
  CHECK(error_of("cache: {budget: -1GiB}\n").starts_with("bad.yaml:1:17: cache.budget: bad size '-1GiB'"));
  CHECK(error_of("cache: {budget: [1GiB]}\n") == "bad.yaml:1:17: 'budget' must be a scalar, got a sequence");
}

TEST_CASE("config: YAML syntax errors carry file:line:col") {
  CHECK(error_of("cache: {policy: lru\nprefetch: {}\n").starts_with("bad.yaml:2:"));
  CHECK(error_of("model: a: b\n") == "bad.yaml:1:9: YAML syntax error: illegal map value");
  CHECK(error_of("compute: [1, 2\nstorage: 3\n") ==
        "bad.yaml:2:8: YAML syntax error: end of sequence flow not found");
}

TEST_CASE("config: load_config reads a file and resolves paths against its directory") {
  namespace fs = std::filesystem;
  fs::path dir = fs::path(PMOE_BUILD_DIR) / "test-config";
  fs::create_directories(dir);
  {
    std::ofstream(dir / "c.yaml") << "model: ../m.gguf\nplugin_paths: [p]\n";
    std::ofstream(dir / "bad.yaml") << "model: m.gguf\ncache:\n  budget: 12 parsecs\n";
  }
  auto cfg = pmoe::load_config((dir / "c.yaml").string());
  REQUIRE(cfg.model);
  CHECK(*cfg.model == (dir.parent_path() / "m.gguf").lexically_normal().string());
  CHECK(cfg.plugin_paths == std::vector<std::string>{(dir / "p").string()});
  std::string bad = (dir / "bad.yaml").string();
  CHECK_THROWS_WITH(pmoe::load_config(bad),
                    doctest::Contains((bad + ":3:11: cache.budget: bad size '12 parsecs'").c_str()));
  CHECK_THROWS_WITH(pmoe::load_config((dir / "nope.yaml").string()),
                    doctest::Contains("nope.yaml: cannot open file"));
}

TEST_CASE("config: the shipped default.yaml parses and matches the built-in defaults") {
  auto cfg = pmoe::load_config(std::string(PMOE_SOURCE_DIR) + "/configs/default.yaml");
  auto d = pmoe::default_config();
  CHECK(cfg.compute.name == d.compute.name);
  CHECK(cfg.storage.name == d.storage.name);
  CHECK(cfg.cache_policy.name == d.cache_policy.name);
  CHECK(cfg.cache_budget == 0);
  CHECK(cfg.prefill_chunk == d.prefill_chunk);
  CHECK(cfg.weights_load == d.weights_load);
}
