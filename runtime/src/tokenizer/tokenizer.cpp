#include "tokenizer/tokenizer.hpp"

#include <algorithm>
#include <array>
#include <climits>
#include <unordered_map>

#include "common/error.hpp"
#include "gguf/gguf.hpp"
#include "tokenizer/pretokenizer.hpp"
#include "tokenizer/unicode.hpp"

namespace pmoe {

namespace {

// llama.cpp's llama_token_attr bits that matter here.
enum Attr : uint8_t {
  kAttrUnknown = 1, kAttrUnused = 2, kAttrNormal = 4, kAttrControl = 8, kAttrUserDefined = 16,
  kAttrByte = 32, kAttrEog = 64,
};

uint8_t attr_of(TokenType t) {
  switch (t) {
    case TokenType::kNormal: return kAttrNormal;
    case TokenType::kUnknown: return kAttrUnknown;
    case TokenType::kControl: return kAttrControl;
    case TokenType::kUserDefined: return kAttrUserDefined;
    case TokenType::kUnused: return kAttrUnused;
    case TokenType::kByte: return kAttrByte;
    case TokenType::kUndefined: break;
  }
  return 0;
}

// Texts llama.cpp treats as end-of-generation whatever their type (they become CONTROL).
constexpr std::string_view kEogTexts[] = {
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<end_of_turn>",
    "<|endoftext|>", "<|eom_id|>", "<EOT>", "_<EOT>", "<|end_of_text|>", "<end_of_utterance>",
    // FIM pad / repo / file-separator tokens (Qwen2.5-Coder style) also end generation.
    "<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "<|fim_repo|>", "<|repo_name|>",
    "<fim-repo>", "<REPO>", "<reponame>", "<|file_sep|>",
};

constexpr std::string_view kImStart = "<|im_start|>";
constexpr std::string_view kImEnd = "<|im_end|>";

// GPT-2-mapped token text -> raw bytes. Characters outside the byte map (only in odd vocabs)
// are kept as UTF-8 rather than dropped.
std::string gpt2_decode(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size();) {
    const unicode::Utf8Char c = unicode::decode_utf8(text, i);
    const int b = c.valid ? unicode::byte_from_cp(c.cp) : -1;
    if (b >= 0) {
      out += static_cast<char>(b);
    } else {
      out.append(text.substr(i, c.len));
    }
    i += c.len;
  }
  return out;
}

// "<0xAB>" -> 0xAB (BYTE tokens of SPM-style byte fallback); -1 otherwise.
int parse_byte_token(std::string_view t) {
  if (t.size() != 6 || t.substr(0, 3) != "<0x" || t[5] != '>') return -1;
  int v = 0;
  for (char c : t.substr(3, 2)) {
    const int d = c >= '0' && c <= '9' ? c - '0'
                  : c >= 'A' && c <= 'F' ? c - 'A' + 10
                  : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
    if (d < 0) return -1;
    v = v * 16 + d;
  }
  return v;
}

uint64_t pair_key(int32_t a, int32_t b) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
}

// Open-addressing tables: the vocabulary has ~150k entries of each kind, and node-based
// std::unordered_map lookups (cache misses) dominated load time.
uint64_t mix64(uint64_t x) {  // splitmix64 finalizer
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

uint64_t hash_text(std::string_view s) {  // FNV-1a, then mixed
  uint64_t h = 0xcbf29ce484222325ULL;
  for (unsigned char c : s) h = (h ^ c) * 0x100000001b3ULL;
  return mix64(h);
}

size_t table_capacity(size_t n) {  // power of two, load factor <= 0.5
  size_t cap = 16;
  while (cap < 2 * n) cap *= 2;
  return cap;
}

// (left, right) symbol pair -> merge rank and result.
class MergeTable {
 public:
  struct Merge {
    uint32_t rank;
    int32_t result;
  };
  void reserve(size_t n) {
    slots_.assign(table_capacity(n), Slot{kEmpty, {0, 0}});
    mask_ = slots_.size() - 1;
  }
  // Keeps the first merge of a pair, like llama.cpp's bpe_ranks.emplace().
  void insert_first(uint64_t key, Merge m) {
    for (size_t i = mix64(key) & mask_;; i = (i + 1) & mask_) {
      if (slots_[i].key == key) return;
      if (slots_[i].key == kEmpty) {
        slots_[i] = {key, m};
        return;
      }
    }
  }
  const Merge* find(uint64_t key) const {
    for (size_t i = mix64(key) & mask_;; i = (i + 1) & mask_) {
      if (slots_[i].key == key) return &slots_[i].merge;
      if (slots_[i].key == kEmpty) return nullptr;
    }
  }

 private:
  static constexpr uint64_t kEmpty = ~uint64_t{0};  // the pair (-1, -1) never occurs
  struct Slot {
    uint64_t key;
    Merge merge;
  };
  std::vector<Slot> slots_;
  size_t mask_ = 0;
};

}  // namespace

