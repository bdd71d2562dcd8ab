// One I/O thread runs every connection as a C++20 coroutine on Boost.Asio; generation runs on the
// scheduler's worker thread, which wakes a connection's timer after each token it produces.
#include "server/http_server.hpp"

#include "common/format.hpp"
#include "common/interrupt.hpp"
#include "server/scheduler.hpp"

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <atomic>
#include <ctime>
#include <filesystem>
#include <iostream>
#include <map>
#include <random>
#include <sstream>
#include <thread>

namespace pmoe::server {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = net::ip::tcp;
using json = nlohmann::json;
using Request = http::request<http::string_body>;
using Response = http::response<http::string_body>;

namespace {

constexpr auto kIdleTimeout = std::chrono::seconds(60);  // a request must arrive within this
constexpr auto kWriteTimeout = std::chrono::seconds(60); // a client must take each write within this

/// JSON as text; invalid UTF-8 in generated text becomes U+FFFD rather than an exception.
std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

/// The routes, for the metrics' labels (anything else counts as "other").
constexpr const char* kRoutes[] = {"/health", "/metrics", "/v1/models", "/v1/chat/completions", "/v1/completions",
                                   "/tokenize", "/detokenize"};

/// OpenAI's paths without the /v1 prefix work too, as with llama-server.
std::string canonical_path(std::string_view target) {
  std::string p(target.substr(0, target.find('?')));
  if (p == "/models" || p == "/chat/completions" || p == "/completions") p = "/v1" + p;
  return p;
}

}  // namespace

class Server {
 public:
  explicit Server(const ServerOptions& o) : o_(o), acceptor_(ioc_) {
    model_id_ = !o.alias.empty() ? o.alias : std::filesystem::path(o.session.model_path).filename().string();
  }

  int run() {
    listen();
    loader_ = std::thread([this] { load(); });
    net::co_spawn(ioc_, accept_loop(), net::detached);
    net::co_spawn(ioc_, watch_signals(), net::detached);
    ioc_.run();
    loader_.join();
    sched_.reset();  // cancels what still runs; its notifications go to the stopped context
    if (!load_error_.empty()) {
      std::cerr << "error: " << load_error_ << "\n";
      return 1;
    }
    std::cerr << "\nserver stopped\n";
    return interrupted() ? 130 : 0;
  }

 private:
  void listen() {
    boost::system::error_code ec;
    const auto addr = net::ip::make_address(o_.host, ec);
    if (ec) throw Error("--host " + o_.host + ": not an IP address (" + ec.message() + ")");
    const tcp::endpoint ep(addr, o_.port);
    acceptor_.open(ep.protocol(), ec);
    if (!ec) acceptor_.set_option(net::socket_base::reuse_address(true), ec);
    if (!ec) acceptor_.bind(ep, ec);
    if (!ec) acceptor_.listen(net::socket_base::max_listen_connections, ec);
    if (ec) throw Error("cannot listen on " + o_.host + ":" + std::to_string(o_.port) + ": " + ec.message());
    const auto bound = acceptor_.local_endpoint();
    std::cerr << "listening on http://" << bound.address().to_string() << ":" << bound.port()
              << (o_.api_key.empty() ? "" : " (API key required)") << "; loading the model\n";
  }

  void load() {
    try {
      // handed to the I/O thread; if it stopped first, the scheduler (whose engines use the
      // session) still goes before the session
      struct Loaded {
        std::unique_ptr<Session> session;
        std::unique_ptr<Scheduler> sched;
        ~Loaded() { sched.reset(); }
      };
      auto l = std::make_shared<Loaded>();
      l->session = std::make_unique<Session>(o_.session);
      l->session->tokenizer();  // a server without a tokenizer cannot take text
      l->sched = std::make_unique<Scheduler>(*l->session, o_.parallel, o_.queue);
      const uint32_t n_ctx = l->sched->n_ctx();
      net::post(ioc_, [this, l] {
        session_ = std::move(l->session);
        sched_ = std::move(l->sched);
        ready_ = true;
      });
      std::cerr << "model loaded: " << model_id_ << ", " << o_.parallel << " slot(s) of " << n_ctx
                << " tokens, compute " << (o_.session.config_path.empty() ? "default config" : o_.session.config_path)
                << "\n";
    } catch (const std::exception& e) {
      load_error_ = e.what();
      ioc_.stop();
    }
  }

