#include "bench/recommend.hpp"

#include "common/format.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <sstream>

namespace pmoe::bench {
namespace {
std::string fmt(const char* f, double a, double b = 0, double c = 0) {
  char buf[256];
  std::snprintf(buf, sizeof buf, f, a, b, c);
  return buf;
}
std::string mib(uint64_t bytes) { return std::to_string(bytes >> 20) + "MiB"; }

/// The disk point of `plugin`, `direct` nearest to `qd` (nullptr if none).
const DiskPoint* point(const Measurements& x, const std::string& plugin, bool direct, uint32_t qd) {
  const DiskPoint* best = nullptr;
  for (const DiskPoint& p : x.disk)
    if (p.plugin == plugin && p.direct == direct &&
        (!best || std::abs(double(p.queue_depth) - qd) < std::abs(double(best->queue_depth) - qd)))
      best = &p;
  return best;
}
}  // namespace

uint32_t decode_queue_depth(const ModelNeeds& m) { return std::max<uint32_t>(1, m.n_expert_used * 3); }

uint64_t memory_reserve(uint64_t available) { return (160ull << 20) + available / 20; }

Recommendation recommend_memory_and_storage(const ModelNeeds& m, const Measurements& x) {
  Recommendation r;
  const uint64_t reserve = memory_reserve(x.ram_available);
  const uint64_t usable = x.ram_available > reserve + m.dense_bytes ? x.ram_available - reserve - m.dense_bytes : 0;
  const uint64_t working_set = uint64_t(m.n_layer) * m.n_expert_used * m.expert_bytes;  // one token's experts
  if (usable >= m.expert_bytes_total) {
    r.budget = {"0", format_bytes(x.ram_available) + " available - " + format_bytes(reserve) + " reserve - " +
                         format_bytes(m.dense_bytes) + " dense weights leaves room for all " +
                         format_bytes(m.expert_bytes_total) + " of experts: everything in RAM"};
    r.storage = {"", "experts stay in RAM: no storage plugin is used"};
    r.direct_io = {"false", ""};
    r.lookahead = {"0", "in RAM nothing is prefetched"};
    return r;
  }
  r.streamed = true;
  // whole MiB, at least one token's working set (a smaller cache reads every expert every token)
  r.budget_bytes = std::max<uint64_t>(usable / (1 << 20) * (1 << 20), (working_set + (1 << 20) - 1) / (1 << 20) * (1 << 20));
  r.budget = {mib(r.budget_bytes), format_bytes(x.ram_available) + " available - " + format_bytes(reserve) +
                                       " reserve - " + format_bytes(m.dense_bytes) + " dense weights; the experts (" +
                                       format_bytes(m.expert_bytes_total) + ") stream from the disk"};
  if (usable < working_set)
    r.warnings.push_back("not enough memory for one token's experts (" + format_bytes(working_set) +
                         "): the budget is set to that, above what is free; expect swapping or thrashing");

  // storage: the fastest plugin at the queue depth decoding keeps, with O_DIRECT where it works
  // and reads at least 90% as fast as buffered (it keeps the page cache from holding a second
  // copy of what the budget holds)
  const uint32_t qd = decode_queue_depth(m);
  const DiskPoint* best = nullptr;
  for (const DiskPoint& p : x.disk) {
    if (!p.direct) continue;
    const DiskPoint* at = point(x, p.plugin, true, qd);
    if (at && (!best || at->gb_per_s > best->gb_per_s * 1.05 ||
               (best->plugin == at->plugin && at->gb_per_s > best->gb_per_s)))
      best = at;
  }
  const DiskPoint* buffered = nullptr;
  for (const DiskPoint& p : x.disk)
    if (!p.direct && (!buffered || p.gb_per_s > buffered->gb_per_s)) buffered = point(x, p.plugin, false, qd);
  const bool direct = best && (!buffered || best->gb_per_s >= 0.9 * buffered->gb_per_s);
  const DiskPoint* chosen = direct ? best : buffered;
  if (!chosen) {
    r.storage = {"storage-posix", "no storage measurement succeeded; the portable plugin"};
    r.direct_io = {"false", ""};
  } else {
    std::string others;
    for (const DiskPoint& p : x.disk)
      if (p.plugin != chosen->plugin && p.direct == chosen->direct && p.queue_depth == chosen->queue_depth)
        others += ", " + p.plugin + fmt(" %.2f GB/s", p.gb_per_s);
    r.storage = {chosen->plugin, fmt("%.2f GB/s", chosen->gb_per_s) + " at queue depth " +
                                     std::to_string(chosen->queue_depth) + " (" + (direct ? "O_DIRECT" : "buffered") +
                                     ")" + others};
    r.direct_io = {direct ? "true" : "false",
                   best ? (direct ? fmt("O_DIRECT reads %.2f GB/s", best->gb_per_s) +
                                        (buffered ? fmt(", buffered %.2f GB/s", buffered->gb_per_s) : "")
                                  : fmt("O_DIRECT reads only %.2f GB/s against buffered %.2f GB/s", best->gb_per_s,
                                        buffered ? buffered->gb_per_s : 0))
                        : "O_DIRECT does not work on this filesystem"};
  }

  r.lookahead = {"4", "the default until a layer time is measured"};
  return r;
}

void recommend_compute(const ModelNeeds& m, const Measurements& x, Recommendation& r) {
  const ComputePoint* best = nullptr;
  for (const ComputePoint& c : x.compute)  // the CPU wins ties: it needs no driver
    if (c.decode_tps > 0 && (!best || c.decode_tps > best->decode_tps * 1.05)) best = &c;
  std::string all;
  for (const ComputePoint& c : x.compute)
    all += (all.empty() ? "" : "; ") + c.label + ": " + (c.decode_tps > 0 ? fmt("%.2f tok/s", c.decode_tps) : c.note);
  if (!best) {
    r.compute = {"cpu-onednn", "no compute measurement succeeded (" + all + "); the CPU backend"};
  } else {
    r.compute = {best->plugin, "decode measured here: " + all};
    r.vulkan_device = best->device;
  }
  if (!r.streamed) return;
  // lookahead: a read issued k layers ahead has k layers of compute to land; enough layers to
  // cover the 95th-percentile read latency at the decode queue depth, 1..8
  const double tps = best ? best->decode_tps : 0;
  const DiskPoint* d = nullptr;
  for (const DiskPoint& p : x.disk)
    if (p.plugin == r.storage.value && p.direct == (r.direct_io.value == "true") &&
        (!d || std::abs(double(p.queue_depth) - decode_queue_depth(m)) < std::abs(double(d->queue_depth) - decode_queue_depth(m))))
      d = &p;
  if (tps <= 0 || !d || m.n_layer == 0) {
    r.lookahead = {"4", "no measured layer time or read latency; the default"};
    return;
  }
  const double layer_us = 1e6 / tps / m.n_layer;
  const int k = std::clamp(int(std::ceil(d->p95_us / layer_us)), 1, 8);
  r.lookahead = {std::to_string(k), fmt("a layer decodes in %.0f us and a read takes up to %.0f us (p95): %.0f layers ahead",
                                        layer_us, d->p95_us, k)};
}

std::string config_yaml(const Recommendation& r, const std::string& header) {
  std::ostringstream o;
  // reasons become comments: one line each
  auto line = [](std::string s) {
    std::replace(s.begin(), s.end(), '\n', ' ');
    return s;
  };
  std::istringstream h(header);
  for (std::string line; std::getline(h, line);) o << "# " << line << "\n";
  for (const std::string& w : r.warnings) o << "# WARNING: " << line(w) << "\n";
  o << "\n# " << line(r.compute.reason) << "\ncompute:\n  plugin: " << r.compute.value << "\n";
  if (r.compute.value == "vulkan") o << "  device: \"" << r.vulkan_device << "\"\n";
  o << "\n# " << line(r.budget.reason) << "\n";
  if (!r.streamed) return o.str();
  o << "# " << line(r.storage.reason) << "\nstorage:\n  plugin: " << r.storage.value << "\n";
  if (r.storage.value != "storage-posix") o << "  fallback: storage-posix   # where it cannot start\n";
  o << "  direct_io: " << r.direct_io.value << "   # " << line(r.direct_io.reason) << "\n";
  o << "cache:\n  policy: lru\n  budget: " << r.budget.value << "\n";
  o << "prefetch:\n  lookahead: " << r.lookahead.value << "   # " << line(r.lookahead.reason) << "\n";
  return o.str();
}

}  // namespace pmoe::bench