struct Tokenizer::Impl {
  std::string path;
  int32_t n_vocab = 0;
  int32_t n_merges = 0;

  // Token texts as stored (views into `blob`, which never changes after loading).
  std::string blob;
  std::vector<uint32_t> text_off;  // n_vocab + 1
  std::vector<uint8_t> types;      // TokenType
  std::vector<uint8_t> attr;       // Attr bits
  // Text -> id: open addressing over ids (-1 = empty), texts compared in `blob`.
  struct TextSlot {
    uint32_t hash;
    int32_t id;
  };
  std::vector<TextSlot> text_slots;
  size_t text_mask = 0;

  // BPE works on symbol ids: token ids, plus "virtual" ids >= n_vocab for strings that the
  // merges produce but the vocabulary lacks (never in a sane file; kept for exactness).
  MergeTable merges;  // (left id, right id) -> rank, result
  std::array<int32_t, 256> byte_sym{};
  std::vector<std::string> virt_bytes;  // raw bytes of virtual symbol n_vocab + i

  // Rendered bytes of every token (the render_special = true form).
  std::string piece_blob;
  std::vector<uint32_t> piece_off;

  std::vector<int32_t> specials;  // CONTROL/USER_DEFINED/UNKNOWN ids, longest text first
  std::vector<int32_t> eog;
  int32_t bos = -1, eos = -1;
  bool add_bos = false, add_eos = false;
  std::string chat_template;
  bool has_template = false, chatml_template = false;

  std::string_view text(int32_t id) const {
    return std::string_view(blob).substr(text_off[id], text_off[id + 1] - text_off[id]);
  }
  std::string_view piece(int32_t id) const {
    return std::string_view(piece_blob).substr(piece_off[id], piece_off[id + 1] - piece_off[id]);
  }
  // The slot holding text t, or the empty slot where it would go.
  size_t text_slot(std::string_view t, uint64_t h) const {
    for (size_t i = h & text_mask;; i = (i + 1) & text_mask) {
      const TextSlot& s = text_slots[i];
      if (s.id < 0 || (s.hash == static_cast<uint32_t>(h >> 32) && text(s.id) == t)) return i;
    }
  }
  int32_t find(std::string_view t) const { return text_slots[text_slot(t, hash_text(t))].id; }

  void load(const GgufFile& f);

  // BPE state for one word: a linked list of symbols and a min-heap of mergeable pairs.
  struct Sym {
    int32_t id;  // -1 once merged into its left neighbour
    int32_t prev, next;
  };
  struct Pair {
    uint32_t rank;
    int32_t left, right;
    int32_t left_id, right_id, result;
    bool operator>(const Pair& o) const {
      return rank != o.rank ? rank > o.rank : left > o.left;
    }
  };
  struct Scratch {  // reused across the words of one encode() call
    std::vector<Sym> syms;
    std::vector<Pair> heap;
  };
  void bpe_word(std::string_view bytes, Scratch& s, std::vector<int32_t>& out) const;
  void emit_symbol(int32_t sym, std::vector<int32_t>& out) const;
};

// ---------------------------------------------------------------------------------------------
// Loading

