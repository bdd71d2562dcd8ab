#include "plugin/instances.hpp"

#include "common/error.hpp"

namespace pmoe {

StorageBackend::StorageBackend(const LoadedImpl& impl, const OptionList& options, const pmoe_host* host)
    : PluginInstance("storage", PMOE_KIND_STORAGE, impl, options, host, &throw_create_failed) {}

StorageBackend::OpenFile StorageBackend::open(const std::string& path, uint32_t flags) {
  OpenFile f;
  pmoe_error err;
  pmoe_error_clear(&err);
  pmoe_status st = vt_->open(handle_, path.c_str(), flags, &f.file, &f.size, &err);
  if (st != PMOE_OK) throw_plugin_error(who() + ": open " + path, st, err);
  return f;
}

void StorageBackend::close(pmoe_file* f) { vt_->close(handle_, f); }

void StorageBackend::set_callback(pmoe_read_callback cb, void* ctx) {
  pmoe_error err;
  pmoe_error_clear(&err);
  pmoe_status st = vt_->set_callback(handle_, cb, ctx, &err);
  if (st != PMOE_OK) throw_plugin_error(who() + ": set_callback", st, err);
}

PluginStatus StorageBackend::submit(std::span<const pmoe_read_req> reqs) {
  pmoe_error err;
  pmoe_error_clear(&err);
  pmoe_status st = vt_->submit(handle_, reqs.data(), reqs.size(), &err);
  if (st == PMOE_OK) return {};
  return {st, err.message};
}

size_t StorageBackend::poll(std::span<pmoe_read_done> out, size_t min_done, int64_t timeout_ns) {
  return vt_->poll(handle_, out.data(), out.size(), min_done, timeout_ns);
}

uint32_t StorageBackend::direct_alignment(pmoe_file* f) { return vt_->direct_alignment(handle_, f); }

// --- cache policy ---

CachePolicyInstance::CachePolicyInstance(const LoadedImpl& impl, const OptionList& options,
                                         const pmoe_host* host, const pmoe_cache_shape& shape)
    : PluginInstance("cache policy", PMOE_KIND_CACHE_POLICY, impl, options, host, &throw_create_failed, &shape),
      has_routing_(PMOE_HAS_MEMBER(pmoe_cache_policy_vtable, vt_, on_routing)) {}

}  // namespace pmoe
