#include "engine/session.hpp"

#include "common/error.hpp"

namespace pmoe {

Session::Session(const SessionOptions& o)
    : config_(o.config_path.empty() ? default_config() : load_config(o.config_path)) {
  if (o.threads > 0) {
    auto& opts = config_.compute.options;
    std::erase_if(opts, [](const auto& kv) { return kv.first == "threads"; });
    opts.emplace_back("threads", std::to_string(o.threads));
    config_.compute.option_locs.resize(opts.size() - 1);
    config_.compute.option_locs.push_back(SourceLoc{"--threads", 0, 0});
  }
  registry_ = std::make_unique<PluginRegistry>(config_.plugin_paths);
  registry_->check_config(config_);
  const std::string path = !o.model_path.empty() ? o.model_path : config_.model.value_or("");
  if (path.empty()) throw Error("no model given (use -m MODEL or `model:` in the config)");
  model_ = Model::load(path);
  const LoadedImpl impl = registry_->load(config_.compute.name, PMOE_KIND_COMPUTE);
  compute_ = std::make_unique<ComputeBackend>(
      static_cast<const pmoe_compute_vtable*>(impl.vtable), registry_->host(),
      registry_->check_options(config_.compute, PMOE_KIND_COMPUTE), config_.compute.name);
  engine_ = std::make_unique<Engine>(*model_, *compute_, o.engine);
  if (o.load_tokenizer) {
    try {
      tokenizer_.emplace(Tokenizer::from_gguf(model_->file()));
    } catch (const Error& e) {
      tokenizer_error_ = e.what();
    }
  }
}

Session::~Session() = default;

const Tokenizer& Session::tokenizer() const {
  if (!tokenizer_)
    throw Error(tokenizer_error_.empty() ? "tokenizer not loaded" : tokenizer_error_);
  return *tokenizer_;
}

}  // namespace pmoe
