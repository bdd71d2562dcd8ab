#include "tokenizer/pretokenizer.hpp"

#include <cstdint>

#include "tokenizer/unicode.hpp"

namespace pmoe {

namespace {

using namespace pmoe::unicode;

struct Unit {
  size_t off;     // byte offset of the code point (or invalid byte)
  uint8_t flags;  // CharFlags
  char lower;     // lower-cased ASCII letter or the ASCII char itself; 0 for non-ASCII
};

class Matcher {
 public:
  explicit Matcher(const std::vector<Unit>& u) : u_(u), n_(u.size() - 1) {}  // last = sentinel

  // Length in units of the match at p (>= 1 for p < n).
  size_t match(size_t p) const {
    if (size_t m = contraction(p)) return m;
    if (size_t m = letters(p)) return m;
    if (is(p, kNumber)) return 1;  // \p{N}: one digit per word
    if (size_t m = punct(p)) return m;
    return spaces(p);
  }

 private:
  bool is(size_t i, uint8_t f) const { return i < n_ && (u_[i].flags & f); }
  bool other(size_t i) const { return i < n_ && !(u_[i].flags & (kSpace | kLetter | kNumber)); }
  char ch(size_t i) const { return i < n_ ? u_[i].lower : 0; }

  // '[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD]
  size_t contraction(size_t p) const {
    if (ch(p) != '\'') return 0;
    const char a = ch(p + 1), b = ch(p + 2);
    if (a == 's' || a == 't' || a == 'm' || a == 'd') return 2;
    if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return 3;
    return 0;
  }

  // [^\r\n\p{L}\p{N}]?\p{L}+
  size_t letters(size_t p) const {
    size_t q = p;
    if (p < n_ && !(u_[p].flags & (kCrLf | kLetter | kNumber)) && is(p + 1, kLetter)) q = p + 1;
    if (!is(q, kLetter)) return 0;
    while (is(q, kLetter)) ++q;
    return q - p;
  }

  //  ?[^\s\p{L}\p{N}]+[\r\n]*
  size_t punct(size_t p) const {
    size_t q = p;
    if (ch(p) == ' ' && other(p + 1)) q = p + 1;
    if (!other(q)) return 0;
    while (other(q)) ++q;
    while (is(q, kCrLf)) ++q;
    return q - p;
  }

  // \s*[\r\n]+ | \s+(?!\S) | \s+
  size_t spaces(size_t p) const {
    size_t r = p;
    size_t last_crlf = SIZE_MAX;
    while (is(r, kSpace)) {
      if (u_[r].flags & kCrLf) last_crlf = r;
      ++r;
    }
    // \s* backtracks from the end of the run to its last \r or \n, which [\r\n]+ then takes.
    if (last_crlf != SIZE_MAX) return last_crlf + 1 - p;
    if (r == p) return 1;  // unreachable: every unit is a letter, number, space or other
    // \s+(?!\S): the whole run at end of text, else all but its last space (needs >= 2).
    if (r == n_) return r - p;
    if (r - p >= 2) return r - p - 1;
    return 1;  // \s+ with a single space
  }

  const std::vector<Unit>& u_;
  size_t n_;
};

}  // namespace

void qwen2_pretokenize(std::string_view text, std::vector<ByteSpan>& out) {
  if (text.empty()) return;
  std::vector<Unit> units;
  units.reserve(text.size() + 1);
  for (size_t i = 0; i < text.size();) {
    const Utf8Char c = decode_utf8(text, i);
    // Invalid bytes classify like llama.cpp's U+FFFD replacement: "other".
    const uint8_t flags = c.valid ? char_flags(c.cp) : 0;
    char lower = 0;
    if (c.cp < 0x80) lower = static_cast<char>(c.cp >= 'A' && c.cp <= 'Z' ? c.cp + 32 : c.cp);
    units.push_back({i, flags, lower});
    i += c.len;
  }
  units.push_back({text.size(), 0, 0});

  const Matcher m(units);
  const size_t n = units.size() - 1;
  for (size_t p = 0; p < n;) {
    const size_t len = m.match(p);
    out.push_back({units[p].off, units[p + len].off - units[p].off});
    p += len;
  }
}

}  // namespace pmoe
