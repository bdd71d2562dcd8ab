// A valid test plugin written with the SDK's C++ layer: one cache policy and one storage backend
// in one library, so tests can drive both kinds through the real ABI.
#include <pocketmoe/cpp/plugin.hpp>

#include <algorithm>
#include <deque>
#include <mutex>

namespace {

using pmoe::sdk::StatusError;

// First in, first out (or last in, first out with mode: lifo).
class FifoPolicy : public pmoe::sdk::CachePolicy {
 public:
  FifoPolicy(const pmoe_host* host, const pmoe::sdk::Options& o, const pmoe_cache_shape&)
      : lifo_(o.get_string("mode", "fifo") == "lifo") {
    o.get_int("weight", 3);  // throws if the host passed a non-integer
    pmoe::sdk::log(host, PMOE_LOG_DEBUG, "test-fifo", "created");
  }
  void on_insert(std::span<const uint64_t> keys) override {
    order_.insert(order_.end(), keys.begin(), keys.end());
  }
  void on_access(std::span<const uint64_t>, uint64_t) override {}
  void on_evict(std::span<const uint64_t> keys) override {
    for (uint64_t k : keys) order_.erase(std::remove(order_.begin(), order_.end(), k), order_.end());
  }
  size_t victims(uint64_t* out, size_t max) override {
    size_t n = std::min(max, order_.size());
    if (lifo_)
      std::copy_n(order_.rbegin(), n, out);
    else
      std::copy_n(order_.begin(), n, out);
    return n;
  }

 private:
  bool lifo_;
  std::deque<uint64_t> order_;
};

// Every file has `file_size` bytes; byte i holds (i & 0xff). Reads complete inside submit().
class MemStorage : public pmoe::sdk::Storage {
 public:
  struct File {
    uint64_t size;
  };
  MemStorage(const pmoe_host*, const pmoe::sdk::Options& o)
      : size_(static_cast<uint64_t>(o.get_int("file_size", 1 << 20))) {}
  void* open(const char* path, uint32_t, uint64_t& size) override {
    if (std::string_view(path).find("missing") != std::string_view::npos)
      throw StatusError(PMOE_ERR_NOT_FOUND, std::string("test-memstorage: no such file: ") + path,
                        ENOENT);
    size = size_;
    return new File{size_};
  }
  void close(void* f) noexcept override { delete static_cast<File*>(f); }
  void set_callback(pmoe_read_callback cb, void* ctx) override {
    std::lock_guard lock(mu_);
    cb_ = cb;
    ctx_ = ctx;
  }
  void submit(std::span<const pmoe_read_req> reqs) override {
    for (size_t i = 0; i < reqs.size(); ++i) {
      auto* f = reinterpret_cast<File*>(reqs[i].file);
      if (reqs[i].offset + reqs[i].length > f->size)
        throw StatusError(PMOE_ERR_OUT_OF_RANGE, "test-memstorage: request " + std::to_string(i) +
                                                     " reads past the end of the file");
    }
    for (const auto& r : reqs) {
      auto* d = static_cast<unsigned char*>(r.dest);
      for (uint64_t i = 0; i < r.length; ++i) d[i] = static_cast<unsigned char>((r.offset + i) & 0xff);
      pmoe_read_done done{r.user_data, PMOE_OK, 0, r.length};
      std::lock_guard lock(mu_);
      if (cb_)
        cb_(ctx_, &done);
      else
        done_.push_back(done);
    }
  }
  size_t poll(pmoe_read_done* out, size_t max, size_t, int64_t) override {
    std::lock_guard lock(mu_);
    size_t n = std::min(max, done_.size());
    std::copy_n(done_.begin(), n, out);
    done_.erase(done_.begin(), done_.begin() + static_cast<std::ptrdiff_t>(n));
    return n;
  }
  uint32_t direct_alignment(void*) override { return 1; }

 private:
  uint64_t size_;
  std::mutex mu_;
  pmoe_read_callback cb_ = nullptr;
  void* ctx_ = nullptr;
  std::deque<pmoe_read_done> done_;
};

}  // namespace

PMOE_PLUGIN("test-good", "1.2.3",
            pmoe::sdk::cache_policy_impl<FifoPolicy>("test-fifo", "first in, first out (test)"),
            pmoe::sdk::storage_impl<MemStorage>("test-memstorage", "synthetic byte pattern (test)"))
