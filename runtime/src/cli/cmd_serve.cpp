// pocketmoe serve: the OpenAI-compatible HTTP server (docs/server.md).
#include "cli/model_options.hpp"
#include "config/config.hpp"
#include "server/http_server.hpp"

#include <string_view>
#include <vector>

namespace pmoe::cli {

int cmd_serve(int argc, char** argv) {
  return run_command("serve", [&] {
    server::ServerOptions so;
    ModelArgs model_args;
    int64_t port = 8080, parallel = 1, queue = 64;
    std::string max_body = "16MiB";
    po::options_description opts("options");
    add_model_options(opts, so.session, model_args);
    opts.add_options()
      ("host", po::value(&so.host)->default_value("127.0.0.1"), "address to listen on (0.0.0.0: every interface)")
      ("port", po::value(&port)->default_value(8080), "TCP port, 0..65535 (0: any free one, printed)")
      ("api-key", po::value(&so.api_key), "require 'Authorization: Bearer KEY' on every route but /health")
      ("parallel", po::value(&parallel)->default_value(1), "slots generating at once, 1..256, each with its own KV cache of --ctx-size tokens")
      ("queue", po::value(&queue)->default_value(64), "requests that may wait for a slot, 0..65536 (more get 503)")
      ("max-body", po::value(&max_body)->default_value("16MiB"), "largest request body (more get 413)")
      ("alias", po::value(&so.alias), "the model's id in the API (default: the file name)")
      ("help,h", "this help");
    reject_llama_cli_habits(argc, argv);
    std::vector<char*> args(argv, argv + argc);
    static char parallel_opt[] = "--parallel";
    for (char*& a : args)
      if (std::string_view(a) == "-np") a = parallel_opt;  // llama-server's spelling
    auto vm = parse_args(int(args.size()), args.data(), opts);
    if (vm.count("help"))
      return print_help("serve -m MODEL [-c CONFIG] [--host 127.0.0.1] [--port 8080] [--api-key KEY] [--parallel N] [--ctx-size N]",
                        "Serve the model over an OpenAI-compatible HTTP API: /v1/chat/completions, /v1/completions,\n"
                        "/v1/models, /health, /metrics, /tokenize, /detokenize (docs/server.md).", opts);
    po::notify(vm);
    apply_model_options(vm, model_args, so.session);
    if (so.session.model_path.empty()) throw UsageError("-m MODEL is required");
    so.port = uint16_t(check_range("--port", port, int64_t(0), int64_t(65535)));
    so.parallel = uint32_t(check_range("--parallel", parallel, int64_t(1), int64_t(256)));
    so.queue = uint32_t(check_range("--queue", queue, int64_t(0), int64_t(65536)));
    try {
      so.max_body = parse_size(max_body);
    } catch (const std::exception& e) {
      throw UsageError("--max-body " + max_body + ": " + e.what());
    }
    return server::serve(so);
  });
}

}  // namespace pmoe::cli
