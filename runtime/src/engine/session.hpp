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

/// How the model file comes into memory (docs/config.md, `weights.load`): `want` unless auto. Auto
/// reads it into huge pages where every expert stays resident (not `streamed`), the compute device
/// is the CPU (other devices copy the weights they use anyway) and the file fits in `available`
/// with an eighth and 256 MiB to spare (KV cache, activations); else it maps the file.
GgufLoad choose_weights_load(Config::WeightsLoad want, bool streamed, bool cpu_device, uint64_t file_size,
                             uint64_t available);

class Session {
 public:
  explicit Session(const SessionOptions& o);
  ~Session();

  const Config& config() const { return config_; }
  /// How the model file was loaded (weights.load, auto resolved).
  GgufLoad weights_load() const { return weights_load_; }
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
  GgufLoad weights_load_ = GgufLoad::map;
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
