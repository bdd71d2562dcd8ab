#include "synth/bpe_vocab.hpp"

#include <map>
#include <unordered_map>

#include "common/error.hpp"
#include "tokenizer/pretokenizer.hpp"
#include "tokenizer/unicode.hpp"

namespace pmoe::synth {

namespace {

enum : int32_t { kNormal = 1, kControl = 3, kUnused = 5 };

// GPT-2's bytes_to_unicode() order: the printable bytes first, then the rest. Token id i < 256
// is byte kByteOrder[i], as in GPT-2's and Qwen2's vocabularies.
std::vector<uint8_t> byte_order() {
  std::vector<uint8_t> bs;
  for (int b = 0; b < 256; ++b)
    if ((b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF))
      bs.push_back(uint8_t(b));
  for (int b = 0; b < 256; ++b)
    if (!((b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF)))
      bs.push_back(uint8_t(b));
  return bs;
}

}  // namespace

const std::string& bpe_training_text() {
  static const std::string text =
      "The SmallThinker models are mixture of experts language models that were designed from the "
      "start to run on the devices people already own: a laptop, a phone, a small board. Each "
      "layer "
      "holds many experts, and a router picks only a few of them for every token, so most of the "
      "weights are not needed at any given moment. The router of a layer reads the hidden state "
      "before attention is computed, which means that the experts of the layer are known early. "
      "While the attention of the layer is still being computed, the weights of the chosen experts "
      "can already be read from the disk into memory. When the reads finish before the attention "
      "does, the model runs at the speed it would have if all of its weights were in memory.\n\n"
      "In practice the routing is far from uniform. A few experts of every layer are chosen for "
      "most "
      "of the tokens, and most of the other experts are chosen only now and then. That is why a "
      "small "
      "cache of experts works so well: the hot experts stay in memory, and the cold ones are read "
      "when they are needed. A good cache policy keeps the experts that will be used again soon, "
      "and the prefetcher reads the experts of the next layers while the current one is "
      "computed.\n\n"
      "This runtime loads a model from a standard GGUF file, keeps the dense part of the model in "
      "memory, and streams the expert weights from flash storage into a cache whose size you "
      "choose. "
      "The compute backend, the storage backend and the cache policy are plugins, and the same "
      "model "
      "runs with any of them. It should give the same answer, token for token, whatever the "
      "choice: "
      "offloading must never change a single output bit. Tokens are produced one at a time; for "
      "each "
      "token the model computes the routing of every layer, the attention over the tokens before "
      "it, "
      "and the experts that were chosen, and then the logits of the next token.\n\n"
      "How fast can it be? When the whole model is in memory, the time of one token is the time "
      "it takes to read the weights that the token needs: the attention of every layer, the "
      "routers, the experts that were chosen and the output layer. Divide the read bandwidth of "
      "the memory by those bytes and you get the bound. A good engine comes close to it. When the "
      "experts are read from storage instead, the question is how many of the reads can be hidden "
      "behind the computation, and how many of the experts are already in the cache. Both depend "
      "on the routing: the more skewed it is, the more often the cache already holds the experts "
      "that a token needs, and the fewer reads there are to hide.\n\n"
      "The tests of this project compare its logits with those of llama.cpp on the same files, "
      "for every type of weights it supports: full precision floats, half precision floats, brain "
      "floats and the quantized formats with eight and four bits per weight. They also check that "
      "the tokenizer gives the same tokens as the reference tokenizer for hundreds of strings, "
      "with numbers, punctuation, spaces, new lines and text in other languages.\n\n"
      "Writing a plugin is meant to be simple. A compute backend records the operations of a "
      "layer and submits them together; a storage backend submits many reads at once and reports "
      "them when they complete; a cache policy sees the routing decisions and chooses the experts "
      "to evict. Every plugin is a shared library with one exported function and a small manifest "
      "that describes its options, so the runtime can check a configuration before it loads "
      "anything. Errors are reported with the file, the line and the column where they happened, "
      "and a message that says what was expected and what was found instead.\n\n"
      "Synthetic models like this one have random weights, so the text they generate means "
      "nothing at all. They are useful all the same: they have exactly the shapes, the types and "
      "the layout of the real models, they can be made in a few seconds at any size, and they "
      "exercise every part of the runtime, from the reading of the file to the sampling of the "
      "next token. Their routing can even be made as skewed as that of the trained models.\n";
  return text;
}

BpeVocab build_bpe_vocab(uint32_t n_vocab, uint32_t max_merges) {
  constexpr uint32_t kFixed = 256 + 3;
  if (n_vocab < kFixed)
    throw Error("synth: vocabulary size " + std::to_string(n_vocab) +
                " is too small: the byte and "
                "special tokens alone need " +
                std::to_string(kFixed));
  BpeVocab v;
  const std::vector<uint8_t> order = byte_order();
  int32_t byte_id[256];
  for (int i = 0; i < 256; ++i) {
    std::string t;
    unicode::append_utf8(t, unicode::byte_to_cp(order[i]));
    v.tokens.push_back(std::move(t));
    byte_id[order[i]] = i;
  }
  std::unordered_map<std::string, int32_t> id_of;
  for (int i = 0; i < 256; ++i) id_of[v.tokens[i]] = i;

  // Words as the tokenizer will see them (qwen2 pre-tokenizer), with their counts.
  const std::string& text = bpe_training_text();
  std::vector<ByteSpan> spans;
  qwen2_pretokenize(text, spans);
  std::map<std::string, uint32_t> word_count;
  for (const ByteSpan& s : spans) ++word_count[text.substr(s.offset, s.length)];
  std::vector<std::pair<std::vector<int32_t>, uint32_t>> words;
  for (const auto& [w, c] : word_count) {
    std::vector<int32_t> syms;
    for (unsigned char b : w) syms.push_back(byte_id[b]);
    words.emplace_back(std::move(syms), c);
  }

  // Classic BPE training: merge the most frequent adjacent pair (ties: lowest ids) until no pair
  // occurs twice, the merge budget is spent or the vocabulary is full.
  const uint32_t room = n_vocab - kFixed;
  while (v.merges.size() < max_merges) {
    std::map<std::pair<int32_t, int32_t>, uint32_t> pairs;
    for (const auto& [syms, c] : words)
      for (size_t i = 0; i + 1 < syms.size(); ++i) pairs[{syms[i], syms[i + 1]}] += c;
    std::pair<int32_t, int32_t> best{};
    uint32_t best_count = 1;
    for (const auto& [p, c] : pairs)
      if (c > best_count) best = p, best_count = c;
    if (best_count < 2) break;
    const std::string merged = v.tokens[best.first] + v.tokens[best.second];
    auto it = id_of.find(merged);  // another merge order may have made this text already
    if (it == id_of.end()) {
      if (v.tokens.size() - 256 >= room) break;
      it = id_of.emplace(merged, int32_t(v.tokens.size())).first;
      v.tokens.push_back(merged);
    }
    v.merges.push_back(v.tokens[best.first] + " " + v.tokens[best.second]);
    for (auto& [syms, c] : words) {
      std::vector<int32_t> out;
      for (size_t i = 0; i < syms.size(); ++i) {
        if (i + 1 < syms.size() && syms[i] == best.first && syms[i + 1] == best.second) {
          out.push_back(it->second);
          ++i;
        } else {
          out.push_back(syms[i]);
        }
      }
      syms = std::move(out);
    }
  }

  v.token_types.assign(v.tokens.size(), kNormal);
  v.endoftext = int32_t(v.tokens.size());
  for (const char* s : {"<|endoftext|>", "<|im_start|>", "<|im_end|>"}) {
    v.tokens.emplace_back(s);
    v.token_types.push_back(kControl);
  }
  while (v.tokens.size() < n_vocab) {
    v.tokens.push_back("[PAD" + std::to_string(v.tokens.size()) + "]");
    v.token_types.push_back(kUnused);
  }
  return v;
}

}  // namespace pmoe::synth
