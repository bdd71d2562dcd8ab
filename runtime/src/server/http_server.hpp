#pragma once
// `pocketmoe serve`: the OpenAI-compatible HTTP server on Boost.Beast (docs/server.md).
#include "engine/session.hpp"

#include <cstdint>
#include <string>

namespace pmoe::server {

struct ServerOptions {
  SessionOptions session;
  std::string host = "127.0.0.1";
  uint16_t port = 8080;          // 0: any free port (printed)
  std::string api_key;           // "": no key needed
  uint32_t parallel = 1;         // slots, each with its own KV cache
  uint32_t queue = 64;           // requests that may wait for a slot; more get 503
  uint64_t max_body = 16u << 20; // request body bytes; more get 413
  std::string alias;             // the model's id in the API ("": the file name)
};

/// Listens, loads the model in the background (/health answers 503 until it is ready), and
/// serves until SIGINT or SIGTERM. Returns the process exit code (1 when the model fails to load).
/// Throws pmoe::Error when it cannot listen.
int serve(const ServerOptions& options);

}  // namespace pmoe::server
