// storage-uring: reads through one io_uring (liburing), optionally with O_DIRECT.
//
// Host threads validate a batch, queue it (lower `priority` first, FIFO within a priority) and
// move as much of the queue into the ring as `queue_depth` allows, with one io_uring_submit. One
// completion thread blocks in io_uring_wait_cqe, re-submits short reads for the remainder,
// copies bounce buffers out, refills the ring from the queue and delivers completions (poll queue
// or callback). Speculative reads may hold only part of the ring, so a demand read always finds
// a free entry and never waits behind speculative ones. Bytes, errors, messages and the O_DIRECT
// alignment handling are those of storage-posix: both take them from
// <pocketmoe/cpp/posix_file.hpp>. See docs/storage-uring.md.
#include <pocketmoe/cpp/plugin.hpp>
#include <pocketmoe/cpp/posix_file.hpp>

#include <liburing.h>
#include <signal.h>

#include <algorithm>
#include <bit>
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

#ifndef IORING_SETUP_SUBMIT_ALL  // liburing before 2.2
#define IORING_SETUP_SUBMIT_ALL (1U << 7)
#endif

namespace pmoe {
namespace {

constexpr const char* kSource = "storage-uring";
constexpr uint64_t kMaxIo = 1ull << 30;       // per SQE; Linux caps one read near 2 GiB
constexpr uint64_t kBounceSize = 1ull << 20;  // bounce chunk for unaligned direct reads
constexpr uint64_t kPoolAlign = 4096;         // bounce buffers are aligned to this (or more)
constexpr uint64_t kPoolKeep = 16ull << 20;   // bytes of free bounce buffers kept for reuse
constexpr unsigned kFileSlots = 64;           // registered-file table; later files use plain fds
constexpr uint32_t kMaxRetries = 64;          // consecutive EINTR/EAGAIN/ECANCELED per segment

constexpr uint16_t kIdleIoprio = 3 << 13;     // IOPRIO_PRIO_VALUE(IOPRIO_CLASS_IDLE, 0)

thread_local const void* t_reaper_of = nullptr;  // the instance whose completion thread this is

using sdk::posix::fail;
using sdk::posix::strf;

// fd, path, size at open, align (> 1: O_DIRECT; offsets, lengths and dest must be multiples).
struct UringFile : sdk::posix::File {
  int slot = -1;  // index in the registered file table; -1: SQEs name fd
  uint32_t pending = 0;  // reads accepted and not yet delivered; guarded by UringStorage::mu_
};

UringFile* as_file(pmoe_file* f) { return reinterpret_cast<UringFile*>(f); }

struct Request;

// One SQE's worth of a request: `want` bytes at file offset `off` into `buf`. A bounce segment
// reads whole blocks into an aligned buffer and copies [copy_off, copy_off + copy_len) of the file
// to `dst`; a plain one reads straight into the caller's memory (buf points there).
struct Segment {
  Request* req = nullptr;
  uint64_t off = 0, want = 0, got = 0;
  char* buf = nullptr;
  char* dst = nullptr;  // set: bounce segment
  uint64_t copy_off = 0, copy_len = 0;
  uint64_t placed = 0;  // wanted bytes that reached the caller's memory
  int err = 0;          // errno; set before issue when no bounce buffer could be had
  uint32_t retries = 0;
  bool by_reaper = false;  // last put into the ring by the completion thread
  bool complete() const { return placed == (dst ? copy_len : want); }
};

struct Request {
  pmoe_read_req req{};
  uint64_t seq = 0;
  std::vector<Segment> segs;  // in file order
  size_t next = 0;            // first segment not yet in the ring
  size_t left = 0;            // segments not yet finished
};

// Free bounce buffers by power-of-two size class, so steady-state reads allocate nothing.
class BouncePool {
 public:
  ~BouncePool() {
    for (auto& c : free_)
      for (char* p : c) std::free(p);
  }
  char* take(uint64_t size, uint64_t align) {
    if (align > kPoolAlign) return alloc(size, align);  // rare; not pooled
    const unsigned c = cls(size);
    if (!free_[c].empty()) {
      char* p = free_[c].back();
      free_[c].pop_back();
      kept_ -= uint64_t{1} << c;
      return p;
    }
    return alloc(uint64_t{1} << c, kPoolAlign);
  }
  void give(char* p, uint64_t size, uint64_t align) {
    const unsigned c = cls(size);
    if (align > kPoolAlign || kept_ + (uint64_t{1} << c) > kPoolKeep) return std::free(p);
    free_[c].push_back(p);
    kept_ += uint64_t{1} << c;
  }

