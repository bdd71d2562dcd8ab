#include "plugin/compute_backend.hpp"

#include "common/error.hpp"

namespace pmoe {

ComputeBackend::ComputeBackend(const pmoe_compute_vtable* vtable, const pmoe_host* host,
                               const OptionList& options, std::string name)
    : vt_(vtable), name_(std::move(name)) {
  std::vector<pmoe_option> items;
  for (const auto& [k, v] : options) items.push_back({k.c_str(), v.c_str()});
  const pmoe_options opts{items.data(), items.size()};
  pmoe_error err{};
  if (vt_->create(host, &opts, &handle_, &err) != PMOE_OK) fail("create", err);
}

ComputeBackend::~ComputeBackend() {
  if (handle_) vt_->destroy(handle_);
}

void ComputeBackend::fail(const char* what, const pmoe_error& err) const {
  throw Error("compute backend '" + name_ + "': " + what + ": " + err.message + " [" +
              pmoe_status_name(err.code) + "]");
}

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

void ComputeBackend::sync() {
  pmoe_error err{};
  if (vt_->sync(handle_, &err) != PMOE_OK) fail("sync", err);
}

}  // namespace pmoe
