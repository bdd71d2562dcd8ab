#include "experts/expert_cache.hpp"

#include "common/error.hpp"
#include "common/format.hpp"

#include <pocketmoe/cache_policy.h>

#include <boost/asio/post.hpp>

#include <algorithm>
#include <cstring>
#include <functional>

namespace pmoe {

namespace {
uint64_t align_up(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }
using Clock = std::chrono::steady_clock;
}  // namespace

namespace {
/// a.f = op(a.f, b.f) for every counter: the one list of CacheStats' fields.
template <class Op>
void fieldwise(CacheStats& a, const CacheStats& b, Op op) {
  for (uint64_t CacheStats::*f : {&CacheStats::uses, &CacheStats::hits, &CacheStats::misses, &CacheStats::prefetches,
                                  &CacheStats::prefetch_hits, &CacheStats::prefetch_wasted, &CacheStats::bytes_read})
    a.*f = op(a.*f, b.*f);
  for (double CacheStats::*f : {&CacheStats::read_seconds, &CacheStats::stall_seconds}) a.*f = op(a.*f, b.*f);
}
}  // namespace

CacheStats& CacheStats::operator+=(const CacheStats& o) {
  fieldwise(*this, o, std::plus<>{});
  return *this;
}

CacheStats CacheStats::operator-(const CacheStats& o) const {
  CacheStats d = *this;
  fieldwise(d, o, std::minus<>{});
  return d;
}

ExpertCache::ExpertCache(ExpertLayout layout, ComputeBackend& compute, StorageBackend& storage,
                         CachePolicyInstance& policy, const ExpertCacheOptions& options)
    : layout_(std::move(layout)), compute_(compute), storage_(storage), policy_(policy), options_(options) {
  const uint32_t n_layer = uint32_t(layout_.layers.size()), top_k = layout_.n_expert_used;
  file_ = storage_.open(layout_.path, options.direct_io ? PMOE_OPEN_DIRECT : 0);
  align_ = std::max<uint32_t>(1, storage_.direct_alignment(file_.file));
  // A slot holds the three matrices, each in a region that leaves room to round the read out to
  // the storage alignment on both sides (GGUF offsets are only 32-byte aligned).
  for (const auto& matrices : layout_.layers) {
    uint64_t bytes = 0;
    for (const ExpertMatrixLayout& m : matrices) bytes += align_up(m.bytes + align_, align_) + align_;
    slot_bytes_ = std::max(slot_bytes_, align_up(bytes, 4096));
  }
  const uint64_t n_slots = options.budget / slot_bytes_;
  if (n_slots < top_k) {
    storage_.close(file_.file);
    throw Error("cache budget " + format_bytes(options.budget) + " is too small: one layer's top-" +
                std::to_string(top_k) + " experts need " + std::to_string(top_k) + " slots of " +
                format_bytes(slot_bytes_) + ", so the minimum is " + std::to_string(top_k * slot_bytes_) +
                " bytes (" + format_bytes(top_k * slot_bytes_) + ")");
  }
  const uint64_t total_slots = uint64_t(n_layer) * layout_.n_expert;
  slots_.resize(std::min(n_slots, total_slots));
  memory_ = compute_.alloc(slots_.size() * slot_bytes_, PMOE_BUFFER_HOST_VISIBLE);
  host_ = static_cast<uint8_t*>(compute_.host_ptr(memory_));
  if (!host_) throw Error("compute backend '" + compute_.name() + "' gave expert-cache memory that is not host-visible");
  for (uint32_t i = uint32_t(slots_.size()); i-- > 0;) free_.push_back(i);
  stats_.resize(n_layer);
  storage_.set_callback(&ExpertCache::on_read_done, this);
}

ExpertCache::~ExpertCache() {
  std::unique_lock lock(mu_);
  closing_ = true;
  // Reads land in slot memory: wait for them. A read that never completes is a storage bug; we
  // then leak the memory rather than free it under a pending read.
  const bool drained = cv_.wait_for(lock, std::chrono::seconds(60), [&] { return in_flight_ == 0; });
  for (Slot& s : slots_)
    if (s.timer) s.timer->cancel();
  lock.unlock();
  if (!drained) {  // a read never completed: leak the slot memory it may still write to
    pool_.stop();
    pool_.join();
    storage_.set_callback(nullptr, nullptr);  // late completions then stay in the backend's queue
    return;
  }
  pool_.join();          // the cancelled timers' handlers, and posted prefetches, finish
  storage_.set_callback(nullptr, nullptr);
  storage_.close(file_.file);
  compute_.free(memory_);
}

std::vector<ExpertCache::Part> ExpertCache::parts_of(uint64_t key) const {
  std::vector<Part> parts;
  uint64_t at = 0;
  for (const ExpertMatrixLayout& m : layout_.layers[PMOE_KEY_LAYER(key)]) {
    const uint64_t off = m.offset_of(PMOE_KEY_EXPERT(key)), len = m.bytes;
    const uint64_t start = off - off % align_;
    const uint64_t end = std::min(align_up(off + len, align_), file_.size);
    parts.push_back({start, end - start, at, at + off % align_});
    at += align_up(len + align_, align_) + align_;
  }
  return parts;
}

int64_t ExpertCache::claim_slot(uint64_t key, size_t keep, bool speculative) {
  uint32_t s;
  // (A scan per miss: it costs well under a microsecond next to the read that follows.)
  size_t n_busy = 0, n_expected = 0;  // expected: settled, unpinned, predicted for this step
  for (const Slot& x : slots_) {
    if (busy(x))
      ++n_busy;
    else if (expected(x))
      ++n_expected;
  }
  const size_t n_held = n_busy + n_expected;
  if ((speculative ? n_held : n_busy) + keep >= slots_.size()) return -1;
  if (!free_.empty()) {
    s = free_.back();
    free_.pop_back();
  } else {
    // Ask for enough candidates to get past pinned, loading and expected entries.
    std::vector<uint64_t> cand(n_held + 1);
    cand.resize(policy_.victims(cand));
    auto pick = [&](bool spare_expected) -> int64_t {
      auto usable = [&](const Slot& c) { return !busy(c) && !(spare_expected && expected(c)); };
      for (uint64_t k : cand) {  // (a key the policy proposes that we do not hold is skipped)
        const auto it = where_.find(k);
        if (it != where_.end() && usable(slots_[it->second])) return it->second;
      }
      for (uint32_t i = 0; i < slots_.size(); ++i)  // the policy gave nothing usable: any will do
        if (usable(slots_[i])) return i;
      return -1;
    };
    int64_t victim = pick(true);
    if (victim < 0 && !speculative) victim = pick(false);  // a demand read outranks a guess
    if (victim < 0) return -1;
    s = uint32_t(victim);
    Slot& v = slots_[s];
    if (v.prefetched_unused) ++stats_[PMOE_KEY_LAYER(v.key)].prefetch_wasted;
    where_.erase(v.key);
    policy_.on_evict(std::span(&v.key, 1));
  }
  slots_[s] = Slot{};
  slots_[s].key = key;
  where_[key] = s;
  policy_.on_insert(std::span(&key, 1));
  return s;
}

void ExpertCache::submit_reads(uint32_t s, uint32_t priority) {
  Slot& slot = slots_[s];
  slot.device_visible = false;
  const auto parts = parts_of(slot.key);
  std::vector<pmoe_read_req> reqs;
  for (size_t i = 0; i < parts.size(); ++i) {
    pmoe_read_req r{};
    r.file = file_.file;
    r.offset = parts[i].file_offset;
    r.length = parts[i].length;
    r.dest = host_ + uint64_t(s) * slot_bytes_ + parts[i].slot_offset;
    r.user_data = (uint64_t(s) << 8) | i;
    r.priority = priority;
    reqs.push_back(r);
    stats_[PMOE_KEY_LAYER(slot.key)].bytes_read += r.length;
  }
  slot.state = State::Loading;
  slot.parts_left = uint32_t(parts.size());
  slot.error = PMOE_OK;  // this attempt's outcome only
  slot.sys_errno = 0;
  slot.short_read = slot.timed_out = false;
  slot.submitted = Clock::now();
  ++slot.attempts;
  in_flight_ += uint32_t(parts.size());
  const PluginStatus st = storage_.submit(reqs);
  if (st.ok()) {
    const uint64_t submission = slot.submission = ++submissions_;
    arm_timer(slot, options_.read_timeout, [this, s, submission] { deadline_passed(s, submission); });
  } else {
    in_flight_ -= uint32_t(parts.size());
    slot.parts_left = 0;
    slot.state = State::Failed;
    slot.error = st.status;
    throw Error("storage '" + storage_.name() + "' refused the reads of expert " +
                std::to_string(PMOE_KEY_EXPERT(slot.key)) + " of layer " +
                std::to_string(PMOE_KEY_LAYER(slot.key)) + ": " + st.message);
  }
}

template <class Handler>
void ExpertCache::arm_timer(Slot& s, std::chrono::steady_clock::duration after, Handler handler) {
  if (s.timer) s.timer->cancel();
  auto timer = std::make_shared<Timer>(strand_, after);
  timer->async_wait([timer, handler](const boost::system::error_code& ec) {
    if (!ec) handler();  // operation_aborted: the read completed, or the cache closes
  });
  s.timer = std::move(timer);
}

std::optional<ExpertLease> ExpertCache::acquire(uint32_t layer, uint32_t expert) {
  const uint64_t key = PMOE_EXPERT_KEY(layer, expert);
  std::lock_guard lock(mu_);
  CacheStats& st = stats_[layer];
  const auto it = where_.find(key);
  int64_t s = it != where_.end() ? int64_t(it->second) : -1;
  // A failed entry with reads still in flight (it timed out) is used as it is: wait_any reports it.
  if (s >= 0 && (slots_[size_t(s)].state != State::Failed || slots_[size_t(s)].parts_left > 0)) {
    Slot& hit = slots_[size_t(s)];
    ++hit.pins;
    hit.expected_tick = kNever;
    ++st.uses, ++st.hits;
    if (hit.prefetched_unused) ++st.prefetch_hits, hit.prefetched_unused = false;
  } else {
    if (s >= 0) {  // a failed entry (an earlier error, or a prefetch): read again on demand
      slots_[size_t(s)].attempts = 0;
      slots_[size_t(s)].prefetched_unused = false;
    } else if ((s = claim_slot(key)) < 0) {
      return std::nullopt;
    }
    ++slots_[size_t(s)].pins;
    ++st.uses, ++st.misses;
    submit_reads(uint32_t(s), 0);
  }
  policy_.on_access(std::span(&key, 1), tick_);
  return ExpertLease{uint32_t(s), key};
}

void ExpertCache::prefetch(uint32_t layer, uint32_t expert, uint32_t priority) {
  const uint64_t key = PMOE_EXPERT_KEY(layer, expert);
  uint64_t tick;
  {
    std::lock_guard lock(mu_);  // resident already (the common case): no need to wake the strand
    const auto it = where_.find(key);
    if (it != where_.end()) {
      slots_[it->second].expected_tick = tick_;
      return;
    }
    tick = tick_;
  }
  boost::asio::post(strand_, [this, key, priority, tick] { prefetch_now(key, priority, tick); });
}

void ExpertCache::prefetch_now(uint64_t key, uint32_t priority, uint64_t tick) {
  std::lock_guard lock(mu_);
  // A guess made in an earlier step is stale: the engine has moved on.
  if (closing_ || tick != tick_ || where_.count(key)) return;
  const int64_t s = claim_slot(key, layout_.n_expert_used, true);
  if (s < 0) return;
  slots_[size_t(s)].prefetched_unused = true;
  slots_[size_t(s)].expected_tick = tick;
  ++stats_[PMOE_KEY_LAYER(key)].prefetches;
  try {
    submit_reads(uint32_t(s), std::max<uint32_t>(priority, 1));
  } catch (const Error&) {
    // A refused prefetch is not fatal: the slot is Failed, and a demand read tries again.
  }
}

void ExpertCache::next_tick() {
  std::lock_guard lock(mu_);
  ++tick_;
}

void ExpertCache::on_read_done(void* ctx, const pmoe_read_done* done) {
  auto* self = static_cast<ExpertCache*>(ctx);
  boost::asio::post(self->strand_, [self, d = *done] { self->complete(d); });
}

void ExpertCache::complete(const pmoe_read_done& done) {
  std::lock_guard lock(mu_);
  --in_flight_;
  const uint32_t index = uint32_t(done.user_data >> 8);
  Slot& s = slots_[index];
  pmoe_status status = done.status;
  // A backend that reports success with fewer bytes broke its contract: treat it as an I/O error
  // (retried) rather than compute with a partly stale slot.
  if (status == PMOE_OK && done.bytes != parts_of(s.key)[done.user_data & 0xff].length) status = PMOE_ERR_IO, s.short_read = true;
  if (status != PMOE_OK && s.error == PMOE_OK) s.error = status, s.sys_errno = done.sys_errno;
  if (--s.parts_left > 0) return;
  if (s.timer) s.timer->cancel();
  s.timer.reset();
  if (s.timed_out) {  // already reported; the slot is reusable from now on
    cv_.notify_all();
    return;
  }
  stats_[PMOE_KEY_LAYER(s.key)].read_seconds += std::chrono::duration<double>(Clock::now() - s.submitted).count();
  if (s.error == PMOE_OK) {
    s.state = State::Ready;
  } else if (pmoe_status_retryable(s.error) && s.attempts <= options_.max_retries && !closing_) {
    // back off 1, 2, 4 ... ms before the next attempt; the slot stays Loading meanwhile
    arm_timer(s, std::chrono::milliseconds(1u << std::min(s.attempts - 1, 10u)), [this, index] { retry(index); });
  } else {
    s.state = State::Failed;
  }
  cv_.notify_all();
}

void ExpertCache::retry(uint32_t index) {
  std::lock_guard lock(mu_);
  Slot& s = slots_[index];
  s.timer.reset();
  if (closing_) {
    s.state = State::Failed;
  } else {
    try {
      submit_reads(index, 0);
    } catch (const Error&) {  // refused: submit_reads marked the slot Failed
    }
  }
  cv_.notify_all();
}

void ExpertCache::deadline_passed(uint32_t index, uint64_t submission) {
  std::lock_guard lock(mu_);
  Slot& s = slots_[index];
  if (s.submission != submission || s.parts_left == 0) return;
  s.state = State::Failed;
  s.timed_out = true;
  if (s.error == PMOE_OK) s.error = PMOE_ERR_TIMEOUT;
  cv_.notify_all();
}

void ExpertCache::read_failed(const Slot& s) const {
  const uint32_t il = PMOE_KEY_LAYER(s.key), e = PMOE_KEY_EXPERT(s.key);
  const auto parts = parts_of(s.key);
  throw Error("reading expert " + std::to_string(e) + " of layer " + std::to_string(il) + " from '" +
              layout_.path + "' (offset " + std::to_string(parts[0].file_offset) + ", " +
              std::to_string(slot_bytes_) + " bytes) failed after " + std::to_string(s.attempts) +
              " attempt(s): " + pmoe_status_name(s.error) + (s.short_read ? " (short read)" : "") +
              (s.timed_out ? " (it did not complete within " + std::to_string(options_.read_timeout.count()) + " ms)" : "") +
              (s.sys_errno ? std::string(" (") + std::strerror(s.sys_errno) + ")" : std::string()) +
              " via storage '" + storage_.name() + "'");
}

ExpertCache::Slot& ExpertCache::leased(const ExpertLease& lease) {
  Slot& s = slots_.at(lease.slot);
  if (s.key != lease.key || s.pins == 0) throw Error("internal: expert lease used after its release");
  return s;
}

size_t ExpertCache::wait_any(std::span<const ExpertLease> leases) {
  std::unique_lock lock(mu_);
  const auto t0 = Clock::now();
  for (;;) {
    for (size_t i = 0; i < leases.size(); ++i) {
      const Slot& s = leased(leases[i]);
      if (s.state == State::Ready) {
        stats_[PMOE_KEY_LAYER(s.key)].stall_seconds += std::chrono::duration<double>(Clock::now() - t0).count();
        return i;
      }
      if (s.state == State::Failed) read_failed(s);
    }
    cv_.wait(lock);  // every read has a deadline timer, so this wait ends
  }
}

void ExpertCache::wait_for_slot() {
  std::unique_lock lock(mu_);
  cv_.wait(lock, [&] {
    if (!free_.empty()) return true;
    bool loading = false;
    for (const Slot& s : slots_) {
      if (!busy(s)) return true;
      loading = loading || s.state == State::Loading || s.parts_left > 0;
    }
    if (!loading) throw Error("expert cache: every slot is pinned, none can be freed");
    return false;
  });
}

ExpertView ExpertCache::view(const ExpertLease& lease) {
  std::unique_lock lock(mu_);
  const uint32_t s = lease.slot;
  if (Slot& slot = leased(lease); !slot.device_visible) {  // the read landed through the host pointer
    slot.device_visible = true;
    lock.unlock();  // pinned and loaded: nobody else touches the slot
    compute_.flush(memory_, uint64_t(s) * slot_bytes_, slot_bytes_);
    lock.lock();
  }
  const auto parts = parts_of(lease.key);
  const auto& matrices = layout_.layers[PMOE_KEY_LAYER(lease.key)];
  ExpertView v;
  pmoe_tensor* out[3] = {&v.gate, &v.up, &v.down};
  for (size_t m = 0; m < 3; ++m)
    *out[m] = pmoe_tensor_2d(memory_, uint64_t(s) * slot_bytes_ + parts[m].data_offset, matrices[m].dtype,
                             matrices[m].ne0, matrices[m].ne1);
  return v;
}

void ExpertCache::release(const ExpertLease& lease) {
  std::lock_guard lock(mu_);
  Slot& s = slots_[lease.slot];
  if (s.key == lease.key && s.pins > 0) --s.pins;  // never throws: it also runs while unwinding
}

void ExpertCache::on_routing(uint32_t layer, const float* probs, uint32_t n_tokens, uint32_t n_experts) {
  std::lock_guard lock(mu_);
  policy_.on_routing(layer, probs, n_tokens, n_experts);
}

std::vector<CacheStats> ExpertCache::layer_stats() const {
  std::lock_guard lock(mu_);
  return stats_;
}

CacheStats ExpertCache::total_stats() const {
  std::lock_guard lock(mu_);
  CacheStats t;
  for (const CacheStats& s : stats_) t += s;
  return t;
}

}  // namespace pmoe
