#include "util.hpp"

#include <charconv>
#include <cmath>
#include <cstdio>
#include <string>

namespace pmoe {

double get_decimal(const sdk::Options& options, const char* key, double def, double lo, double hi) {
  const char* v = options.raw(key);
  if (!v) return def;
  std::string_view s(v);
  double x = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), x);  // locale-independent
  if (ec != std::errc() || end != s.data() + s.size() || s.empty() || !std::isfinite(x) || x < lo ||
      x > hi) {
    char range[64];
    std::snprintf(range, sizeof range, "%g..%g", lo, hi);
    throw sdk::StatusError(
        PMOE_ERR_INVALID_ARGUMENT,
        std::string("option '") + key + "' must be a decimal in " + range + ", got '" + v + "'");
  }
  return x;
}

uint64_t capacity_of(const pmoe_cache_shape& shape) {
  uint64_t c = shape.capacity ? shape.capacity : uint64_t{shape.n_layers} * shape.n_experts;
  return c ? c : 1;
}

}  // namespace pmoe