void Tokenizer::Impl::load(const GgufFile& f) {
  path = f.path();
  auto fail = [&](std::string_view key, const std::string& what) {
    throw Error(path + ": metadata key '" + std::string(key) + "': " + what);
  };

  constexpr std::string_view kModel = "tokenizer.ggml.model";
  const auto model = f.get_string_opt(kModel);
  if (!model) fail(kModel, "missing (the file has no tokenizer)");
  if (*model != "gpt2") {
    fail(kModel, "unsupported tokenizer model '" + *model + "' (only 'gpt2' byte-level BPE)");
  }
  constexpr std::string_view kPre = "tokenizer.ggml.pre";
  const auto pre = f.get_string_opt(kPre);
  if (!pre) fail(kPre, "missing (needed to pick the pre-tokenizer; supported: 'qwen2')");
  if (*pre != "qwen2" && *pre != "deepseek-r1-qwen") {  // same regex in llama.cpp
    fail(kPre, "unsupported pre-tokenizer '" + *pre + "' (supported: 'qwen2')");
  }

  // Vocabulary.
  constexpr std::string_view kTokens = "tokenizer.ggml.tokens";
  if (!f.has(kTokens)) fail(kTokens, "missing");
  const std::vector<std::string_view> tokens = f.get_string_view_array(kTokens);
  if (tokens.empty() || tokens.size() > INT32_MAX / 2) {
    fail(kTokens, "bad vocabulary size " + std::to_string(tokens.size()));
  }
  n_vocab = static_cast<int32_t>(tokens.size());
  size_t total = 0;
  for (auto t : tokens) total += t.size();
  if (total > UINT32_MAX) fail(kTokens, "token texts too large");
  blob.reserve(total);
  text_off.reserve(tokens.size() + 1);
  for (auto t : tokens) {
    text_off.push_back(static_cast<uint32_t>(blob.size()));
    blob.append(t);
  }
  text_off.push_back(static_cast<uint32_t>(blob.size()));
  text_slots.assign(table_capacity(tokens.size()), TextSlot{0, -1});
  text_mask = text_slots.size() - 1;
  for (int32_t i = 0; i < n_vocab; ++i) {  // a duplicate text maps to its last id, as in llama.cpp
    const uint64_t h = hash_text(text(i));
    text_slots[text_slot(text(i), h)] = {static_cast<uint32_t>(h >> 32), i};
  }

  constexpr std::string_view kTypes = "tokenizer.ggml.token_type";
  types.assign(tokens.size(), static_cast<uint8_t>(TokenType::kNormal));  // absent = all normal
  if (f.has(kTypes)) {
    const std::vector<int32_t> tt = f.get_i32_array(kTypes);
    if (tt.size() != tokens.size()) {
      fail(kTypes, std::to_string(tt.size()) + " entries for " + std::to_string(tokens.size()) +
                       " tokens");
    }
    for (size_t i = 0; i < tt.size(); ++i) {
      if (tt[i] < 0 || tt[i] > static_cast<int32_t>(TokenType::kByte)) {
        fail(kTypes, "entry " + std::to_string(i) + " has invalid type " + std::to_string(tt[i]));
      }
      types[i] = static_cast<uint8_t>(tt[i]);
    }
  }
  attr.resize(tokens.size());
  for (size_t i = 0; i < types.size(); ++i) attr[i] = attr_of(static_cast<TokenType>(types[i]));

  // Merges: symbols that are not tokens get virtual ids (see Impl).
  std::unordered_map<std::string, int32_t> virt_index;
  auto intern = [&](std::string_view t) -> int32_t {
    if (int32_t id = find(t); id >= 0) return id;
    auto [it, fresh] = virt_index.try_emplace(std::string(t), 0);
    if (fresh) {
      it->second = n_vocab + static_cast<int32_t>(virt_bytes.size());
      virt_bytes.push_back(gpt2_decode(t));
    }
    return it->second;
  };
  for (int b = 0; b < 256; ++b) {
    std::string s;
    unicode::append_utf8(s, unicode::byte_to_cp(static_cast<uint8_t>(b)));
    byte_sym[b] = intern(s);
  }
  constexpr std::string_view kMerges = "tokenizer.ggml.merges";
  if (!f.has(kMerges)) fail(kMerges, "missing (required for a 'gpt2' BPE tokenizer)");
  const std::vector<std::string_view> merge_list = f.get_string_view_array(kMerges);
  if (merge_list.size() > INT32_MAX) fail(kMerges, "too many merges");
  n_merges = static_cast<int32_t>(merge_list.size());
  merges.reserve(merge_list.size());
  std::string joined;
  for (size_t i = 0; i < merge_list.size(); ++i) {
    const std::string_view m = merge_list[i];
    const size_t sp = m.find(' ', 1);  // like llama.cpp: a leading space belongs to the left
    if (sp == std::string_view::npos || sp + 1 >= m.size()) {
      fail(kMerges, "merge entry " + std::to_string(i) + " '" + std::string(m) +
                        "' is malformed (expected 'left right')");
    }
    const std::string_view left = m.substr(0, sp), right = m.substr(sp + 1);
    joined.assign(left).append(right);
    const int32_t l = intern(left), r = intern(right), res = intern(joined);
    merges.insert_first(pair_key(l, r), {static_cast<uint32_t>(i), res});
  }

  // Special ids.
  auto read_id = [&](std::string_view key) -> int32_t {
    const auto v = f.get_u32_opt(key);
    if (!v) return -1;
    if (*v >= static_cast<uint32_t>(n_vocab)) {
      fail(key, "token id " + std::to_string(*v) + " out of range (n_vocab " +
                    std::to_string(n_vocab) + ")");
    }
    return static_cast<int32_t>(*v);
  };
  bos = read_id("tokenizer.ggml.bos_token_id");
  eos = read_id("tokenizer.ggml.eos_token_id");
  add_bos = f.get_bool_opt("tokenizer.ggml.add_bos_token").value_or(false);
  add_eos = f.get_bool_opt("tokenizer.ggml.add_eos_token").value_or(false);
  if (add_bos && bos < 0) fail("tokenizer.ggml.bos_token_id", "missing but add_bos_token is true");
  if (add_eos && eos < 0) fail("tokenizer.ggml.eos_token_id", "missing but add_eos_token is true");

  // End of generation, as llama.cpp decides it.
  auto mark_eog = [&](int32_t id) {
    if (id >= 0) attr[id] |= kAttrEog;
  };
  mark_eog(eos);
  for (const char* key : {"tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id",
                          "tokenizer.ggml.fim_pad_token_id", "tokenizer.ggml.fim_rep_token_id",
                          "tokenizer.ggml.fim_sep_token_id"}) {
    mark_eog(read_id(key));
  }
  for (std::string_view t : kEogTexts) {
    if (const int32_t id = find(t); id >= 0) {
      attr[id] |= kAttrEog | kAttrControl;  // llama.cpp overrides their type to CONTROL
    }
  }
  for (int32_t i = 0; i < n_vocab; ++i) {
    if (attr[i] & kAttrEog) eog.push_back(i);
  }

  // Special-token matching order: longest text first (ties by id, for determinism).
  for (int32_t i = 0; i < n_vocab; ++i) {
    if ((attr[i] & (kAttrControl | kAttrUserDefined | kAttrUnknown)) && !text(i).empty()) {
      specials.push_back(i);
    }
  }
  std::stable_sort(specials.begin(), specials.end(), [&](int32_t a, int32_t b) {
    return text(a).size() > text(b).size();
  });

  // Pieces, as llama.cpp's token_to_piece(special = true) renders them.
  piece_off.reserve(tokens.size() + 1);
  piece_blob.reserve(total);
  for (int32_t i = 0; i < n_vocab; ++i) {
    piece_off.push_back(static_cast<uint32_t>(piece_blob.size()));
    const uint8_t a = attr[i];
    if (a & (kAttrControl | kAttrUnknown | kAttrUserDefined)) {
      piece_blob.append(text(i));  // specials are stored as plain text
    } else if (a & kAttrNormal) {
      piece_blob.append(gpt2_decode(text(i)));
    } else if (a & kAttrByte) {
      if (const int b = parse_byte_token(text(i)); b >= 0) piece_blob += static_cast<char>(b);
    }  // UNUSED / UNDEFINED render as nothing
  }
  piece_off.push_back(static_cast<uint32_t>(piece_blob.size()));

  // Chat template.
  if (auto t = f.get_string_opt("tokenizer.chat_template")) {
    chat_template = std::move(*t);
    has_template = true;
    chatml_template = chat_template.find(kImStart) != std::string::npos &&
                      chat_template.find(kImEnd) != std::string::npos;
  }
}

