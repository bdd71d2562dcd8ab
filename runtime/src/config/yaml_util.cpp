#include "config/yaml_util.hpp"

#include <algorithm>
#include <charconv>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "common/error.hpp"

namespace pmoe::yaml {

SourceLoc loc(const std::string& file, const YAML::Mark& m) {
  // yaml-cpp marks are 0-based; null marks (-1) come from empty documents.
  return {file, std::max(m.line, 0) + 1, std::max(m.column, 0) + 1};
}

SourceLoc loc(const std::string& file, const YAML::Node& n) { return loc(file, n.Mark()); }

YAML::Node parse(const std::string& text, const std::string& file) {
  try {
    return YAML::Load(text);
  } catch (const YAML::ParserException& e) {
    throw Error(loc(file, e.mark).str() + ": YAML syntax error: " + e.msg);
  }
}

std::string read_file(const std::string& path) {
  // a FIFO or device node would block or never end: only regular files are read
  std::error_code ec;
  const auto st = std::filesystem::status(path, ec);
  if (!ec && std::filesystem::exists(st) && !std::filesystem::is_regular_file(st))
    throw Error(path + ": not a regular file");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(path + ": cannot open file");
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) throw Error(path + ": read error");
  return ss.str();
}

size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<std::vector<size_t>> d(a.size() + 1, std::vector<size_t>(b.size() + 1));
  for (size_t i = 0; i <= a.size(); ++i) d[i][0] = i;
  for (size_t j = 0; j <= b.size(); ++j) d[0][j] = j;
  for (size_t i = 1; i <= a.size(); ++i)
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
      d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1])
        d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
    }
  return d[a.size()][b.size()];
}

std::string did_you_mean(std::string_view word, std::span<const std::string_view> candidates) {
  std::string_view best;
  size_t best_d = SIZE_MAX;
  for (auto c : candidates) {
    size_t d = edit_distance(word, c);
    // Up to 2 edits, fewer for short words, so "ab" does not suggest "xy".
    if (d < best_d && d <= std::min<size_t>(2, std::max<size_t>(1, c.size() / 3))) {
      best = c;
      best_d = d;
    }
  }
  return best.empty() ? std::string() : " (did you mean '" + std::string(best) + "'?)";
}

std::string did_you_mean(std::string_view word, std::initializer_list<std::string_view> candidates) {
  return did_you_mean(word, std::span<const std::string_view>(candidates.begin(), candidates.size()));
}

const char* type_name(const YAML::Node& n) {
  switch (n.Type()) {
    case YAML::NodeType::Map: return "a map";
    case YAML::NodeType::Sequence: return "a sequence";
    case YAML::NodeType::Scalar: return "a scalar";
    default: return "empty";
  }
}

std::vector<MapEntry> entries(const std::string& file, const YAML::Node& map, std::string_view what,
                              std::span<const std::string_view> known) {
  std::vector<MapEntry> out;
  for (auto it = map.begin(); it != map.end(); ++it) {
    YAML::Node k = it->first;  // a copy: it->first is a temporary
    if (!k.IsScalar())
      throw Error(loc(file, k).str() + ": keys " + std::string(what) + " must be plain words, got " +
                  type_name(k));
    std::string key = k.Scalar();
    for (const auto& prev : out)
      if (prev.key == key)
        throw Error(loc(file, k).str() + ": duplicate key '" + key + "' " + std::string(what) +
                    " (first at " + loc(file, prev.key_node).str() + ")");
    if (!known.empty() && std::find(known.begin(), known.end(), key) == known.end()) {
      std::string hint = did_you_mean(key, known);
      if (hint.empty()) {
        hint = "; known keys:";
        for (auto kk : known) hint.append(" ").append(kk);
      }
      throw Error(loc(file, k).str() + ": unknown key '" + key + "' " + std::string(what) + hint);
    }
    out.push_back({key, k, it->second});
  }
  return out;
}

void expect_map(const std::string& file, const MapEntry& e) {
  if (!e.value.IsMap())
    throw Error(loc(file, e.value.IsNull() ? e.key_node : e.value).str() + ": '" + e.key +
                "' must be a map, got " + type_name(e.value));
}

std::string scalar(const std::string& file, const MapEntry& e) {
  if (e.value.IsNull()) throw Error(loc(file, e.key_node).str() + ": '" + e.key + "' has no value");
  if (!e.value.IsScalar())
    throw Error(loc(file, e.value).str() + ": '" + e.key + "' must be a scalar, got " +
                type_name(e.value));
  return e.value.Scalar();
}

uint64_t unsigned_int(const std::string& file, const MapEntry& e, uint64_t max) {
  std::string s = scalar(file, e);
  uint64_t v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec == std::errc::result_out_of_range || (ec == std::errc() && v > max))
    throw Error(loc(file, e.value).str() + ": '" + e.key + "' is too large: " + s + " (maximum " +
                std::to_string(max) + ")");
  if (ec != std::errc() || p != s.data() + s.size())
    throw Error(loc(file, e.value).str() + ": '" + e.key +
                "' must be a non-negative integer, got '" + s + "'");
  return v;
}

}  // namespace pmoe::yaml
