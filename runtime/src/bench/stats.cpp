#include "bench/stats.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <random>

namespace pmoe::bench {

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return std::numeric_limits<double>::quiet_NaN();
  std::sort(v.begin(), v.end());
  const double pos = std::clamp(p, 0.0, 100.0) / 100.0 * double(v.size() - 1);
  const size_t i = size_t(pos);
  const double frac = pos - double(i);
  return i + 1 < v.size() ? v[i] + frac * (v[i + 1] - v[i]) : v[i];
}

Ratio paired_ratio(std::span<const double> a, std::span<const double> b, int resamples, uint64_t seed) {
  const size_t n = std::min(a.size(), b.size());
  std::vector<double> r;
  for (size_t i = 0; i < n; ++i)
    if (a[i] > 0) r.push_back(b[i] / a[i]);
  Ratio out;
  if (r.empty()) return out;
  out.median = median(r);
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<size_t> pick(0, r.size() - 1);
  std::vector<double> medians(static_cast<size_t>(resamples)), sample(r.size());
  for (double& m : medians) {
    for (double& x : sample) x = r[pick(rng)];
    m = median(sample);
  }
  out.lo = percentile(medians, 2.5);
  out.hi = percentile(medians, 97.5);
  return out;
}

std::string verdict(const std::string& b, const std::string& a, const std::string& what, const Ratio& r) {
  char buf[512];
  if (!r.differs())
    std::snprintf(buf, sizeof buf, "no difference this test can see (%s/%s %.2fx, 95%% CI %.2f-%.2f)", b.c_str(),
                  a.c_str(), r.median, r.lo, r.hi);
  else if (r.median >= 1)
    std::snprintf(buf, sizeof buf, "%s %s %.2fx faster than %s, 95%% CI %.2f-%.2f", b.c_str(), what.c_str(), r.median,
                  a.c_str(), r.lo, r.hi);
  else  // as a slowdown factor: the interval inverts
    std::snprintf(buf, sizeof buf, "%s %s %.2fx slower than %s, 95%% CI %.2f-%.2f", b.c_str(), what.c_str(),
                  1 / r.median, a.c_str(), 1 / r.hi, 1 / r.lo);
  return buf;
}

}  // namespace pmoe::bench
