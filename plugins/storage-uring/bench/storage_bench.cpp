// storage_bench: random-read throughput of any storage plugin, through the C ABI only.
//
//   storage_bench --plugin=<lib.so> --file=<path> [--size=1073741824] [--block=409600]
//                 [--qd=32] [--seconds=10] [--direct] [--gguf] [--option=key=value ...]
//
// Keeps `qd` reads of `block` bytes at random offsets in flight for `seconds`; each poll's
// completions are refilled with one submit. Offsets are 4 KiB-aligned into aligned slots (the
// zero-copy path), or with --gguf 32-byte-aligned into `slot + offset % 4096`, as the runtime
// places expert tensors (head and tail bounced). The file is created (pseudo-random bytes) if it
// is missing or too small; keep it on a real disk.
#include "storage_conformance.hpp"

#include <iostream>
#include <random>

using namespace pmoe::conformance;
using Clock = std::chrono::steady_clock;

int main(int argc, char** argv) {
  std::string plugin, path;
  OptionList options;
  uint64_t size = 1ull << 30, block = 400 << 10;
  uint32_t qd = 32;
  double seconds = 10;
  bool direct = false, gguf = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto val = [&](const char* flag) -> const char* {
      const size_t n = std::strlen(flag);
      return a.compare(0, n, flag) == 0 ? argv[i] + n : nullptr;
    };
    const char* v = nullptr;
    if ((v = val("--plugin=")))
      plugin = v;
    else if ((v = val("--file=")))
      path = v;
    else if ((v = val("--size=")))
      size = std::stoull(v);
    else if ((v = val("--block=")))
      block = std::stoull(v);
    else if ((v = val("--qd=")))
      qd = static_cast<uint32_t>(std::stoul(v));
    else if ((v = val("--seconds=")))
      seconds = std::stod(v);
    else if ((v = val("--option="))) {
      const std::string kv = v;
      const auto eq = kv.find('=');
      if (eq != std::string::npos) options.emplace_back(kv.substr(0, eq), kv.substr(eq + 1));
    } else if (a == "--direct")
      direct = true;
    else if (a == "--gguf")
      gguf = true;
    else {
      std::cerr << "unknown argument " << a << "\n";
      return 2;
    }
  }
  if (plugin.empty() || path.empty() || block == 0 || block > size || qd == 0) {
    std::cerr << "usage: storage_bench --plugin=<lib> --file=<path> [--size=N] [--block=N] "
                 "[--qd=N] [--seconds=S] [--direct] [--gguf] [--option=k=v ...]\n";
    return 2;
  }

  std::error_code ec;
  if (std::filesystem::file_size(path, ec) < size || ec) {
    std::cout << "writing " << size << " bytes to " << path << "\n";
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return std::perror(path.c_str()), 1;
    for (uint64_t off = 0; off < size;) {
      const auto chunk = make_content(std::min<uint64_t>(64 << 20, size - off), off);
      if (::write(fd, chunk.data(), chunk.size()) != static_cast<ssize_t>(chunk.size()))
        return std::perror("write"), 1;
      off += chunk.size();
    }
    ::fsync(fd);
    ::close(fd);
  }

  try {
    StorageLibrary lib(plugin);
    StorageInstance st(lib, options);
    uint64_t fsize = 0;
    pmoe_file* f = st.must_open(path, direct ? PMOE_OPEN_DIRECT : 0, &fsize);
    fsize = std::min(fsize, size);
    std::mt19937_64 rng(12345);
    const uint64_t grain = gguf ? 32 : 4096;
    std::uniform_int_distribution<uint64_t> pick(0, (fsize - block) / grain);

    struct Slot {
      uint8_t* mem;
      Clock::time_point t0;
    };
    std::vector<Slot> slots(qd);
    for (auto& s : slots) {
      s.mem = static_cast<uint8_t*>(std::aligned_alloc(4096, (block + 8191) / 4096 * 4096));
      if (!s.mem) throw std::bad_alloc();
      std::memset(s.mem, 0, (block + 8191) / 4096 * 4096);  // fault the pages in up front
    }
    auto req_for = [&](uint32_t i) {
      const uint64_t off = pick(rng) * grain;
      slots[i].t0 = Clock::now();
      return pmoe_read_req{f, off, block, slots[i].mem + (gguf ? off % 4096 : 0), i, 0, 0};
    };

    std::vector<pmoe_read_req> batch;
    for (uint32_t i = 0; i < qd; ++i) batch.push_back(req_for(i));
    pmoe_error err{};
    const auto start = Clock::now();
    const auto end = start + std::chrono::duration<double>(seconds);
    if (st.submit(batch, &err) != PMOE_OK) throw std::runtime_error(err.message);
    std::vector<pmoe_read_done> done(qd);
    std::vector<double> lat_us;
    uint64_t reads = 0, inflight = qd, errors = 0;
    while (inflight > 0) {
      const size_t n = st.poll(done.data(), done.size(), 1, -1);
      const auto now = Clock::now();
      batch.clear();
      for (size_t k = 0; k < n; ++k) {
        const auto i = static_cast<uint32_t>(done[k].user_data);
        errors += done[k].status != PMOE_OK;
        lat_us.push_back(std::chrono::duration<double, std::micro>(now - slots[i].t0).count());
        ++reads;
        if (now < end)
          batch.push_back(req_for(i));
        else
          --inflight;
      }
      if (!batch.empty() && st.submit(batch, &err) != PMOE_OK)
        throw std::runtime_error(err.message);
    }
    const double secs = std::chrono::duration<double>(Clock::now() - start).count();
    std::sort(lat_us.begin(), lat_us.end());
    auto pct = [&](double p) { return lat_us[static_cast<size_t>(p * (lat_us.size() - 1))]; };
    std::cout << lib.impl().name << (direct ? " direct" : " buffered") << (gguf ? " gguf" : "")
              << " qd " << qd << " block " << block << ": " << reads << " reads in " << secs
              << " s = " << reads * block / secs / (1 << 20) << " MiB/s, " << reads / secs
              << " IOPS, latency p50 " << pct(0.5) << " us p99 " << pct(0.99) << " us"
              << (errors ? ", ERRORS " + std::to_string(errors) : "") << "\n";
    for (auto& s : slots) std::free(s.mem);
    return errors ? 1 : 0;
  } catch (const std::exception& e) {
    std::cerr << "storage_bench: " << e.what() << "\n";
    return 1;
  }
}
