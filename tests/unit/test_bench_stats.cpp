// The statistics of `pocketmoe bench`: percentiles, paired ratios with bootstrap intervals, and
// the verdicts users read.
#include "bench/report.hpp"
#include "bench/stats.hpp"

#include <doctest/doctest.h>

#include <cmath>

using namespace pmoe::bench;

TEST_CASE("percentiles interpolate between order statistics") {
  CHECK(median({3, 1, 2}) == 2);
  CHECK(median({4, 1, 2, 3}) == doctest::Approx(2.5));
  CHECK(percentile({10, 20, 30, 40, 50}, 0) == 10);
  CHECK(percentile({10, 20, 30, 40, 50}, 100) == 50);
  CHECK(percentile({10, 20, 30, 40, 50}, 95) == doctest::Approx(48));
  CHECK(std::isnan(median({})));
}

TEST_CASE("a clear speed-up is a difference, with the interval around it") {
  const std::vector<double> a = {10, 11, 9.5, 10.2, 10.8, 9.9, 10.1};
  std::vector<double> b;
  for (double x : a) b.push_back(x * 1.2 * (1 + 0.01 * (b.size() % 3)));  // 1.20-1.224x, paired
  const Ratio r = paired_ratio(a, b);
  CHECK(r.median == doctest::Approx(1.212).epsilon(0.01));
  CHECK(r.lo >= 1.19);
  CHECK(r.hi <= 1.23);
  CHECK(r.differs());
  CHECK(verdict("B", "A", "decodes", r) == "B decodes 1.21x faster than A, 95% CI 1.20-1.22");
}

TEST_CASE("noise around 1 is no difference; a slowdown reads as slower") {
  const std::vector<double> a = {10, 10, 10, 10, 10, 10};
  const std::vector<double> same = {9.5, 10.6, 10.1, 9.7, 10.4, 9.9};
  const Ratio r = paired_ratio(a, same);
  CHECK(r.lo < 1);
  CHECK(r.hi > 1);
  CHECK_FALSE(r.differs());
  CHECK(verdict("B", "A", "decodes", r).rfind("no difference this test can see (B/A ", 0) == 0);
  const std::vector<double> slow = {8, 8.1, 7.9, 8, 8.05, 7.95};
  const Ratio s = paired_ratio(a, slow);
  CHECK(s.differs());
  CHECK(verdict("B", "A", "prefills", s).rfind("B prefills 1.25x slower than A, 95% CI 1.2", 0) == 0);
}

TEST_CASE("pairing by round cancels a slow round shared by both configs") {
  // round 3 is slow for both: unpaired medians would blur it, the paired ratio stays 1.1
  const std::vector<double> a = {10, 10, 5, 10, 10};
  const std::vector<double> b = {11, 11, 5.5, 11, 11};
  const Ratio r = paired_ratio(a, b);
  CHECK(r.median == doctest::Approx(1.1));
  CHECK(r.lo == doctest::Approx(1.1));
  CHECK(r.hi == doctest::Approx(1.1));
}

TEST_CASE("the HTML report is self-contained and escapes what it shows") {
  using nlohmann::json;
  const json run = {{"config", "a<b"}, {"round", 1}, {"position", 1},
                    {"metrics", {{"decode_tps", 10.0}, {"prefill_tps", 50.0}}},
                    {"token_seconds", {0.0, 0.1, 0.12}}, {"token_stall_seconds", {0.0, 0.01, 0.0}},
                    {"layers", json::array({{{"uses", 4}, {"hits", 3}, {"bytes_read", 1 << 20}}})}};
  const json med = {{"prefill_tps", 50.0}, {"decode_tps", 10.0}, {"ttft_s", 0.02}, {"latency_p50_s", 0.1},
                    {"latency_p95_s", 0.12}, {"latency_p99_s", 0.12}, {"hit_rate", 0.75},
                    {"read_bytes_per_token", 1e6}, {"read_bytes_per_second", 1e7}, {"stall_share", 0.1},
                    {"peak_rss_bytes", 1e8}};
  const json doc = {
      {"machine", {{"cpu", "cpu"}, {"cores", 2}, {"ram_total_bytes", 1 << 30}, {"ram_available_bytes", 1 << 29},
                   {"kernel", "Linux"}, {"disk", {{"model", "disk"}, {"device", "/dev/x"}, {"filesystem", "ext4"},
                                                   {"mount_point", "/"}, {"rotational", false}}}}},
      {"model", {{"path", "m.gguf"}, {"bytes", 1000}}},
      {"settings", {{"rounds", 1}, {"prompt_tokens", 8}, {"n_predict", 3}, {"seed", 1}, {"warm", false}}},
      {"summary", json::array({{{"config", "a<b"}, {"path", "a.yaml"}, {"text", "cache: { budget: 1GiB }\n"},
                                {"compute_device", "cpu"}, {"medians", med}}})},
      {"comparisons", json::array()},
      {"identical_tokens", false},
      {"differing_configs", {"a<b"}},
      {"runs", json::array({run})}};
  const std::string html = html_report(doc);
  CHECK(html.find("a&lt;b") != std::string::npos);
  CHECK(html.find("a<b") == std::string::npos);
  CHECK(html.find("OUTPUT DIFFERS") != std::string::npos);
  CHECK(html.find("<svg") != std::string::npos);
  for (const char* fetch : {"src=", "href=", "url(", "<script", "@import"}) CHECK(html.find(fetch) == std::string::npos);
}
