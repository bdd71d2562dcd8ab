#pragma once
// The Qwen2 pre-tokenizer: splits text into the words that BPE then merges independently.
// A hand-written matcher for llama.cpp's LLAMA_VOCAB_PRE_TYPE_QWEN2 regex
//   (?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}
//   | ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
// with ECMAScript semantics (first matching alternative wins, greedy with backtracking), as
// llama.cpp runs it through std::regex over one byte per code point.
#include <cstddef>
#include <string_view>
#include <vector>

namespace pmoe {

struct ByteSpan {
  size_t offset;
  size_t length;
};

// Appends the words of `text` to `out` as byte spans; together they cover `text` exactly.
// Invalid UTF-8 bytes are single units of the "other" class (like U+FFFD), never dropped.
void qwen2_pretokenize(std::string_view text, std::vector<ByteSpan>& out);

}  // namespace pmoe
