// Plugin discovery and loading against the deliberately broken plugins of tests/plugins: each
// failure must be refused with a message that names the file(s) and says what is wrong.
#include <doctest/doctest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "common/error.hpp"
#include "config/config.hpp"
#include "experts/lru_policy.hpp"
#include "plugin/instances.hpp"
#include "plugin/registry.hpp"

#ifndef PMOE_TEST_PLUGIN_DIR
#define PMOE_TEST_PLUGIN_DIR PMOE_BUILD_DIR "/test-plugins"
#endif

namespace fs = std::filesystem;
using pmoe::PluginRegistry;

namespace {

// Built-ins join every registry these tests build, as they do the Session's.
[[maybe_unused]] const bool builtins_registered = (pmoe::register_lru_policy(), true);

std::string dir(const std::string& c) {
  return fs::weakly_canonical(fs::path(PMOE_TEST_PLUGIN_DIR) / c).string();
}
std::string target(std::string c) {
  for (auto& ch : c)
    if (ch == '-') ch = '_';
  return "pmoe_test_" + c;
}
// Where pocketmoe_add_plugin put a case's manifest (named like its source) and library.
std::string manifest(const std::string& c) { return dir(c) + "/" + c + ".yaml"; }
std::string library(const std::string& c) { return dir(c) + "/lib" + target(c) + ".so"; }

template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const pmoe::Error& e) {
    return e.what();
  }
  return "(no error)";
}

std::string load_error(const std::string& c, const std::string& impl,
                       uint32_t kind = PMOE_KIND_CACHE_POLICY) {
  return error_of([&] {
    PluginRegistry reg({dir(c)}, false);
    reg.load(impl, kind);
  });
}

pmoe_cache_shape shape() { return {sizeof(pmoe_cache_shape), 2, 8, 2, 16}; }

// A scratch directory holding one hand-written manifest.
std::string scratch_manifest(const std::string& name, const std::string& text) {
  fs::path d = fs::path(PMOE_BUILD_DIR) / "test-plugin-scratch" / name;
  fs::remove_all(d);
  fs::create_directories(d);
  std::ofstream(d / "m.yaml") << text;
  return fs::weakly_canonical(d).string();
}

/// The error a manifest gives: it is skipped (a warning), and an error about the plugin it was
/// meant to provide lists it.
std::string scan_error(const std::string& name, const std::string& text) {
  std::string d = scratch_manifest(name, text);
  PluginRegistry reg({d}, false);
  REQUIRE(reg.unreadable().size() == 1);
  const std::string missing = error_of([&] { reg.load("x-policy", PMOE_KIND_CACHE_POLICY); });
  CHECK(missing.find("skipped unreadable manifests: " + reg.unreadable()[0]) != std::string::npos);
  return reg.unreadable()[0];
}

}  // namespace

TEST_CASE("a good plugin is discovered, loads and works through the ABI") {
  PluginRegistry reg({dir("good")}, false);
  REQUIRE(reg.manifests().size() == 2);  // built-in + test-good
  CHECK(reg.manifests()[0].builtin);
  const auto& m = reg.manifests()[1];
  CHECK(m.plugin == "test-good");
  CHECK(m.version == "1.2.3");
  CHECK(m.abi_major == 1);
  CHECK(m.abi_minor == 0);
  CHECK(m.manifest_path == manifest("good"));
  CHECK(m.library_path == library("good"));
  REQUIRE(m.provides.size() == 2);

  const pmoe::ImplManifest* fifo = reg.find("test-fifo", PMOE_KIND_CACHE_POLICY);
  REQUIRE(fifo);
  CHECK(reg.find("test-fifo", PMOE_KIND_STORAGE) == nullptr);
  CHECK(fifo->description == "first in, first out (test)");
  REQUIRE(fifo->options.size() == 5);
  CHECK(fifo->option("mode")->values == std::vector<std::string>{"fifo", "lifo"});
  CHECK(fifo->option("weight")->min == 0);
  CHECK(fifo->option("weight")->max == 10);
  CHECK(fifo->option("hint")->default_value == "1048576");  // sizes normalised to bytes
  CHECK(fifo->option("hint")->max == 1ll << 30);
  CHECK(fifo->option("verbose")->default_value == "false");

  auto a = reg.load("test-fifo", PMOE_KIND_CACHE_POLICY);
  auto b = reg.load("test-memstorage", PMOE_KIND_STORAGE);
  CHECK(a.manifest == b.manifest);  // one library, loaded once
  CHECK(a.spec == fifo);
  CHECK(std::string(a.impl->name) == "test-fifo");

  auto cfg = pmoe::parse_config("cache: {policy: test-fifo, mode: lifo, budget: 1MiB}\n", "c.yaml");
  auto p = pmoe::CachePolicyInstance::create(reg, cfg.cache_policy, shape());
  std::vector<uint64_t> keys{10, 11, 12};
  p.on_insert(keys);
  std::vector<uint64_t> out(8);
  out.resize(p.victims(out));
  CHECK(out == std::vector<uint64_t>{12, 11, 10});  // lifo, as the option asked
}

