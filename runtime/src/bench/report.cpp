#include "bench/report.hpp"

#include "bench/stats.hpp"
#include "common/format.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <sstream>
#include <vector>

namespace pmoe::bench {
namespace {
using nlohmann::json;

const char* kColors[] = {"#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf", "#7f7f7f"};
const char* color(size_t i) { return kColors[i % std::size(kColors)]; }

std::string esc(const std::string& s) {
  std::string o;
  for (char c : s) {
    switch (c) {
      case '&': o += "&amp;"; break;
      case '<': o += "&lt;"; break;
      case '>': o += "&gt;"; break;
      case '"': o += "&quot;"; break;
      default: o += c;
    }
  }
  return o;
}

std::string num(double v, int prec = 2) {
  char b[64];
  std::snprintf(b, sizeof b, "%.*f", prec, v);
  return b;
}

/// A "nice" step for about `n` ticks over [0, hi].
double tick_step(double hi, int n = 5) {
  if (!(hi > 0)) return 1;
  const double raw = hi / n, mag = std::pow(10, std::floor(std::log10(raw)));
  for (double m : {1.0, 2.0, 2.5, 5.0, 10.0})
    if (raw <= m * mag) return m * mag;
  return 10 * mag;
}

// Chart geometry: size, and the margins left, right, top (title and legend row) and bottom.
constexpr double W = 560, H = 300, L = 60, R = 20, T = 46, B = 45;

/// The opening of a chart's SVG: the title, and the y grid lines with their labels every `ys` up
/// to `y1` (`py` maps a value to its y pixel).
template <class Py>
std::string chart_frame(const std::string& title, double y1, double ys, Py py) {
  std::ostringstream o;
  o << "<svg xmlns='http://www.w3.org/2000/svg' width='" << W << "' height='" << H << "' viewBox='0 0 " << W << " " << H
    << "' role='img'><title>" << esc(title) << "</title>";
  o << "<text x='" << W / 2 << "' y='18' text-anchor='middle' class='t'>" << esc(title) << "</text>";
  for (double y = 0; y <= y1 + ys / 2; y += ys)
    o << "<line x1='" << L << "' x2='" << W - R << "' y1='" << py(y) << "' y2='" << py(y) << "' class='g'/><text x='"
      << L - 6 << "' y='" << py(y) + 4 << "' text-anchor='end'>" << num(y, ys < 1 ? 2 : 0) << "</text>";
  return o.str();
}

/// One legend entry in the row under a chart's title, at `x` (advanced past it).
std::string legend_item(double& x, const std::string& name, size_t c) {
  std::ostringstream o;
  o << "<rect x='" << num(x, 1) << "' y='27' width='10' height='10' fill='" << color(c) << "'/><text x='" << num(x + 14, 1)
    << "' y='36'>" << esc(name) << "</text>";
  x += 24 + 6.2 * double(name.size());
  return o.str();
}

struct Series {
  std::string name;
  std::vector<std::pair<double, double>> points;
  size_t color;
};

/// An SVG line chart (or dots, with `dots`) of `series`, axes from 0 (y) and the data (x).
std::string line_chart(const std::string& title, const std::string& xlabel, const std::string& ylabel,
                       const std::vector<Series>& series, bool dots = false, double y_max = 0) {
  double x0 = 1e300, x1 = -1e300, y1 = y_max;
  for (const Series& s : series)
    for (auto [x, y] : s.points) x0 = std::min(x0, x), x1 = std::max(x1, x), y1 = std::max(y1, y);
  if (x0 > x1) x0 = 0, x1 = 1;
  if (x1 == x0) x1 = x0 + 1;
  const double ys = tick_step(y1 > 0 ? y1 : 1);
  y1 = std::ceil((y1 > 0 ? y1 : 1) / ys) * ys;
  auto px = [&](double x) { return L + (x - x0) / (x1 - x0) * (W - L - R); };
  auto py = [&](double y) { return H - B - y / y1 * (H - T - B); };
  std::ostringstream o;
  o << chart_frame(title, y1, ys, py);
  bool whole = true;  // rounds, token indices: no ticks between whole numbers
  for (const Series& s : series)
    for (auto [x, y] : s.points) whole = whole && x == std::floor(x);
  const double xs = std::max(tick_step(x1 - x0), whole ? 1.0 : 0.0);
  for (double x = std::ceil(x0 / xs) * xs; x <= x1 + xs / 100; x += xs)
    o << "<text x='" << px(x) << "' y='" << H - B + 16 << "' text-anchor='middle'>" << num(x, xs < 1 ? 2 : 0) << "</text>";
  o << "<line x1='" << L << "' x2='" << W - R << "' y1='" << H - B << "' y2='" << H - B << "' class='a'/>";
  o << "<text x='" << (L + W - R) / 2 << "' y='" << H - 8 << "' text-anchor='middle'>" << esc(xlabel) << "</text>";
  o << "<text transform='translate(14," << (T + H - B) / 2 << ") rotate(-90)' text-anchor='middle'>" << esc(ylabel) << "</text>";
  double lx = L;
  for (const Series& s : series) {
    if (!dots && s.points.size() > 1) {
      o << "<polyline fill='none' stroke-width='2' stroke='" << color(s.color) << "' points='";
      for (auto [x, y] : s.points) o << num(px(x), 1) << "," << num(py(y), 1) << " ";
      o << "'/>";
    }
    if (dots || s.points.size() == 1)
      for (auto [x, y] : s.points)
        o << "<circle r='3' fill='" << color(s.color) << "' cx='" << num(px(x), 1) << "' cy='" << num(py(y), 1) << "'/>";
    o << legend_item(lx, s.name, s.color);
  }
  o << "</svg>";
  return o.str();
}

/// An SVG chart of grouped bars: one group per layer, one bar per config.
std::string bar_chart(const std::string& title, const std::string& ylabel, const std::vector<std::string>& names,
                      const std::vector<std::vector<double>>& values) {
  size_t groups = 0;
  double y1 = 0;
  for (const auto& v : values) {
    groups = std::max(groups, v.size());
    for (double y : v) y1 = std::max(y1, y);
  }
  const double ys = tick_step(y1 > 0 ? y1 : 1);
  y1 = std::ceil((y1 > 0 ? y1 : 1) / ys) * ys;
  auto py = [&](double y) { return H - B - y / y1 * (H - T - B); };
  const double gw = (W - L - R) / double(std::max<size_t>(groups, 1)), bw = gw * 0.8 / double(std::max<size_t>(values.size(), 1));
  std::ostringstream o;
  o << chart_frame(title, y1, ys, py);
  for (size_t c = 0; c < values.size(); ++c)
    for (size_t g = 0; g < values[c].size(); ++g)
      o << "<rect x='" << num(L + double(g) * gw + gw * 0.1 + double(c) * bw, 1) << "' y='" << num(py(values[c][g]), 1)
        << "' width='" << num(bw, 1) << "' height='" << num(H - B - py(values[c][g]), 1) << "' fill='" << color(c)
        << "'><title>" << esc(names[c]) << ", layer " << g << ": " << num(values[c][g]) << "</title></rect>";
  const size_t every = std::max<size_t>(1, groups / 12);
  for (size_t g = 0; g < groups; g += every)
    o << "<text x='" << num(L + (double(g) + 0.5) * gw, 1) << "' y='" << H - B + 16 << "' text-anchor='middle'>" << g << "</text>";
  o << "<text x='" << (L + W - R) / 2 << "' y='" << H - 8 << "' text-anchor='middle'>layer</text>";
  o << "<text transform='translate(14," << (T + H - B) / 2 << ") rotate(-90)' text-anchor='middle'>" << esc(ylabel) << "</text>";
  double lx = L;
  for (size_t c = 0; c < names.size(); ++c) o << legend_item(lx, names[c], c);
  o << "</svg>";
  return o.str();
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> v;
  std::istringstream in(text);
  for (std::string l; std::getline(in, l);) v.push_back(l);
  return v;
}

/// The configs side by side, lines that are not in the baseline (the first) marked.
std::string configs_side_by_side(const json& summary) {
  const std::vector<std::string> base = lines_of(summary[0]["text"]);
  std::ostringstream o;
  o << "<div class='cfgs'>";
  for (size_t c = 0; c < summary.size(); ++c) {
    o << "<div><h3 style='color:" << color(c) << "'>" << esc(summary[c]["config"]) << "</h3><p class='small'>"
      << esc(summary[c]["path"]) << "<br>device: " << esc(summary[c]["compute_device"].get<std::string>()) << "</p><pre>";
    for (const std::string& l : lines_of(summary[c]["text"])) {
      const bool changed = c > 0 && std::find(base.begin(), base.end(), l) == base.end();
      o << (changed ? "<mark>" : "") << esc(l) << (changed ? "</mark>" : "") << "\n";
    }
    o << "</pre></div>";
  }
  o << "</div>";
  return o.str();
}

}  // namespace

std::string html_report(const json& doc) {
  const json& summary = doc["summary"];
  const json& runs = doc["runs"];
  const json& m = doc["machine"];
  std::vector<std::string> names;
  for (const json& s : summary) names.push_back(s["config"]);
  auto index_of = [&](const std::string& n) { return size_t(std::find(names.begin(), names.end(), n) - names.begin()); };

  std::ostringstream o;
  o << "<!DOCTYPE html><html><head><meta charset='utf-8'><title>pocketmoe bench</title><style>"
       "body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;max-width:1200px}"
       "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
       "th{background:#f3f3f3}td:first-child,th:first-child,.kv td{text-align:left}"
       ".cfgs{display:flex;gap:16px;flex-wrap:wrap}.cfgs>div{flex:1;min-width:260px}"
       "pre{background:#f7f7f7;padding:8px;overflow:auto;font-size:12px}mark{background:#fff3a0}"
       ".charts{display:flex;flex-wrap:wrap;gap:12px}svg{background:#fff;border:1px solid #ddd}"
       "svg text{font:11px sans-serif;fill:#333}svg .t{font-size:13px;font-weight:bold}"
       "svg .g{stroke:#eee}svg .a{stroke:#888}.bad{background:#c00;color:#fff;padding:8px;font-weight:bold}"
       ".ok{color:#070}.small{font-size:12px;color:#555;margin:0}"
       "</style></head><body><h1>pocketmoe bench</h1>";
  if (!doc["identical_tokens"].get<bool>()) {
    std::string list;
    for (const json& n : doc["differing_configs"]) list += (list.empty() ? "" : ", ") + n.get<std::string>();
    o << "<p class='bad'>OUTPUT DIFFERS: " << esc(list) << " generated other tokens than the first config on the "
      << "same compute device, with the same seed. Offloading must never change output: this is a bug.</p>";
  } else {
    o << "<p class='ok'>Every run of every config generated the same tokens as the others on its compute device.</p>";
  }
  const json& st = doc["settings"];
  o << "<h2>Machine and model</h2><table class='kv'>"
    << "<tr><th>CPU</th><td>" << esc(m["cpu"]) << " (" << m["cores"].get<int>() << " cores)</td></tr>"
    << "<tr><th>RAM</th><td>" << format_bytes(m["ram_total_bytes"]) << " total, " << format_bytes(m["ram_available_bytes"])
    << " available</td></tr>"
    << "<tr><th>Disk</th><td>" << esc(m["disk"]["model"]) << " (" << esc(m["disk"]["device"]) << ", "
    << esc(m["disk"]["filesystem"]) << " on " << esc(m["disk"]["mount_point"])
    << (m["disk"]["rotational"].get<bool>() ? ", rotational" : "") << ")</td></tr>"
    << "<tr><th>Kernel</th><td>" << esc(m["kernel"]) << "</td></tr>"
    << "<tr><th>Model</th><td>" << esc(doc["model"]["path"]) << " (" << format_bytes(doc["model"]["bytes"]) << ")</td></tr>"
    << "<tr><th>Runs</th><td>" << st["rounds"].get<int>() << " rounds, prompt " << st["prompt_tokens"].get<int>()
    << " tokens, " << st["n_predict"].get<int>() << " generated, seed " << st["seed"].get<int>() << ", "
    << (st["warm"].get<bool>() ? "warm page cache" : "cold: page cache dropped before every run") << "</td></tr></table>";
  o << "<h2>Configs</h2>" << configs_side_by_side(summary);

  // the table of medians, and the verdicts
  const std::pair<const char*, const char*> cols[] = {
      {"prefill_tps", "prefill tok/s"}, {"decode_tps", "decode tok/s"}, {"ttft_s", "TTFT ms"},
      {"latency_p50_s", "p50 ms"}, {"latency_p95_s", "p95 ms"}, {"latency_p99_s", "p99 ms"}, {"hit_rate", "hit rate"},
      {"read_bytes_per_token", "MiB read/token"}, {"read_bytes_per_second", "read MiB/s"}, {"stall_share", "stall"},
      {"peak_rss_bytes", "peak RSS MiB"}};
  o << "<h2>Results (medians over rounds)</h2><table><tr><th>config</th>";
  for (auto [k, h] : cols) o << "<th>" << h << "</th>";
  o << "</tr>";
  for (size_t c = 0; c < summary.size(); ++c) {
    const json& med = summary[c]["medians"];
    o << "<tr><td style='color:" << color(c) << "'>" << esc(names[c]) << "</td>";
    for (auto [k, h] : cols) {
      const double v = med[k].get<double>();
      const std::string key = k;
      if (key.ends_with("_s")) o << "<td>" << num(v * 1e3, 1) << "</td>";
      else if (key == "hit_rate" || key == "stall_share") o << "<td>" << num(v * 100, 1) << "%</td>";
      else if (key.find("bytes") != std::string::npos) o << "<td>" << num(v / (1 << 20), 1) << "</td>";
      else o << "<td>" << num(v) << "</td>";
    }
    o << "</tr>";
  }
  o << "</table><ul>";
  for (const json& c : doc["comparisons"]) o << "<li>" << esc(c["verdict"]) << "</li>";
  o << "</ul>";

  // charts
  std::vector<Series> decode(names.size()), prefill(names.size()), cdf(names.size()), stall(names.size());
  std::vector<std::vector<double>> lat(names.size()), hit(names.size()), mib(names.size());
  std::vector<std::vector<double>> stall_sum(names.size());
  std::vector<size_t> n_runs(names.size(), 0);
  for (size_t c = 0; c < names.size(); ++c) {
    decode[c] = {names[c], {}, c};
    prefill[c] = {names[c], {}, c};
    cdf[c] = {names[c], {}, c};
    stall[c] = {names[c], {}, c};
  }
  std::vector<std::vector<double>> layer_uses(names.size()), layer_hits(names.size()), layer_bytes(names.size());
  for (const json& r : runs) {
    const size_t c = index_of(r["config"]);
    decode[c].points.push_back({r["round"].get<double>(), r["metrics"]["decode_tps"].get<double>()});
    prefill[c].points.push_back({r["round"].get<double>(), r["metrics"]["prefill_tps"].get<double>()});
    const std::vector<double> ts = r["token_seconds"];
    lat[c].insert(lat[c].end(), ts.begin() + (ts.empty() ? 0 : 1), ts.end());
    const std::vector<double> ss = r["token_stall_seconds"];
    if (stall_sum[c].size() < ss.size()) stall_sum[c].resize(ss.size(), 0.0);
    for (size_t i = 0; i < ss.size(); ++i) stall_sum[c][i] += ss[i];
    ++n_runs[c];
    const json& layers = r["layers"];
    layer_uses[c].resize(std::max(layer_uses[c].size(), layers.size()), 0.0);
    layer_hits[c].resize(layer_uses[c].size(), 0.0);
    layer_bytes[c].resize(layer_uses[c].size(), 0.0);
    for (size_t l = 0; l < layers.size(); ++l) {
      layer_uses[c][l] += layers[l]["uses"].get<double>();
      layer_hits[c][l] += layers[l]["hits"].get<double>();
      layer_bytes[c][l] += layers[l]["bytes_read"].get<double>();
    }
  }
  bool streamed = false;
  for (size_t c = 0; c < names.size(); ++c) {
    std::sort(lat[c].begin(), lat[c].end());
    for (size_t i = 0; i < lat[c].size(); ++i)
      cdf[c].points.push_back({lat[c][i] * 1e3, double(i + 1) / double(lat[c].size())});
    double cum = 0;  // mean cumulative stall over this config's runs, per generated token
    for (size_t i = 0; i < stall_sum[c].size(); ++i)
      stall[c].points.push_back({double(i + 1), (cum += stall_sum[c][i] / double(n_runs[c])) * 1e3});
    for (size_t l = 0; l < layer_uses[c].size(); ++l) {
      hit[c].push_back(layer_uses[c][l] ? 100 * layer_hits[c][l] / layer_uses[c][l] : 100);
      mib[c].push_back(layer_bytes[c][l] / double(n_runs[c]) / (1 << 20));
    }
    streamed |= !layer_uses[c].empty();
  }
  o << "<h2>Charts</h2><div class='charts'>"
    << line_chart("decode tok/s per round", "round", "tok/s", decode, true)
    << line_chart("prefill tok/s per round", "round", "tok/s", prefill, true)
    << line_chart("per-token latency CDF (decode, all runs)", "ms", "fraction of tokens", cdf, false, 1.0)
    << line_chart("stall over the generated tokens (mean of runs)", "generated token", "cumulative stall ms", stall);
  if (streamed)
    o << bar_chart("expert-cache hit rate per layer (all runs)", "hit rate %", names, hit)
      << bar_chart("MiB read per layer (mean per run)", "MiB", names, mib);
  else
    o << "<p>No config streams experts (no expert cache): nothing is read per layer.</p>";
  o << "</div><p class='small'>Written by pocketmoe bench. Each run is a fresh process; configs rotate from round to "
       "round; ratios are medians of per-round ratios with 95% bootstrap intervals.</p></body></html>\n";
  return o.str();
}

}  // namespace pmoe::bench
