#pragma once
// The JSON of the OpenAI-compatible API (docs/server.md): request bodies checked field by field
// (a bad one is an ApiError naming the field), and the responses, stream chunks and errors built.
// No I/O, so the HTTP server and the fuzz target share it.
#include "engine/sampler.hpp"
#include "experts/expert_cache.hpp"
#include "tokenizer/tokenizer.hpp"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace pmoe::server {

/// A request the server refuses: HTTP status, message, the offending field ("" if none) and the
/// OpenAI error type.
struct ApiError : std::runtime_error {
  ApiError(int status, const std::string& message, std::string param = "",
           std::string type = "invalid_request_error");
  int status;
  std::string param, type;
};

/// OpenAI's error body: {"error": {"message", "type", "param", "code"}}.
nlohmann::json error_body(const ApiError& e);

enum class Endpoint { chat, completion };

struct GenerationParams {
  SamplerParams sampler;
  int64_t max_tokens = -1;  // -1: until the end of text or a full context
  std::vector<std::string> stop;
  bool stream = false, include_usage = false;
};

struct GenerationRequest {
  Endpoint endpoint = Endpoint::chat;
  std::string model;   // as sent; echoed back
  std::string prompt;  // chat: the messages through the chat template
  GenerationParams params;
};

/// Parses the body of /v1/chat/completions or /v1/completions. Without a `seed` the request gets
/// `random_seed`. Unknown fields are ignored, as OpenAI's clients send more than any server uses.
GenerationRequest parse_generation(std::string_view body, Endpoint endpoint, const Tokenizer& tok,
                                   uint64_t random_seed);

/// /tokenize {"content", "add_special"?, "parse_special"?} -> {"tokens": [...]}.
nlohmann::json handle_tokenize(std::string_view body, const Tokenizer& tok);
/// /detokenize {"tokens": [...]} -> {"content"}.
nlohmann::json handle_detokenize(std::string_view body, const Tokenizer& tok);

/// What a generation cost: token counts, times and the expert cache during it.
struct RequestStats {
  int64_t prompt_tokens = 0, completion_tokens = 0;
  double prompt_seconds = 0, decode_seconds = 0;
  CacheStats cache;
};
nlohmann::json usage_json(const RequestStats& s);
/// llama-server's `timings` plus the expert cache: hit rate and bytes read for this request.
nlohmann::json timings_json(const RequestStats& s);

/// Ids and timestamps shared by a response's chunks.
struct ResponseMeta {
  std::string id, model;
  int64_t created = 0;
};

/// The whole answer of a non-streaming request.
nlohmann::json completion_json(Endpoint e, const ResponseMeta& m, const std::string& text,
                               const std::string& finish_reason, const RequestStats& s);
/// One Server-Sent-Events chunk: `text` as the delta (chat: `first` adds the assistant role),
/// `finish_reason` empty until the last one.
nlohmann::json chunk_json(Endpoint e, const ResponseMeta& m, const std::string& text, bool first,
                          const std::string& finish_reason);
/// The usage chunk after the last one (stream_options.include_usage): no choices.
nlohmann::json usage_chunk_json(Endpoint e, const ResponseMeta& m, const RequestStats& s);

/// Text held back from a stream because it may be the start of a stop string.
class StopMatcher {
 public:
  explicit StopMatcher(std::vector<std::string> stops) : stops_(std::move(stops)) {}
  /// Appends generated text; returns what can be sent now. Sets `stopped` once a stop string
  /// appears (the text up to it is returned, the stop string and anything after it are not).
  std::string push(std::string_view text, bool& stopped);
  /// The text still held back (the generation ended without a stop string).
  std::string flush() { return std::exchange(pending_, {}); }

 private:
  std::vector<std::string> stops_;
  std::string pending_;
};

}  // namespace pmoe::server
