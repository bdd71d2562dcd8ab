#pragma once
// Statistics of `pocketmoe bench`: medians, percentiles, and the paired ratio of two configs
// with a bootstrap confidence interval, turned into a plain verdict.
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace pmoe::bench {

/// The p-th percentile (0..100) of `v`, interpolated linearly between order statistics; NaN for
/// an empty `v`. percentile(v, 50) is the median.
double percentile(std::vector<double> v, double p);
inline double median(std::vector<double> v) { return percentile(std::move(v), 50); }

/// B against A, paired by round: the median of b[i] / a[i], and a 95% percentile-bootstrap
/// interval of that median (rounds resampled with replacement). Pairing by round cancels what
/// a whole round shares (a slow spell of the machine); the bootstrap makes no normality
/// assumption, which the few, skewed timings of a benchmark would not meet.
struct Ratio {
  double median = 0, lo = 0, hi = 0;
  /// The interval excludes 1: a difference this test can see.
  bool differs() const { return lo > 1 || hi < 1; }
};
Ratio paired_ratio(std::span<const double> a, std::span<const double> b, int resamples = 10000, uint64_t seed = 1);

/// "B decodes 1.17x faster than A, 95% CI 1.09-1.24", "... slower ...", or "no difference this
/// test can see (B/A 1.02x, 95% CI 0.97-1.08)" for a ratio of rates (higher is faster); `what`
/// is the verb ("decodes", "prefills").
std::string verdict(const std::string& b, const std::string& a, const std::string& what, const Ratio& r);

}  // namespace pmoe::bench
