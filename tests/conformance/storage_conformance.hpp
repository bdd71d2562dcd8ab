// Storage conformance suite: helpers to load any storage plugin library through the C ABI alone
// and to drive an instance of it. Header-only so that plugin-specific unit tests
// (tests/unit/test_storage_posix.cpp) reuse it.
#pragma once

#include "plugin_library.hpp"

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

/// A storage plugin library, loaded and negotiated; `impl` picks the implementation by name
/// (empty: the first storage implementation the library offers).
class StorageLibrary : public PluginLibrary {
 public:
  explicit StorageLibrary(const std::string& path, const std::string& impl = {})
      : PluginLibrary(path, PMOE_KIND_STORAGE, impl) {}
  const pmoe_storage_vtable& vt() const { return vtable<pmoe_storage_vtable>(); }
};

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
    const std::vector<pmoe_option> items = option_items(options);
    const pmoe_options o{items.data(), items.size()};
    pmoe_error err{};
    if (vt_.create(lib.host(), &o, &s_, &err) != PMOE_OK || !s_)
      throw CreateError(err.code, std::string("create failed: ") + err.message);
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