Tokenizer Tokenizer::from_gguf(const GgufFile& f) {
  auto impl = std::make_shared<Impl>();
  impl->load(f);
  return Tokenizer(std::move(impl));
}

// ---------------------------------------------------------------------------------------------
// Encoding

void Tokenizer::Impl::emit_symbol(int32_t sym, std::vector<int32_t>& out) const {
  if (sym < n_vocab) {
    out.push_back(sym);
    return;
  }
  // A merge result missing from the vocabulary: fall back to its byte tokens.
  for (char c : virt_bytes[sym - n_vocab]) {
    const int32_t b = byte_sym[static_cast<uint8_t>(c)];
    if (b < n_vocab) out.push_back(b);
  }
}

// Merges the bytes of one pre-tokenized word by rank, lowest first; ties go to the leftmost
// pair. A min-heap over a linked list of symbols; stale heap entries are skipped on pop.
void Tokenizer::Impl::bpe_word(std::string_view bytes, Scratch& s,
                               std::vector<int32_t>& out) const {
  if (bytes.size() == 1) {
    emit_symbol(byte_sym[static_cast<uint8_t>(bytes[0])], out);
    return;
  }
  const int32_t n = static_cast<int32_t>(bytes.size());
  std::vector<Sym>& syms = s.syms;
  std::vector<Pair>& heap = s.heap;
  syms.resize(bytes.size());
  heap.clear();
  for (int32_t i = 0; i < n; ++i) {
    syms[i] = {byte_sym[static_cast<uint8_t>(bytes[i])], i - 1, i + 1 < n ? i + 1 : -1};
  }
  auto add_pair = [&](int32_t l, int32_t r) {
    if (l < 0 || r < 0) return;
    const MergeTable::Merge* m = merges.find(pair_key(syms[l].id, syms[r].id));
    if (!m) return;
    heap.push_back({m->rank, l, r, syms[l].id, syms[r].id, m->result});
    std::push_heap(heap.begin(), heap.end(), std::greater<>{});
  };
  for (int32_t i = 1; i < n; ++i) add_pair(i - 1, i);

  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), std::greater<>{});
    const Pair p = heap.back();
    heap.pop_back();
    Sym& l = syms[p.left];
    Sym& r = syms[p.right];
    if (l.id != p.left_id || r.id != p.right_id || l.next != p.right) continue;  // stale
    l.id = p.result;
    l.next = r.next;
    if (r.next >= 0) syms[r.next].prev = p.left;
    r.id = -1;
    add_pair(l.prev, p.left);
    add_pair(p.left, l.next);
  }
  for (int32_t i = 0; i >= 0; i = syms[i].next) emit_symbol(syms[i].id, out);
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_special,
                                       bool parse_special) const {
  const Impl& m = *impl_;
  if (text.size() > INT32_MAX) throw Error("encode: text of " + std::to_string(text.size()) +
                                           " bytes is too long (limit 2 GiB)");
  std::vector<int32_t> out;
  if (add_special && m.add_bos) out.push_back(m.bos);

  // Split out special tokens the way llama.cpp's tokenizer_st_partition does: each special
  // token in turn (longest first) is searched in every remaining raw-text fragment.
  struct Frag {
    size_t off, len;
    int32_t id;  // >= 0: a special token
  };
  std::vector<Frag> frags, next;
  if (!text.empty()) frags.push_back({0, text.size(), -1});
  for (const int32_t sid : m.specials) {
    if (!parse_special && (m.attr[sid] & (kAttrControl | kAttrUnknown))) continue;
    const std::string_view st = m.text(sid);
    next.clear();
    bool found = false;
    for (const Frag& fr : frags) {
      if (fr.id >= 0 || fr.len < st.size()) {
        next.push_back(fr);
        continue;
      }
      size_t pos = fr.off;
      const size_t end = fr.off + fr.len;
      for (;;) {
        const size_t hit = text.substr(0, end).find(st, pos);
        if (hit == std::string_view::npos) break;
        found = true;
        if (hit > pos) next.push_back({pos, hit - pos, -1});
        next.push_back({hit, st.size(), sid});
        pos = hit + st.size();
      }
      if (pos < end) next.push_back({pos, end - pos, -1});
    }
    if (found) frags.swap(next);
  }

  std::vector<ByteSpan> words;
  Impl::Scratch scratch;
  for (const Frag& fr : frags) {
    if (fr.id >= 0) {
      out.push_back(fr.id);
      continue;
    }
    const std::string_view part = text.substr(fr.off, fr.len);
    words.clear();
    qwen2_pretokenize(part, words);
    for (const ByteSpan& w : words) m.bpe_word(part.substr(w.offset, w.length), scratch, out);
  }

  if (add_special && m.add_eos) out.push_back(m.eos);
  return out;
}

