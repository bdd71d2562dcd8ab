// Timing and medians shared by the benchmarks. Standard library only, so that a benchmark of
// plugin code alone (kernel_bench) can use it without the model headers bench_common.hpp brings.
#pragma once
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

namespace pmoe::bench {

using Clock = std::chrono::steady_clock;

inline double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

inline double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/// `body` run once to warm up, then `runs` times more: the seconds each of those took.
template <class F>
std::vector<double> run_times(int runs, F&& body) {
  std::vector<double> t;
  for (int r = 0; r <= runs; ++r) {  // run 0 warms up
    const auto t0 = Clock::now();
    body();
    if (r) t.push_back(seconds_since(t0));
  }
  return t;
}

inline std::string list(const std::vector<double>& v, const char* fmt) {
  std::string s;
  char buf[32];
  for (double x : v) {
    std::snprintf(buf, sizeof buf, fmt, x);
    if (!s.empty()) s += ' ';
    s += buf;
  }
  return s;
}

}  // namespace pmoe::bench
