#pragma once
// Byte-level BPE tokenizer (GGUF tokenizer.ggml.model = "gpt2", pre = "qwen2"), behaving exactly
// like llama.cpp's: Qwen2 pre-tokenizer, GPT-2 byte mapping, merges by rank, special tokens.
// Deviation: invalid UTF-8 input is kept byte for byte (llama.cpp turns it into U+FFFD), so
// decode(encode(s)) == s for every byte string.
//
// A Tokenizer is immutable and cheap to copy (shared state); all methods are thread-safe.
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace pmoe {

class GgufFile;

struct ChatMessage {
  std::string role, content;
};

// tokenizer.ggml.token_type values (llama.cpp's llama_token_type).
enum class TokenType : int32_t {
  kUndefined = 0, kNormal = 1, kUnknown = 2, kControl = 3, kUserDefined = 4, kUnused = 5,
  kByte = 6,
};

class Tokenizer {
 public:
  // Throws pmoe::Error naming the file and the key for anything unsupported or malformed.
  static Tokenizer from_gguf(const GgufFile& f);

  // add_special: BOS/EOS as tokenizer.ggml.add_bos_token/add_eos_token say (absent = false).
  // parse_special: CONTROL (and UNKNOWN) token texts in `text` become their ids. USER_DEFINED
  // token texts are always matched, like llama.cpp and HF do.
  std::vector<int32_t> encode(std::string_view text, bool add_special, bool parse_special) const;

  // The bytes of one token. CONTROL/UNKNOWN tokens are empty unless render_special; UNUSED
  // tokens are always empty. Throws pmoe::Error for an id outside [0, n_vocab).
  std::string token_to_piece(int32_t id, bool render_special = false) const;
  std::string decode(std::span<const int32_t> ids, bool render_special = false) const;

  int32_t n_vocab() const;
  int32_t n_merges() const;
  int32_t bos_id() const;  // -1 if absent
  int32_t eos_id() const;  // -1 if absent
  bool add_bos() const;
  bool add_eos() const;
  // eos, eot/eom/FIM ids from the file, and the EOG texts llama.cpp knows (<|im_end|>,
  // <|endoftext|>, <|eot_id|>, ...).
  bool is_end_of_generation(int32_t id) const;
  std::vector<int32_t> eog_ids() const;

  // Token lookup by exact vocabulary text (GPT-2-mapped for normal tokens); -1 if absent.
  int32_t find_token(std::string_view text) const;
  std::string_view token_text(int32_t id) const;  // as stored in the file
  TokenType token_type(int32_t id) const;

  // ChatML: "<|im_start|>{role}\n{content}<|im_end|>\n" per message, then
  // "<|im_start|>assistant\n" if add_generation_prompt. Encode it with parse_special = true.
  std::string format_chat(const std::vector<ChatMessage>& msgs, bool add_generation_prompt) const;
  // True when the file's tokenizer.chat_template is absent or not recognisably ChatML, i.e. the
  // built-in ChatML formatting is a guess the CLI should warn about.
  bool uses_builtin_chatml() const;
  bool has_chat_template() const;
  const std::string& chat_template() const;  // empty if absent

 private:
  struct Impl;
  explicit Tokenizer(std::shared_ptr<const Impl> impl) : impl_(std::move(impl)) {}
  std::shared_ptr<const Impl> impl_;
};

// Streaming detokenizer for the CLI: holds back an incomplete UTF-8 sequence at the end of the
// output until the token that completes it arrives. Bytes that can never become valid UTF-8 are
// passed through, so the concatenated output always equals decode(ids).
class StreamDecoder {
 public:
  explicit StreamDecoder(const Tokenizer& tok, bool render_special = false)
      : tok_(tok), render_special_(render_special) {}
  std::string push(int32_t id);
  std::string flush();  // whatever is still held back (an incomplete sequence at the end)

 private:
  Tokenizer tok_;  // shares the state, so the decoder cannot dangle
  bool render_special_;
  std::string pending_;
};

}  // namespace pmoe
