#include "plugin/instances.hpp"

#include "common/error.hpp"

namespace pmoe {

AbiOptions::AbiOptions(const OptionList& opts) {
  items_.reserve(opts.size());
  for (const auto& [k, v] : opts) items_.push_back({k.c_str(), v.c_str()});
  view_ = {items_.data(), items_.size()};
}

void throw_plugin_error(std::string_view what, pmoe_status status, const pmoe_error& err) {
  throw Error(std::string(what) + " (" + pmoe_status_name(status) + "): " +
              (err.message[0] ? err.message : "no message"));
}

static void require_kind(const LoadedImpl& impl, uint32_t kind) {
  if (impl.impl->kind != kind)
    throw Error("'" + std::string(impl.impl->name) + "' is a " + pmoe_kind_name(impl.impl->kind) +
                " implementation, not " + pmoe_kind_name(kind));
}

// --- storage ---

StorageBackend::StorageBackend(const LoadedImpl& impl, const OptionList& options,
                               const pmoe_host* host)
    : name_(impl.impl->name), vt_(static_cast<const pmoe_storage_vtable*>(impl.vtable)) {
  require_kind(impl, PMOE_KIND_STORAGE);
  AbiOptions opts(options);
  pmoe_error err;
  pmoe_error_clear(&err);
  pmoe_status st = vt_->create(host, opts.get(), &handle_, &err);
  if (st != PMOE_OK) throw_plugin_error("storage '" + name_ + "': create failed", st, err);
  if (!handle_) throw Error("storage '" + name_ + "': create returned OK but no instance");
}

StorageBackend StorageBackend::create(PluginRegistry& reg, const PluginChoice& choice) {
  OptionList opts = reg.check_options(choice, PMOE_KIND_STORAGE);
  return StorageBackend(reg.load(choice.name, PMOE_KIND_STORAGE), opts, reg.host());
}

StorageBackend::~StorageBackend() {
  if (handle_) vt_->destroy(handle_);
}

StorageBackend::StorageBackend(StorageBackend&& o) noexcept
    : name_(std::move(o.name_)), vt_(o.vt_), handle_(std::exchange(o.handle_, nullptr)) {}

StorageBackend::OpenFile StorageBackend::open(const std::string& path, uint32_t flags) {
  OpenFile f;
  pmoe_error err;
  pmoe_error_clear(&err);
  pmoe_status st = vt_->open(handle_, path.c_str(), flags, &f.file, &f.size, &err);
  if (st != PMOE_OK) throw_plugin_error("storage '" + name_ + "': open " + path, st, err);
  return f;
}

void StorageBackend::close(pmoe_file* f) { vt_->close(handle_, f); }

void StorageBackend::set_callback(pmoe_read_callback cb, void* ctx) {
  pmoe_error err;
  pmoe_error_clear(&err);
  pmoe_status st = vt_->set_callback(handle_, cb, ctx, &err);
  if (st != PMOE_OK) throw_plugin_error("storage '" + name_ + "': set_callback", st, err);
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
    : name_(impl.impl->name), vt_(static_cast<const pmoe_cache_policy_vtable*>(impl.vtable)) {
  require_kind(impl, PMOE_KIND_CACHE_POLICY);
  has_routing_ = PMOE_HAS_MEMBER(pmoe_cache_policy_vtable, vt_, on_routing);
  AbiOptions opts(options);
  pmoe_error err;
  pmoe_error_clear(&err);
  pmoe_status st = vt_->create(host, opts.get(), &shape, &handle_, &err);
  if (st != PMOE_OK) throw_plugin_error("cache policy '" + name_ + "': create failed", st, err);
  if (!handle_) throw Error("cache policy '" + name_ + "': create returned OK but no instance");
}

CachePolicyInstance CachePolicyInstance::create(PluginRegistry& reg, const PluginChoice& choice,
                                                const pmoe_cache_shape& shape) {
  OptionList opts = reg.check_options(choice, PMOE_KIND_CACHE_POLICY);
  return CachePolicyInstance(reg.load(choice.name, PMOE_KIND_CACHE_POLICY), opts, reg.host(), shape);
}

CachePolicyInstance::~CachePolicyInstance() {
  if (handle_) vt_->destroy(handle_);
}

CachePolicyInstance::CachePolicyInstance(CachePolicyInstance&& o) noexcept
    : name_(std::move(o.name_)),
      vt_(o.vt_),
      handle_(std::exchange(o.handle_, nullptr)),
      has_routing_(o.has_routing_) {}

}  // namespace pmoe
