// pocketmoe SDK: header-only C++ layer over the C ABI.
//
// A plugin written in C++ derives from one of the base classes below (Storage, CachePolicy,
// Compute), and exports itself with PMOE_PLUGIN(...). This header generates the C function tables
// with noexcept trampolines: an exception thrown by the class becomes a pmoe_status plus message
// (StatusError keeps its status; anything else is PMOE_ERR_INTERNAL). Nothing C++ crosses the ABI.
//
//   class MyStorage : public pmoe::sdk::Storage { ... };
//   PMOE_PLUGIN("my-storage", "1.0.0",
//               pmoe::sdk::storage_impl<MyStorage>("my-storage", "reads files my way"))
//
// The class is constructed as T(const pmoe_host*, const pmoe::sdk::Options&) (cache policies:
// T(const pmoe_host*, const Options&, const pmoe_cache_shape&)).
#pragma once

#include <pocketmoe/pocketmoe.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <cstdlib>
#include <cstring>
#include <new>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>

namespace pmoe::sdk {

/// An error with a status code and optionally an errno; the trampolines pass both to the host.
class StatusError : public std::runtime_error {
 public:
  StatusError(pmoe_status code, const std::string& message, int sys_errno = 0)
      : std::runtime_error(message), code_(code), sys_errno_(sys_errno) {}
  pmoe_status code() const noexcept { return code_; }
  int sys_errno() const noexcept { return sys_errno_; }

 private:
  pmoe_status code_;
  int sys_errno_;
};

/// Runs `f`; converts any exception into a status and message in `err`. Never throws.
template <class F>
pmoe_status guard(pmoe_error* err, F&& f) noexcept {
  try {
    f();
    return PMOE_OK;
  } catch (const StatusError& e) {
    return pmoe_error_set(err, e.code(), e.sys_errno(), "%s", e.what());
  } catch (const std::bad_alloc&) {
    return pmoe_error_set(err, PMOE_ERR_OUT_OF_MEMORY, ENOMEM, "out of memory");
  } catch (const std::exception& e) {
    return pmoe_error_set(err, PMOE_ERR_INTERNAL, 0, "%s", e.what());
  } catch (...) {
    return pmoe_error_set(err, PMOE_ERR_INTERNAL, 0, "unknown exception");
  }
}

/// Typed access to the (already schema-checked) option strings.
class Options {
 public:
  explicit Options(const pmoe_options* o) : o_(o) {}
  const char* raw(const char* key) const { return pmoe_options_get(o_, key); }
  bool has(const char* key) const { return raw(key) != nullptr; }
  std::string get_string(const char* key, std::string def = {}) const {
    const char* v = raw(key);
    return v ? std::string(v) : def;
  }
  bool get_bool(const char* key, bool def) const {
    const char* v = raw(key);
    if (!v) return def;
    std::string_view s(v);
    if (s == "true" || s == "1") return true;
    if (s == "false" || s == "0") return false;
    throw StatusError(PMOE_ERR_INVALID_ARGUMENT, std::string("option '") + key +
                                                     "' must be true or false, got '" + v + "'");
  }
  /// Integers and sizes (sizes arrive in bytes).
  long long get_int(const char* key, long long def) const {
    const char* v = raw(key);
    if (!v) return def;
    char* end = nullptr;
    errno = 0;
    long long x = std::strtoll(v, &end, 10);
    if (errno != 0 || end == v || *end != '\0')
      throw StatusError(PMOE_ERR_INVALID_ARGUMENT,
                        std::string("option '") + key + "' must be an integer, got '" + v + "'");
    return x;
  }

