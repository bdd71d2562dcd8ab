#pragma once
// Host-side handle of a compute backend instance: owns it through its C table and turns status
// codes into pmoe::Error (set-up paths) with the plugin's own message.
#include <pocketmoe/compute.h>

#include <span>
#include <string>
#include <utility>
#include <vector>

namespace pmoe {

class ComputeBackend {
 public:
  using OptionList = std::vector<std::pair<std::string, std::string>>;
  ComputeBackend(const pmoe_compute_vtable* vtable, const pmoe_host* host, const OptionList& options,
                 std::string name);
  ~ComputeBackend();
  ComputeBackend(const ComputeBackend&) = delete;
  ComputeBackend& operator=(const ComputeBackend&) = delete;

  const std::string& name() const { return name_; }
  pmoe_buffer* alloc(uint64_t size, uint32_t flags);
  /// Adopt host memory without a copy; nullptr when the backend cannot.
  pmoe_buffer* wrap(void* ptr, uint64_t size, uint32_t flags);
  void free(pmoe_buffer* b) noexcept;
  void* host_ptr(pmoe_buffer* b) noexcept;
  void write(pmoe_buffer* b, uint64_t offset, const void* src, uint64_t size);
  void read(pmoe_buffer* b, uint64_t offset, void* dst, uint64_t size);
  void execute(std::span<const pmoe_op> ops);
  void sync();

 private:
  [[noreturn]] void fail(const char* what, const pmoe_error& err) const;
  const pmoe_compute_vtable* vt_;
  pmoe_compute* handle_ = nullptr;
  std::string name_;
};

}  // namespace pmoe