  net::awaitable<void> watch_signals() {
    net::steady_timer t(ioc_);
    while (!interrupted()) {
      t.expires_after(std::chrono::milliseconds(100));
      co_await t.async_wait(net::use_awaitable);
    }
    boost::system::error_code ec;
    acceptor_.close(ec);
    ioc_.stop();
  }

  net::awaitable<void> accept_loop() {
    for (;;) {
      boost::system::error_code ec;
      tcp::socket sock = co_await acceptor_.async_accept(net::redirect_error(net::use_awaitable, ec));
      if (ec == net::error::operation_aborted || !acceptor_.is_open()) co_return;
      if (ec) continue;  // e.g. out of file descriptors for a moment
      net::co_spawn(ioc_, connection(beast::tcp_stream(std::move(sock))), net::detached);
    }
  }

  net::awaitable<void> connection(beast::tcp_stream stream) {
    beast::flat_buffer buf;
    for (;;) {
      boost::system::error_code ec;
      http::request_parser<http::string_body> parser;
      parser.body_limit(o_.max_body);
      parser.header_limit(64 * 1024);
      stream.expires_after(kIdleTimeout);
      co_await http::async_read_header(stream, buf, parser, net::redirect_error(net::use_awaitable, ec));
      if (ec == http::error::end_of_stream || ec == beast::error::timeout || ec == net::error::connection_reset) break;
      std::optional<ApiError> refused;
      if (ec == http::error::header_limit) refused.emplace(431, "the request's headers exceed 64 KiB");
      else if (ec == http::error::body_limit)  // Content-Length says too much: refused before the body
        refused.emplace(413, "the body is " + std::to_string(parser.content_length().value_or(0)) + " bytes; at most " +
                                 std::to_string(o_.max_body) + " are accepted (--max-body)");
      else if (ec) refused.emplace(400, "malformed HTTP request: " + ec.message());
      if (!refused) {
        if (beast::iequals(parser.get()[http::field::expect], "100-continue")) {
          http::response<http::empty_body> cont{http::status::continue_, 11};
          co_await http::async_write(stream, cont, net::redirect_error(net::use_awaitable, ec));
          if (ec) break;
        }
        co_await http::async_read(stream, buf, parser, net::redirect_error(net::use_awaitable, ec));
        if (ec == http::error::body_limit)
          refused.emplace(413, "the body exceeds " + std::to_string(o_.max_body) + " bytes (--max-body)");
        else if (ec == http::error::end_of_stream || ec == beast::error::timeout || ec == net::error::connection_reset)
          break;
        else if (ec)
          refused.emplace(400, "malformed HTTP request: " + ec.message());
      }
      if (refused) {  // the rest of the stream cannot be trusted: answer and close
        Request req;
        req.version(11);
        req.keep_alive(false);
        Response res = error_response(req, *refused);
        count("other", res.result_int());
        co_await write(stream, res);
        break;
      }
      Request req = parser.release();
      stream.expires_never();
      const bool keep = co_await handle(stream, req);
      if (!keep) break;
    }
    boost::system::error_code ec;
    stream.socket().shutdown(tcp::socket::shutdown_send, ec);
  }

  /// Answers one request; false when the connection must close.
  net::awaitable<bool> handle(beast::tcp_stream& stream, Request& req) {
    const std::string path = canonical_path(std::string_view(req.target().data(), req.target().size()));
    std::string route = "other";
    for (const char* r : kRoutes)
      if (path == r) route = r;
    std::optional<Response> res;
    std::optional<ApiError> err;
    try {
      res = route_request(req, path, route);
    } catch (const ApiError& e) {
      err = e;
    } catch (const std::exception& e) {
      err.emplace(500, std::string("internal error: ") + e.what(), "", "server_error");
    }
    if (err) res = error_response(req, *err);
    if (res) {
      count(route, res->result_int());
      co_return co_await write(stream, *res) && req.keep_alive();
    }
    // a generation: answered by generate(), which counts itself
    const Endpoint e = route == "/v1/chat/completions" ? Endpoint::chat : Endpoint::completion;
    co_return co_await generate(stream, req, e, route);
  }

