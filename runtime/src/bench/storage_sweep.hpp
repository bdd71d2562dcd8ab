#pragma once
// Random reads of expert-sized ranges through a storage plugin, at a given queue depth: the
// measurement behind `pocketmoe bench-storage` and `pocketmoe probe`.
#include <cstdint>
#include <string>
#include <vector>

namespace pmoe {
class StorageBackend;
}

namespace pmoe::bench {

/// A byte range of the file, as the expert cache reads one expert matrix.
struct ReadRange {
  uint64_t offset, length;
};

/// Every expert matrix of a GGUF model (tensors named blk.N.ffn_{gate,up,down}_exps.weight, cut
/// into their experts); empty for a file without experts. `typical` gets the most common length.
std::vector<ReadRange> expert_ranges(const std::string& gguf_path, uint64_t* typical = nullptr);

/// Ranges of `length` bytes at random 4 KiB-aligned offsets of a file of `file_size` bytes, for a
/// file that is not a model.
std::vector<ReadRange> plain_ranges(uint64_t file_size, uint64_t length, size_t count, uint64_t seed = 1);

struct SweepPoint {
  uint32_t queue_depth = 0;
  bool direct = false;
  uint64_t reads = 0, bytes = 0, errors = 0;
  double seconds = 0;
  double p50_us = 0, p95_us = 0, p99_us = 0;  // submit -> completion
  std::string error;  // set when the point could not run (e.g. O_DIRECT refused here)
  double gb_per_s() const { return seconds > 0 ? double(bytes) / seconds / 1e9 : 0; }
};

/// Keeps `queue_depth` reads of random `ranges` in flight for `seconds` (each refilled as it
/// completes), the file opened with O_DIRECT when `direct` (offsets and lengths then rounded to
/// the plugin's alignment, as the expert cache does). The page cache is dropped for the file
/// first, so buffered reads start cold too.
SweepPoint random_reads(StorageBackend& storage, const std::string& path, const std::vector<ReadRange>& ranges,
                        uint32_t queue_depth, bool direct, double seconds, uint64_t seed = 1);

}  // namespace pmoe::bench
