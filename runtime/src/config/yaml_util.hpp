#pragma once
// YAML helpers shared by the config and manifest parsers: every error says FILE:LINE:COL.
#include <yaml-cpp/yaml.h>

#include <initializer_list>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "config/config.hpp"

namespace pmoe::yaml {

SourceLoc loc(const std::string& file, const YAML::Node& n);
SourceLoc loc(const std::string& file, const YAML::Mark& m);

/// Parses text; syntax errors become pmoe::Error("FILE:LINE:COL: ...").
YAML::Node parse(const std::string& text, const std::string& file);
std::string read_file(const std::string& path);

/// " (did you mean 'x'?)" for the closest candidate within a small edit distance, else "".
std::string did_you_mean(std::string_view word, std::span<const std::string_view> candidates);
std::string did_you_mean(std::string_view word, std::initializer_list<std::string_view> candidates);
/// Optimal-string-alignment distance (a transposition counts as one edit).
size_t edit_distance(std::string_view a, std::string_view b);

/// Readable YAML node type for messages: "a map", "a sequence", "a scalar", "empty".
const char* type_name(const YAML::Node& n);

/// Iterates a map, rejecting duplicate and unknown keys (with did-you-mean). `what` names the map
/// in messages ("'cache'", "top level"); pass no `known` keys to accept any key.
struct MapEntry {
  std::string key;
  YAML::Node key_node, value;
};
std::vector<MapEntry> entries(const std::string& file, const YAML::Node& map, std::string_view what,
                              std::span<const std::string_view> known = {});

/// Value checks; each throws "FILE:LINE:COL: 'key' must be ..." naming `key`.
void expect_map(const std::string& file, const MapEntry& e);
std::string scalar(const std::string& file, const MapEntry& e);
uint64_t unsigned_int(const std::string& file, const MapEntry& e, uint64_t max);

}  // namespace pmoe::yaml
