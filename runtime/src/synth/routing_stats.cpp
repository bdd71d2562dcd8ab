#include "synth/routing_stats.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <random>

namespace pmoe::synth {

uint32_t RoutingStats::n_top() const {
  return std::max<uint32_t>(1, uint32_t(std::lround(0.2 * n_expert)));
}

double RoutingStats::top_share(uint32_t il) const {
  std::vector<uint64_t> c = counts.at(il);
  std::sort(c.begin(), c.end(), std::greater<>());
  uint64_t top = 0, all = 0;
  for (size_t e = 0; e < c.size(); ++e) (e < n_top() ? top : all) += c[e];
  all += top;
  return all ? double(top) / double(all) : 0.0;
}

double RoutingStats::rare_fraction(uint32_t il) const {
  const double uniform = double(n_tokens) * n_expert_used / n_expert;
  uint32_t rare = 0;
  for (uint64_t c : counts.at(il)) rare += double(c) < uniform / 4 ? 1 : 0;
  return double(rare) / n_expert;
}

double RoutingStats::mean_top_share() const {
  double s = 0;
  for (uint32_t il = 0; il < counts.size(); ++il) s += top_share(il);
  return counts.empty() ? 0.0 : s / double(counts.size());
}

double RoutingStats::mean_rare_fraction() const {
  double s = 0;
  for (uint32_t il = 0; il < counts.size(); ++il) s += rare_fraction(il);
  return counts.empty() ? 0.0 : s / double(counts.size());
}

std::string RoutingStats::report() const {
  std::string out;
  char line[160];
  std::snprintf(line, sizeof line,
                "routing over %u tokens, %u experts, top-%u (uniform: top-%u share %.2f)\n"
                "layer  top-%u share  rare (<1/4 uniform)  most chosen\n",
                n_tokens, n_expert, n_expert_used, n_top(), double(n_top()) / n_expert, n_top());
  out += line;
  for (uint32_t il = 0; il < counts.size(); ++il) {
    const auto& c = counts[il];
    const auto hot = std::max_element(c.begin(), c.end());
    std::snprintf(line, sizeof line, "%5u  %11.3f  %19.3f  expert %ld (%.1f%% of tokens)\n", il,
                  top_share(il), rare_fraction(il), long(hot - c.begin()),
                  n_tokens ? 100.0 * double(*hot) / n_tokens : 0.0);
    out += line;
  }
  std::snprintf(line, sizeof line, " mean  %11.3f  %19.3f\n", mean_top_share(),
                mean_rare_fraction());
  return out + line;
}

RoutingStats measure_routing(Engine& engine, uint32_t n_tokens, uint64_t seed) {
  const Hparams& h = engine.model().hp();
  RoutingStats st;
  st.n_tokens = n_tokens;
  st.n_expert = h.n_expert;
  st.n_expert_used = h.n_expert_used;
  st.counts.assign(h.n_layer, std::vector<uint64_t>(h.n_expert, 0));
  engine.set_routing_observer([&](const RoutingEvent& ev) {
    for (int32_t e : ev.experts) ++st.counts[ev.layer][uint32_t(e)];
  });
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int32_t> tok(0, int32_t(h.n_vocab) - 1);
  std::vector<int32_t> ids;
  std::vector<float> logits;
  try {
    for (uint32_t done = 0; done < n_tokens;) {
      const uint32_t n = std::min(n_tokens - done, engine.n_ctx());
      ids.resize(n);
      for (int32_t& t : ids) t = tok(rng);
      engine.reset();
      logits.clear();
      engine.eval(ids, false, logits);
      done += n;
    }
  } catch (...) {
    engine.set_routing_observer({});  // it points at `st`
    throw;
  }
  engine.set_routing_observer({});
  engine.reset();
  return st;
}

}  // namespace pmoe::synth