 private:
  static unsigned cls(uint64_t size) {
    return static_cast<unsigned>(std::bit_width(std::max(size, kPoolAlign) - 1));
  }
  static char* alloc(uint64_t size, uint64_t align) {
    auto* p = static_cast<char*>(std::aligned_alloc(align, (size + align - 1) / align * align));
    if (!p) throw std::bad_alloc();
    return p;
  }
  std::vector<char*> free_[64];
  uint64_t kept_ = 0;
};

class UringStorage final : public sdk::Storage {
 public:
  UringStorage(const pmoe_host* host, const sdk::Options& o)
      : host_(host),
        direct_io_(o.get_bool("direct_io", false)),
        fallback_(o.get_bool("direct_io_fallback", true)),
        idle_prefetch_(o.get_bool("idle_prefetch", true)) {
    const long long qd = o.get_int("queue_depth", 64);
    if (qd < 1 || qd > 4096)
      fail(PMOE_ERR_INVALID_ARGUMENT, 0,
           strf("option 'queue_depth' must be 1..4096, got %lld", qd));
    depth_ = static_cast<uint32_t>(qd);
    // A quarter of the ring (at least one entry) is kept for demand reads.
    spec_limit_ = depth_ > 1 ? depth_ - std::max<uint32_t>(1, depth_ / 4) : 1;
    sqpoll_ = o.get_bool("sqpoll", false);
    setup_ring();
    try {
      register_files();
      reaper_ = std::thread([this] { reap(); });
    } catch (...) {
      io_uring_queue_exit(&ring_);
      throw;
    }
  }

  ~UringStorage() override {
    {
      std::lock_guard lk(mu_);
      stop_ = true;
      io_uring_sqe* sqe = get_sqe();  // wakes the reaper if it waits with nothing in flight
      io_uring_prep_nop(sqe);
      io_uring_sqe_set_data(sqe, nullptr);
      flush();
    }
    reaper_.join();  // returns once every accepted read was delivered
    // Files the host forgot to close.
    for (UringFile* f : files_) release(f);
    io_uring_queue_exit(&ring_);
  }

  void* open(const char* path, uint32_t flags, uint64_t& size) override {
    auto f = std::make_unique<UringFile>();  // closes the file if anything below throws
    sdk::posix::open_file(*f, path, direct_io_ || (flags & PMOE_OPEN_DIRECT), fallback_, host_,
                          kSource);
    {
      std::lock_guard lk(mu_);
      files_.insert(f.get());
    }
    take_slot(*f);  // registered file: saves the kernel a file lookup per read
    size = f->size;
    return f.release();
  }

  void close(void* file) noexcept override {
    auto* f = static_cast<UringFile*>(file);
    if (!f) return;
    {
      std::unique_lock lk(mu_);
      files_.erase(f);  // later submits naming it are rejected
      idle_.wait(lk, [&] { return f->pending == 0; });
    }
    release(f);
  }

  void set_callback(pmoe_read_callback cb, void* ctx) override {
    std::lock_guard lk(mu_);
    cb_ = cb;
    cb_ctx_ = ctx;
  }

  void submit(std::span<const pmoe_read_req> reqs) override {
    if (reqs.empty()) return;
    if (!reqs.data()) fail(PMOE_ERR_INVALID_ARGUMENT, 0, "submit: NULL request array");
    std::lock_guard lk(mu_);
    for (size_t i = 0; i < reqs.size(); ++i) validate(reqs[i], i);  // all or nothing
    std::vector<std::unique_ptr<Request>> batch;  // planned before any is queued (may throw)
    batch.reserve(reqs.size());
    for (const pmoe_read_req& r : reqs) batch.push_back(plan(r));
    for (auto& r : batch) {
      ++as_file(r->req.file)->pending;
      ++requests_;
      queue_.push(r.release());
    }
    if (pump()) flush();  // one io_uring_submit for the whole batch
  }

