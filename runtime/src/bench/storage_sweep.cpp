#include "bench/storage_sweep.hpp"

#include "bench/machine.hpp"
#include "bench/stats.hpp"
#include "common/error.hpp"
#include "gguf/gguf.hpp"
#include "plugin/instances.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <map>
#include <memory>
#include <random>

namespace pmoe::bench {

std::vector<ReadRange> expert_ranges(const std::string& gguf_path, uint64_t* typical) {
  const auto file = GgufFile::open(gguf_path);
  std::vector<ReadRange> out;
  std::map<uint64_t, size_t> lengths;
  for (const GgufTensorInfo& t : file->tensors()) {
    const bool expert = t.name.starts_with("blk.") && t.name.find("_exps.weight") != std::string::npos;
    const int64_t n = t.n_dims == 3 ? t.ne[2] : 0;
    if (!expert || n <= 0 || t.size % uint64_t(n) != 0) continue;
    const uint64_t each = t.size / uint64_t(n);
    for (int64_t e = 0; e < n; ++e) out.push_back({t.offset + uint64_t(e) * each, each});
    lengths[each] += size_t(n);
  }
  if (typical) {
    *typical = 0;
    size_t best = 0;
    for (auto [len, count] : lengths)
      if (count > best) best = count, *typical = len;
  }
  return out;
}

std::vector<ReadRange> plain_ranges(uint64_t file_size, uint64_t length, size_t count, uint64_t seed) {
  if (file_size < length) throw Error("the file (" + std::to_string(file_size) + " bytes) is smaller than one read");
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<uint64_t> pick(0, (file_size - length) / 4096);
  std::vector<ReadRange> out(count);
  for (ReadRange& r : out) r = {pick(rng) * 4096, length};
  return out;
}

SweepPoint random_reads(StorageBackend& storage, const std::string& path, const std::vector<ReadRange>& ranges,
                        uint32_t queue_depth, bool direct, double seconds, uint64_t seed) {
  using Clock = std::chrono::steady_clock;
  SweepPoint p;
  p.queue_depth = queue_depth;
  p.direct = direct;
  if (ranges.empty() || queue_depth == 0) throw Error("random_reads: nothing to read");
  drop_page_cache(path);
  StorageBackend::OpenFile f;
  try {
    f = storage.open(path, direct ? PMOE_OPEN_DIRECT : 0);
  } catch (const Error& e) {
    p.error = e.what();
    return p;
  }
  const uint64_t align = direct ? std::max<uint32_t>(1, storage.direct_alignment(f.file)) : 1;
  uint64_t longest = 0;
  for (const ReadRange& r : ranges) longest = std::max(longest, r.length);
  const uint64_t slot_bytes = (longest + 2 * align + 4095) / 4096 * 4096;
  struct Slot {
    std::unique_ptr<uint8_t, decltype(&std::free)> mem{nullptr, &std::free};
    Clock::time_point t0;
  };
  std::vector<Slot> slots(queue_depth);
  for (Slot& s : slots) {
    s.mem.reset(static_cast<uint8_t*>(std::aligned_alloc(4096, slot_bytes)));
    if (!s.mem) throw Error("random_reads: out of memory for " + std::to_string(queue_depth) + " buffers");
    std::fill_n(s.mem.get(), slot_bytes, 0);  // fault the pages in before timing
  }
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<size_t> pick(0, ranges.size() - 1);
  auto request = [&](uint32_t i) {
    const ReadRange& r = ranges[pick(rng)];
    const uint64_t start = r.offset / align * align;
    const uint64_t end = std::min<uint64_t>((r.offset + r.length + align - 1) / align * align, f.size);
    slots[i].t0 = Clock::now();
    return pmoe_read_req{f.file, start, end - start, slots[i].mem.get(), i, 0, 0};
  };
  std::vector<pmoe_read_req> batch;
  for (uint32_t i = 0; i < queue_depth; ++i) batch.push_back(request(i));
  std::vector<double> latency_us;
  const auto t_start = Clock::now();
  const auto t_end = t_start + std::chrono::duration<double>(seconds);
  uint32_t in_flight = queue_depth;
  if (const PluginStatus st = storage.submit(batch); !st.ok()) {
    storage.close(f.file);
    throw Error("storage " + storage.name() + ": submit failed: " + st.message);
  }
  std::vector<pmoe_read_done> done(queue_depth);
  while (in_flight > 0) {
    const size_t n = storage.poll(done, 1, -1);
    const auto now = Clock::now();
    batch.clear();
    for (size_t k = 0; k < n; ++k) {
      const auto i = uint32_t(done[k].user_data);
      if (done[k].status != PMOE_OK) ++p.errors;
      p.bytes += done[k].bytes;
      ++p.reads;
      latency_us.push_back(std::chrono::duration<double, std::micro>(now - slots[i].t0).count());
      if (now < t_end) batch.push_back(request(i));
      else --in_flight;
    }
    if (!batch.empty())
      if (const PluginStatus st = storage.submit(batch); !st.ok()) {
        in_flight -= uint32_t(batch.size());
        p.error = "submit failed: " + st.message;
      }
  }
  p.seconds = std::chrono::duration<double>(Clock::now() - t_start).count();
  storage.close(f.file);
  p.p50_us = percentile(latency_us, 50);
  p.p95_us = percentile(latency_us, 95);
  p.p99_us = percentile(latency_us, 99);
  return p;
}

}  // namespace pmoe::bench
