#pragma once
// The server's generation slots (docs/server.md). One worker thread runs every slot: each slot is
// an Engine with its own KV cache on the session's one model, compute backend and expert cache,
// and the worker gives each busy slot one token in turn, so a slot never waits for another's
// whole answer and a cancelled request stops within one token. Requests beyond the slots wait in
// a bounded queue.
#include "engine/session.hpp"
#include "server/api.hpp"

#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>

namespace pmoe::server {

/// One generation request as the worker runs it and its connection reads it.
class Job {
 public:
  /// What the connection has not read yet, and how the job ended (when it has).
  struct Update {
    std::string text;
    bool finished = false;
    std::string finish_reason;  // "stop", "length" or "cancelled"
    std::string error;          // the generation failed (the backend, a storage read)
    RequestStats stats;
  };
  Update take();
  /// Asks the worker to stop this job; it does before its next token.
  void cancel() { cancelled_ = true; }
  bool cancelled() const { return cancelled_; }

 private:
  friend class Scheduler;
  std::vector<int32_t> prompt_;
  GenerationParams params_;
  std::function<void()> notify_;  // called by the worker when there is something to read
  int client_fd_ = -1;            // the client's socket: the worker sees it hang up
  std::atomic<bool> cancelled_{false};
  std::mutex mu_;
  Update pending_;
};

/// Whether the peer of socket `fd` closed or reset its end (a non-blocking poll).
bool peer_hung_up(int fd);

class Scheduler {
 public:
  /// Slot 0 runs on the session's engine, the others on engines like it (the same context size);
  /// `queue_limit`: requests that may wait for a slot.
  Scheduler(Session& session, uint32_t n_slots, uint32_t queue_limit);
  ~Scheduler();  // cancels what runs and waits for the worker
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  /// Queues a generation; nullptr when the queue is full. `notify` runs on the worker thread when
  /// there is text to stream (params.stream) and when the job ends; not per token otherwise, as
  /// waking the I/O thread steals a core from the compute threads. `client_fd` (or -1): the
  /// worker checks before every token whether the client hung up, and cancels the job if it did.
  std::shared_ptr<Job> submit(std::vector<int32_t> prompt, const GenerationParams& params,
                              std::function<void()> notify, int client_fd = -1);

  /// KV positions of each slot: a prompt must be shorter.
  uint32_t n_ctx() const { return session_.engine().n_ctx(); }

  struct Metrics {
    uint64_t queued = 0, busy = 0, slots = 0;
    uint64_t requests = 0, prompt_tokens = 0, generated_tokens = 0;  // finished requests
    double prompt_seconds = 0, decode_seconds = 0;
  };
  Metrics metrics() const;

 private:
  struct Slot;
  void work();
  void step(Slot& s);
  /// Ends the slot's job: the text still held back (unless a stop string ended it), the stats,
  /// and the slot freed.
  void finish(Slot& s, const std::string& reason, const std::string& error = "", bool flush_text = true);

  Session& session_;
  uint32_t queue_limit_;
  std::vector<std::unique_ptr<Slot>> slots_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::shared_ptr<Job>> queue_;
  Metrics totals_;
  bool stop_ = false;
  std::thread worker_;
};

}  // namespace pmoe::server