// ---------------------------------------------------------------------------------------------
// Decoding and queries

std::string Tokenizer::token_to_piece(int32_t id, bool render_special) const {
  const Impl& m = *impl_;
  if (id < 0 || id >= m.n_vocab) {
    throw Error("token id " + std::to_string(id) + " out of range (n_vocab " +
                std::to_string(m.n_vocab) + ", " + m.path + ")");
  }
  if (!render_special && (m.attr[id] & (kAttrControl | kAttrUnknown))) return {};
  return std::string(m.piece(id));
}

std::string Tokenizer::decode(std::span<const int32_t> ids, bool render_special) const {
  std::string out;
  for (const int32_t id : ids) out += token_to_piece(id, render_special);
  return out;
}

int32_t Tokenizer::n_vocab() const { return impl_->n_vocab; }
int32_t Tokenizer::n_merges() const { return impl_->n_merges; }
int32_t Tokenizer::bos_id() const { return impl_->bos; }
int32_t Tokenizer::eos_id() const { return impl_->eos; }
bool Tokenizer::add_bos() const { return impl_->add_bos; }
bool Tokenizer::add_eos() const { return impl_->add_eos; }

bool Tokenizer::is_end_of_generation(int32_t id) const {
  return id >= 0 && id < impl_->n_vocab && (impl_->attr[id] & kAttrEog);
}
std::vector<int32_t> Tokenizer::eog_ids() const { return impl_->eog; }