TEST_CASE("a storage backend runs through the ABI and reports plugin errors") {
  PluginRegistry reg({dir("good")}, false);
  auto cfg = pmoe::parse_config("storage: {plugin: test-memstorage, file_size: 8KiB}\n", "c.yaml");
  auto s = pmoe::StorageBackend::create(reg, cfg.storage);
  CHECK(s.name() == "test-memstorage");
  CHECK(s.vtable()->struct_size == sizeof(pmoe_storage_vtable));
  auto f = s.open("weights.bin", PMOE_OPEN_DIRECT);
  CHECK(f.size == 8192);
  CHECK(s.direct_alignment(f.file) == 1);

  std::vector<unsigned char> buf(64);
  pmoe_read_req reqs[2] = {{f.file, 100, 32, buf.data(), 7, 0, 0},
                           {f.file, 300, 32, buf.data() + 32, 8, 1, 0}};
  auto st = s.submit(reqs);
  CHECK(st.ok());
  std::vector<pmoe_read_done> done(4);
  REQUIRE(s.poll(done, 2, 0) == 2);
  CHECK(done[0].user_data == 7);
  CHECK(done[1].bytes == 32);
  CHECK(buf[0] == 100);
  CHECK(buf[32] == (300 & 0xff));

  pmoe_read_req past{f.file, 8190, 16, buf.data(), 9, 0, 0};
  st = s.submit({&past, 1});
  CHECK(st.status == PMOE_ERR_OUT_OF_RANGE);
  CHECK(st.message == "test-memstorage: request 0 reads past the end of the file");

  CHECK(error_of([&] { s.open("missing.bin", 0); }) ==
        "storage 'test-memstorage': open missing.bin (not_found): test-memstorage: no such file: "
        "missing.bin");

  int calls = 0;
  s.set_callback([](void* ctx, const pmoe_read_done*) { ++*static_cast<int*>(ctx); }, &calls);
  CHECK(s.submit(reqs).ok());
  CHECK(calls == 2);
  s.close(f.file);
}

TEST_CASE("exceptions thrown in create() come back as status + message") {
  PluginRegistry reg({dir("throws")}, false);
  auto li = reg.load("test-throwing", PMOE_KIND_CACHE_POLICY);
  CHECK(error_of([&] { pmoe::CachePolicyInstance p(li, {}, reg.host(), shape()); }) ==
        "cache policy 'test-throwing': create failed (internal): boom: test-throwing refuses to start");
  auto ls = reg.load("test-throwing-storage", PMOE_KIND_STORAGE);
  CHECK(error_of([&] { pmoe::StorageBackend s(ls, {}, reg.host()); }) ==
        "storage 'test-throwing-storage': create failed (permission): test-throwing-storage: "
        "access denied");
}

TEST_CASE("ABI versions: another major is refused naming both versions, a newer minor loads") {
  CHECK(load_error("abi-major", "abi-major-policy") ==
        manifest("abi-major") +
            ": plugin 'abi-major' built for ABI 2.0, host has ABI 1.3; rebuild it against this SDK");
  CHECK(load_error("abi-desc", "abi-desc-policy") ==
        library("abi-desc") + ": plugin built for ABI 2.0, host has ABI 1.3 (manifest " +
            manifest("abi-desc") + ")");

  PluginRegistry reg({dir("abi-minor")}, false);
  CHECK(reg.manifests()[1].abi_minor == 9);
  auto li = reg.load("abi-minor-policy", PMOE_KIND_CACHE_POLICY);
  pmoe::CachePolicyInstance p(li, {}, reg.host(), shape());
  std::vector<uint64_t> out(4);
  out.resize(p.victims(out));
  CHECK(out == std::vector<uint64_t>{42});  // the C stub's answer came through the table
  CHECK(!p.wants_routing());                // its on_routing is NULL
}