  size_t poll(pmoe_read_done* out, size_t max, size_t min_done, int64_t timeout_ns) override {
    std::unique_lock lk(mu_);
    return sdk::take_completions(lk, done_cv_, done_, out, max, min_done, timeout_ns);
  }

  uint32_t direct_alignment(void* file) override {
    return file ? static_cast<UringFile*>(file)->align : 1;
  }

 private:
  struct Later {  // priority_queue keeps the "largest" on top: make that the lowest priority value
    bool operator()(const Request* a, const Request* b) const {
      return a->req.priority != b->req.priority ? a->req.priority > b->req.priority
                                                : a->seq > b->seq;
    }
  };
  void setup_ring() {
    // One entry more than the reads in flight: the wake-up NOP of destroy.
    const unsigned entries = depth_ + 1;
    auto init = [&](unsigned flags) {
      io_uring_params p{};
      p.flags = flags;
      if (flags & IORING_SETUP_SQPOLL) p.sq_thread_idle = 50;  // ms the poller spins when idle
      return io_uring_queue_init_params(entries, &ring_, &p);
    };
    const unsigned base = sqpoll_ ? IORING_SETUP_SQPOLL : 0;
    int r = init(base | IORING_SETUP_SUBMIT_ALL);  // don't stop a batch at a bad SQE (5.18+)
    if (r == -EINVAL) r = init(base);
    if (r < 0 && sqpoll_) {
      io_uring probe;  // tell "SQPOLL refused" from "no io_uring at all"
      if (io_uring_queue_init(2, &probe, 0) == 0) {
        io_uring_queue_exit(&probe);
        fail(r == -EPERM ? PMOE_ERR_PERMISSION : PMOE_ERR_NOT_SUPPORTED, -r,
             strf("option 'sqpoll': the kernel refused an SQPOLL ring (%s); set sqpoll: false",
                  std::strerror(-r)));
      }
    }
    if (r == -ENOSYS || r == -EPERM)  // no kernel support, io_uring_disabled, seccomp
      fail(PMOE_ERR_NOT_SUPPORTED, -r,
           strf("io_uring is not available on this system (%s): use storage-posix",
                std::strerror(-r)));
    if (r < 0)
      fail(r == -ENOMEM ? PMOE_ERR_OUT_OF_MEMORY : PMOE_ERR_IO, -r,
           strf("cannot set up io_uring with queue_depth %u: %s", depth_, std::strerror(-r)));
    io_uring_probe* probe = io_uring_get_probe_ring(&ring_);  // NULL before Linux 5.6
    const bool has_read = probe && io_uring_opcode_supported(probe, IORING_OP_READ);
    if (probe) io_uring_free_probe(probe);
    if (!has_read) {
      io_uring_queue_exit(&ring_);
      fail(PMOE_ERR_NOT_SUPPORTED, ENOSYS,
           "io_uring on this kernel lacks IORING_OP_READ (Linux 5.6+): use storage-posix");
    }
  }

  void register_files() {
    std::vector<int> empty(kFileSlots, -1);  // sparse table, filled by open()
    if (io_uring_register_files(&ring_, empty.data(), kFileSlots) != 0) return;  // plain fds
    for (unsigned i = kFileSlots; i-- > 0;) free_slots_.push_back(static_cast<int>(i));
  }

  void take_slot(UringFile& f) {
    int slot = -1;
    {
      std::lock_guard lk(mu_);
      if (free_slots_.empty()) return;
      slot = free_slots_.back();
      free_slots_.pop_back();
    }
    if (io_uring_register_files_update(&ring_, static_cast<unsigned>(slot), &f.fd, 1) == 1) {
      f.slot = slot;
      return;
    }
    std::lock_guard lk(mu_);
    free_slots_.push_back(slot);
  }

