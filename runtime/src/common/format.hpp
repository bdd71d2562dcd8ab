#pragma once
// Human-readable byte counts for messages: "416.0 KiB", "1.5 GiB".
#include <cstdint>
#include <cstdio>
#include <string>

namespace pmoe {

inline std::string format_bytes(uint64_t b) {
  const char* units[] = {"bytes", "KiB", "MiB", "GiB", "TiB"};
  double v = double(b);
  int u = 0;
  while (v >= 1024 && u < 4) v /= 1024, ++u;
  char buf[32];
  std::snprintf(buf, sizeof buf, u ? "%.1f %s" : "%.0f %s", v, units[u]);
  return buf;
}

}  // namespace pmoe
