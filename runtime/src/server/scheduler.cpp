#include "server/scheduler.hpp"

#include <poll.h>

#include <chrono>
#include <optional>

namespace pmoe::server {

using clock = std::chrono::steady_clock;

bool peer_hung_up(int fd) {
  pollfd p{fd, POLLRDHUP, 0};
  return ::poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR));
}

Job::Update Job::take() {
  std::lock_guard lk(mu_);
  Update u = pending_;
  pending_.text.clear();
  return u;
}

struct Scheduler::Slot {
  std::unique_ptr<Engine> engine;
  std::shared_ptr<Job> job;  // guarded by Scheduler::mu_ (the worker reads it without)
  bool prefilled = false;
  std::optional<Sampler> sampler;
  std::optional<StreamDecoder> decoder;
  std::optional<StopMatcher> stops;
  std::vector<float> logits;
  int64_t generated = 0;
  RequestStats stats;
  clock::time_point decode_start;
};

Scheduler::Scheduler(Session& session, uint32_t n_slots, uint32_t queue_limit)
    : session_(session), queue_limit_(queue_limit) {
  for (uint32_t i = 0; i < std::max(1u, n_slots); ++i) {
    auto s = std::make_unique<Slot>();
    if (i > 0) s->engine = session.make_engine();  // slot 0: the session's own
    slots_.push_back(std::move(s));
  }
  worker_ = std::thread([this] { work(); });
}

Scheduler::~Scheduler() {
  {
    std::lock_guard lk(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  worker_.join();
}

std::shared_ptr<Job> Scheduler::submit(std::vector<int32_t> prompt, const GenerationParams& params,
                                       std::function<void()> notify, int client_fd) {
  auto job = std::make_shared<Job>();
  job->client_fd_ = client_fd;
  job->prompt_ = std::move(prompt);
  job->params_ = params;
  job->notify_ = std::move(notify);
  {
    std::lock_guard lk(mu_);
    uint64_t free_slots = 0;
    for (const auto& s : slots_) free_slots += !s->job;
    if (stop_ || queue_.size() >= queue_limit_ + free_slots) return nullptr;
    queue_.push_back(job);
  }
  cv_.notify_one();
  return job;
}

Scheduler::Metrics Scheduler::metrics() const {
  std::lock_guard lk(mu_);
  Metrics m = totals_;
  m.queued = queue_.size();
  m.slots = slots_.size();
  for (const auto& s : slots_) m.busy += bool(s->job);
  return m;
}

void Scheduler::work() {
  std::unique_lock lk(mu_);
  for (;;) {
    bool any = false;
    for (auto& s : slots_) {
      if (!s->job && !queue_.empty() && !stop_) {
        s->job = std::move(queue_.front());
        queue_.pop_front();
        s->prefilled = false;
      }
      any |= bool(s->job);
    }
    if (stop_) break;
    if (!any) {
      cv_.wait(lk);
      continue;
    }
    lk.unlock();
    for (auto& s : slots_)
      if (s->job) step(*s);
    lk.lock();
  }
  // shutting down: whoever waits gets an end
  std::vector<std::shared_ptr<Job>> left(queue_.begin(), queue_.end());
  queue_.clear();
  lk.unlock();
  for (auto& s : slots_)
    if (s->job) finish(*s, "cancelled");
  for (auto& j : left) {
    {
      std::lock_guard jl(j->mu_);
      j->pending_.finished = true;
      j->pending_.finish_reason = "cancelled";
    }
    if (j->notify_) j->notify_();
  }
}

void Scheduler::step(Slot& s) {
  Job& j = *s.job;
  if (!j.cancelled() && j.client_fd_ >= 0 && peer_hung_up(j.client_fd_)) j.cancel();
  if (j.cancelled()) return finish(s, "cancelled");
  Engine& eng = s.engine ? *s.engine : session_.engine();
  const Tokenizer& tok = session_.tokenizer();
  ExpertCache* cache = session_.expert_cache();
  auto cache_now = [&] { return cache ? cache->total_stats() : CacheStats{}; };
  // one forward pass of this slot; the worker runs one slot at a time, so the cache's counters
  // in between belong to this request
  auto eval = [&](std::span<const int32_t> ids) {
    const CacheStats c0 = cache_now();
    s.logits.clear();
    eng.eval(ids, false, s.logits);
    s.stats.cache += cache_now() - c0;
  };
  try {
    if (!s.prefilled) {
      const GenerationParams& p = j.params_;
      eng.reset();
      s.generated = 0;
      s.stats = {};
      s.stats.prompt_tokens = int64_t(j.prompt_.size());
      s.sampler.emplace(p.sampler);
      for (int32_t id : j.prompt_) s.sampler->accept(id);
      s.decoder.emplace(tok);
      s.stops.emplace(p.stop);
      const auto t0 = clock::now();
      eval(j.prompt_);
      s.decode_start = clock::now();
      s.stats.prompt_seconds = std::chrono::duration<double>(s.decode_start - t0).count();
      s.prefilled = true;
      if (p.max_tokens == 0) return finish(s, "length");
      // the first token follows at once: time to first token is one prefill
    }
    const uint32_t V = session_.model().hp().n_vocab;
    const int32_t next = s.sampler->sample(std::span<const float>(s.logits).last(V));
    if (tok.is_end_of_generation(next)) return finish(s, "stop");
    ++s.generated;
    bool stopped = false;
    const std::string text = s.stops->push(s.decoder->push(next), stopped);
    if (!text.empty()) {
      {
        std::lock_guard lk(j.mu_);
        j.pending_.text += text;
      }
      if (j.notify_ && j.params_.stream) j.notify_();
    }
    if (stopped) return finish(s, "stop", "", false);
    if (j.params_.max_tokens >= 0 && s.generated >= j.params_.max_tokens) return finish(s, "length");
    if (eng.n_past() >= eng.n_ctx()) return finish(s, "length");
    eval(std::span(&next, 1));
  } catch (const std::exception& e) {
    finish(s, "error", e.what());
  }
}

void Scheduler::finish(Slot& s, const std::string& reason, const std::string& error, bool flush_text) {
  std::string tail;
  if (flush_text && s.decoder && s.stops) {
    bool stopped = false;
    tail = s.stops->push(s.decoder->flush(), stopped);
    if (!stopped) tail += s.stops->flush();
  }
  s.stats.completion_tokens = s.generated;
  if (s.prefilled) s.stats.decode_seconds = std::chrono::duration<double>(clock::now() - s.decode_start).count();
  std::shared_ptr<Job> job = s.job;
  {
    std::lock_guard lk(job->mu_);
    Job::Update& u = job->pending_;
    u.text += tail;
    u.finished = true;
    u.finish_reason = reason;
    u.error = error;
    u.stats = s.stats;
  }
  {
    std::lock_guard lk(mu_);
    totals_.requests += 1;
    totals_.prompt_tokens += uint64_t(s.stats.prompt_tokens);
    totals_.generated_tokens += uint64_t(s.generated);
    totals_.prompt_seconds += s.stats.prompt_seconds;
    totals_.decode_seconds += s.stats.decode_seconds;
    s.job.reset();
  }
  s.prefilled = false;
  if (job->notify_) job->notify_();
}

}  // namespace pmoe::server
