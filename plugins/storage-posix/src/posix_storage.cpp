// storage-posix: reads on a pool of pread() workers, optionally with O_DIRECT.
//
// Requests wait in one priority queue (lower `priority` first, FIFO within a priority). When there
// are several workers, speculative reads may occupy all but one of them, so a demand read never
// waits behind a speculative one for a free worker. Direct files serve unaligned requests through
// a per-worker aligned bounce buffer; only the unaligned head and tail are bounced when the
// destination shares the offset's misalignment. See docs/storage.md. Opening (O_DIRECT and its
// fallback), request checks and the split of a direct read come from
// <pocketmoe/cpp/posix_file.hpp>.
#include <pocketmoe/cpp/plugin.hpp>
#include <pocketmoe/cpp/posix_file.hpp>

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <queue>
#include <string>
#include <thread>
#include <unordered_set>
#include <vector>

namespace pmoe {
namespace {

constexpr const char* kSource = "storage-posix";
constexpr uint64_t kMaxIo = 1ull << 30;       // per pread call; Linux caps one call near 2 GiB
constexpr uint64_t kBounceSize = 1ull << 20;  // per-worker bounce buffer for unaligned direct reads

using sdk::posix::fail;
using sdk::posix::strf;

// fd, path, size at open, align (> 1: O_DIRECT; offsets, lengths and dest must be multiples).
struct PosixFile : sdk::posix::File {
  uint32_t pending = 0;  // reads queued or running; guarded by PosixStorage::mu_
};

PosixFile* as_file(pmoe_file* f) { return reinterpret_cast<PosixFile*>(f); }

struct ReadResult {
  uint64_t bytes = 0;
  int err = 0;  // errno of a failed pread; 0 with bytes < wanted means end of file
};

// pread until `len` bytes, EOF or an error; EINTR and short reads are retried. With O_DIRECT an
// unaligned count can only mean EOF (the next pread would fail with EINVAL), so it stops there.
ReadResult pread_full(int fd, void* dst, uint64_t len, uint64_t off, uint64_t align) {
  ReadResult r;
  while (r.bytes < len) {
    ssize_t n = ::pread(fd, static_cast<char*>(dst) + r.bytes, std::min(len - r.bytes, kMaxIo),
                        static_cast<off_t>(off + r.bytes));
    if (n < 0) {
      if (errno == EINTR) continue;
      r.err = errno;
      break;
    }
    if (n == 0) break;
    r.bytes += static_cast<uint64_t>(n);
    if (r.bytes % align != 0) break;
  }
  return r;
}

struct AlignedBuffer {
  struct Free {
    void operator()(void* p) const { std::free(p); }
  };
  std::unique_ptr<char, Free> data;
  uint64_t size = 0, align = 0;