int32_t Tokenizer::find_token(std::string_view text) const { return impl_->find(text); }

std::string_view Tokenizer::token_text(int32_t id) const {
  return id >= 0 && id < impl_->n_vocab ? impl_->text(id) : std::string_view{};
}

TokenType Tokenizer::token_type(int32_t id) const {
  return id >= 0 && id < impl_->n_vocab ? static_cast<TokenType>(impl_->types[id])
                                        : TokenType::kUndefined;
}

std::string Tokenizer::format_chat(const std::vector<ChatMessage>& msgs,
                                   bool add_generation_prompt) const {
  std::string s;
  for (const ChatMessage& msg : msgs) {
    s.append(kImStart).append(msg.role).append("\n").append(msg.content).append(kImEnd);
    s += '\n';
  }
  if (add_generation_prompt) s.append(kImStart).append("assistant\n");
  return s;
}

bool Tokenizer::uses_builtin_chatml() const { return !impl_->chatml_template; }
bool Tokenizer::has_chat_template() const { return impl_->has_template; }
const std::string& Tokenizer::chat_template() const { return impl_->chat_template; }

// ---------------------------------------------------------------------------------------------
// Streaming

std::string StreamDecoder::push(int32_t id) {
  pending_ += tok_.token_to_piece(id, render_special_);
  const size_t hold = unicode::incomplete_utf8_tail(pending_);
  std::string out = pending_.substr(0, pending_.size() - hold);
  pending_.erase(0, pending_.size() - hold);
  return out;
}

std::string StreamDecoder::flush() {
  std::string out;
  out.swap(pending_);
  return out;
}

}  // namespace pmoe