 private:
  const pmoe_options* o_;
};

/// Logs through the host's service (no-op when the host offers none).
inline void log(const pmoe_host* host, pmoe_log_level level, const char* source,
                const std::string& msg) noexcept {
  if (PMOE_HAS_MEMBER(pmoe_host, host, log)) host->log(host->ctx, level, source, msg.c_str());
}

// ---------------------------------------------------------------------------------------------
// Storage

/// Base class of a storage backend. Files are whatever pointer the class returns from open().
class Storage {
 public:
  virtual ~Storage() = default;
  /// Open `path`; returns an opaque file object and sets `size`. Throw StatusError on failure.
  virtual void* open(const char* path, uint32_t flags, uint64_t& size) = 0;
  virtual void close(void* file) noexcept = 0;
  virtual void set_callback(pmoe_read_callback cb, void* ctx) = 0;
  /// Accept all reads or throw (none accepted).
  virtual void submit(std::span<const pmoe_read_req> reqs) = 0;
  virtual size_t poll(pmoe_read_done* out, size_t max, size_t min_done, int64_t timeout_ns) = 0;
  virtual uint32_t direct_alignment(void* /*file*/) { return 1; }
};

/// The body of Storage::poll for a backend that queues completions in `done` (guarded by the lock
/// `lk`, which the caller holds) and signals `cv` when it adds some: waits until `min_done` are
/// there or `timeout_ns` passed (0: no wait; negative: no limit), then moves up to `max` to `out`.
inline size_t take_completions(std::unique_lock<std::mutex>& lk, std::condition_variable& cv,
                               std::deque<pmoe_read_done>& done, pmoe_read_done* out, size_t max,
                               size_t min_done, int64_t timeout_ns) {
  if (!out || max == 0) return 0;
  min_done = std::min(min_done, max);
  auto ready = [&] { return done.size() >= min_done; };
  constexpr int64_t kForever = int64_t{1} << 62;  // keeps now() + timeout from overflowing
  if (timeout_ns < 0 || timeout_ns >= kForever)
    cv.wait(lk, ready);
  else if (timeout_ns > 0)
    cv.wait_for(lk, std::chrono::nanoseconds(timeout_ns), ready);
  const size_t n = std::min(max, done.size());
  std::copy_n(done.begin(), n, out);
  done.erase(done.begin(), done.begin() + static_cast<std::ptrdiff_t>(n));
  return n;
}

template <class T>
const pmoe_storage_vtable* storage_vtable() {
  static const pmoe_storage_vtable vt = {
      sizeof(pmoe_storage_vtable), 0,
      [](const pmoe_host* host, const pmoe_options* o, pmoe_storage** out, pmoe_error* err) {
        return guard(err, [&] {
          *out = reinterpret_cast<pmoe_storage*>(static_cast<Storage*>(new T(host, Options(o))));
        });
      },
      [](pmoe_storage* s) { delete reinterpret_cast<Storage*>(s); },
      [](pmoe_storage* s, const char* path, uint32_t flags, pmoe_file** out, uint64_t* size,
         pmoe_error* err) {
        return guard(err, [&] {
          uint64_t sz = 0;
          *out = static_cast<pmoe_file*>(reinterpret_cast<Storage*>(s)->open(path, flags, sz));
          if (size) *size = sz;
        });
      },
      [](pmoe_storage* s, pmoe_file* f) { reinterpret_cast<Storage*>(s)->close(f); },
      [](pmoe_storage* s, pmoe_read_callback cb, void* ctx, pmoe_error* err) {
        return guard(err, [&] { reinterpret_cast<Storage*>(s)->set_callback(cb, ctx); });
      },
      [](pmoe_storage* s, const pmoe_read_req* reqs, size_t n, pmoe_error* err) {
        return guard(err, [&] { reinterpret_cast<Storage*>(s)->submit({reqs, n}); });
      },
      [](pmoe_storage* s, pmoe_read_done* out, size_t max, size_t min_done,
         int64_t timeout_ns) -> size_t {
        try {
          return reinterpret_cast<Storage*>(s)->poll(out, max, min_done, timeout_ns);
        } catch (...) {
          return 0;
        }
      },
      [](pmoe_storage* s, pmoe_file* f) -> uint32_t {
        try {
          return reinterpret_cast<Storage*>(s)->direct_alignment(f);
        } catch (...) {
          return 4096;
        }
      },
  };
  return &vt;
}

// ---------------------------------------------------------------------------------------------
// Cache policy

/// Base class of a cache policy (see cache_policy.h for the call sequence).
class CachePolicy {
 public:
  virtual ~CachePolicy() = default;
  virtual void on_insert(std::span<const uint64_t> keys) = 0;
  virtual void on_access(std::span<const uint64_t> keys, uint64_t tick) = 0;
  virtual void on_evict(std::span<const uint64_t> keys) = 0;
  virtual size_t victims(uint64_t* out, size_t max) = 0;
  virtual void on_routing(uint32_t /*layer*/, const float* /*probs*/, uint32_t /*n_tokens*/,
                          uint32_t /*n_experts*/) {}
};

template <class T>
const pmoe_cache_policy_vtable* cache_policy_vtable() {
  // The policy calls cannot report errors; a policy that throws there has a bug, and the safest
  // answer is to ignore the event (victims() then proposes nothing and the host reports that).
  static const pmoe_cache_policy_vtable vt = {
      sizeof(pmoe_cache_policy_vtable), 0,
      [](const pmoe_host* host, const pmoe_options* o, const pmoe_cache_shape* shape,
         pmoe_cache_policy** out, pmoe_error* err) {
        return guard(err, [&] {
          *out = reinterpret_cast<pmoe_cache_policy*>(
              static_cast<CachePolicy*>(new T(host, Options(o), *shape)));
        });
      },
      [](pmoe_cache_policy* p) { delete reinterpret_cast<CachePolicy*>(p); },
      [](pmoe_cache_policy* p, const uint64_t* k, size_t n) {
        guard(nullptr, [&] { reinterpret_cast<CachePolicy*>(p)->on_insert({k, n}); });
      },
      [](pmoe_cache_policy* p, const uint64_t* k, size_t n, uint64_t tick) {
        guard(nullptr, [&] { reinterpret_cast<CachePolicy*>(p)->on_access({k, n}, tick); });
      },
      [](pmoe_cache_policy* p, const uint64_t* k, size_t n) {
        guard(nullptr, [&] { reinterpret_cast<CachePolicy*>(p)->on_evict({k, n}); });
      },
      [](pmoe_cache_policy* p, uint64_t* out, size_t max) -> size_t {
        size_t r = 0;
        guard(nullptr, [&] { r = reinterpret_cast<CachePolicy*>(p)->victims(out, max); });
        return r;
      },
      [](pmoe_cache_policy* p, uint32_t layer, const float* probs, uint32_t nt, uint32_t ne) {
        guard(nullptr,
              [&] { reinterpret_cast<CachePolicy*>(p)->on_routing(layer, probs, nt, ne); });
      },
  };
  return &vt;
}

// ---------------------------------------------------------------------------------------------
// Compute

/// Base class of a compute backend. Buffers are whatever pointer the class returns.
class Compute {
 public:
  virtual ~Compute() = default;
  virtual void* buffer_alloc(uint64_t size, uint32_t flags) = 0;
  /// Return nullptr to say "not supported" (the host then allocates and uploads).
  virtual void* buffer_wrap(void* /*ptr*/, uint64_t /*size*/, uint32_t /*flags*/) {
    return nullptr;
  }
  virtual void buffer_free(void* b) noexcept = 0;
  virtual void* buffer_host_ptr(void* b) noexcept = 0;
  virtual void buffer_write(void* b, uint64_t offset, const void* src, uint64_t size) = 0;
  virtual void buffer_read(void* b, uint64_t offset, void* dst, uint64_t size) = 0;
  virtual void execute(std::span<const pmoe_op> ops) = 0;
  virtual void sync() {}
  // ABI 1.2. The defaults are right for a backend that runs ops inside execute().
  /// Fill `p` (all of it: the trampoline copies as much as the host has room for).
  virtual void get_props(pmoe_compute_props& p) { p.device_type = PMOE_DEVICE_CPU, p.unified_memory = 1; }
  /// Throw StatusError(PMOE_ERR_NOT_SUPPORTED, why) for an op this backend cannot run (since ABI
  /// 1.3 that includes a MOE_EXPERT `down` stored one row per neuron, if the backend does not read it).
  virtual void check_op(const pmoe_op& /*op*/) {}
  /// execute() plus a ticket; the default ticket is complete once sync() returns.
  virtual uint64_t submit(std::span<const pmoe_op> ops) {
    execute(ops);
    return ++submitted_;
  }
  /// True when `ticket` completed within `timeout_ns` (0: just poll).
  virtual bool wait(uint64_t /*ticket*/, uint64_t /*timeout_ns*/) {
    sync();
    return true;
  }
  virtual void buffer_flush_range(void* /*b*/, uint64_t /*offset*/, uint64_t /*size*/) {}

