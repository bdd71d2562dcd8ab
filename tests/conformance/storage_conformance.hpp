// Storage conformance suite: helpers to load any storage plugin library through the C ABI alone
// (boost::dll, pmoe_plugin_entry, a host table of our own) and to drive an instance of it.
// Header-only so that plugin-specific unit tests (tests/unit/test_storage_posix.cpp) reuse it.
#pragma once

#include <pocketmoe/pocketmoe.h>

#include <yaml-cpp/yaml.h>
#include <boost/dll/shared_library.hpp>

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace pmoe::conformance {

using OptionList = std::vector<std::pair<std::string, std::string>>;

/// The host's log service: keeps every line so tests can look for a warning.
class HostLog {
 public:
  static void log(void* ctx, pmoe_log_level level, const char* source, const char* message) {
    auto* self = static_cast<HostLog*>(ctx);
    std::lock_guard lk(self->mu_);
    self->lines_.push_back(std::string(level >= PMOE_LOG_WARN ? "warn " : "info ") +
                           (source ? source : "?") + ": " + (message ? message : ""));
  }
  bool contains(const std::string& needle) const {
    std::lock_guard lk(mu_);
    for (const auto& l : lines_)
      if (l.find(needle) != std::string::npos) return true;
    return false;
  }
  std::string dump() const {
    std::lock_guard lk(mu_);
    std::string s;
    for (const auto& l : lines_) s += l + "\n";
    return s;
  }
  void clear() {
    std::lock_guard lk(mu_);
    lines_.clear();
  }

 private:
  mutable std::mutex mu_;
  std::vector<std::string> lines_;
};

/// A storage plugin library, loaded and negotiated; `impl` picks the implementation by name
/// (empty: the first storage implementation the library offers).
class StorageLibrary {
 public:
  explicit StorageLibrary(const std::string& path, const std::string& impl = {})
      : lib_(path, boost::dll::load_mode::rtld_now | boost::dll::load_mode::rtld_local) {
    host_ = {sizeof(pmoe_host), PMOE_ABI_MAJOR, PMOE_ABI_MINOR, &log_, &HostLog::log};
    if (!lib_.has(PMOE_ENTRY_SYMBOL))
      throw std::runtime_error(path + ": no symbol " PMOE_ENTRY_SYMBOL);
    entry_ = lib_.get<pmoe_status(const pmoe_host*, const pmoe_plugin_desc**, pmoe_error*)>(
        PMOE_ENTRY_SYMBOL);
    pmoe_error err{};
    if (entry_(&host_, &desc_, &err) != PMOE_OK || !desc_)
      throw std::runtime_error(path + ": entry refused the host: " + err.message);
    for (size_t i = 0; i < desc_->n_impls; ++i) {
      const pmoe_impl& m = desc_->impls[i];
      if (m.kind == PMOE_KIND_STORAGE && (impl.empty() || (m.name && impl == m.name))) {
        impl_ = &m;
        break;
      }
    }
    if (!impl_)
      throw std::runtime_error(path + ": no storage implementation" +
                               (impl.empty() ? std::string() : " named '" + impl + "'"));
  }

  pmoe_plugin_entry_fn entry() const { return entry_; }
  const pmoe_plugin_desc& desc() const { return *desc_; }
  const pmoe_impl& impl() const { return *impl_; }
  const pmoe_storage_vtable& vt() const {
    return *static_cast<const pmoe_storage_vtable*>(impl_->vtable);
  }
  const pmoe_host* host() const { return &host_; }
  HostLog& log() const { return log_; }

 private:
  boost::dll::shared_library lib_;
  mutable HostLog log_;
  pmoe_host host_{};
  pmoe_plugin_entry_fn entry_ = nullptr;
  const pmoe_plugin_desc* desc_ = nullptr;
  const pmoe_impl* impl_ = nullptr;
};

/// The library that provides storage implementation `impl`, found through the plugin manifests
/// (`<name>.yaml` with `provides:` and `library:`) in a ':'-separated list of directories.
inline std::string find_library_by_impl(const std::string& impl, const std::string& search_path) {
  std::stringstream dirs(search_path);
  for (std::string dir; std::getline(dirs, dir, ':');) {
    std::error_code ec;
    if (dir.empty() || !std::filesystem::is_directory(dir, ec)) continue;
    for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
      if (e.path().extension() != ".yaml") continue;
      try {
        const YAML::Node m = YAML::LoadFile(e.path().string());
        if (!m["library"] || !m["provides"]) continue;
        for (const auto& p : m["provides"])
          if (p["name"].as<std::string>("") == impl && p["kind"].as<std::string>("") == "storage")
            return (std::filesystem::path(dir) / m["library"].as<std::string>()).string();
      } catch (const YAML::Exception&) {
        // not a manifest; ignore it like the runtime does
      }
    }
  }
  throw std::runtime_error("no manifest in '" + search_path + "' provides storage '" + impl + "'");
}

