#include "plugin/plugin_instance.hpp"

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

void throw_create_failed(const std::string& who, pmoe_status status, const pmoe_error& err) {
  throw_plugin_error(who + ": create failed", status, err);
}

void require_kind(const LoadedImpl& impl, uint32_t kind) {
  if (impl.impl->kind != kind)
    throw Error("'" + std::string(impl.impl->name) + "' is a " + pmoe_kind_name(impl.impl->kind) +
                " implementation, not " + pmoe_kind_name(kind));
}

}  // namespace pmoe
