// Tokenizer tests: llama.cpp's own Qwen2 test pairs, extra llama-tokenize outputs, round trips
// (including invalid UTF-8), the fixture model's truncated vocab, ChatML, streaming, errors.
#include <doctest/doctest.h>

#include <chrono>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>

#include "common/error.hpp"
#include "gguf/gguf.hpp"
#include "tokenizer/pretokenizer.hpp"
#include "tokenizer/tokenizer.hpp"
#include "tokenizer/unicode.hpp"

using namespace pmoe;

namespace {

const std::string kTokDir = std::string(PMOE_FIXTURES_DIR) + "/tokenizer/";

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  REQUIRE_MESSAGE(in.good(), "cannot open " << path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

const Tokenizer& qwen2() {
  static const Tokenizer tok = [] {
    auto f = GgufFile::open(kTokDir + "ggml-vocab-qwen2.gguf");
    return Tokenizer::from_gguf(*f);
  }();
  return tok;
}

std::vector<std::string> split(const std::string& s, const std::string& sep) {
  std::vector<std::string> out;
  size_t pos = 0;
  for (size_t hit; (hit = s.find(sep, pos)) != std::string::npos; pos = hit + sep.size()) {
    out.push_back(s.substr(pos, hit - pos));
  }
  out.push_back(s.substr(pos));
  return out;
}

std::string ids_str(const std::vector<int32_t>& ids) {
  std::string s;
  for (int32_t id : ids) {
    if (!s.empty()) s += ' ';
    s += std::to_string(id);
  }
  return s;
}

bool valid_utf8(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    const auto c = unicode::decode_utf8(s, i);
    if (!c.valid) return false;
    i += c.len;
  }
  return true;
}

std::vector<std::string> words_of(std::string_view text) {
  std::vector<ByteSpan> spans;
  qwen2_pretokenize(text, spans);
  std::vector<std::string> out;
  for (auto s : spans) out.emplace_back(text.substr(s.offset, s.length));
  return out;
}

// Minimal GGUF v3 writer (metadata only) for synthetic vocabularies.
class GgufBuilder {
 public:
  GgufBuilder& str(const std::string& key, const std::string& v) {
    head(key, 8);
    put_str(v);
    return *this;
  }
  GgufBuilder& u32(const std::string& key, uint32_t v) {
    head(key, 4);
    put(v);
    return *this;
  }
  GgufBuilder& boolean(const std::string& key, bool v) {
    head(key, 7);
    buf_.push_back(v ? 1 : 0);
    return *this;
  }
  GgufBuilder& strs(const std::string& key, const std::vector<std::string>& v) {
    head(key, 9);
    put(uint32_t{8});
    put(uint64_t{v.size()});
    for (const auto& s : v) put_str(s);
    return *this;
  }
  GgufBuilder& i32s(const std::string& key, const std::vector<int32_t>& v) {
    head(key, 9);
    put(uint32_t{5});
    put(uint64_t{v.size()});
    for (int32_t x : v) put(x);
    return *this;
  }
  std::vector<uint8_t> bytes() const {
    std::vector<uint8_t> out = {'G', 'G', 'U', 'F', 3, 0, 0, 0};
    auto put64 = [&](uint64_t x) {
      for (int i = 0; i < 8; ++i) out.push_back(static_cast<uint8_t>(x >> (8 * i)));
    };
    put64(0);
    put64(n_kv_);
    out.insert(out.end(), buf_.begin(), buf_.end());
    return out;
  }