  bool fits(uint64_t a) const { return data && align >= a && align % a == 0; }
  uint64_t size_for(uint64_t a) const {  // the size ensure(a) leaves, without allocating
    return fits(a) ? size : std::max({kBounceSize, a, uint64_t{4096}});
  }
  void ensure(uint64_t a) {  // a chunk of at least kBounceSize, a multiple of `a`, aligned to it
    if (fits(a)) return;
    align = std::max<uint64_t>(a, 4096);
    size = std::max(kBounceSize, align);
    data.reset(static_cast<char*>(std::aligned_alloc(align, size)));
    if (!data) throw std::bad_alloc();
  }
};

// Reads [off, off+len) of a direct file into dst, in the pieces sdk::posix::split_read plans:
// whole blocks straight into dst where dst allows, the rest through `buf` in chunks of whole blocks
// that may end short at EOF, which is fine as long as the wanted bytes arrived. Stops at the first
// error or gap.
ReadResult direct_read(const PosixFile& f, uint64_t off, uint64_t len, char* dst,
                       AlignedBuffer& buf) {
  ReadResult r;
  auto piece = [&](const sdk::posix::ReadPiece& p) {
    if (p.bounce) buf.ensure(f.align);
    char* to = p.bounce ? buf.data.get() : p.dst;
    const ReadResult c = pread_full(f.fd, to, p.len, p.off, f.align);
    const uint64_t end = p.copy_off + p.copy_len;  // of the wanted bytes
    const uint64_t got = std::min(p.off + c.bytes, end);
    if (got > p.copy_off) {
      if (p.bounce) std::memcpy(p.dst, to + (p.copy_off - p.off), got - p.copy_off);
      r.bytes += got - p.copy_off;
    }
    r.err = c.err;
    return !c.err && got == end;
  };
  sdk::posix::split_read(f.align, off, len, dst, buf.size_for(f.align), piece);
  return r;
}

class PosixStorage final : public sdk::Storage {
 public:
  PosixStorage(const pmoe_host* host, const sdk::Options& o)
      : host_(host),
        direct_io_(o.get_bool("direct_io", false)),
        fallback_(o.get_bool("direct_io_fallback", true)) {
    const long long n = o.get_int("workers", 4);
    if (n < 1 || n > 256)
      fail(PMOE_ERR_INVALID_ARGUMENT, 0, strf("option 'workers' must be 1..256, got %lld", n));
    spec_limit_ = n > 1 ? static_cast<uint32_t>(n - 1) : 1;
    try {
      for (long long i = 0; i < n; ++i) workers_.emplace_back([this] { work(); });
    } catch (...) {
      stop();
      throw;
    }
  }

  ~PosixStorage() override {
    stop();
    for (PosixFile* f : files_) delete f;  // files the host forgot to close (~File closes fd)
  }

  void* open(const char* path, uint32_t flags, uint64_t& size) override {
    auto f = std::make_unique<PosixFile>();  // closes the file if anything below throws
    sdk::posix::open_file(*f, path, direct_io_ || (flags & PMOE_OPEN_DIRECT), fallback_, host_,
                          kSource);
    size = f->size;
    std::lock_guard lk(mu_);
    files_.insert(f.get());
    return f.release();
  }

  void close(void* file) noexcept override {
    auto* f = static_cast<PosixFile*>(file);
    if (!f) return;
    {
      std::unique_lock lk(mu_);
      files_.erase(f);  // later submits naming it are rejected
      idle_.wait(lk, [&] { return f->pending == 0; });
    }
    delete f;  // closes the descriptor
  }

  void set_callback(pmoe_read_callback cb, void* ctx) override {
    std::lock_guard lk(mu_);
    cb_ = cb;
    cb_ctx_ = ctx;
  }

  void submit(std::span<const pmoe_read_req> reqs) override {
    if (reqs.empty()) return;
    if (!reqs.data()) fail(PMOE_ERR_INVALID_ARGUMENT, 0, "submit: NULL request array");
    {
      std::lock_guard lk(mu_);
      for (size_t i = 0; i < reqs.size(); ++i) validate(reqs[i], i);  // all or nothing
      for (const pmoe_read_req& r : reqs) {
        ++as_file(r.file)->pending;
        queue_.push({r, seq_++});
      }
    }
    if (reqs.size() >= workers_.size())
      work_.notify_all();
    else
      for (size_t i = 0; i < reqs.size(); ++i) work_.notify_one();
  }

  size_t poll(pmoe_read_done* out, size_t max, size_t min_done, int64_t timeout_ns) override {
    std::unique_lock lk(mu_);
    return sdk::take_completions(lk, done_cv_, done_, out, max, min_done, timeout_ns);
  }

  uint32_t direct_alignment(void* file) override {
    return file ? static_cast<PosixFile*>(file)->align : 1;
  }