  void release(UringFile* f) {
    if (f->slot >= 0) {
      int none = -1;
      io_uring_register_files_update(&ring_, static_cast<unsigned>(f->slot), &none, 1);
      std::lock_guard lk(mu_);
      free_slots_.push_back(f->slot);
    }
    delete f;  // closes the descriptor
  }

  void validate(const pmoe_read_req& r, size_t i) const {  // caller holds mu_
    UringFile* f = as_file(r.file);
    sdk::posix::check_request(r, i, files_.count(f) ? f : nullptr);
  }

  // Splits a read into segments, exactly as storage-posix splits its preads (both use
  // sdk::posix::split_read): buffered and fully aligned reads go straight to dest; with O_DIRECT,
  // a dest as misaligned as the offset gets its whole blocks straight and only head and tail
  // bounced; anything else is bounced in chunks. Straight pieces are cut at kMaxIo per SQE.
  std::unique_ptr<Request> plan(const pmoe_read_req& rq) {
    auto r = std::make_unique<Request>();
    r->req = rq;
    r->seq = seq_++;
    const UringFile& f = *as_file(rq.file);
    const uint64_t a = f.align, off = rq.offset, len = rq.length;
    char* dst = static_cast<char*>(rq.dest);
    auto piece = [&](const sdk::posix::ReadPiece& p) {
      if (p.bounce) {
        r->segs.push_back({.off = p.off,
                           .want = p.len,
                           .dst = p.dst,
                           .copy_off = p.copy_off,
                           .copy_len = p.copy_len});
        return true;
      }
      for (uint64_t done = 0; done < p.len; done += kMaxIo)
        r->segs.push_back(
            {.off = p.off + done, .want = std::min(p.len - done, kMaxIo), .buf = p.dst + done});
      return true;
    };
    if (len == 0)
      r->segs.push_back({});  // a NOP, so the completion still comes from the reaper
    else
      sdk::posix::split_read(a, off, len, dst, std::max(kBounceSize, a), piece);
    for (Segment& s : r->segs) s.req = r.get();
    r->left = r->segs.size();
    return r;
  }

  io_uring_sqe* get_sqe() {  // caller holds mu_
    io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
    if (!sqe) {  // only if an earlier io_uring_submit left entries behind
      io_uring_submit(&ring_);
      sqe = io_uring_get_sqe(&ring_);
    }
    if (!sqe) throw std::runtime_error("io_uring submission queue full");  // a bug
    return sqe;
  }

  // Puts segment `s` (new or to continue after a short read) into the ring. Caller holds mu_.
  void issue(Segment& s) {
    const UringFile& f = *as_file(s.req->req.file);
    io_uring_sqe* sqe = get_sqe();
    if (s.dst && !s.buf && !s.err) {
      try {
        s.buf = bounce_.take(s.want, std::max<uint64_t>(f.align, kPoolAlign));
      } catch (const std::bad_alloc&) {
        s.err = ENOMEM;  // completes through the NOP below
      }
    }
    if (s.want == 0 || s.err) {
      io_uring_prep_nop(sqe);
    } else {
      io_uring_prep_read(sqe, f.slot >= 0 ? f.slot : f.fd, s.buf + s.got,
                         static_cast<unsigned>(s.want - s.got), s.off + s.got);
      if (f.slot >= 0) sqe->flags |= IOSQE_FIXED_FILE;
      // An elevator (mq-deadline, bfq) would otherwise sort a demand read in among the
      // speculative ones by sector; the idle class makes it dispatch demand reads first.
      if (idle_prefetch_ && s.req->req.priority != 0) sqe->ioprio = kIdleIoprio;
    }
    s.by_reaper = t_reaper_of == this;
    io_uring_sqe_set_data(sqe, &s);
    ++inflight_;
    spec_inflight_ += s.req->req.priority != 0;
  }

