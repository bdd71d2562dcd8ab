#pragma once
// Unicode helpers for the byte-level BPE tokenizer: strict UTF-8 decoding (bad bytes stay
// single units so nothing is ever lost), llama.cpp's character classes, and GPT-2's
// byte <-> printable-code-point table.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace pmoe::unicode {

struct Utf8Char {
  uint32_t cp;   // decoded code point; 0xFFFD for an invalid byte
  uint32_t len;  // bytes consumed, 1..4 (1 for an invalid byte)
  bool valid;
};

// Decodes the sequence starting at s[i] (i < s.size()). Overlong forms, surrogates, code points
// above U+10FFFF and truncated sequences are invalid: only the first byte is consumed.
Utf8Char decode_utf8(std::string_view s, size_t i);

void append_utf8(std::string& out, uint32_t cp);

// Number of trailing bytes of s that form an incomplete, but so far valid, UTF-8 sequence
// (0..3). A streaming decoder holds those back until the next piece arrives.
size_t incomplete_utf8_tail(std::string_view s);

// Character classes exactly as llama.cpp's regex splitter sees them (whitespace wins over the
// general category; ASCII is classified by the C locale).
enum CharFlags : uint8_t {
  kLetter = 1,   // \p{L}
  kNumber = 2,   // \p{N}
  kSpace = 4,    // \s: ASCII \t\n\v\f\r and ' ', plus Unicode White_Space above U+007F
  kCrLf = 8,     // '\r' or '\n' (also kSpace)
};
uint8_t char_flags(uint32_t cp);

// GPT-2's bytes_to_unicode(): every byte maps to a printable code point (< 0x144).
uint32_t byte_to_cp(uint8_t b);
// Inverse of byte_to_cp; -1 if cp is not the image of a byte.
int byte_from_cp(uint32_t cp);

}  // namespace pmoe::unicode
