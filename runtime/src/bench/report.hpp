#pragma once
// The HTML report of `pocketmoe bench`: one self-contained file (inline CSS and SVG, no scripts,
// no network fetches) to attach to a bug or a pull request.
#include <string>

#include <nlohmann/json.hpp>

namespace pmoe::bench {

/// The report of a bench document (the JSON `pocketmoe bench --json` writes): the machine, model
/// and configs (side by side, differences marked), the table of medians, the verdicts, and charts
/// of tok/s per round, the per-token latency CDF, hit rate and MiB read per layer, and the stall
/// over the generated tokens.
std::string html_report(const nlohmann::json& doc);

}  // namespace pmoe::bench