  /// Every route but the generations (for which it returns nothing). Throws ApiError.
  std::optional<Response> route_request(const Request& req, const std::string& path, const std::string& route) {
    const bool get = req.method() == http::verb::get, post = req.method() == http::verb::post;
    auto method_must_be = [&](bool ok, const char* m) {
      if (!ok) throw ApiError(405, std::string(req.method_string()) + " " + path + ": use " + m);
    };
    if (route == "/health") {
      method_must_be(get, "GET");
      if (!ready_) throw ApiError(503, "Loading model", "", "unavailable_error");
      return json_response(req, {{"status", "ok"}});
    }
    if (!o_.api_key.empty() && req[http::field::authorization] != "Bearer " + o_.api_key)
      throw ApiError(401, "Invalid API key: send the header 'Authorization: Bearer KEY' with the --api-key of the server", "",
                     "authentication_error");
    if (route == "other") throw ApiError(404, "no route " + std::string(req.method_string()) + " " + path, "", "not_found_error");
    if (!ready_) throw ApiError(503, "Loading model", "", "unavailable_error");
    if (route == "/metrics") {
      method_must_be(get, "GET");
      Response r = json_response(req, json());
      r.set(http::field::content_type, "text/plain; version=0.0.4");
      r.body() = metrics_text();
      r.prepare_payload();
      return r;
    }
    if (route == "/v1/models") {
      method_must_be(get, "GET");
      return json_response(req, {{"object", "list"},
                                 {"data", json::array({{{"id", model_id_}, {"object", "model"}, {"created", started_},
                                                        {"owned_by", "pocketmoe"},
                                                        {"meta", {{"n_ctx", sched_->n_ctx()},
                                                                  {"n_vocab", session_->model().hp().n_vocab},
                                                                  {"streaming_experts", session_->expert_cache() != nullptr}}}}})}});
    }
    method_must_be(post, "POST");
    if (route == "/tokenize") return json_response(req, handle_tokenize(req.body(), session_->tokenizer()));
    if (route == "/detokenize") return json_response(req, handle_detokenize(req.body(), session_->tokenizer()));
    return std::nullopt;
  }

