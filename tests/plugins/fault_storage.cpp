// Test-only storage plugin that injects faults, loaded through the same ABI as real ones.
// Reads are served by one worker thread with pread; options choose the fault:
//   fault: none | eio | eio_once | short | slow | zeros   fail_every: N (every Nth read, 1-based)
//   (zeros: the read succeeds but delivers zero bytes of data: silent corruption)
//   delay_ms: how long a `slow` read takes
#include <pocketmoe/cpp/plugin.hpp>

#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <set>
#include <thread>

namespace {

using pmoe::sdk::StatusError;

class FaultStorage final : public pmoe::sdk::Storage {
 public:
  FaultStorage(const pmoe_host*, const pmoe::sdk::Options& o)
      : fault_(o.get_string("fault", "none")),
        every_(std::max<long long>(1, o.get_int("fail_every", 1))),
        delay_ms_(o.get_int("delay_ms", 2000)) {
    worker_ = std::thread([this] { run(); });
  }
  ~FaultStorage() override {
    {
      std::lock_guard l(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    worker_.join();
  }
  void* open(const char* path, uint32_t, uint64_t& size) override {
    const int fd = ::open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) throw StatusError(PMOE_ERR_NOT_FOUND, std::string("cannot open '") + path + "'", errno);
    size = uint64_t(lseek(fd, 0, SEEK_END));
    return reinterpret_cast<void*>(intptr_t(fd) + 1);
  }
  void close(void* f) noexcept override { ::close(int(reinterpret_cast<intptr_t>(f) - 1)); }
  void set_callback(pmoe_read_callback cb, void* ctx) override {
    std::lock_guard l(mu_);
    cb_ = cb, ctx_ = ctx;
  }
  void submit(std::span<const pmoe_read_req> reqs) override {
    {
      std::lock_guard l(mu_);
      queue_.insert(queue_.end(), reqs.begin(), reqs.end());
    }
    cv_.notify_all();
  }
  size_t poll(pmoe_read_done* out, size_t max, size_t min_done, int64_t timeout_ns) override {
    std::unique_lock l(mu_);
    cv_.wait_for(l, std::chrono::nanoseconds(timeout_ns < 0 ? INT64_MAX / 2 : timeout_ns),
                 [&] { return done_.size() >= min_done; });
    size_t n = 0;
    for (; n < max && !done_.empty(); ++n) out[n] = done_.front(), done_.pop_front();
    return n;
  }

 private:
  void run() {
    for (;;) {
      std::unique_lock l(mu_);
      cv_.wait(l, [&] { return stop_ || !queue_.empty(); });
      if (stop_ && queue_.empty()) return;
      const pmoe_read_req r = queue_.front();
      queue_.pop_front();
      const bool hit = ++count_ % every_ == 0;
      const bool first_time = seen_.insert(r.offset).second;
      l.unlock();
      pmoe_read_done d{r.user_data, PMOE_OK, 0, 0};
      const int fd = int(reinterpret_cast<intptr_t>(r.file) - 1);
      if (hit && fault_ == "slow") std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms_));
      if (hit && (fault_ == "eio" || (fault_ == "eio_once" && first_time))) {
        d.status = PMOE_ERR_IO, d.sys_errno = EIO;
      } else {
        const uint64_t want = hit && fault_ == "short" ? r.length / 2 : r.length;
        const ssize_t got = pread(fd, r.dest, want, off_t(r.offset));
        if (got < 0) d.status = PMOE_ERR_IO, d.sys_errno = errno;
        else d.bytes = uint64_t(got);
        if (hit && fault_ == "zeros") std::memset(r.dest, 0, r.length);
      }
      l.lock();
      if (cb_) {
        auto cb = cb_;
        void* ctx = ctx_;
        l.unlock();
        cb(ctx, &d);
      } else {
        done_.push_back(d);
        l.unlock();
        cv_.notify_all();
      }
    }
  }

  std::string fault_;
  long long every_, delay_ms_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<pmoe_read_req> queue_;
  std::deque<pmoe_read_done> done_;
  std::set<uint64_t> seen_;
  uint64_t count_ = 0;
  pmoe_read_callback cb_ = nullptr;
  void* ctx_ = nullptr;
  bool stop_ = false;
  std::thread worker_;
};

}  // namespace

PMOE_PLUGIN("fault-storage", "0.1.0",
            pmoe::sdk::storage_impl<FaultStorage>("fault-storage", "test-only: injects I/O faults"))
