#include "tokenizer/unicode.hpp"

#include <unicode/uchar.h>

#include <array>

namespace pmoe::unicode {

namespace {

bool is_cont(unsigned char c) { return (c & 0xC0) == 0x80; }

// Expected sequence length for a lead byte; 0 if it cannot start a sequence.
uint32_t lead_len(unsigned char c) {
  if (c < 0x80) return 1;
  if (c >= 0xC2 && c <= 0xDF) return 2;
  if (c >= 0xE0 && c <= 0xEF) return 3;
  if (c >= 0xF0 && c <= 0xF4) return 4;
  return 0;  // continuation byte, C0/C1 (always overlong) or F5..FF
}

// Valid range of the second byte, which is narrower than 80..BF for a few lead bytes
// (this is what rules out overlongs, surrogates and > U+10FFFF).
bool second_ok(unsigned char lead, unsigned char c) {
  switch (lead) {
    case 0xE0: return c >= 0xA0 && c <= 0xBF;
    case 0xED: return c >= 0x80 && c <= 0x9F;
    case 0xF0: return c >= 0x90 && c <= 0xBF;
    case 0xF4: return c >= 0x80 && c <= 0x8F;
    default: return is_cont(c);
  }
}

struct ByteTables {
  std::array<uint32_t, 256> to_cp{};
  std::array<int16_t, 0x144> from_cp{};
  ByteTables() {
    from_cp.fill(-1);
    uint32_t n = 0;
    for (uint32_t b = 0; b < 256; ++b) {
      // Printable Latin-1 bytes keep their code point; the rest are moved to 256 + n.
      const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
      to_cp[b] = printable ? b : 256 + n++;
      from_cp[to_cp[b]] = static_cast<int16_t>(b);
    }
  }
};

const ByteTables& byte_tables() {
  static const ByteTables t;
  return t;
}

}  // namespace

Utf8Char decode_utf8(std::string_view s, size_t i) {
  const auto c0 = static_cast<unsigned char>(s[i]);
  const uint32_t len = lead_len(c0);
  if (len == 1) return {c0, 1, true};
  if (len == 0 || i + len > s.size()) return {0xFFFD, 1, false};
  const auto c1 = static_cast<unsigned char>(s[i + 1]);
  if (!second_ok(c0, c1)) return {0xFFFD, 1, false};
  uint32_t cp = c1 & 0x3F;
  for (uint32_t k = 2; k < len; ++k) {
    const auto c = static_cast<unsigned char>(s[i + k]);
    if (!is_cont(c)) return {0xFFFD, 1, false};
    cp = (cp << 6) | (c & 0x3F);
  }
  const uint32_t lead_bits = len == 2 ? 0x1F : len == 3 ? 0x0F : 0x07;
  cp |= static_cast<uint32_t>(c0 & lead_bits) << (6 * (len - 1));
  return {cp, len, true};
}

void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

size_t incomplete_utf8_tail(std::string_view s) {
  // Find the last non-continuation byte among the final 3 bytes (a complete-able prefix of a
  // 4-byte sequence has at most 3 bytes).
  const size_t n = s.size();
  for (size_t back = 1; back <= 3 && back <= n; ++back) {
    const auto c = static_cast<unsigned char>(s[n - back]);
    if (is_cont(c)) continue;
    const uint32_t len = lead_len(c);
    if (len <= back) return 0;  // ASCII, invalid lead, or already complete
    // Incomplete: hold it back only if what we have so far can still become valid.
    if (back >= 2 && !second_ok(c, static_cast<unsigned char>(s[n - back + 1]))) return 0;
    return back;
  }
  return 0;
}

uint8_t char_flags(uint32_t cp) {
  if (cp < 0x80) {
    // llama.cpp keeps ASCII as is and runs std::regex on it: \s is the C locale's isspace.
    if (cp == '\r' || cp == '\n') return kSpace | kCrLf;
    if (cp == ' ' || (cp >= '\t' && cp <= '\r')) return kSpace;
    if ((cp >= 'A' && cp <= 'Z') || (cp >= 'a' && cp <= 'z')) return kLetter;
    if (cp >= '0' && cp <= '9') return kNumber;
    return 0;
  }
  const auto c = static_cast<UChar32>(cp);
  if (u_isUWhiteSpace(c)) return kSpace;
  switch (u_charType(c)) {
    case U_UPPERCASE_LETTER:
    case U_LOWERCASE_LETTER:
    case U_TITLECASE_LETTER:
    case U_MODIFIER_LETTER:
    case U_OTHER_LETTER:
      return kLetter;
    case U_DECIMAL_DIGIT_NUMBER:
    case U_LETTER_NUMBER:
    case U_OTHER_NUMBER:
      return kNumber;
    default:
      return 0;
  }
}

uint32_t byte_to_cp(uint8_t b) { return byte_tables().to_cp[b]; }

int byte_from_cp(uint32_t cp) {
  return cp < 0x144 ? byte_tables().from_cp[cp] : -1;
}

}  // namespace pmoe::unicode