  net::awaitable<bool> generate(beast::tcp_stream& stream, Request& req, Endpoint endpoint, const std::string& route) {
    std::optional<ApiError> err;
    std::shared_ptr<Job> job;
    GenerationRequest g;
    auto timer = std::make_shared<net::steady_timer>(ioc_);
    try {
      const Tokenizer& tok = session_->tokenizer();
      g = parse_generation(req.body(), endpoint, tok, seeds_());
      const char* field = endpoint == Endpoint::chat ? "messages" : "prompt";
      std::vector<int32_t> ids = tok.encode(g.prompt, true, true);
      if (ids.empty()) throw ApiError(400, "the prompt has no tokens", field);
      if (ids.size() >= sched_->n_ctx())
        throw ApiError(400, "the prompt is " + std::to_string(ids.size()) + " tokens; a slot's context holds " +
                                std::to_string(sched_->n_ctx()) + " (--ctx-size)", field);
      // the worker wakes this connection after each token (posted: the timer lives on this thread)
      auto notify = [ex = ioc_.get_executor(), w = std::weak_ptr<net::steady_timer>(timer)] {
        net::post(ex, [w] {
          if (auto t = w.lock()) t->cancel();
        });
      };
      job = sched_->submit(std::move(ids), g.params, notify, stream.socket().native_handle());
      if (!job)
        throw ApiError(503, "all " + std::to_string(o_.parallel) + " slots are busy and " + std::to_string(o_.queue) +
                                " requests already wait (--parallel, --queue); retry later", "", "unavailable_error");
    } catch (const ApiError& e) {
      err = e;
    }
    if (err) {
      Response res = error_response(req, *err);
      count(route, res.result_int());
      co_return co_await write(stream, res) && req.keep_alive();
    }
    const ResponseMeta meta{(endpoint == Endpoint::chat ? "chatcmpl-" : "cmpl-") + std::to_string(started_) + "-" +
                                std::to_string(++next_id_),
                            model_id_, int64_t(std::time(nullptr))};
    // the next update of the job (the worker cancels it if the client hangs up, and it ends)
    auto next_update = [&]() -> net::awaitable<Job::Update> {
      for (;;) {
        Job::Update u = job->take();
        if (!u.text.empty() || u.finished) co_return u;
        timer->expires_after(std::chrono::seconds(1));  // a missed wake-up costs at most this
        boost::system::error_code ec;
        co_await timer->async_wait(net::redirect_error(net::use_awaitable, ec));
      }
    };
    if (!g.params.stream) {
      std::string text;
      Job::Update u;
      do {
        u = co_await next_update();
        text += u.text;
      } while (!u.finished);
      if (u.finish_reason == "cancelled") co_return false;  // the client is gone
      Response res = !u.error.empty() ? error_response(req, ApiError(500, "generation failed: " + u.error, "", "server_error"))
                                      : json_response(req, completion_json(endpoint, meta, text, u.finish_reason, u.stats));
      count(route, res.result_int());
      co_return co_await write(stream, res) && req.keep_alive();
    }
    // Server-Sent Events over a chunked response
    http::response<http::empty_body> head{http::status::ok, req.version()};
    head.set(http::field::server, "pocketmoe/" PMOE_VERSION);
    head.set(http::field::content_type, "text/event-stream");
    head.set(http::field::cache_control, "no-cache");
    head.keep_alive(req.keep_alive());
    head.chunked(true);
    http::response_serializer<http::empty_body> sr{head};
    boost::system::error_code ec;
    stream.expires_after(kWriteTimeout);
    co_await http::async_write_header(stream, sr, net::redirect_error(net::use_awaitable, ec));
    count(route, 200);
    auto send = [&](const std::string& event) -> net::awaitable<bool> {
      stream.expires_after(kWriteTimeout);
      co_await net::async_write(stream, http::make_chunk(net::buffer(event)), net::redirect_error(net::use_awaitable, ec));
      co_return !ec;
    };
    bool first = true, ok = !ec;
    while (ok) {
      const Job::Update u = co_await next_update();
      if (!u.text.empty() || (first && !u.finished))
        ok = co_await send("data: " + dump(chunk_json(endpoint, meta, u.text, first, "")) + "\n\n");
      first = false;
      if (!ok || !u.finished) continue;
      if (u.finish_reason == "cancelled") co_return false;
      if (!u.error.empty()) {
        ok = co_await send("data: " + dump(error_body(ApiError(500, "generation failed: " + u.error, "", "server_error"))) + "\n\n");
      } else {
        json last = chunk_json(endpoint, meta, "", false, u.finish_reason);
        last["timings"] = timings_json(u.stats);
        ok = co_await send("data: " + dump(last) + "\n\n");
        if (ok && g.params.include_usage) ok = co_await send("data: " + dump(usage_chunk_json(endpoint, meta, u.stats)) + "\n\n");
      }
      if (ok) ok = co_await send("data: [DONE]\n\n");
      if (ok) {
        co_await net::async_write(stream, http::make_chunk_last(), net::redirect_error(net::use_awaitable, ec));
        stream.expires_never();
        co_return !ec && req.keep_alive();
      }
    }
    job->cancel();  // the client stopped reading
    co_return false;
  }

  net::awaitable<bool> write(beast::tcp_stream& stream, Response& res) {
    boost::system::error_code ec;
    stream.expires_after(kWriteTimeout);
    co_await http::async_write(stream, res, net::redirect_error(net::use_awaitable, ec));
    stream.expires_never();
    co_return !ec;
  }

  Response json_response(const Request& req, const json& body, http::status st = http::status::ok) {
    Response res{st, req.version()};
    res.set(http::field::server, "pocketmoe/" PMOE_VERSION);
    res.set(http::field::content_type, "application/json");
    res.keep_alive(req.keep_alive());
    res.body() = dump(body);
    res.prepare_payload();
    return res;
  }

