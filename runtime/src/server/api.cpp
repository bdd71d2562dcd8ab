#include "server/api.hpp"

#include <algorithm>
#include <cmath>

namespace pmoe::server {

using json = nlohmann::json;

ApiError::ApiError(int s, const std::string& message, std::string p, std::string t)
    : std::runtime_error(message), status(s), param(std::move(p)), type(std::move(t)) {}

json error_body(const ApiError& e) {
  return {{"error", {{"message", e.what()}, {"type", e.type}, {"param", e.param.empty() ? json() : json(e.param)},
                     {"code", e.status}}}};
}

namespace {

constexpr int kMaxDepth = 64;  // JSON nesting a request may have (none needs more than 4)

/// Parses a request body into an object. The nesting is checked first: nlohmann's parser is
/// iterative, but nothing needs deep documents and refusing them bounds every later walk.
json parse_object(std::string_view body) {
  int depth = 0;
  bool in_string = false, escaped = false;
  for (size_t i = 0; i < body.size(); ++i) {
    const char c = body[i];
    if (in_string) {
      if (escaped) escaped = false;
      else if (c == '\\') escaped = true;
      else if (c == '"') in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > kMaxDepth)
        throw ApiError(400, "malformed JSON: nested deeper than " + std::to_string(kMaxDepth) + " at byte " + std::to_string(i));
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  json j;
  try {
    j = json::parse(body);
  } catch (const json::exception& e) {
    throw ApiError(400, std::string("malformed JSON: ") + e.what());
  }
  if (!j.is_object()) throw ApiError(400, std::string("the body must be a JSON object, got ") + j.type_name());
  return j;
}

/// The field `key`, or nullptr when absent or null (OpenAI's clients send null for "unset").
const json* field(const json& o, const char* key) {
  auto it = o.find(key);
  return it == o.end() || it->is_null() ? nullptr : &*it;
}

template <class T>
void number(const json& o, const char* key, T& out, double lo, double hi) {
  const json* v = field(o, key);
  if (!v) return;
  const bool integral = std::is_integral_v<T>;
  if (!v->is_number() || (integral && !v->is_number_integer()))
    throw ApiError(400, std::string("'") + key + "' must be " + (integral ? "an integer" : "a number") + ", got " +
                            v->type_name(), key);
  const double d = v->get<double>();
  if (!(d >= lo && d <= hi)) {
    throw ApiError(400, std::string("'") + key + "' is " + v->dump() + ", out of range [" + json(lo).dump() + ", " +
                            json(hi).dump() + "]", key);
  }
  out = integral ? T(v->get<int64_t>()) : T(d);
}

void boolean(const json& o, const char* key, bool& out) {
  const json* v = field(o, key);
  if (!v) return;
  if (!v->is_boolean()) throw ApiError(400, std::string("'") + key + "' must be a boolean, got " + v->type_name(), key);
  out = v->get<bool>();
}

std::string string_field(const json& o, const char* key, const std::string& where) {
  const json* v = field(o, key);
  if (!v) throw ApiError(400, where + " needs '" + key + "'", where.empty() ? key : where);
  if (!v->is_string()) throw ApiError(400, where + "'" + key + "' must be a string, got " + v->type_name(), key);
  return v->get<std::string>();
}

/// A message's content: a string, or an array of {"type": "text", "text": ...} parts.
std::string content_text(const json& c, const std::string& where) {
  if (c.is_null()) return "";
  if (c.is_string()) return c.get<std::string>();
  if (!c.is_array()) throw ApiError(400, where + ".content must be a string or an array of parts, got " + c.type_name(), where + ".content");
  std::string s;
  for (size_t i = 0; i < c.size(); ++i) {
    const std::string w = where + ".content[" + std::to_string(i) + "]";
    const json& p = c[i];
    if (!p.is_object()) throw ApiError(400, w + " must be an object", w);
    const json* type = field(p, "type");
    if (!type || !type->is_string() || type->get<std::string>() != "text")
      throw ApiError(400, w + ": only parts of type 'text' are supported", w + ".type");
    const json* t = field(p, "text");
    if (!t || !t->is_string()) throw ApiError(400, w + ".text must be a string", w + ".text");
    s += t->get<std::string>();
  }
  return s;
}

std::string chat_prompt(const json& body, const Tokenizer& tok) {
  const json* msgs = field(body, "messages");
  if (!msgs) throw ApiError(400, "'messages' is required", "messages");
  if (!msgs->is_array() || msgs->empty())
    throw ApiError(400, std::string("'messages' must be a non-empty array, got ") + (msgs->is_array() ? "an empty one" : msgs->type_name()), "messages");
  std::vector<ChatMessage> list;
  for (size_t i = 0; i < msgs->size(); ++i) {
    const std::string where = "messages[" + std::to_string(i) + "]";
    const json& m = (*msgs)[i];
    if (!m.is_object()) throw ApiError(400, where + " must be an object, got " + m.type_name(), where);
    const json* role = field(m, "role");
    if (!role || !role->is_string()) throw ApiError(400, where + ".role must be a string", where + ".role");
    std::string r = role->get<std::string>();
    if (r == "developer") r = "system";  // OpenAI's newer name for the system role
    if (r != "system" && r != "user" && r != "assistant" && r != "tool")
      throw ApiError(400, where + ".role '" + r + "' is not one of system, developer, user, assistant, tool", where + ".role");
    auto it = m.find("content");
    list.push_back({r, content_text(it == m.end() ? json() : *it, where)});
  }
  return tok.format_chat(list, true);
}

}  // namespace

GenerationRequest parse_generation(std::string_view text, Endpoint endpoint, const Tokenizer& tok, uint64_t random_seed) {
  const json body = parse_object(text);
  GenerationRequest r;
  r.endpoint = endpoint;
  if (const json* m = field(body, "model"); m && m->is_string()) r.model = m->get<std::string>();
  if (endpoint == Endpoint::chat) {
    r.prompt = chat_prompt(body, tok);
  } else {
    const json* p = field(body, "prompt");
    if (!p) throw ApiError(400, "'prompt' is required", "prompt");
    if (p->is_array() && p->size() == 1 && (*p)[0].is_string()) p = &(*p)[0];
    if (!p->is_string()) throw ApiError(400, std::string("'prompt' must be a string, got ") + p->type_name(), "prompt");
    r.prompt = p->get<std::string>();
  }
  GenerationParams& g = r.params;
  SamplerParams& s = g.sampler;
  s.temperature = 1.0f;  // OpenAI's defaults; llama.cpp's sampler chain keeps top_k 40 and min_p 0.05
  number(body, "temperature", s.temperature, 0, 100);
  number(body, "top_p", s.top_p, 0, 1);
  number(body, "top_k", s.top_k, 0, 1 << 24);
  number(body, "min_p", s.min_p, 0, 1);
  number(body, "presence_penalty", s.presence_penalty, -2, 2);
  number(body, "frequency_penalty", s.frequency_penalty, -2, 2);
  number(body, "repeat_penalty", s.repeat_penalty, 1e-3, 100);  // llama-server's extension
  int64_t seed = -1;
  number(body, "seed", seed, -1, 9007199254740991.0);
  s.seed = seed >= 0 ? uint64_t(seed) : random_seed;
  number(body, "n_predict", g.max_tokens, -1, 1 << 24);  // llama-server's name
  number(body, "max_tokens", g.max_tokens, 0, 1 << 24);
  number(body, "max_completion_tokens", g.max_tokens, 0, 1 << 24);
  int64_t n = 1;
  number(body, "n", n, 1, 128);
  if (n != 1) throw ApiError(400, "'n' must be 1: one choice per request", "n");
  boolean(body, "stream", g.stream);
  if (const json* so = field(body, "stream_options")) {
    if (!so->is_object()) throw ApiError(400, std::string("'stream_options' must be an object, got ") + so->type_name(), "stream_options");
    boolean(*so, "include_usage", g.include_usage);
  }
  if (const json* st = field(body, "stop")) {
    if (st->is_string()) {
      g.stop.push_back(st->get<std::string>());
    } else if (st->is_array() && st->size() <= 16) {
      for (const json& x : *st) {
        if (!x.is_string()) throw ApiError(400, "'stop' must hold strings only", "stop");
        g.stop.push_back(x.get<std::string>());
      }
    } else {
      throw ApiError(400, "'stop' must be a string or an array of at most 16 strings", "stop");
    }
    std::erase_if(g.stop, [](const std::string& x) { return x.empty(); });
  }
  return r;
}

json handle_tokenize(std::string_view text, const Tokenizer& tok) {
  const json body = parse_object(text);
  const std::string content = string_field(body, "content", "");
  bool add_special = false, parse_special = true;
  boolean(body, "add_special", add_special);
  boolean(body, "parse_special", parse_special);
  return {{"tokens", tok.encode(content, add_special, parse_special)}};
}

json handle_detokenize(std::string_view text, const Tokenizer& tok) {
  const json body = parse_object(text);
  const json* t = field(body, "tokens");
  if (!t || !t->is_array()) throw ApiError(400, "'tokens' must be an array of token ids", "tokens");
  std::vector<int32_t> ids;
  for (const json& x : *t) {
    if (!x.is_number_integer() || x.get<int64_t>() < 0 || x.get<int64_t>() >= tok.n_vocab())
      throw ApiError(400, "'tokens' holds " + x.dump() + ", not a token id in [0, " + std::to_string(tok.n_vocab()) + ")", "tokens");
    ids.push_back(int32_t(x.get<int64_t>()));
  }
  return {{"content", tok.decode(ids)}};
}

json usage_json(const RequestStats& s) {
  return {{"prompt_tokens", s.prompt_tokens}, {"completion_tokens", s.completion_tokens},
          {"total_tokens", s.prompt_tokens + s.completion_tokens}};
}

json timings_json(const RequestStats& s) {
  const CacheStats& c = s.cache;
  return {{"prompt_n", s.prompt_tokens},
          {"prompt_ms", s.prompt_seconds * 1e3},
          {"prompt_per_second", s.prompt_seconds > 0 ? double(s.prompt_tokens) / s.prompt_seconds : 0.0},
          {"predicted_n", s.completion_tokens},
          {"predicted_ms", s.decode_seconds * 1e3},
          {"predicted_per_second", s.decode_seconds > 0 ? double(s.completion_tokens) / s.decode_seconds : 0.0},
          {"expert_cache_hit_rate", c.uses ? double(c.hits) / double(c.uses) : 1.0},
          {"expert_bytes_read", c.bytes_read},
          {"expert_stall_ms", c.stall_seconds * 1e3}};
}

namespace {
json envelope(Endpoint e, const ResponseMeta& m, bool chunk) {
  return {{"id", m.id},
          {"object", e == Endpoint::chat ? (chunk ? "chat.completion.chunk" : "chat.completion") : "text_completion"},
          {"created", m.created},
          {"model", m.model},
          {"system_fingerprint", std::string("pocketmoe-") + PMOE_VERSION}};
}
json reason(const std::string& r) { return r.empty() ? json() : json(r); }
}  // namespace

json completion_json(Endpoint e, const ResponseMeta& m, const std::string& text, const std::string& finish_reason,
                     const RequestStats& s) {
  json j = envelope(e, m, false);
  json choice = {{"index", 0}, {"finish_reason", reason(finish_reason)}, {"logprobs", nullptr}};
  if (e == Endpoint::chat) choice["message"] = {{"role", "assistant"}, {"content", text}};
  else choice["text"] = text;
  j["choices"] = json::array({choice});
  j["usage"] = usage_json(s);
  j["timings"] = timings_json(s);
  return j;
}

json chunk_json(Endpoint e, const ResponseMeta& m, const std::string& text, bool first, const std::string& finish_reason) {
  json j = envelope(e, m, true);
  json choice = {{"index", 0}, {"finish_reason", reason(finish_reason)}, {"logprobs", nullptr}};
  if (e == Endpoint::chat) {
    json delta = json::object();
    if (first) delta["role"] = "assistant";
    if (!text.empty() || (first && finish_reason.empty())) delta["content"] = text;
    choice["delta"] = delta;
  } else {
    choice["text"] = text;
  }
  j["choices"] = json::array({choice});
  return j;
}

json usage_chunk_json(Endpoint e, const ResponseMeta& m, const RequestStats& s) {
  json j = envelope(e, m, true);
  j["choices"] = json::array();
  j["usage"] = usage_json(s);
  j["timings"] = timings_json(s);
  return j;
}

std::string StopMatcher::push(std::string_view text, bool& stopped) {
  pending_ += text;
  stopped = false;
  size_t cut = std::string::npos;
  for (const std::string& s : stops_) cut = std::min(cut, pending_.find(s));
  if (cut != std::string::npos) {
    stopped = true;
    std::string out = pending_.substr(0, cut);
    pending_.clear();
    return out;
  }
  // hold back the longest tail that begins a stop string
  size_t hold = 0;
  for (const std::string& s : stops_)
    for (size_t k = std::min(s.size() - 1, pending_.size()); k > hold; --k)
      if (pending_.compare(pending_.size() - k, k, s, 0, k) == 0) {
        hold = k;
        break;
      }
  std::string out = pending_.substr(0, pending_.size() - hold);
  pending_.erase(0, pending_.size() - hold);
  return out;
}

}  // namespace pmoe::server