TEST_CASE("broken libraries and descriptors are refused with the file and the reason") {
  CHECK(load_error("no-entry", "no-entry-policy") ==
        library("no-entry") + ": plugin library exports no 'pmoe_plugin_entry' symbol (manifest " +
            manifest("no-entry") + "); define it with PMOE_PLUGIN or PMOE_DECLARE_ENTRY");
  CHECK(load_error("entry-error", "entry-error-policy") ==
        library("entry-error") +
            ": pmoe_plugin_entry failed (internal): entry-error plugin refuses: no GPU found");
  CHECK(load_error("null-desc", "null-desc-policy") ==
        library("null-desc") + ": pmoe_plugin_entry returned OK but no descriptor (NULL)");
  CHECK(load_error("null-table", "null-table-policy") ==
        library("null-table") + ": implementation 'null-table-policy' has a NULL function table");
  CHECK(load_error("small-struct", "small-struct-policy") ==
        library("small-struct") +
            ": implementation 'small-struct-policy': cache_policy table struct_size 16 is smaller "
            "than ABI 1.0's " +
            std::to_string(pmoe::min_table_size(PMOE_KIND_CACHE_POLICY)));
  CHECK(load_error("bad-kind", "bad-kind-policy") ==
        library("bad-kind") + ": implementation 'bad-kind-policy' has unknown kind 7");
}

TEST_CASE("the manifest and the library must agree") {
  CHECK(load_error("mismatch", "mm-policy") ==
        manifest("mismatch") + ": manifest lists 'mm-policy' (cache_policy) but library " +
            library("mismatch") + " does not provide it; the library provides: mm-other (cache_policy)");
  CHECK(load_error("wrong-kind", "wk-policy", PMOE_KIND_STORAGE) ==
        manifest("wrong-kind") + ": manifest says 'wk-policy' is storage, library " +
            library("wrong-kind") + " says cache_policy");
}

TEST_CASE("a failed library stays failed; other plugins still load") {
  PluginRegistry reg({dir("entry-error"), dir("good")}, false);
  std::string first = error_of([&] { reg.load("entry-error-policy", PMOE_KIND_CACHE_POLICY); });
  CHECK(first.find("no GPU found") != std::string::npos);
  CHECK(error_of([&] { reg.load("entry-error-policy", PMOE_KIND_CACHE_POLICY); }) == first);
  CHECK_NOTHROW(reg.load("test-fifo", PMOE_KIND_CACHE_POLICY));
}

TEST_CASE("asking for the wrong kind or an unknown name") {
  PluginRegistry reg({dir("good")}, false);
  CHECK(error_of([&] { reg.load("test-fifo", PMOE_KIND_STORAGE); }) ==
        "'test-fifo' (" + manifest("good") + ") is a cache_policy implementation, not storage");
  CHECK(error_of([&] { reg.load("test-memstorag", PMOE_KIND_STORAGE); }) ==
        "no storage implementation named 'test-memstorag' (did you mean 'test-memstorage'?); "
        "available: test-memstorage; searched: " + dir("good"));
}

TEST_CASE("duplicate implementation names across manifests name both files") {
  CHECK(error_of([&] { PluginRegistry reg({dir("dup-a"), dir("dup-b")}, false); }) ==
        "implementation 'dup-policy' is provided twice: by plugin 'dup-a' (" + manifest("dup-a") +
            ") and by plugin 'dup-b' (" + manifest("dup-b") +
            "); remove one of them from the search path");
}

