#pragma once
// What every plugin instance the runtime owns shares: the implementation's name, its C table and
// the instance handle, created from a loaded implementation with the config's options and
// destroyed with its owner. The kinds' classes (StorageBackend, CachePolicyInstance,
// ComputeBackend) add their calls on top.
#include <pocketmoe/abi.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/error.hpp"
#include "plugin/registry.hpp"

namespace pmoe {

using OptionList = std::vector<std::pair<std::string, std::string>>;

/// pmoe_options view of an OptionList; borrows the strings, so keep the list alive.
class AbiOptions {
 public:
  explicit AbiOptions(const OptionList& opts);
  const pmoe_options* get() const { return &view_; }

 private:
  std::vector<pmoe_option> items_;
  pmoe_options view_{};
};

/// Throws pmoe::Error("<what> (<status>): <plugin message>").
[[noreturn]] void throw_plugin_error(std::string_view what, pmoe_status status, const pmoe_error& err);
/// Throws unless `impl` is a `kind` implementation.
void require_kind(const LoadedImpl& impl, uint32_t kind);
/// How a failed create is reported: "<who>: create failed (<status>): <plugin message>".
[[noreturn]] void throw_create_failed(const std::string& who, pmoe_status status, const pmoe_error& err);

template <class Vtable, class Handle>
class PluginInstance {
 public:
  ~PluginInstance() {
    if (handle_) vt_->destroy(handle_);
  }
  PluginInstance(PluginInstance&& o) noexcept
      : name_(std::move(o.name_)), label_(o.label_), vt_(o.vt_), handle_(std::exchange(o.handle_, nullptr)) {}
  PluginInstance& operator=(PluginInstance&&) = delete;
  PluginInstance(const PluginInstance&) = delete;

  const std::string& name() const { return name_; }
  const Vtable* vtable() const { return vt_; }
  Handle* handle() const { return handle_; }

 protected:
  using CreateFailed = void (*)(const std::string& who, pmoe_status status, const pmoe_error& err);

  /// Creates the instance with vtable->create(host, options, extra..., &handle, &err). `label`
  /// names the kind in errors ("storage" -> "storage 'NAME': ..."); `failed` throws for a failed
  /// create in the kind's own words.
  template <class... Extra>
  PluginInstance(const char* label, uint32_t kind, const LoadedImpl& impl, const OptionList& options,
                 const pmoe_host* host, CreateFailed failed, const Extra*... extra)
      : name_(impl.impl->name), label_(label), vt_(static_cast<const Vtable*>(impl.vtable)) {
    require_kind(impl, kind);
    AbiOptions opts(options);
    pmoe_error err;
    pmoe_error_clear(&err);
    const pmoe_status st = vt_->create(host, opts.get(), extra..., &handle_, &err);
    if (st != PMOE_OK) failed(who(), st, err);
    if (!handle_) throw Error(who() + ": create returned OK but no instance");
  }

  /// How errors name the instance: "<label> '<name>'".
  std::string who() const { return std::string(label_) + " '" + name_ + "'"; }

  std::string name_;
  const char* label_;
  const Vtable* vt_;
  Handle* handle_ = nullptr;
};

/// Loads the config's choice from `reg`, checks its options and creates the instance.
template <class Instance, class... Extra>
Instance create_instance(PluginRegistry& reg, const PluginChoice& choice, uint32_t kind, const Extra&... extra) {
  const OptionList opts = reg.check_options(choice, kind);
  return Instance(reg.load(choice.name, kind), opts, reg.host(), extra...);
}

}  // namespace pmoe
