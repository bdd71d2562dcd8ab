#include "engine/session.hpp"

#include "common/error.hpp"
#include "common/format.hpp"
#include "common/procfs.hpp"
#include "experts/lru_policy.hpp"

#include <filesystem>
#include <iostream>

namespace pmoe {

GgufLoad choose_weights_load(Config::WeightsLoad want, bool streamed, bool cpu_device, uint64_t file_size,
                             uint64_t available) {
  if (want != Config::WeightsLoad::automatic) return want == Config::WeightsLoad::read ? GgufLoad::read : GgufLoad::map;
  const bool fits = available > file_size + file_size / 8 + (uint64_t(256) << 20);
  return !streamed && cpu_device && fits ? GgufLoad::read : GgufLoad::map;
}

Session::Session(const SessionOptions& o)
    : config_(o.config_path.empty() ? default_config() : load_config(o.config_path)) {
  if (o.threads > 0) {
    auto& opts = config_.compute.options;
    std::erase_if(opts, [](const auto& kv) { return kv.first == "threads"; });
    opts.emplace_back("threads", std::to_string(o.threads));
    config_.compute.option_locs.resize(opts.size() - 1);
    config_.compute.option_locs.push_back(SourceLoc{"--threads", 0, 0});
  }
  register_lru_policy();
  registry_ = std::make_unique<PluginRegistry>(config_.plugin_paths);
  registry_->check_config(config_);
  const std::string path = !o.model_path.empty() ? o.model_path : config_.model.value_or("");
  if (path.empty()) throw Error("no model given (use -m MODEL or `model:` in the config)");
  compute_ = std::make_unique<ComputeBackend>(ComputeBackend::create(*registry_, config_.compute));
  {
    std::error_code ec;
    const uint64_t size = std::filesystem::file_size(path, ec);
    weights_load_ = choose_weights_load(config_.weights_load, config_.cache_budget > 0,
                                        compute_->props().device_type == PMOE_DEVICE_CPU, ec ? 0 : size,
                                        ec ? 0 : memory_available());
  }
  model_ = Model::load(path, weights_load_);
  EngineOptions eo = o.engine;
  if (eo.ubatch == 0) eo.ubatch = config_.prefill_chunk;  // one chunking in RAM and streamed
  if (config_.cache_budget > 0) {
    eo.experts_streamed = true;
    const Hparams& h = model_->hp();
    storage_ = make_storage();
    // capacity: an upper bound (slots also hold alignment padding)
    const uint64_t capacity = std::min<uint64_t>(uint64_t(h.n_layer) * h.n_expert,
                                                 config_.cache_budget / model_->expert_bytes(0));
    const pmoe_cache_shape shape{sizeof(pmoe_cache_shape), h.n_layer, h.n_expert, h.n_expert_used, capacity};
    // below one token's experts the cache evicts what the same token needs again: every step
    // reads (nearly) all of its experts from storage
    const uint64_t working_set = uint64_t(h.n_layer) * h.n_expert_used * model_->expert_bytes(0);
    if (config_.cache_budget < working_set)
      std::cerr << "warning: cache.budget (" << format_bytes(config_.cache_budget) << ") is below one token's experts ("
                << format_bytes(working_set) << " = " << h.n_layer << " layers x " << h.n_expert_used
                << " experts): the cache will thrash; raise the budget (pocketmoe probe -m MODEL recommends one)\n";
    policy_ = std::make_unique<CachePolicyInstance>(CachePolicyInstance::create(*registry_, config_.cache_policy, shape));
    ExpertCacheOptions co;
    co.budget = config_.cache_budget;
    co.max_retries = config_.read_retries;
    co.read_timeout = std::chrono::milliseconds(config_.read_timeout_ms);
    for (const auto& [k, v] : config_.storage.options)
      if (k == "direct_io") co.direct_io = v == "true";
    cache_ = std::make_unique<ExpertCache>(expert_layout(*model_), *compute_, *storage_, *policy_, co);
  }
  engine_options_ = eo;
  engine_ = make_engine();
  if (o.load_tokenizer) {
    try {
      tokenizer_.emplace(Tokenizer::from_gguf(model_->file()));
    } catch (const Error& e) {
      tokenizer_error_ = e.what();
    }
  }
}

Session::~Session() = default;

std::unique_ptr<Engine> Session::make_engine(uint32_t n_ctx) const {
  EngineOptions eo = engine_options_;
  if (n_ctx) eo.n_ctx = n_ctx;
  auto e = std::make_unique<Engine>(*model_, *compute_, eo);
  if (cache_) e->set_expert_cache(cache_.get(), config_.prefetch_lookahead, config_.pre_attention);
  return e;
}

std::unique_ptr<StorageBackend> Session::make_storage() {
  try {
    return std::make_unique<StorageBackend>(StorageBackend::create(*registry_, config_.storage));
  } catch (const Error& e) {
    if (config_.storage_fallback.empty()) throw;
    // e.g. io_uring refused by the kernel or a seccomp filter: the config names a portable
    // fallback; it gets the options its own manifest knows (direct_io, ...).
    PluginChoice fb;
    fb.name = config_.storage_fallback;
    fb.loc = config_.storage_fallback_loc;
    const ImplManifest* spec = registry_->find(fb.name, PMOE_KIND_STORAGE);
    if (!spec) throw Error(fb.loc.str() + ": storage fallback '" + fb.name + "' is not a known storage plugin");
    for (size_t i = 0; i < config_.storage.options.size(); ++i)
      for (const OptionSpec& o : spec->options)
        if (o.name == config_.storage.options[i].first) {
          fb.options.push_back(config_.storage.options[i]);
          fb.option_locs.push_back(config_.storage.option_locs[i]);
        }
    std::cerr << "warning: storage '" << config_.storage.name << "' is unavailable (" << e.what()
              << "); using fallback '" << fb.name << "'\n";
    return std::make_unique<StorageBackend>(StorageBackend::create(*registry_, fb));
  }
}

const Tokenizer& Session::tokenizer() const {
  if (!tokenizer_)
    throw Error(tokenizer_error_.empty() ? "tokenizer not loaded" : tokenizer_error_);
  return *tokenizer_;
}

}  // namespace pmoe
