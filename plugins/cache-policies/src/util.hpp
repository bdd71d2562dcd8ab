#pragma once
// Helpers shared by the policies of this library.
#include <pocketmoe/cpp/plugin.hpp>

#include <cstdint>

namespace pmoe {

/// A decimal option in [lo, hi]. The manifest schema has no float type, so these options are
/// strings checked here; a bad value fails create() with a message naming the option.
double get_decimal(const sdk::Options& options, const char* key, double def, double lo, double hi);

/// Entries the cache holds; a shape without a capacity means every expert of the model fits.
uint64_t capacity_of(const pmoe_cache_shape& shape);

}  // namespace pmoe
