#pragma once
// Everything a command needs to run a model, wired from a config: plugin registry, compute
// backend, model, tokenizer and engine. One place so `run`, `logits`, benchmarks and tests set
// things up the same way.
#include "config/config.hpp"
#include "engine/engine.hpp"
#include "model/model.hpp"
#include "experts/expert_cache.hpp"
#include "plugin/compute_backend.hpp"
#include "plugin/instances.hpp"
#include "plugin/registry.hpp"
#include "tokenizer/tokenizer.hpp"

#include <memory>
#include <optional>
#include <string>

namespace pmoe {

struct SessionOptions {
  std::string model_path;   // overrides the config's `model:` when not empty
  std::string config_path;  // "" = built-in defaults
  EngineOptions engine;
  bool load_tokenizer = true;
  int threads = 0;          // > 0 overrides the compute section's `threads`
};

class Session {
 public:
  explicit Session(const SessionOptions& o);
  ~Session();

  const Config& config() const { return config_; }
  PluginRegistry& registry() { return *registry_; }
  const Model& model() const { return *model_; }
  ComputeBackend& compute() { return *compute_; }
  Engine& engine() { return *engine_; }
  /// Another engine on the same model, compute backend and expert cache, with its own KV cache
  /// (the server's slots); n_ctx 0: the session's. Engines must not run concurrently: they share
  /// the backend's queue and the cache's leases.
  std::unique_ptr<Engine> make_engine(uint32_t n_ctx = 0) const;
  /// The expert cache when the config sets `cache.budget` (experts streamed); else nullptr.
  ExpertCache* expert_cache() { return cache_.get(); }
  /// Throws when the model has no usable tokenizer.
  const Tokenizer& tokenizer() const;

 private:
  std::unique_ptr<StorageBackend> make_storage();

  Config config_;
  std::unique_ptr<PluginRegistry> registry_;
  std::unique_ptr<Model> model_;
  std::unique_ptr<ComputeBackend> compute_;
  std::unique_ptr<StorageBackend> storage_;
  std::unique_ptr<CachePolicyInstance> policy_;
  std::unique_ptr<ExpertCache> cache_;
  EngineOptions engine_options_;
  std::unique_ptr<Engine> engine_;
  std::optional<Tokenizer> tokenizer_;
  std::string tokenizer_error_;
};

}  // namespace pmoe