/// One instance of the storage implementation (create on construction, destroy on destruction).
class StorageInstance {
 public:
  struct Opened {
    pmoe_status status = PMOE_OK;
    pmoe_file* file = nullptr;
    uint64_t size = 0;
    pmoe_error err{};
  };

  explicit StorageInstance(const StorageLibrary& lib, const OptionList& options = {})
      : vt_(lib.vt()) {
    std::vector<pmoe_option> items;
    for (const auto& [k, v] : options) items.push_back({k.c_str(), v.c_str()});
    const pmoe_options o{items.data(), items.size()};
    pmoe_error err{};
    if (vt_.create(lib.host(), &o, &s_, &err) != PMOE_OK || !s_)
      throw std::runtime_error(std::string("create failed: ") + err.message);
  }
  ~StorageInstance() {
    for (pmoe_file* f : open_) vt_.close(s_, f);
    vt_.destroy(s_);
  }
  StorageInstance(const StorageInstance&) = delete;
  StorageInstance& operator=(const StorageInstance&) = delete;

  Opened open(const std::string& path, uint32_t flags) {
    Opened r;
    r.status = vt_.open(s_, path.c_str(), flags, &r.file, &r.size, &r.err);
    if (r.status == PMOE_OK) open_.push_back(r.file);
    return r;
  }
  /// Opens or throws; for tests where the open itself is not under test.
  pmoe_file* must_open(const std::string& path, uint32_t flags, uint64_t* size = nullptr) {
    Opened r = open(path, flags);
    if (r.status != PMOE_OK) throw std::runtime_error("open " + path + ": " + r.err.message);
    if (size) *size = r.size;
    return r.file;
  }
  void close(pmoe_file* f) {
    std::erase(open_, f);
    vt_.close(s_, f);
  }
  pmoe_status submit(const pmoe_read_req* reqs, size_t n, pmoe_error* err) {
    return vt_.submit(s_, reqs, n, err);
  }
  pmoe_status submit(const std::vector<pmoe_read_req>& reqs, pmoe_error* err) {
    return submit(reqs.data(), reqs.size(), err);
  }
  size_t poll(pmoe_read_done* out, size_t max, size_t min_done, int64_t timeout_ns) {
    return vt_.poll(s_, out, max, min_done, timeout_ns);
  }
  /// Polls until `n` completions arrived or `timeout` passed without progress.
  std::vector<pmoe_read_done> poll_all(size_t n,
                                       std::chrono::seconds timeout = std::chrono::seconds(30)) {
    std::vector<pmoe_read_done> all;
    std::vector<pmoe_read_done> buf(256);
    while (all.size() < n) {
      const size_t want = std::min(buf.size(), n - all.size());
      const size_t got = poll(buf.data(), want, want, std::chrono::nanoseconds(timeout).count());
      if (got == 0) break;
      all.insert(all.end(), buf.begin(), buf.begin() + static_cast<std::ptrdiff_t>(got));
    }
    return all;
  }
  pmoe_status set_callback(pmoe_read_callback cb, void* ctx) {
    pmoe_error err{};
    return vt_.set_callback(s_, cb, ctx, &err);
  }
  uint32_t direct_alignment(pmoe_file* f) { return vt_.direct_alignment(s_, f); }
  pmoe_storage* get() const { return s_; }

