#pragma once
// The expert cache: a fixed pool of slots in compute-backend memory (host-visible, 4 KiB
// aligned) holding whole experts (gate + up + down of one layer's expert). Misses are read from
// the GGUF file by the storage backend straight into a slot; a cache policy plugin picks victims.
//
// Threads: the engine thread pins experts, submits demand reads and waits for them. Everything
// asynchronous runs as handlers on one Boost.Asio strand of the cache's own one-thread pool:
// storage completions (the plugin's callback only posts them, so a backend thread never takes
// our lock), read deadlines and retry back-off (steady_timers), and lookahead prefetches (posted,
// so speculative slot hunting and submission never delay the engine). One mutex guards the slot
// state shared with the engine thread; a condition variable wakes it: no polling, no sleeps.
#include "model/expert_layout.hpp"
#include "plugin/compute_backend.hpp"
#include "plugin/instances.hpp"

#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/thread_pool.hpp>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <unordered_map>
#include <vector>

namespace pmoe {

struct ExpertCacheOptions {
  uint64_t budget = 0;             // bytes of slot memory
  bool direct_io = false;          // open the model with PMOE_OPEN_DIRECT
  uint32_t max_retries = 2;        // for retryable read errors (EIO, timeouts)
  std::chrono::milliseconds read_timeout{30000};  // a read slower than this is an error
};

/// Counters of one layer (or of a whole run, summed).
struct CacheStats {
  uint64_t uses = 0;              // expert uses by computations (hits + misses)
  uint64_t hits = 0;              // resident or already loading when needed
  uint64_t misses = 0;            // demand reads
  uint64_t prefetches = 0;        // speculative reads issued
  uint64_t prefetch_hits = 0;     // prefetched entries later used (subset of hits)
  uint64_t prefetch_wasted = 0;   // prefetched entries evicted unused
  uint64_t bytes_read = 0;        // bytes requested from storage (alignment rounding included)
  double read_seconds = 0;        // sum of read latencies (submit -> completion)
  double stall_seconds = 0;       // time computations waited for a read
  CacheStats& operator+=(const CacheStats& o);
  /// The counts of a phase: totals at its end minus totals at its start.
  CacheStats operator-(const CacheStats& start) const;
};

struct ExpertView {
  pmoe_tensor gate, up, down;
};

/// An acquired expert: names its slot, so the calls that use it need no lookup. The slot stays
/// pinned to the expert until release.
struct ExpertLease {
  uint32_t slot;
  uint64_t key;  // PMOE_EXPERT_KEY(layer, expert)
};

class ExpertCache {
 public:
  ExpertCache(ExpertLayout layout, ComputeBackend& compute, StorageBackend& storage,
              CachePolicyInstance& policy, const ExpertCacheOptions& options);
  ~ExpertCache();
  ExpertCache(const ExpertCache&) = delete;
  ExpertCache& operator=(const ExpertCache&) = delete;

  /// Bytes of one slot for this model and storage alignment.
  uint64_t slot_bytes() const { return slot_bytes_; }
  uint32_t capacity() const { return uint32_t(slots_.size()); }

  /// Demand: pin the expert and start its read if it is not resident. Returns nothing (and does
  /// nothing) when every slot is pinned or loading; the caller then finishes pinned work first.
  std::optional<ExpertLease> acquire(uint32_t layer, uint32_t expert);
  /// Block until some slot can be claimed (free, or settled and unpinned). For a caller that holds
  /// no pins while every slot is loading (prefetches took them): those reads all have deadlines.
  void wait_for_slot();
  /// Speculative: the expert is expected later in this step. A resident one is kept from eviction
  /// until it is used or the step ends; otherwise a read starts with `priority` > 0 if a slot can
  /// be had without touching pinned, loading or expected entries, leaving top-k slots for demand
  /// reads. Never blocks: the read is posted to the cache's strand.
  void prefetch(uint32_t layer, uint32_t expert, uint32_t priority);
  /// Index into `leases` of an expert that is loaded, waiting if none is.
  /// Throws pmoe::Error naming file, offset and expert when its read failed for good.
  size_t wait_any(std::span<const ExpertLease> leases);
  /// Tensors of a loaded, leased expert (valid until release). The first view after a read
  /// flushes the slot to the device (buffer_flush_range). Engine thread only.
  ExpertView view(const ExpertLease& lease);
  void release(const ExpertLease& lease);
  /// Router probabilities for the policy (optional use by router-aware policies).
  void on_routing(uint32_t layer, const float* probs, uint32_t n_tokens, uint32_t n_experts);
  /// One decode step or prefill chunk ends (predictions made in it expire).
  void next_tick();

