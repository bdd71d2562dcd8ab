#include "plugin/compute_backend.hpp"

#include "common/error.hpp"

#include <chrono>

#include <cstdio>

namespace pmoe {

namespace {
/// Compute's set-up errors read "compute backend 'NAME': <what>: <message> [<status>]".
[[noreturn]] void throw_compute_error(const std::string& who, const char* what, const pmoe_error& err) {
  throw Error(who + ": " + what + ": " + err.message + " [" + pmoe_status_name(err.code) + "]");
}
}  // namespace

ComputeBackend::ComputeBackend(const LoadedImpl& impl, const OptionList& options, const pmoe_host* host)
    : PluginInstance("compute backend", PMOE_KIND_COMPUTE, impl, options, host,
                     [](const std::string& who, pmoe_status, const pmoe_error& err) { throw_compute_error(who, "create", err); }),
      abi_minor_(impl.abi_minor) {
  props_.struct_size = sizeof props_;
  props_.device_type = PMOE_DEVICE_CPU;
  props_.unified_memory = 1;
  std::snprintf(props_.name, sizeof props_.name, "%s", name_.c_str());
  pmoe_error err{};
  if (PMOE_HAS_MEMBER(pmoe_compute_vtable, vt_, get_props) && vt_->get_props(handle_, &props_, &err) != PMOE_OK)
    throw Error(who() + ": get_props: " + err.message);  // (the base destroys the instance)
}

void ComputeBackend::fail(const char* what, const pmoe_error& err) const { throw_compute_error(who(), what, err); }

pmoe_buffer* ComputeBackend::alloc(uint64_t size, uint32_t flags) {
  pmoe_buffer* b = nullptr;
  pmoe_error err{};
  if (vt_->buffer_alloc(handle_, size, flags, &b, &err) != PMOE_OK) fail("buffer_alloc", err);
  return b;
}

pmoe_buffer* ComputeBackend::wrap(void* ptr, uint64_t size, uint32_t flags) {
  if (!PMOE_HAS_MEMBER(pmoe_compute_vtable, vt_, buffer_wrap)) return nullptr;
  pmoe_buffer* b = nullptr;
  pmoe_error err{};
  const pmoe_status s = vt_->buffer_wrap(handle_, ptr, size, flags, &b, &err);
  if (s == PMOE_ERR_NOT_SUPPORTED) return nullptr;
  if (s != PMOE_OK) fail("buffer_wrap", err);
  return b;
}

void ComputeBackend::free(pmoe_buffer* b) noexcept {
  if (b) vt_->buffer_free(handle_, b);
}

void* ComputeBackend::host_ptr(pmoe_buffer* b) noexcept { return vt_->buffer_host_ptr(handle_, b); }

void ComputeBackend::write(pmoe_buffer* b, uint64_t offset, const void* src, uint64_t size) {
  pmoe_error err{};
  if (vt_->buffer_write(handle_, b, offset, src, size, &err) != PMOE_OK) fail("buffer_write", err);
}

void ComputeBackend::read(pmoe_buffer* b, uint64_t offset, void* dst, uint64_t size) {
  pmoe_error err{};
  if (vt_->buffer_read(handle_, b, offset, dst, size, &err) != PMOE_OK) fail("buffer_read", err);
}

void ComputeBackend::execute(std::span<const pmoe_op> ops) {
  pmoe_error err{};
  if (vt_->execute(handle_, ops.data(), ops.size(), &err) != PMOE_OK) fail("execute", err);
}

std::string ComputeBackend::unsupported(const pmoe_op& op) {
  // a `down` stored one row per neuron came with ABI 1.3: an older backend would read it as
  // llama.cpp's layout (the same bytes) without a word
  if (op.kind == PMOE_OP_MOE_EXPERT && op.n_src > 2 && pmoe_moe_down_neuron_rows(&op) && abi_minor_ < 3)
    return std::string("built for ABI 1.") + std::to_string(abi_minor_) +
           ", which has no down matrix stored one row per neuron (PowerInfer's --transpose-down; it came with ABI 1.3: "
           "rebuild the plugin against this SDK)";
  if (PMOE_HAS_MEMBER(pmoe_compute_vtable, vt_, supports_op)) {
    pmoe_error err{};
    const pmoe_status s = vt_->supports_op(handle_, &op, &err);
    if (s == PMOE_OK) return {};
    return std::string(err.message[0] ? err.message : "not supported") + " [" + pmoe_status_name(s) + "]";
  }
  // Before ABI 1.2 the ops were fixed; a plugin knows the dtypes of the minor it was built for.
  for (uint32_t i = 0; i < op.n_src; ++i) {
    const uint32_t t = op.src[i].dtype;
    const bool v10 = t == PMOE_DTYPE_F32 || t == PMOE_DTYPE_F16 || t == PMOE_DTYPE_BF16 || t == PMOE_DTYPE_Q8_0 ||
                     t == PMOE_DTYPE_Q4_0 || t == PMOE_DTYPE_I32;
    if (!v10 && abi_minor_ < 1)
      return std::string("built for ABI 1.") + std::to_string(abi_minor_) + ", which has no " + pmoe_dtype_name(t) +
             " (it came with ABI 1.1: rebuild the plugin against this SDK)";
  }
  return {};
}

namespace {
/// Adds the lifetime of the object to `seconds` (and counts it).
struct Timed {
  double& seconds;
  uint64_t& count;
  std::chrono::steady_clock::time_point t0 = std::chrono::steady_clock::now();
  ~Timed() {
    seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    ++count;
  }
};
}  // namespace

uint64_t ComputeBackend::submit(std::span<const pmoe_op> ops) {
  Timed timed{times_.submit_seconds, times_.submits};
  if (!PMOE_HAS_MEMBER(pmoe_compute_vtable, vt_, submit)) {
    execute(ops);
    sync();
    return ++fallback_tickets_;
  }
  pmoe_error err{};
  uint64_t ticket = 0;
  if (vt_->submit(handle_, ops.data(), ops.size(), &ticket, &err) != PMOE_OK) fail("submit", err);
  return ticket;
}

bool ComputeBackend::done(uint64_t ticket) {
  if (!PMOE_HAS_MEMBER(pmoe_compute_vtable, vt_, wait)) return true;  // the fallback synced already
  pmoe_error err{};
  const pmoe_status s = vt_->wait(handle_, ticket, 0, &err);
  if (s == PMOE_ERR_TIMEOUT) return false;
  if (s != PMOE_OK) fail("wait", err);
  return true;
}

void ComputeBackend::wait(uint64_t ticket) {
  if (!PMOE_HAS_MEMBER(pmoe_compute_vtable, vt_, wait)) return;
  Timed timed{times_.wait_seconds, times_.waits};
  pmoe_error err{};
  if (vt_->wait(handle_, ticket, UINT64_MAX, &err) != PMOE_OK) fail("wait", err);
}

void ComputeBackend::flush(pmoe_buffer* b, uint64_t offset, uint64_t size) {
  if (!PMOE_HAS_MEMBER(pmoe_compute_vtable, vt_, buffer_flush_range)) return;
  pmoe_error err{};
  if (vt_->buffer_flush_range(handle_, b, offset, size, &err) != PMOE_OK) fail("buffer_flush_range", err);
}

void ComputeBackend::sync() {
  pmoe_error err{};
  if (vt_->sync(handle_, &err) != PMOE_OK) fail("sync", err);
}

}  // namespace pmoe
