// pocketmoe info: what a model file holds.
#include "cli/cli_common.hpp"
#include "model/model.hpp"

#include <pocketmoe/dtype.h>

#include <iomanip>
#include <map>
#include <optional>

namespace pmoe::cli {

namespace {
std::string mib(uint64_t b) {
  std::ostringstream s;
  s << std::fixed << std::setprecision(1) << double(b) / (1 << 20) << " MiB";
  return s.str();
}
}  // namespace

int cmd_info(int argc, char** argv) {
  return run_command("info", [&] {
    std::string path;
    bool keys = false;
    po::options_description opts("options");
    opts.add_options()
      ("model,m", po::value(&path)->required(), "GGUF model file")
      ("keys", po::bool_switch(&keys), "also print every metadata key")
      ("help,h", "this help");
    auto vm = parse_args(argc, argv, opts);
    if (vm.count("help")) return print_help("info -m MODEL", "Describe a model file.", opts);
    po::notify(vm);
    const auto m = Model::load(path);
    const Hparams& h = m->hp();
    const char* gating = h.gating == Gating::Softmax ? "softmax" : "sigmoid";
    std::cout << "file:         " << path << " (GGUF v" << m->file().version() << ", "
              << mib(m->file().file_size()) << ")\n"
              << "architecture: smallthinker\n"
              << "layers:       " << h.n_layer << "\n"
              << "embedding:    " << h.n_embd << "\n"
              << "heads:        " << h.n_head << " q / " << h.n_head_kv << " kv, head_dim " << h.head_dim << "\n"
              << "experts:      " << h.n_expert << ", top-" << h.n_expert_used << ", expert ffn "
              << h.n_ff_exp << ", gating " << gating << "\n"
              << "vocab:        " << h.n_vocab << "\n"
              << "context:      " << h.n_ctx_train << "\n"
              << "rope:         base " << h.rope_base << ", swa base " << h.rope_base_swa << "\n"
              << "window:       " << (h.sliding_window ? std::to_string(h.sliding_window) : "none")
              << (h.sliding_window ? ", pattern " + std::to_string(h.swa_pattern) : "") << "\n"
              << "output:       " << (m->tied_output() ? "tied to token_embd" : "output.weight") << "\n"
              << "layer kinds: ";
    for (uint32_t il = 0; il < h.n_layer; ++il) std::cout << " " << il << ":" << describe(h.layers[il]);
    // like llama.cpp's loader summary: the file type, then tensors and bytes per type
    struct PerType {
      uint32_t tensors = 0;
      uint64_t bytes = 0;
    };
    std::map<uint32_t, PerType> types;
    uint64_t weights = 0, tensor_bytes = 0;
    for (const auto& t : m->file().tensors()) {
      types[t.type].tensors++;
      types[t.type].bytes += t.size;
      weights += t.n_elements();
      tensor_bytes += t.size;
    }
    const std::optional<uint32_t> ftype = m->file().get_u32_opt("general.file_type");
    std::cout << "\nfile type:    " << (ftype ? llama_ftype_name(*ftype) : std::string("not stored (general.file_type)"))
              << "\ntensors:      " << m->file().tensors().size() << ", " << mib(tensor_bytes) << ", "
              << std::fixed << std::setprecision(2) << double(tensor_bytes) * 8 / double(weights)
              << " bits per weight\n";
    std::cout.unsetf(std::ios::floatfield);
    for (const auto& [type, n] : types)
      std::cout << "  type " << std::left << std::setw(7) << pmoe_dtype_name(type) << std::right << std::setw(4)
                << n.tensors << " tensors " << std::setw(11) << mib(n.bytes) << "\n";
    std::cout << "dense bytes:  " << mib(m->dense_bytes()) << " (resident)\n"
              << "expert bytes: " << mib(m->total_expert_bytes()) << " ("
              << mib(m->total_expert_bytes() / (uint64_t(h.n_layer) * h.n_expert)) << " per expert on average)\n"
              << "active bytes per token: "
              << mib(m->dense_bytes() + m->total_expert_bytes() / h.n_expert * h.n_expert_used)
              << " upper bound (dense + top-k experts)\n";
    if (keys)
      for (const auto& k : m->file().keys()) std::cout << "  " << k << " = " << m->file().value_summary(k) << "\n";
    return kExitOk;
  });
}

}  // namespace pmoe::cli