TEST_CASE("the same plugin found again later in the search path is shadowed, like $PATH") {
  fs::path copy = fs::path(PMOE_BUILD_DIR) / "test-plugin-scratch" / "good-copy";
  fs::remove_all(copy);
  fs::create_directories(copy);
  fs::copy(dir("good"), copy);
  std::string c = fs::weakly_canonical(copy).string();
  PluginRegistry reg({c, dir("good")}, false);
  REQUIRE(reg.manifests().size() == 2);
  CHECK(reg.manifests()[1].manifest_path == c + "/good.yaml");
  REQUIRE(reg.shadowed().size() == 1);
  CHECK(reg.shadowed()[0] == manifest("good") + " (shadowed by " + c + "/good.yaml)");
  CHECK_NOTHROW(reg.load("test-fifo", PMOE_KIND_CACHE_POLICY));
}

TEST_CASE("a truncated or corrupt library is refused naming the file, before dlopen (no SIGBUS)") {
  for (const char* damage : {"truncated", "no magic", "empty"}) {
    fs::path copy = fs::path(PMOE_BUILD_DIR) / "test-plugin-scratch" / (std::string("broken-") + (damage[0] == 'n' ? "magic" : damage));
    fs::remove_all(copy);
    fs::create_directories(copy);
    fs::copy(dir("good"), copy);
    const std::string lib = fs::weakly_canonical(copy / "libpmoe_test_good.so").string();
    const uint64_t size = fs::file_size(lib);
    if (std::string(damage) == "truncated") fs::resize_file(lib, size * 6 / 10);
    if (std::string(damage) == "empty") fs::resize_file(lib, 0);
    if (std::string(damage) == "no magic") {
      std::fstream f(lib, std::ios::in | std::ios::out | std::ios::binary);
      f.write("JUNK", 4);
    }
    PluginRegistry reg({fs::weakly_canonical(copy).string()}, false);
    const std::string msg = error_of([&] { reg.load("test-fifo", PMOE_KIND_CACHE_POLICY); });
    INFO(damage << ": " << msg);
    CHECK(msg.rfind(lib + ": not a loadable plugin library (manifest ", 0) == 0);
    CHECK(msg.find(std::string(damage) == "truncated" ? "truncated: " : std::string(damage) == "empty" ? "shorter than an ELF header" : "no ELF magic") != std::string::npos);
  }
}

TEST_CASE("a missing library lists every path tried") {
  std::string d = scratch_manifest("ghost", R"(plugin: ghost
version: 0.1.0
abi: "1.0"
provides: [{name: ghost-policy, kind: cache_policy}]
library: libnothere.so
)");
  PluginRegistry reg({d, dir("good")}, false);
  CHECK(error_of([&] { reg.load("ghost-policy", PMOE_KIND_CACHE_POLICY); }) ==
        d + "/m.yaml: library of plugin 'ghost' not found; tried: " + d + "/libnothere.so, " +
            dir("good") + "/libnothere.so");
}

TEST_CASE("a bad manifest on the search path does not break the others") {
  const std::string d = scratch_manifest("broken-beside-good", "plugin: x\nprovides: [\n");
  PluginRegistry reg({d, dir("good")}, false);
  CHECK(reg.unreadable().size() == 1);
  CHECK_NOTHROW(reg.load("test-fifo", PMOE_KIND_CACHE_POLICY));
}

