// pocketmoe tokenize: token ids of a text as a JSON array.
#include "cli/cli_common.hpp"
#include "gguf/gguf.hpp"
#include "tokenizer/tokenizer.hpp"

namespace pmoe::cli {

int cmd_tokenize(int argc, char** argv) {
  return run_command("tokenize", [&] {
    std::string model, prompt;
    bool no_parse_special = false, add_special = false;
    po::options_description opts("options");
    opts.add_options()
      ("model,m", po::value(&model)->required(), "GGUF file with tokenizer metadata")
      ("prompt,p", po::value(&prompt)->required(), "text to tokenize")
      ("no-parse-special", po::bool_switch(&no_parse_special), "treat <|im_start|> etc. as plain text")
      ("add-special", po::bool_switch(&add_special), "add BOS/EOS if the model asks for them")
      ("help,h", "this help");
    auto vm = parse_args(argc, argv, opts);
    if (vm.count("help")) return print_help("tokenize -m MODEL -p TEXT", "Print token ids as JSON.", opts);
    po::notify(vm);
    const auto file = GgufFile::open(model);
    const Tokenizer tok = Tokenizer::from_gguf(*file);
    const auto ids = tok.encode(prompt, add_special, !no_parse_special);
    std::string out = "[";
    for (size_t i = 0; i < ids.size(); ++i) {
      if (i) out += ',';
      out += std::to_string(ids[i]);
    }
    std::cout << out << "]\n";
    return kExitOk;
  });
}

}  // namespace pmoe::cli