  // Moves queued segments into the ring while there is room: demand reads up to queue_depth,
  // speculative ones up to spec_limit_. Returns whether it prepared any. Caller holds mu_.
  bool pump() {
    bool any = false;
    while (!queue_.empty() && inflight_ < depth_) {
      Request* r = queue_.top();
      if (r->req.priority != 0 && spec_inflight_ >= spec_limit_) break;  // all below are too
      issue(r->segs[r->next++]);
      if (r->next == r->segs.size()) queue_.pop();
      any = true;
    }
    return any;
  }

  void flush() {  // io_uring_submit what was prepared; caller holds mu_
    for (unsigned tries = 0;;) {
      const int r = io_uring_submit(&ring_);
      if (r == -EINTR || ((r == -EAGAIN || r == -EBUSY) && ++tries < 1000)) continue;
      if (r < 0) {  // left in the SQ ring: the next io_uring_submit takes them along
        sdk::log(host_, PMOE_LOG_ERROR, kSource,
                 strf("io_uring_submit failed: %s", std::strerror(-r)));
        return;
      }
      // Without SQPOLL the kernel takes every entry unless it runs short of memory.
      if (sqpoll_ || io_uring_sq_ready(&ring_) == 0 || ++tries >= 1000) return;
    }
  }

  // What a finished segment means for its request; runs on the reaper without the lock.
  void finish(Segment& s) {
    const uint64_t want = s.dst ? s.copy_len : s.want;
    if (s.dst && s.buf) {
      const uint64_t arrived = std::min(s.off + s.got, s.copy_off + s.copy_len);
      if (arrived > s.copy_off) {
        std::memcpy(s.dst, s.buf + (s.copy_off - s.off), arrived - s.copy_off);
        s.placed = arrived - s.copy_off;
      }
    } else {
      s.placed = std::min(s.got, want);
    }
  }

  pmoe_read_done result(const Request& r) {
    pmoe_read_done d{r.req.user_data, PMOE_OK, 0, 0};
    for (const Segment& s : r.segs) {  // like one pread loop: stop at the first gap
      d.bytes += s.placed;
      if (s.err) {
        d.status = sdk::posix::read_status(s.err);
        d.sys_errno = s.err;
        return d;
      }
      if (!s.complete()) break;
    }
    if (d.bytes == r.req.length) return d;
    // The file shrank after open (submit already checked the size known then).
    sdk::posix::log_read_past_end(host_, kSource, *as_file(r.req.file), r.req.offset,
                                  r.req.length);
    d.status = PMOE_ERR_OUT_OF_RANGE;
    return d;
  }

  // The completion thread.
  void reap() {
    sigset_t all;
    ::sigfillset(&all);
    ::pthread_sigmask(SIG_BLOCK, &all, nullptr);  // host signal handlers run on host threads
    t_reaper_of = this;
    struct Cqe {
      Segment* seg;
      int res;
    };
    std::vector<Cqe> cqes;
    std::vector<Segment*> finished;
    std::vector<Request*> ended;
    std::vector<pmoe_read_done> done;
    for (;;) {
      io_uring_cqe* cqe = nullptr;
      const int w = io_uring_wait_cqe(&ring_, &cqe);
      if (w < 0) {
        if (w != -EINTR && w != -EAGAIN)
          sdk::log(host_, PMOE_LOG_ERROR, kSource,
                   strf("io_uring_wait_cqe failed: %s", std::strerror(-w)));
        continue;
      }
      io_uring_cqe* batch[64];
      const unsigned n = io_uring_peek_batch_cqe(&ring_, batch, 64);
      cqes.clear();
      for (unsigned i = 0; i < n; ++i)
        cqes.push_back({static_cast<Segment*>(io_uring_cqe_get_data(batch[i])), batch[i]->res});
      io_uring_cq_advance(&ring_, n);

      // 1. Account, retry what needs it and refill the ring, under the lock (which also orders
      //    this thread after the one that filled in the segment).
      finished.clear();
      {
        std::lock_guard lk(mu_);
        for (const Cqe& c : cqes) {
          Segment* s = c.seg;
          if (!s) continue;  // destroy's wake-up
          --inflight_;
          spec_inflight_ -= s->req->req.priority != 0;
          if (!outcome(*s, c.res)) {
            issue(*s);  // the rest of a short read, or an interrupted one again
            continue;
          }
          finished.push_back(s);
        }
        if (pump() || io_uring_sq_ready(&ring_) > 0) flush();
      }

      // 2. Copy bounce buffers out and build completions, without the lock.
      ended.clear();
      done.clear();
      for (Segment* s : finished) {
        finish(*s);
        if (--s->req->left == 0) {
          ended.push_back(s->req);
          done.push_back(result(*s->req));
        }
      }

      // 3. Deliver.
      pmoe_read_callback cb = nullptr;
      void* ctx = nullptr;
      bool quit = false;
      {
        std::lock_guard lk(mu_);
        for (Segment* s : finished)
          if (s->buf && s->dst)
            bounce_.give(s->buf, s->want,
                         std::max<uint64_t>(as_file(s->req->req.file)->align, kPoolAlign));
        if (cb_) {
          cb = cb_;
          ctx = cb_ctx_;
        } else {
          done_.insert(done_.end(), done.begin(), done.end());
          if (!done.empty()) done_cv_.notify_all();
          quit = delivered(ended);
        }
      }
      if (cb) {
        for (const pmoe_read_done& d : done) cb(ctx, &d);  // outside the lock: it may submit
        std::lock_guard lk(mu_);
        quit = delivered(ended);
      }
      for (Request* r : ended) delete r;
      if (quit) return;
    }
  }

