// libFuzzer target: the tokenizer (Qwen2 vocabulary of the fixtures) on arbitrary bytes: text to
// ids to text must give the bytes back (tokenizer.hpp promises decode(encode(s)) == s), with and
// without special-token parsing; ids must be in the vocabulary.
#include "common/error.hpp"
#include "fixture_tokenizer.hpp"
#include "tokenizer/tokenizer.hpp"

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const pmoe::Tokenizer& tok = fixture_tokenizer();
  const std::string text(reinterpret_cast<const char*>(data), size);
  const auto ids = tok.encode(text, false, false);
  for (int32_t id : ids)
    if (id < 0 || id >= tok.n_vocab()) std::abort();
  if (tok.decode(ids) != text) {
    std::fprintf(stderr, "decode(encode(s)) != s for %zu bytes\n", size);
    std::abort();
  }
  (void)tok.decode(tok.encode(text, true, true), true);  // special tokens parsed and rendered
  return 0;
}
