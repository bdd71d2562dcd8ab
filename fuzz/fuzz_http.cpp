// libFuzzer target: an HTTP request as `pocketmoe serve` reads it. Beast's request parser with the
// server's limits, fed in the pieces the input's first byte chooses (as reads split it), then the
// API's handlers on the body by route (chat and text completions, tokenize, detokenize) and the
// responses built from what they return. Every input must end in a parsed request or a parse
// error, and every body in a result or an ApiError (a 4xx answer): anything else would be a 500,
// a crash or a hang of the server.
#include "common/error.hpp"
#include "fixture_tokenizer.hpp"
#include "server/api.hpp"
#include "tokenizer/tokenizer.hpp"

#include <boost/beast/http.hpp>

#include <cstdint>
#include <cstdlib>
#include <string>

namespace http = boost::beast::http;

namespace {
void handle(const std::string& target, const std::string& body) {
  using namespace pmoe::server;
  const pmoe::Tokenizer& tok = fixture_tokenizer();
  try {
    if (target.starts_with("/v1/chat/completions") || target.starts_with("/v1/completions")) {
      const Endpoint e = target.starts_with("/v1/chat") ? Endpoint::chat : Endpoint::completion;
      const GenerationRequest r = parse_generation(body, e, tok, 1);
      (void)tok.encode(r.prompt, true, true);
      RequestStats s;
      s.prompt_tokens = 3;
      const ResponseMeta m{"id", r.model, 0};
      (void)completion_json(e, m, r.prompt, "stop", s).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
      (void)chunk_json(e, m, r.prompt, true, "").dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
      StopMatcher stops(r.params.stop);
      bool stopped = false;
      (void)stops.push(r.prompt, stopped);
    } else if (target.starts_with("/tokenize")) {
      (void)handle_tokenize(body, tok);
    } else if (target.starts_with("/detokenize")) {
      (void)handle_detokenize(body, tok).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    }
  } catch (const ApiError& e) {
    if (e.status < 400 || e.status >= 500) std::abort();
  }
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const size_t piece = 1 + data[0] % 64;  // bytes per read
  const std::string in(reinterpret_cast<const char*>(data) + 1, size - 1);
  http::request_parser<http::string_body> parser;
  parser.body_limit(1 << 16);
  parser.header_limit(64 * 1024);
  boost::beast::error_code ec;
  std::string pending;
  for (size_t at = 0; at < in.size() && !parser.is_done() && !ec;) {
    pending.append(in, at, piece);
    at += piece;
    const size_t used = parser.put(boost::asio::buffer(pending), ec);
    if (ec == http::error::need_more) ec = {};
    pending.erase(0, used);
  }
  if (ec || !parser.is_done()) return 0;  // the server answers 400/413/431, or waits for more
  const auto& req = parser.get();
  handle(std::string(req.target()), req.body());
  return 0;
}
