#pragma once
// Host-side handle of a compute backend instance: owns it through its C table and turns status
// codes into pmoe::Error (set-up paths) with the plugin's own message. Members a plugin lacks
// (it was built for an older ABI) get the fallbacks the ABI documents, so callers never check.
#include <pocketmoe/compute.h>

#include <span>
#include <string>

#include "plugin/plugin_instance.hpp"

namespace pmoe {

class ComputeBackend : public PluginInstance<pmoe_compute_vtable, pmoe_compute> {
 public:
  /// The ABI minor the plugin was built for (impl.abi_minor) decides the fallbacks it gets.
  ComputeBackend(const LoadedImpl& impl, const OptionList& options, const pmoe_host* host);
  static ComputeBackend create(PluginRegistry& reg, const PluginChoice& choice) {
    return create_instance<ComputeBackend>(reg, choice, PMOE_KIND_COMPUTE);
  }

  pmoe_buffer* alloc(uint64_t size, uint32_t flags);
  /// Adopt host memory without a copy; nullptr when the backend cannot.
  pmoe_buffer* wrap(void* ptr, uint64_t size, uint32_t flags);
  void free(pmoe_buffer* b) noexcept;
  void* host_ptr(pmoe_buffer* b) noexcept;
  void write(pmoe_buffer* b, uint64_t offset, const void* src, uint64_t size);
  void read(pmoe_buffer* b, uint64_t offset, void* dst, uint64_t size);
  void execute(std::span<const pmoe_op> ops);
  void sync();

  /// The device (a plugin without get_props: a CPU with unified memory).
  const pmoe_compute_props& props() const { return props_; }
  /// Empty if the backend can run `op` (buffers may be null), else why not.
  std::string unsupported(const pmoe_op& op);
  /// Start `ops`; the ticket completes in order with earlier ones.
  uint64_t submit(std::span<const pmoe_op> ops);
  /// Block until `ticket` is complete (its results readable).
  void wait(uint64_t ticket);
  /// True if `ticket` is complete, without blocking.
  bool done(uint64_t ticket);
  /// The host wrote [offset, offset + size) through host_ptr: make it visible to the device.
  void flush(pmoe_buffer* b, uint64_t offset, uint64_t size);

  /// Host time spent inside submit (recording and queueing; all of the work for a backend that
  /// computes as it is submitted, like the CPU) and inside blocking waits, since creation.
  struct Times {
    double submit_seconds = 0, wait_seconds = 0;
    uint64_t submits = 0, waits = 0;
  };
  const Times& times() const { return times_; }

 private:
  [[noreturn]] void fail(const char* what, const pmoe_error& err) const;
  uint32_t abi_minor_;
  pmoe_compute_props props_{};
  uint64_t fallback_tickets_ = 0;
  Times times_;  // a plugin without submit: execute + sync, complete at once
};

}  // namespace pmoe
