// hello-storage: the smallest complete pocketmoe storage plugin. submit() reads at once with
// pread() and queues the completions; poll() hands them out, or the callback gets each at once.
#include <pocketmoe/cpp/plugin.hpp>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <numeric>
#include <vector>

using pmoe::sdk::StatusError;

struct HelloFile {
  int fd;
  uint64_t size;
  std::string path;
};

class HelloStorage : public pmoe::sdk::Storage {
 public:
  HelloStorage(const pmoe_host*, const pmoe::sdk::Options&) {}

  // PMOE_OPEN_DIRECT is a request, not a promise: we read through the page cache.
  void* open(const char* path, uint32_t /*flags*/, uint64_t& size) override {
    const int fd = ::open(path, O_RDONLY | O_CLOEXEC);
    struct stat st {};
    if (fd < 0 || ::fstat(fd, &st) != 0) {
      const int e = errno;
      if (fd >= 0) ::close(fd);
      throw StatusError(e == ENOENT   ? PMOE_ERR_NOT_FOUND
                        : e == EACCES ? PMOE_ERR_PERMISSION
                                      : PMOE_ERR_IO,
                        std::string("cannot open '") + path + "': " + std::strerror(e), e);
    }
    size = static_cast<uint64_t>(st.st_size);
    return new HelloFile{fd, size, path};
  }

  void close(void* file) noexcept override {
    ::close(static_cast<HelloFile*>(file)->fd);
    delete static_cast<HelloFile*>(file);
  }

  void set_callback(pmoe_read_callback cb, void* ctx) override {
    std::lock_guard lk(mu_);
    cb_ = cb;
    ctx_ = ctx;
  }

  void submit(std::span<const pmoe_read_req> reqs) override {
    if (!reqs.data() && !reqs.empty())
      throw StatusError(PMOE_ERR_INVALID_ARGUMENT, "NULL requests");
    for (size_t i = 0; i < reqs.size(); ++i) check(reqs[i], i);  // accept all or none
    std::vector<size_t> order(reqs.size());
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(),  // demand reads (priority 0) first
                     [&](size_t a, size_t b) { return reqs[a].priority < reqs[b].priority; });
    for (size_t i : order) complete(read(reqs[i]));
  }

  size_t poll(pmoe_read_done* out, size_t max, size_t min_done, int64_t timeout_ns) override {
    std::unique_lock lk(mu_);
    auto ready = [&] { return done_.size() >= std::min(min_done, max); };
    if (timeout_ns < 0)
      cv_.wait(lk, ready);
    else
      cv_.wait_for(lk, std::chrono::nanoseconds(timeout_ns), ready);
    const size_t n = std::min(max, done_.size());
    std::copy_n(done_.begin(), n, out);
    done_.erase(done_.begin(), done_.begin() + static_cast<std::ptrdiff_t>(n));
    return n;
  }

 private:
  static HelloFile* file(const pmoe_read_req& r) { return reinterpret_cast<HelloFile*>(r.file); }

  static void check(const pmoe_read_req& r, size_t i) {
    auto fail = [&](pmoe_status s, const std::string& why) {
      throw StatusError(s, "request " + std::to_string(i) + ": " + why);
    };
    if (!r.file) fail(PMOE_ERR_INVALID_ARGUMENT, "NULL file");
    if (!r.dest && r.length) fail(PMOE_ERR_INVALID_ARGUMENT, "NULL dest");
    if (r.reserved) fail(PMOE_ERR_INVALID_ARGUMENT, "reserved must be 0");
    if (r.offset + r.length < r.offset)
      fail(PMOE_ERR_INVALID_ARGUMENT, "offset + length overflows");
    if (r.offset + r.length > file(r)->size)
      fail(PMOE_ERR_OUT_OF_RANGE, "read past end of file '" + file(r)->path + "'");
  }

  static pmoe_read_done read(const pmoe_read_req& r) {
    pmoe_read_done d{r.user_data, PMOE_OK, 0, 0};
    while (d.bytes < r.length) {  // retry short reads and EINTR
      const ssize_t n = ::pread(file(r)->fd, static_cast<char*>(r.dest) + d.bytes,
                                r.length - d.bytes, static_cast<off_t>(r.offset + d.bytes));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {  // an error, or the file shrank since open
        d.status = n < 0 ? PMOE_ERR_IO : PMOE_ERR_OUT_OF_RANGE;
        d.sys_errno = n < 0 ? errno : 0;
        break;
      }
      d.bytes += static_cast<uint64_t>(n);
    }
    return d;
  }

  void complete(const pmoe_read_done& d) {
    std::unique_lock lk(mu_);
    if (!cb_) {
      done_.push_back(d);
      cv_.notify_all();
      return;
    }
    const auto cb = cb_;
    void* ctx = ctx_;
    lk.unlock();
    cb(ctx, &d);
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<pmoe_read_done> done_;
  pmoe_read_callback cb_ = nullptr;
  void* ctx_ = nullptr;
};

PMOE_PLUGIN("hello-storage", "0.1.0",
            pmoe::sdk::storage_impl<HelloStorage>(
                "hello-storage", "synchronous pread, the SDK's example storage plugin"))