 private:
  uint64_t submitted_ = 0;
};

template <class T>
const pmoe_compute_vtable* compute_vtable() {
  static const pmoe_compute_vtable vt = {
      sizeof(pmoe_compute_vtable), 0,
      [](const pmoe_host* host, const pmoe_options* o, pmoe_compute** out, pmoe_error* err) {
        return guard(err, [&] {
          *out = reinterpret_cast<pmoe_compute*>(static_cast<Compute*>(new T(host, Options(o))));
        });
      },
      [](pmoe_compute* c) { delete reinterpret_cast<Compute*>(c); },
      [](pmoe_compute* c, uint64_t size, uint32_t flags, pmoe_buffer** out, pmoe_error* err) {
        return guard(err, [&] {
          *out = static_cast<pmoe_buffer*>(reinterpret_cast<Compute*>(c)->buffer_alloc(size, flags));
        });
      },
      [](pmoe_compute* c, void* ptr, uint64_t size, uint32_t flags, pmoe_buffer** out,
         pmoe_error* err) {
        void* b = nullptr;
        pmoe_status s =
            guard(err, [&] { b = reinterpret_cast<Compute*>(c)->buffer_wrap(ptr, size, flags); });
        if (s != PMOE_OK) return s;
        if (!b) return pmoe_error_set(err, PMOE_ERR_NOT_SUPPORTED, 0, "buffer_wrap not supported");
        *out = static_cast<pmoe_buffer*>(b);
        return PMOE_OK;
      },
      [](pmoe_compute* c, pmoe_buffer* b) { reinterpret_cast<Compute*>(c)->buffer_free(b); },
      [](pmoe_compute* c, pmoe_buffer* b) -> void* {
        return reinterpret_cast<Compute*>(c)->buffer_host_ptr(b);
      },
      [](pmoe_compute* c, pmoe_buffer* b, uint64_t off, const void* src, uint64_t size,
         pmoe_error* err) {
        return guard(err, [&] { reinterpret_cast<Compute*>(c)->buffer_write(b, off, src, size); });
      },
      [](pmoe_compute* c, pmoe_buffer* b, uint64_t off, void* dst, uint64_t size,
         pmoe_error* err) {
        return guard(err, [&] { reinterpret_cast<Compute*>(c)->buffer_read(b, off, dst, size); });
      },
      [](pmoe_compute* c, const pmoe_op* ops, size_t n, pmoe_error* err) {
        return guard(err, [&] { reinterpret_cast<Compute*>(c)->execute({ops, n}); });
      },
      [](pmoe_compute* c, pmoe_error* err) {
        return guard(err, [&] { reinterpret_cast<Compute*>(c)->sync(); });
      },
      [](pmoe_compute* c, pmoe_compute_props* p, pmoe_error* err) {
        return guard(err, [&] {
          pmoe_compute_props full{};  // filled whole here, copied as far as the host has room
          full.struct_size = sizeof full;
          reinterpret_cast<Compute*>(c)->get_props(full);
          const uint32_t room = p->struct_size;
          std::memcpy(p, &full, std::min<size_t>(room, sizeof full));
          p->struct_size = room;
        });
      },
      [](pmoe_compute* c, const pmoe_op* op, pmoe_error* err) {
        return guard(err, [&] { reinterpret_cast<Compute*>(c)->check_op(*op); });
      },
      [](pmoe_compute* c, const pmoe_op* ops, size_t n, uint64_t* ticket, pmoe_error* err) {
        return guard(err, [&] { *ticket = reinterpret_cast<Compute*>(c)->submit({ops, n}); });
      },
      [](pmoe_compute* c, uint64_t ticket, uint64_t timeout_ns, pmoe_error* err) {
        bool done = false;
        const pmoe_status s = guard(err, [&] { done = reinterpret_cast<Compute*>(c)->wait(ticket, timeout_ns); });
        if (s != PMOE_OK || done) return s;
        return pmoe_error_set(err, PMOE_ERR_TIMEOUT, 0, "ticket %llu not complete", (unsigned long long)ticket);
      },
      [](pmoe_compute* c, pmoe_buffer* b, uint64_t off, uint64_t size, pmoe_error* err) {
        return guard(err, [&] { reinterpret_cast<Compute*>(c)->buffer_flush_range(b, off, size); });
      },
  };
  return &vt;
}

// ---------------------------------------------------------------------------------------------
// Descriptor and export

template <class T>
pmoe_impl storage_impl(const char* name, const char* description) {
  return {PMOE_KIND_STORAGE, 0, name, description, storage_vtable<T>()};
}
template <class T>
pmoe_impl cache_policy_impl(const char* name, const char* description) {
  return {PMOE_KIND_CACHE_POLICY, 0, name, description, cache_policy_vtable<T>()};
}
template <class T>
pmoe_impl compute_impl(const char* name, const char* description) {
  return {PMOE_KIND_COMPUTE, 0, name, description, compute_vtable<T>()};
}

/// Checks the host's ABI major and fills `out` with a descriptor of static lifetime.
inline pmoe_status negotiate(const pmoe_host* host, const pmoe_plugin_desc* desc,
                             const pmoe_plugin_desc** out, pmoe_error* err) noexcept {
  if (!host || !out) return pmoe_error_set(err, PMOE_ERR_INVALID_ARGUMENT, 0, "NULL argument");
  if (host->abi_major != PMOE_ABI_MAJOR)
    return pmoe_error_set(err, PMOE_ERR_ABI, 0,
                          "plugin '%s' is built for ABI %d.%d, host has ABI %d.%d", desc->name,
                          PMOE_ABI_MAJOR, PMOE_ABI_MINOR, host->abi_major, host->abi_minor);
  *out = desc;
  return PMOE_OK;
}

}  // namespace pmoe::sdk

/// Exports the entry symbol of a plugin library offering the given implementations:
/// PMOE_PLUGIN("name", "1.0.0", pmoe::sdk::storage_impl<X>("x", "..."), ...)
#define PMOE_PLUGIN(plugin_name, plugin_version, ...)                                         \
  PMOE_DECLARE_ENTRY(host, out, err) {                                                        \
    static const pmoe_impl impls[] = {__VA_ARGS__};                                           \
    static const pmoe_plugin_desc desc = {sizeof(pmoe_plugin_desc),                           \
                                          PMOE_ABI_MAJOR,                                     \
                                          PMOE_ABI_MINOR,                                     \
                                          plugin_name,                                        \
                                          plugin_version,                                     \
                                          sizeof(impls) / sizeof(impls[0]),                   \
                                          impls};                                             \
    return pmoe::sdk::negotiate(host, &desc, out, err);                                       \
  }
