#pragma once
// The Qwen2 tokenizer of the fixtures ($PMOE_FIXTURES_DIR or the build's fixtures dir), loaded once.
#include "gguf/gguf.hpp"
#include "tokenizer/tokenizer.hpp"

#include <cstdlib>
#include <string>

inline const pmoe::Tokenizer& fixture_tokenizer() {
  static const pmoe::Tokenizer t = [] {
    const char* dir = std::getenv("PMOE_FIXTURES_DIR");
    const std::string path = std::string(dir ? dir : PMOE_FIXTURES_DIR) + "/tokenizer/ggml-vocab-qwen2.gguf";
    static const auto file = pmoe::GgufFile::open(path);
    return pmoe::Tokenizer::from_gguf(*file);
  }();
  return t;
}