  // Applies a CQE's result to its segment; false when the segment goes back into the ring.
  bool outcome(Segment& s, int res) const {
    if (s.err || s.want == 0) return true;  // NOP of a zero-length read or a failed allocation
    // A host thread that exits takes the reads it submitted and the kernel had not started with
    // it: they fail with ECANCELED, or EFAULT when retried without its memory map (6.x). The
    // completion thread, which lives as long as the instance, submits them again.
    const bool orphaned = (res == -ECANCELED || res == -EFAULT) && !s.by_reaper;
    if (orphaned || res == -EINTR || res == -EAGAIN || res == -ECANCELED) {
      if (++s.retries <= kMaxRetries) return false;
      s.err = -res;
      return true;
    }
    if (res < 0) {
      s.err = -res;
      return true;
    }
    s.retries = 0;
    s.got += static_cast<uint64_t>(res);
    if (s.got == s.want || res == 0) return true;  // done, or end of file
    // With O_DIRECT an unaligned count can only mean EOF (reading on would fail with EINVAL).
    return s.got % as_file(s.req->req.file)->align != 0;
  }

  // Completions of `ended` were delivered: close() may return for their files. Returns whether
  // the reaper is done (destroy waits and nothing is left). Caller holds mu_.
  bool delivered(const std::vector<Request*>& ended) {
    for (Request* r : ended) {
      if (--as_file(r->req.file)->pending == 0) idle_.notify_all();
      --requests_;
    }
    return stop_ && requests_ == 0;
  }

  const pmoe_host* host_;
  const bool direct_io_, fallback_, idle_prefetch_;
  bool sqpoll_ = false;
  uint32_t depth_ = 64;
  uint32_t spec_limit_ = 1;  // ring entries speculative reads may hold at once
  io_uring ring_{};
  std::thread reaper_;

  std::mutex mu_;  // guards everything below and the submission side of ring_
  std::condition_variable done_cv_, idle_;
  std::priority_queue<Request*, std::vector<Request*>, Later> queue_;
  std::deque<pmoe_read_done> done_;
  std::unordered_set<UringFile*> files_;
  std::vector<int> free_slots_;
  BouncePool bounce_;
  pmoe_read_callback cb_ = nullptr;
  void* cb_ctx_ = nullptr;
  uint64_t seq_ = 0;
  uint64_t requests_ = 0;  // accepted and not yet delivered
  uint32_t inflight_ = 0, spec_inflight_ = 0;
  bool stop_ = false;
};

}  // namespace
}  // namespace pmoe

PMOE_PLUGIN("storage-uring", "0.1.0",
            pmoe::sdk::storage_impl<pmoe::UringStorage>(
                "storage-uring", "asynchronous reads through io_uring, optional O_DIRECT"))