 private:
  struct Job {
    pmoe_read_req req;
    uint64_t seq;
  };
  struct Later {  // priority_queue keeps the "largest" on top: make that the lowest priority value
    bool operator()(const Job& a, const Job& b) const {
      return a.req.priority != b.req.priority ? a.req.priority > b.req.priority : a.seq > b.seq;
    }
  };
  void validate(const pmoe_read_req& r, size_t i) const {  // caller holds mu_
    PosixFile* f = as_file(r.file);
    sdk::posix::check_request(r, i, files_.count(f) ? f : nullptr);
  }

  bool can_take() const {
    return !queue_.empty() && (queue_.top().req.priority == 0 || spec_running_ < spec_limit_);
  }

  void work() {
    AlignedBuffer bounce;  // per worker, allocated on the first unaligned direct read
    std::unique_lock lk(mu_);
    for (;;) {
      work_.wait(lk, [&] { return can_take() || (stop_ && queue_.empty()); });
      if (queue_.empty()) {  // stopping: wake the others, who may be waiting on the spec limit
        work_.notify_all();
        return;
      }
      const pmoe_read_req req = queue_.top().req;
      queue_.pop();
      const bool speculative = req.priority != 0;
      spec_running_ += speculative;
      lk.unlock();
      const pmoe_read_done done = execute(req, bounce);
      lk.lock();
      if (speculative && --spec_running_ + 1 == spec_limit_ && !queue_.empty()) work_.notify_one();
      if (cb_) {
        // Outside the lock: the callback may submit or poll.
        const auto cb = cb_;
        void* ctx = cb_ctx_;
        lk.unlock();
        cb(ctx, &done);
        lk.lock();
      } else {
        done_.push_back(done);
        done_cv_.notify_all();
      }
      // Only now may close() return: the read's completion has been delivered.
      if (--as_file(req.file)->pending == 0) idle_.notify_all();
    }
  }

  pmoe_read_done execute(const pmoe_read_req& req, AlignedBuffer& bounce) noexcept {
    const auto& f = *as_file(req.file);
    char* dst = static_cast<char*>(req.dest);
    ReadResult r;
    try {
      r = f.align > 1 ? direct_read(f, req.offset, req.length, dst, bounce)
                      : pread_full(f.fd, dst, req.length, req.offset, 1);
    } catch (const std::bad_alloc&) {
      return {req.user_data, PMOE_ERR_OUT_OF_MEMORY, ENOMEM, 0};
    }
    if (r.err) return {req.user_data, sdk::posix::read_status(r.err), r.err, r.bytes};
    if (r.bytes == req.length) return {req.user_data, PMOE_OK, 0, r.bytes};
    // The file shrank after open (submit already checked the size known then).
    sdk::posix::log_read_past_end(host_, kSource, f, req.offset, req.length);
    return {req.user_data, PMOE_ERR_OUT_OF_RANGE, 0, r.bytes};
  }

  void stop() noexcept {
    {
      std::lock_guard lk(mu_);
      stop_ = true;
    }
    work_.notify_all();
    for (auto& t : workers_) t.join();  // drains the queue first: every accepted read completes
    workers_.clear();
  }

  const pmoe_host* host_;
  const bool direct_io_, fallback_;
  uint32_t spec_limit_ = 1;  // workers that speculative reads may occupy at once
  std::vector<std::thread> workers_;

  std::mutex mu_;  // guards everything below
  std::condition_variable work_, done_cv_, idle_;
  std::priority_queue<Job, std::vector<Job>, Later> queue_;
  std::deque<pmoe_read_done> done_;
  std::unordered_set<PosixFile*> files_;
  pmoe_read_callback cb_ = nullptr;
  void* cb_ctx_ = nullptr;
  uint64_t seq_ = 0;
  uint32_t spec_running_ = 0;
  bool stop_ = false;
};

}  // namespace
}  // namespace pmoe

PMOE_PLUGIN("storage-posix", "0.1.0",
            pmoe::sdk::storage_impl<pmoe::PosixStorage>(
                "storage-posix", "positional reads (pread) on a worker pool, optional O_DIRECT"))