  std::vector<CacheStats> layer_stats() const;
  CacheStats total_stats() const;

 private:
  enum class State { Empty, Loading, Ready, Failed };
  using Timer = boost::asio::steady_timer;
  struct Part {
    uint64_t file_offset;  // where the read starts (aligned down)
    uint64_t length;       // bytes read (aligned up, clipped at end of file)
    uint64_t slot_offset;  // where the read lands in the slot
    uint64_t data_offset;  // where the matrix starts in the slot
  };
  struct Slot {
    uint64_t key = 0;
    State state = State::Empty;
    uint32_t pins = 0;
    uint32_t parts_left = 0;  // reads in flight into the slot (it cannot be reused before 0)
    uint32_t attempts = 0;
    uint64_t submission = 0;  // id of the latest submit_reads (ids are cache-wide, never reused)
    bool prefetched_unused = false;
    uint64_t expected_tick = kNever;  // the step a prediction expects it in, until it is used
    bool short_read = false;
    bool device_visible = false;  // flushed since its last read
    bool timed_out = false;
    pmoe_status error = PMOE_OK;
    int32_t sys_errno = 0;
    std::chrono::steady_clock::time_point submitted;
    std::shared_ptr<Timer> timer;  // the read deadline, or the retry back-off
  };
  static constexpr uint64_t kNever = ~uint64_t(0);
  /// Pinned, loading or with reads in flight: never a victim.
  static bool busy(const Slot& s) { return s.pins > 0 || s.state == State::Loading || s.parts_left > 0; }
  /// Predicted for a later layer of this step and not used yet: a prefetch never evicts it, a
  /// demand read only when nothing else can go. (In the cyclic layer order of decoding, the least
  /// recently used entries are exactly those of the next layers, so plain LRU victims would be the
  /// experts about to be used.) Under the lock.
  bool expected(const Slot& s) const { return s.expected_tick == tick_; }
  static void on_read_done(void* ctx, const pmoe_read_done* done);
  // Strand handlers.
  void complete(const pmoe_read_done& done);
  void deadline_passed(uint32_t slot, uint64_t submission);
  void retry(uint32_t slot);
  void prefetch_now(uint64_t key, uint32_t priority, uint64_t tick);
  std::vector<Part> parts_of(uint64_t key) const;
  /// The slot a lease names; throws if the lease is not held.
  Slot& leased(const ExpertLease& lease);
  // Under the lock: a slot for `key` (free, or evicted from an unpinned ready entry) while more
  // than `keep` slots stay claimable, or -1. A speculative claim never evicts expected entries.
  int64_t claim_slot(uint64_t key, size_t keep = 0, bool speculative = false);
  void submit_reads(uint32_t slot, uint32_t priority);  // under the lock
  /// Under the lock: arm the slot's timer to call `handler` on the strand after `after`.
  template <class Handler>
  void arm_timer(Slot& s, std::chrono::steady_clock::duration after, Handler handler);
  [[noreturn]] void read_failed(const Slot& s) const;

  const ExpertLayout layout_;
  ComputeBackend& compute_;
  StorageBackend& storage_;
  CachePolicyInstance& policy_;
  ExpertCacheOptions options_;
  StorageBackend::OpenFile file_{};
  uint32_t align_ = 1;
  uint64_t slot_bytes_ = 0;
  pmoe_buffer* memory_ = nullptr;
  uint8_t* host_ = nullptr;

  boost::asio::thread_pool pool_{1};
  boost::asio::strand<boost::asio::thread_pool::executor_type> strand_{pool_.get_executor()};

  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool closing_ = false;  // the destructor runs: handlers start nothing new
  std::vector<Slot> slots_;
  std::vector<uint32_t> free_;
  std::unordered_map<uint64_t, uint32_t> where_;  // key -> slot
  uint32_t in_flight_ = 0;                         // reads submitted, not completed
  uint64_t submissions_ = 0;
  uint64_t tick_ = 0;
  std::vector<CacheStats> stats_;
};

}  // namespace pmoe
