// A plugin whose implementations throw from their constructors: the C++ layer's trampolines must
// turn that into a status and message for the host, never an exception across the ABI.
#include <pocketmoe/cpp/plugin.hpp>

namespace {

class ThrowingPolicy : public pmoe::sdk::CachePolicy {
 public:
  ThrowingPolicy(const pmoe_host*, const pmoe::sdk::Options&, const pmoe_cache_shape&) {
    throw std::runtime_error("boom: test-throwing refuses to start");
  }
  void on_insert(std::span<const uint64_t>) override {}
  void on_access(std::span<const uint64_t>, uint64_t) override {}
  void on_evict(std::span<const uint64_t>) override {}
  size_t victims(uint64_t*, size_t) override { return 0; }
};

class ThrowingStorage : public pmoe::sdk::Storage {
 public:
  ThrowingStorage(const pmoe_host*, const pmoe::sdk::Options&) {
    throw pmoe::sdk::StatusError(PMOE_ERR_PERMISSION, "test-throwing-storage: access denied", 13);
  }
  void* open(const char*, uint32_t, uint64_t&) override { return nullptr; }
  void close(void*) noexcept override {}
  void set_callback(pmoe_read_callback, void*) override {}
  void submit(std::span<const pmoe_read_req>) override {}
  size_t poll(pmoe_read_done*, size_t, size_t, int64_t) override { return 0; }
};

}  // namespace

PMOE_PLUGIN("throws", "0.0.1",
            pmoe::sdk::cache_policy_impl<ThrowingPolicy>("test-throwing", "throws in create"),
            pmoe::sdk::storage_impl<ThrowingStorage>("test-throwing-storage", "throws in create"))
