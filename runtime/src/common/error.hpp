#pragma once
// Set-up errors inside the core: one exception type whose message already says what and where
// (file, key, line, byte offset, tensor name). Hot paths use status values instead.
#include <stdexcept>
#include <string>

namespace pmoe {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

}  // namespace pmoe