 private:
  template <class T>
  void put(T v) {
    uint8_t b[sizeof(T)];
    std::memcpy(b, &v, sizeof(T));
    buf_.insert(buf_.end(), b, b + sizeof(T));
  }
  void put_str(const std::string& s) {
    put(uint64_t{s.size()});
    buf_.insert(buf_.end(), s.begin(), s.end());
  }
  void head(const std::string& key, uint32_t type) {
    put_str(key);
    put(type);
    ++n_kv_;
  }
  std::vector<uint8_t> buf_;
  uint64_t n_kv_ = 0;
};

std::string gpt2_char(uint8_t b) {
  std::string s;
  unicode::append_utf8(s, unicode::byte_to_cp(b));
  return s;
}

// 256 byte tokens, then extra tokens with their types, the given merges, and extra keys.
struct SynthVocab {
  std::vector<std::string> tokens;
  std::vector<int32_t> types;
  std::vector<std::string> merges;
  SynthVocab() {
    for (int b = 0; b < 256; ++b) {
      tokens.push_back(gpt2_char(static_cast<uint8_t>(b)));
      types.push_back(1);
    }
  }
  int32_t add(const std::string& text, int32_t type = 1) {
    tokens.push_back(text);
    types.push_back(type);
    return static_cast<int32_t>(tokens.size() - 1);
  }
  GgufBuilder builder() const {
    GgufBuilder g;
    g.str("tokenizer.ggml.model", "gpt2").str("tokenizer.ggml.pre", "qwen2");
    g.strs("tokenizer.ggml.tokens", tokens).i32s("tokenizer.ggml.token_type", types);
    g.strs("tokenizer.ggml.merges", merges);
    return g;
  }
};

Tokenizer load_mem(const GgufBuilder& g) {
  const std::vector<uint8_t> bytes = g.bytes();
  auto f = GgufFile::from_memory(bytes.data(), bytes.size(), "synthetic.gguf");
  return Tokenizer::from_gguf(*f);  // the tokenizer owns its data; the buffer may go
}

std::string load_error(const GgufBuilder& g) {
  try {
    load_mem(g);
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

}  // namespace

TEST_CASE("tokenizer: qwen2 vocab metadata") {
  const Tokenizer& tok = qwen2();
  CHECK(tok.n_vocab() == 151936);
  CHECK(tok.n_merges() == 151387);
  CHECK(tok.bos_id() == 151643);
  CHECK(tok.eos_id() == 151643);
  CHECK_FALSE(tok.add_bos());
  CHECK_FALSE(tok.add_eos());
  CHECK(tok.find_token("<|im_start|>") == 151644);
  CHECK(tok.token_type(151645) == TokenType::kControl);
  CHECK(tok.token_type(151700) == TokenType::kUnused);
  CHECK(tok.is_end_of_generation(151643));
  CHECK(tok.is_end_of_generation(151645));
  CHECK_FALSE(tok.is_end_of_generation(151644));
  CHECK_FALSE(tok.is_end_of_generation(9707));
  CHECK_FALSE(tok.is_end_of_generation(-1));
  CHECK(tok.eog_ids() == std::vector<int32_t>{151643, 151645});
  // add_special adds nothing for this family (no add_bos key).
  CHECK(tok.encode("Hello", true, true) == tok.encode("Hello", false, false));
  CHECK(tok.encode("", true, true).empty());
}

TEST_CASE("tokenizer: llama.cpp test-tokenizer-0 pairs (ggml-vocab-qwen2.gguf.inp/.out)") {
  const Tokenizer& tok = qwen2();
  auto inp = split(read_file(kTokDir + "ggml-vocab-qwen2.gguf.inp"), "\n__ggml_vocab_test__\n");
  auto out = split(read_file(kTokDir + "ggml-vocab-qwen2.gguf.out"), "\n");
  REQUIRE(inp.back().empty());  // the file ends with a separator
  REQUIRE(out.back().empty());
  inp.pop_back();
  out.pop_back();
  REQUIRE(inp.size() == 46);
  REQUIRE(out.size() == inp.size());
  for (size_t i = 0; i < inp.size(); ++i) {
    std::string expected = out[i];
    if (!expected.empty() && expected[0] == ' ') expected.erase(0, 1);  // lines start with ' '
    const auto ids = tok.encode(inp[i], false, false);
    CHECK_MESSAGE(ids_str(ids) == expected, "case " << i << ": '" << inp[i] << "'");
    CHECK(tok.decode(ids) == inp[i]);
  }
}

TEST_CASE("tokenizer: extra llama-tokenize outputs (extra-tokenizer-tests.json)") {
  const Tokenizer& tok = qwen2();
  const auto cases = nlohmann::json::parse(read_file(kTokDir + "extra-tokenizer-tests.json"));
  REQUIRE(cases.size() >= 20);
  for (const auto& c : cases) {
    const std::string text = c.at("text");
    const bool ps = c.at("parse_special"), as = c.at("add_special");
    const std::vector<int32_t> expected = c.at("ids");
    const auto ids = tok.encode(text, as, ps);
    CHECK_MESSAGE(ids == expected, "text '" << text << "' parse_special=" << ps << "\n got "
                                            << ids_str(ids) << "\nwant " << ids_str(expected));
    CHECK(tok.decode(ids, /*render_special=*/true) == text);
  }
}

TEST_CASE("tokenizer: pre-tokenizer follows the qwen2 regex") {
  using V = std::vector<std::string>;
  CHECK(words_of("   Hello") == V{"  ", " Hello"});
  CHECK(words_of("Hello\n\n world") == V{"Hello", "\n\n", " world"});
  CHECK(words_of("a  \n  b") == V{"a", "  \n", " ", " b"});
  CHECK(words_of("x'll've'S") == V{"x", "'ll", "'ve", "'S"});
  CHECK(words_of("ab12") == V{"ab", "1", "2"});
  CHECK(words_of("!!!\n\nx") == V{"!!!\n\n", "x"});
  CHECK(words_of("a ,b") == V{"a", " ,", "b"});
  CHECK(words_of("\t\tHi  ") == V{"\t", "\tHi", "  "});
  CHECK(words_of("(x") == V{"(x"});
  CHECK(words_of("日本語 テスト") == V{"日本語", " テスト"});
  CHECK(words_of("\xC3\xA9t\xC3\xA9") == V{"\xC3\xA9t\xC3\xA9"});
  CHECK(words_of("a\xA0\xFF b") == V{"a", "\xA0\xFF", " b"});  // bad bytes: "other", kept
  CHECK(words_of("").empty());
}

TEST_CASE("tokenizer: special tokens") {
  const Tokenizer& tok = qwen2();
  const auto with = tok.encode("<|im_start|>user\nhi<|im_end|>", false, true);
  CHECK(with.front() == 151644);
  CHECK(with.back() == 151645);
  // parse_special = false: the same text as plain BPE.
  const auto without = tok.encode("<|im_start|>", false, false);
  CHECK(without == std::vector<int32_t>{27, 91, 318, 4906, 91, 29});
  // Back to back and adjacent to text.
  CHECK(tok.encode("<|endoftext|><|endoftext|>x", false, true) ==
        std::vector<int32_t>{151643, 151643, 87});
  // Rendering.
  CHECK(tok.token_to_piece(151645) == "");
  CHECK(tok.token_to_piece(151645, true) == "<|im_end|>");
  CHECK(tok.token_to_piece(151700, true) == "");  // UNUSED [PAD] never renders
  CHECK(tok.token_to_piece(220) == " ");
  CHECK(tok.decode(with) == "user\nhi");
  CHECK_THROWS_AS(tok.token_to_piece(151936), Error);
  CHECK_THROWS_AS(tok.token_to_piece(-1), Error);
}

TEST_CASE("tokenizer: round trip on texts and random bytes (invalid UTF-8 included)") {
  const Tokenizer& tok = qwen2();
  std::vector<std::string> texts = {
      "", " ", "\n", "Hello, world!", "naïve café", "日本語のテキスト", "🦙🚀😶‍🌫️",
      "\xFF\xFE", "\xC3", "\xE6\x97", "a\xF0\x9F\xA6", "\xED\xA0\x80 surrogate", "\xC0\xAF overlong",
      "\xF4\x90\x80\x80 too big", "mixed \x80\xBF\x80 continuation", "<|im_end|> as text",
  };
  const auto extra = nlohmann::json::parse(read_file(kTokDir + "extra-tokenizer-tests.json"));
  for (const auto& c : extra) texts.push_back(c.at("text"));
  for (const auto& t : split(read_file(kTokDir + "ggml-vocab-qwen2.gguf.inp"),
                             "\n__ggml_vocab_test__\n")) {
    texts.push_back(t);
  }
  std::mt19937 rng(1234);
  const std::string alphabet[] = {"a", "Z", " ", "\n", "\t", "'", "1", "é", "日", "🦙", "\xE2\x80\x8D",
                                  "\x80", "\xC3", "\xE6\x97", "\xF0\x9F", "\xFF", "\xC0", "\r\n"};
  for (int i = 0; i < 300; ++i) {
    std::string s;
    const int len = static_cast<int>(rng() % 40);
    for (int k = 0; k < len; ++k) {
      if (i % 2) {
        s += static_cast<char>(rng() & 0xFF);  // uniform random bytes
      } else {
        s += alphabet[rng() % std::size(alphabet)];
      }
    }
    texts.push_back(s);
  }
  for (const auto& t : texts) {
    const auto ids = tok.encode(t, false, false);
    for (int32_t id : ids) REQUIRE((id >= 0 && id < 151643));  // BPE output: normal tokens only
    CHECK_MESSAGE(tok.decode(ids) == t, "text of " << t.size() << " bytes");
    CHECK(tok.decode(tok.encode(t, false, true), true) == t);
  }
}

TEST_CASE("tokenizer: fixture model st-a-f32.gguf (2048-token vocab)") {
  auto f = GgufFile::open(std::string(PMOE_FIXTURES_DIR) + "/models/st-a-f32.gguf");
  const Tokenizer tok = Tokenizer::from_gguf(*f);
  CHECK(tok.n_vocab() == 2048);
  CHECK(tok.bos_id() == 2045);
  CHECK(tok.eos_id() == 2045);
  CHECK(tok.is_end_of_generation(2045));
  CHECK(tok.is_end_of_generation(2047));
  const std::string text =
      "The SmallThinker router runs before attention, so the experts of a layer can be fetched "
      "from disk while attention is still being computed.";
  const std::vector<int32_t> want = {785, 328,  76,   541, 1001, 766, 261, 435, 411, 261, 1598,
                                     82,  1573, 1619, 306, 290,  11,  773, 279, 1343, 529, 82,
                                     315, 264,  326,  1135, 646, 387, 282, 295, 331,  291};
  const auto ids = tok.encode(text, true, true);
  REQUIRE(ids.size() >= want.size());
  CHECK(std::vector<int32_t>(ids.begin(), ids.begin() + 32) == want);
  CHECK(tok.decode(ids) == text);
  CHECK(tok.encode("<|im_start|>", false, true) == std::vector<int32_t>{2046});
}

TEST_CASE("tokenizer: ChatML formatting") {
  const Tokenizer& tok = qwen2();
  const std::vector<ChatMessage> msgs = {{"system", "You are a helpful assistant."},
                                         {"user", "Hi!"}};
  const std::string s = tok.format_chat(msgs, true);
  CHECK(s ==
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n");
  CHECK(tok.format_chat(msgs, false) ==
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\nHi!<|im_end|>\n");
  // llama-tokenize's ids for exactly this prompt (first entry of the JSON file).
  CHECK(tok.encode(s, false, true) ==
        std::vector<int32_t>{151644, 8948, 198, 2610, 525, 264, 10950, 17847, 13, 151645, 198,
                             151644, 872, 198, 13048, 0, 151645, 198, 151644, 77091, 198});
  // This vocab file has no chat template: formatting is the built-in guess.
  CHECK_FALSE(tok.has_chat_template());
  CHECK(tok.uses_builtin_chatml());
}

TEST_CASE("tokenizer: StreamDecoder holds back split UTF-8 sequences") {
  const Tokenizer& tok = qwen2();
  const std::string text = "你好😶‍🌫️世界 🦙 ✅ naïve 日本語テキスト";
  const auto ids = tok.encode(text, false, false);
  bool some_token_is_partial = false;
  for (int32_t id : ids) some_token_is_partial |= !valid_utf8(tok.token_to_piece(id));
  REQUIRE(some_token_is_partial);  // the test really splits characters across tokens

  StreamDecoder sd(tok);
  std::string all;
  for (int32_t id : ids) {
    const std::string piece = sd.push(id);
    CHECK(valid_utf8(piece));
    all += piece;
  }
  all += sd.flush();
  CHECK(all == text);

  // An incomplete sequence at the very end comes out on flush; garbage is not held back.
  StreamDecoder sd2(tok);
  const auto partial = tok.encode("\xF0\x9F\xA6", false, false);  // 3 of 4 bytes of 🦙
  std::string got;
  for (int32_t id : partial) got += sd2.push(id);
  CHECK(got.empty());
  CHECK(sd2.flush() == "\xF0\x9F\xA6");
  CHECK(sd2.flush().empty());
  StreamDecoder sd3(tok);
  std::string got3;
  for (int32_t id : tok.encode("a\xFF\x80", false, false)) got3 += sd3.push(id);
  CHECK(got3 == "a\xFF\x80");
  // Control tokens: hidden by default, rendered on request.
  StreamDecoder sd4(tok, /*render_special=*/true);
  CHECK(sd4.push(151645) == "<|im_end|>");
  StreamDecoder sd5(tok);
  CHECK(sd5.push(151645).empty());
}

TEST_CASE("tokenizer: synthetic vocab (merges, user-defined tokens, add_special, templates)") {
  SynthVocab v;
  const int32_t ab = v.add("ab"), abc = v.add("abc"), xyz = v.add("xyz");
  const int32_t eot = v.add("<|endoftext|>", 3), im_start = v.add("<|im_start|>", 3);
  const int32_t im_end = v.add("<|im_end|>", 3), think = v.add("<think>", 4);
  v.merges = {"a b", "ab c", "x y", "xy z"};  // "xy" is not a token: an intermediate symbol
  GgufBuilder g = v.builder();
  g.u32("tokenizer.ggml.bos_token_id", static_cast<uint32_t>(eot));
  g.u32("tokenizer.ggml.eos_token_id", static_cast<uint32_t>(im_end));
  g.boolean("tokenizer.ggml.add_bos_token", true).boolean("tokenizer.ggml.add_eos_token", true);
  g.str("tokenizer.chat_template", "{% for m in messages %}[INST]{{ m.content }}{% endfor %}");
  const Tokenizer tok = load_mem(g);

  CHECK(tok.encode("abc", false, false) == std::vector<int32_t>{abc});
  CHECK(tok.encode("ab", false, false) == std::vector<int32_t>{ab});
  CHECK(tok.encode("xyz", false, false) == std::vector<int32_t>{xyz});
  CHECK(tok.encode("xy", false, false) == std::vector<int32_t>{'x', 'y'});  // byte fallback
  CHECK(tok.encode("abc", true, false) == std::vector<int32_t>{eot, abc, im_end});
  // USER_DEFINED tokens are split out even with parse_special = false (llama.cpp, HF).
  CHECK(tok.encode("<think>ab", false, false) == std::vector<int32_t>{think, ab});
  CHECK(tok.encode("<|im_start|>", false, true) == std::vector<int32_t>{im_start});
  CHECK(tok.encode("<|im_start|>", false, false).size() > 1);
  CHECK(tok.token_to_piece(think) == "<think>");  // user-defined: rendered as text
  CHECK(tok.token_to_piece(im_start).empty());
  CHECK(tok.is_end_of_generation(im_end));
  CHECK(tok.is_end_of_generation(eot));  // by text, like llama.cpp
  CHECK(tok.has_chat_template());
  CHECK(tok.uses_builtin_chatml());  // not ChatML: the CLI should warn

  SynthVocab v2;
  v2.add("<|im_start|>", 3);
  v2.add("<|im_end|>", 3);
  GgufBuilder g2 = v2.builder();
  g2.str("tokenizer.chat_template",
         "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}");
  const Tokenizer tok2 = load_mem(g2);
  CHECK_FALSE(tok2.uses_builtin_chatml());
  CHECK(tok2.bos_id() == -1);
  CHECK(tok2.eos_id() == -1);
  CHECK(tok2.encode("a", true, true) == std::vector<int32_t>{'a'});
}

TEST_CASE("tokenizer: load errors name the file and the key") {
  SynthVocab v;
  v.merges = {"a b"};
  v.add("ab");
  auto contains = [](const std::string& s, const char* part) {
    return s.find(part) != std::string::npos;
  };
  {
    GgufBuilder g;
    g.str("tokenizer.ggml.model", "llama");
    const std::string e = load_error(g);
    CHECK(contains(e, "synthetic.gguf"));
    CHECK(contains(e, "tokenizer.ggml.model"));
    CHECK(contains(e, "'llama'"));
  }
  {
    GgufBuilder g;
    g.str("tokenizer.ggml.model", "gpt2").str("tokenizer.ggml.pre", "llama-bpe");
    CHECK(contains(load_error(g), "tokenizer.ggml.pre"));
  }
  {
    GgufBuilder g;
    g.str("tokenizer.ggml.model", "gpt2").str("tokenizer.ggml.pre", "qwen2");
    g.strs("tokenizer.ggml.tokens", v.tokens);
    const std::string e = load_error(g);
    CHECK(contains(e, "tokenizer.ggml.merges"));
    CHECK(contains(e, "missing"));
  }
  {
    SynthVocab bad = v;
    bad.merges = {"a b", "ab", "c d"};
    const std::string e = load_error(bad.builder());
    CHECK(contains(e, "tokenizer.ggml.merges"));
    CHECK(contains(e, "merge entry 1"));
  }
  {
    GgufBuilder g = v.builder();
    g.u32("tokenizer.ggml.eos_token_id", 100000);
    const std::string e = load_error(g);
    CHECK(contains(e, "tokenizer.ggml.eos_token_id"));
    CHECK(contains(e, "out of range"));
  }
  {
    SynthVocab bad = v;
    bad.types.pop_back();
    CHECK(contains(load_error(bad.builder()), "tokenizer.ggml.token_type"));
  }
  {
    GgufBuilder g = v.builder();
    g.boolean("tokenizer.ggml.add_bos_token", true);
    CHECK(contains(load_error(g), "tokenizer.ggml.bos_token_id"));
  }
  {
    GgufBuilder g;
    CHECK(contains(load_error(g), "tokenizer.ggml.model"));
  }
}

TEST_CASE("tokenizer: speed (load < 0.5 s, 4 KB < 10 ms in optimized builds)") {
  using clock = std::chrono::steady_clock;
  auto f = GgufFile::open(kTokDir + "ggml-vocab-qwen2.gguf");
  const auto t0 = clock::now();
  const Tokenizer tok = Tokenizer::from_gguf(*f);
  const double load_s = std::chrono::duration<double>(clock::now() - t0).count();

  std::string text;
  const std::string chunk =
      "The SmallThinker router runs before attention, so experts can be prefetched. "
      "def f(x):\n    return x * 2  # 123\n日本語のテキストと emoji 🦙🚀. ";
  while (text.size() < 4096) text += chunk;
  text.resize(4096);
  const int reps = 20;
  const auto t1 = clock::now();
  size_t n = 0;
  for (int i = 0; i < reps; ++i) n += tok.encode(text, false, false).size();
  const double enc_ms = std::chrono::duration<double, std::milli>(clock::now() - t1).count() / reps;
  MESSAGE("vocab load " << load_s * 1e3 << " ms; 4 KB encode " << enc_ms << " ms ("
                        << n / reps << " tokens)");
#ifdef NDEBUG
  CHECK(load_s < 0.5);
  CHECK(enc_ms < 10.0);
#endif
}