  Response error_response(const Request& req, const ApiError& e) {
    Response res = json_response(req, error_body(e), http::status(e.status));
    if (e.status == 401) res.set(http::field::www_authenticate, "Bearer");
    if (e.status == 503) res.set(http::field::retry_after, "1");
    return res;
  }

  void count(const std::string& route, unsigned code) { ++requests_[route + "\",code=\"" + std::to_string(code)]; }

  /// Prometheus text exposition format 0.0.4.
  std::string metrics_text() const {
    std::ostringstream o;
    auto metric = [&](const char* name, const char* type, const char* help, double v) {
      o << "# HELP " << name << " " << help << "\n# TYPE " << name << " " << type << "\n" << name << " " << v << "\n";
    };
    o << "# HELP pocketmoe_requests_total HTTP requests answered, by route and status code.\n"
         "# TYPE pocketmoe_requests_total counter\n";
    for (const auto& [k, n] : requests_) o << "pocketmoe_requests_total{route=\"" << k << "\"} " << n << "\n";
    const Scheduler::Metrics m = sched_->metrics();
    metric("pocketmoe_generations_total", "counter", "Generations finished (any reason).", double(m.requests));
    metric("pocketmoe_prompt_tokens_total", "counter", "Prompt tokens evaluated.", double(m.prompt_tokens));
    metric("pocketmoe_generated_tokens_total", "counter", "Tokens generated.", double(m.generated_tokens));
    metric("pocketmoe_prompt_seconds_total", "counter", "Time spent evaluating prompts.", m.prompt_seconds);
    metric("pocketmoe_decode_seconds_total", "counter", "Time from a prompt's end to its generation's end, summed.", m.decode_seconds);
    metric("pocketmoe_prompt_tokens_per_second", "gauge", "Prompt tokens over prompt time, all requests so far.",
           m.prompt_seconds > 0 ? double(m.prompt_tokens) / m.prompt_seconds : 0);
    metric("pocketmoe_decode_tokens_per_second", "gauge", "Generated tokens over decode time, all requests so far.",
           m.decode_seconds > 0 ? double(m.generated_tokens) / m.decode_seconds : 0);
    metric("pocketmoe_queue_length", "gauge", "Requests waiting for a slot.", double(m.queued));
    metric("pocketmoe_slots_busy", "gauge", "Slots generating.", double(m.busy));
    metric("pocketmoe_slots", "gauge", "Slots (--parallel).", double(m.slots));
    const ExpertCache* cache = session_->expert_cache();
    const CacheStats c = cache ? cache->total_stats() : CacheStats{};
    metric("pocketmoe_expert_cache_streaming", "gauge", "1 when experts stream from storage through the cache.", cache ? 1 : 0);
    metric("pocketmoe_expert_cache_hits_total", "counter", "Expert uses served from the cache.", double(c.hits));
    metric("pocketmoe_expert_cache_misses_total", "counter", "Expert uses that waited for a demand read.", double(c.misses));
    metric("pocketmoe_expert_cache_prefetches_total", "counter", "Speculative expert reads.", double(c.prefetches));
    metric("pocketmoe_expert_cache_bytes_read_total", "counter", "Bytes of experts read from storage.", double(c.bytes_read));
    metric("pocketmoe_expert_cache_stall_seconds_total", "counter", "Time computation waited for expert reads.", c.stall_seconds);
    return o.str();
  }

  const ServerOptions o_;
  std::string model_id_;
  net::io_context ioc_;
  tcp::acceptor acceptor_;
  std::thread loader_;
  std::string load_error_;
  // set on the I/O thread once loaded; read only there
  bool ready_ = false;
  std::unique_ptr<Session> session_;
  std::unique_ptr<Scheduler> sched_;
  std::map<std::string, uint64_t> requests_;  // "route\",code=\"N" -> count (I/O thread only)
  std::mt19937_64 seeds_{std::random_device{}()};
  uint64_t next_id_ = 0;
  const int64_t started_ = int64_t(std::time(nullptr));
};

int serve(const ServerOptions& options) {
  Server s(options);
  return s.run();
}

}  // namespace pmoe::server