 private:
  const pmoe_storage_vtable& vt_;
  pmoe_storage* s_ = nullptr;
  std::vector<pmoe_file*> open_;
};

/// Collects completions delivered by callback.
class CallbackSink {
 public:
  static void on_done(void* ctx, const pmoe_read_done* d) {
    auto* self = static_cast<CallbackSink*>(ctx);
    std::lock_guard lk(self->mu_);
    self->done_.push_back(*d);
    self->cv_.notify_all();
  }
  /// Waits until `n` completions arrived in total (or `timeout` without one); returns them all.
  std::vector<pmoe_read_done> wait(size_t n,
                                   std::chrono::seconds timeout = std::chrono::seconds(30)) {
    std::unique_lock lk(mu_);
    size_t seen = done_.size();
    while (done_.size() < n) {
      if (!cv_.wait_for(lk, timeout, [&] { return done_.size() > seen; })) break;
      seen = done_.size();
    }
    return done_;
  }
  size_t count() {
    std::lock_guard lk(mu_);
    return done_.size();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<pmoe_read_done> done_;
};

/// Deterministic pseudo-random file content (splitmix64 stream).
inline std::vector<uint8_t> make_content(size_t n, uint64_t seed) {
  std::vector<uint8_t> v(n);
  uint64_t x = seed;
  for (size_t i = 0; i < n; i += 8) {
    uint64_t z = (x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    std::memcpy(v.data() + i, &z, std::min<size_t>(8, n - i));
  }
  return v;
}

/// Writes `data` to `path` and syncs it, so that direct reads see it on the device.
inline void write_file(const std::string& path, const std::vector<uint8_t>& data) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw std::runtime_error("cannot create " + path + ": " + std::strerror(errno));
  size_t done = 0;
  while (done < data.size()) {
    const ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      ::close(fd);
      throw std::runtime_error("cannot write " + path + ": " + std::strerror(errno));
    }
    done += static_cast<size_t>(n);
  }
  ::fsync(fd);
  ::close(fd);
}

/// Memory with guard bytes on both sides of every destination, to catch writes out of bounds.
class DestArena {
 public:
  static constexpr size_t kGuard = 64;
  static constexpr uint8_t kFill = 0xA5;

  /// Reserves `length` bytes whose address is `misalign` past a 4096-byte boundary.
  uint8_t* add(uint64_t length, uint32_t misalign) {
    const size_t need = kGuard + misalign + length + kGuard;
    auto* base =
        static_cast<uint8_t*>(std::aligned_alloc(4096, (need + 4095) / 4096 * 4096 + 4096));
    if (!base) throw std::bad_alloc();
    std::memset(base, kFill, need + 4096);
    uint8_t* dest = base + 4096 + misalign;  // 4096 >= kGuard: the guard lies before it
    blocks_.push_back({base, dest, length});
    return dest;
  }
  /// True if the guards around every destination still hold the fill byte.
  bool guards_intact() const {
    for (const Block& b : blocks_)
      for (size_t i = 0; i < kGuard; ++i)
        if (b.dest[-1 - static_cast<std::ptrdiff_t>(i)] != kFill || b.dest[b.length + i] != kFill)
          return false;
    return true;
  }
  ~DestArena() {
    for (const Block& b : blocks_) std::free(b.base);
  }

 private:
  struct Block {
    uint8_t* base;
    uint8_t* dest;
    uint64_t length;
  };
  std::vector<Block> blocks_;
};

}  // namespace pmoe::conformance