TEST_CASE("bad manifests are errors with FILE:LINE:COL") {
  const std::string head = "plugin: x\nversion: 1.0.0\nabi: \"1.0\"\n";
  std::string e = scan_error("syntax", "plugin: x\nprovides: [\n");
  CHECK(e.find("/syntax/m.yaml:") != std::string::npos);
  CHECK(e.find(": YAML syntax error: ") != std::string::npos);

  std::string m = fs::weakly_canonical(fs::path(PMOE_BUILD_DIR) / "test-plugin-scratch") / "";
  CHECK(scan_error("unknown-key", head + "provides:\n  - name: x-policy\n    kindd: cache_policy\n"
                                          "library: libx.so\n") ==
        m + "unknown-key/m.yaml:6:5: unknown key 'kindd' in a 'provides' entry (did you mean 'kind'?)");
  CHECK(scan_error("top-key", head + "provide: []\n") ==
        m + "top-key/m.yaml:4:1: unknown key 'provide' at the top level (did you mean 'provides'?)");
  CHECK(scan_error("provides-scalar", head + "provides: x-policy\nlibrary: libx.so\n") ==
        m + "provides-scalar/m.yaml:4:11: 'provides' must be a non-empty sequence of "
            "implementations, got a scalar");
  CHECK(scan_error("bad-kind", head + "provides:\n  - name: x-policy\n    kind: gpu\n") ==
        m + "bad-kind/m.yaml:6:11: unknown kind 'gpu' (expected compute, storage or cache_policy)");
  CHECK(scan_error("bad-type", head + "provides:\n  - name: x\n    kind: storage\n    options:\n"
                                      "      n: {type: integer}\n") ==
        m + "bad-type/m.yaml:8:17: unknown option type 'integer' (expected int, bool, size, "
            "string or enum)");
  CHECK(scan_error("bad-default", head + "provides:\n  - name: x\n    kind: storage\n    options:\n"
                                         "      n: {type: int, default: 300, max: 256}\n") ==
        m + "bad-default/m.yaml:8:31: default of option 'n': value 300 is above the maximum 256");
  CHECK(scan_error("enum-no-values", head + "provides:\n  - name: x\n    kind: storage\n"
                                            "    options:\n      m: {type: enum}\n") ==
        m + "enum-no-values/m.yaml:8:7: enum option 'm' needs 'values'");
  CHECK(scan_error("no-abi", "plugin: x\nversion: 1\nprovides: [{name: x, kind: storage}]\n") ==
        m + "no-abi/m.yaml:1:1: manifest has no 'abi' version");
  CHECK(scan_error("bad-abi", "plugin: x\nversion: 1\nabi: one\n") ==
        m + "bad-abi/m.yaml:3:6: 'abi' must be \"MAJOR.MINOR\", got 'one'");
  CHECK(scan_error("no-library", head + "provides: [{name: x, kind: storage}]\n") ==
        m + "no-library/m.yaml:1:1: manifest has no 'library' (pocketmoe_add_plugin appends it)");
}

TEST_CASE("config options are checked against the manifest schema with the config's location") {
  PluginRegistry reg({dir("good")}, false);
  auto check = [&](const std::string& text, uint32_t kind) {
    auto cfg = pmoe::parse_config(text, "bad.yaml");
    const auto& choice = kind == PMOE_KIND_CACHE_POLICY ? cfg.cache_policy
                         : kind == PMOE_KIND_STORAGE    ? cfg.storage
                                                        : cfg.compute;
    return reg.check_options(choice, kind);
  };
  auto err = [&](const std::string& text, uint32_t kind) {
    return error_of([&] { check(text, kind); });
  };
  const auto C = PMOE_KIND_CACHE_POLICY;

  CHECK(err("model: m.gguf\ncache:\n  polcy: lru\n", C) ==
        "bad.yaml:3:3: unknown key 'polcy' in 'cache' (did you mean 'policy'?); 'lru' takes no options");
  CHECK(err("cache: {policy: test-fifo, wieght: 2}\n", C) ==
        "bad.yaml:1:28: unknown key 'wieght' in 'cache' (did you mean 'weight'?); 'test-fifo' "
        "takes: mode, weight, verbose, hint, label");
  CHECK(err("cache: {policy: test-fifo, weight: heavy}\n", C) ==
        "bad.yaml:1:28: option 'weight' of 'test-fifo' (int): expected an integer, got 'heavy'");
  CHECK(err("cache: {policy: test-fifo, weight: 11}\n", C) ==
        "bad.yaml:1:28: option 'weight' of 'test-fifo' (int): value 11 is above the maximum 10");
  CHECK(err("cache: {policy: test-fifo, weight: -1}\n", C) ==
        "bad.yaml:1:28: option 'weight' of 'test-fifo' (int): value -1 is below the minimum 0");
  CHECK(err("cache:\n  policy: test-fifo\n  mode: lifi\n", C) ==
        "bad.yaml:3:3: option 'mode' of 'test-fifo' (enum): expected one of fifo, lifo, got 'lifi' "
        "(did you mean 'lifo'?)");
  CHECK(err("cache: {policy: test-fifo, verbose: maybe}\n", C) ==
        "bad.yaml:1:28: option 'verbose' of 'test-fifo' (bool): expected true or false, got 'maybe'");
  CHECK(err("cache: {policy: test-fifo, hint: 2GiB}\n", C) ==
        "bad.yaml:1:28: option 'hint' of 'test-fifo' (size): value 2GiB is above the maximum 1073741824");
  CHECK(err("cache: {policy: test-fifo, hint: big}\n", C)
            .starts_with("bad.yaml:1:28: option 'hint' of 'test-fifo' (size): bad size 'big'"));
  CHECK(err("storage: {plugin: test-memstorage, file_sise: 1}\n", PMOE_KIND_STORAGE) ==
        "bad.yaml:1:36: unknown key 'file_sise' in 'storage' (did you mean 'file_size'?); "
        "'test-memstorage' takes: file_size");
  CHECK(err("storage: {plugin: test-fifo}\n", PMOE_KIND_STORAGE) ==
        "bad.yaml:1:19: 'test-fifo' (" + manifest("good") +
            ") is a cache_policy implementation; 'storage' needs a storage one");
  CHECK(err("compute: {plugin: cpu-onedn}\n", PMOE_KIND_COMPUTE) ==
        "bad.yaml:1:19: no compute implementation named 'cpu-onedn'; available: none; searched: " +
            dir("good"));
  CHECK(err("cache: {policy: test-fif}\n", C).starts_with(
      "bad.yaml:1:17: no cache_policy implementation named 'test-fif' (did you mean 'test-fifo'?); "
      "available: lru, test-fifo; searched: "));

  // Values come back normalised for pmoe_options; defaults are not filled in.
  auto opts = check(
      "cache: {policy: test-fifo, verbose: yes, hint: 2MiB, weight: +5, mode: lifo, label: 'a b'}\n", C);
  CHECK(opts == pmoe::OptionList{{"verbose", "true"}, {"hint", "2097152"}, {"weight", "5"},
                                 {"mode", "lifo"}, {"label", "a b"}});
  CHECK(check("cache: {policy: test-fifo}\n", C).empty());
  CHECK(check("cache: {policy: test-fifo, verbose: Off}\n", C)[0].second == "false");

  // A whole config at once.
  auto cfg = pmoe::parse_config("cache: {policy: test-fifo, weight: 12}\n", "bad.yaml");
  cfg.compute.name = "test-fifo";
  CHECK(error_of([&] { reg.check_config(cfg); }).find("is a cache_policy implementation") !=
        std::string::npos);
}

TEST_CASE("search path order: config paths, $POCKETMOE_PLUGIN_PATH, build, install, exe-relative") {
  setenv("POCKETMOE_PLUGIN_PATH", "/tmp/pmoe-env-a::/tmp/pmoe-env-b", 1);
  // Computed without scanning, so plugins other tests or builds left in those dirs do not matter.
  auto paths = PluginRegistry::make_search_paths({"/tmp/pmoe-config-x", "/tmp/pmoe-env-a"});
  unsetenv("POCKETMOE_PLUGIN_PATH");
  REQUIRE(paths.size() >= 5);
  CHECK(paths[0] == "/tmp/pmoe-config-x");
  CHECK(paths[1] == "/tmp/pmoe-env-a");
  CHECK(paths[2] == "/tmp/pmoe-env-b");
  CHECK(paths[3] == fs::weakly_canonical(PMOE_PLUGIN_BUILD_DIR).string());
  CHECK(paths[4] == fs::weakly_canonical(PMOE_PLUGIN_INSTALL_DIR).string());
  // This test binary lives in <build>/bin, so <exe>/../lib/pocketmoe is the build dir again and
  // is searched only once, like /tmp/pmoe-env-a.
  CHECK(paths.size() == 5);
  CHECK(PluginRegistry::make_search_paths({"a/../b"}, false) ==
        std::vector<std::string>{fs::weakly_canonical(fs::absolute("b")).string()});
}

TEST_CASE("host services") {
  PluginRegistry reg({}, false);
  const pmoe_host* h = reg.host();
  CHECK(h->struct_size == sizeof(pmoe_host));
  CHECK(h->abi_major == PMOE_ABI_MAJOR);
  CHECK(h->abi_minor == PMOE_ABI_MINOR);
  REQUIRE(PMOE_HAS_MEMBER(pmoe_host, h, log));
  h->log(h->ctx, PMOE_LOG_DEBUG, "test", "filtered out at the default level");
  CHECK(reg.search_paths().empty());
  REQUIRE(reg.manifests().size() == 1);
  CHECK(reg.manifests()[0].provides[0].name == "lru");
}
