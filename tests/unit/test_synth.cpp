// Synthetic models: the quantizers match llama-quantize byte for byte, the vocabulary is a real
// Qwen2-style BPE, tiny models of every type load and run with finite logits, files do not
// depend on the thread count, and --routing-skew measurably skews the routing.
#include <doctest/doctest.h>
#include <pocketmoe/dtype.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "common/error.hpp"
#include "engine/session.hpp"
#include "gguf/gguf.hpp"
#include "model/model.hpp"
#include "synth/bpe_vocab.hpp"
#include "synth/convert.hpp"
#include "synth/routing_stats.hpp"
#include "synth/synth.hpp"
#include "tokenizer/tokenizer.hpp"

namespace fs = std::filesystem;
using namespace pmoe;

namespace {

std::string fixture(const std::string& rel) { return std::string(PMOE_FIXTURES_DIR) + "/" + rel; }

fs::path tmp_dir() {
  const fs::path d = fs::path(PMOE_BUILD_DIR) / "test_synth_tmp";
  fs::create_directories(d);
  return d;
}

std::string read_all(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  REQUIRE(f);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

std::string write(synth::Options o, const std::string& name) {
  const std::string path = (tmp_dir() / name).string();
  synth::write_model(o, path);
  return path;
}

synth::Options tiny(const char* type = "f32") {
  synth::Options o;
  o.shape = synth::preset("tiny");
  o.shape.type = synth::parse_type(type);
  return o;
}

// Runs `tokens` through the model and returns all logits.
std::vector<float> run_logits(Session& s, const std::vector<int32_t>& tokens) {
  std::vector<float> logits;
  s.engine().reset();
  s.engine().eval(tokens, true, logits);
  return logits;
}

SessionOptions session_opts(const std::string& path) {
  SessionOptions so;
  so.model_path = path;
  so.engine.n_ctx = 256;
  return so;
}

}  // namespace

TEST_CASE("synth quantizers reproduce llama-quantize's Q8_0 and Q4_0 bytes") {
  auto f32 = GgufFile::open(fixture("models/st-a-f32.gguf"));
  for (const char* q : {"q8_0", "q4_0"}) {
    auto qf = GgufFile::open(fixture(std::string("models/st-a-") + q + ".gguf"));
    for (const char* name :
         {"token_embd.weight", "blk.0.attn_q.weight", "blk.5.ffn_down_exps.weight"}) {
      const GgufTensorInfo& src = *f32->find_tensor(name);
      const GgufTensorInfo& ref = *qf->find_tensor(name);
      std::vector<uint8_t> out(ref.size);
      synth::convert_row(reinterpret_cast<const float*>(f32->tensor_data(src)), out.data(),
                         src.n_elements(), ref.type);
      CHECK_MESSAGE(std::memcmp(out.data(), qf->tensor_data(ref), ref.size) == 0, q << " " << name);
    }
  }
  CHECK(pmoe_fp32_to_fp16(1.f) == 0x3c00);
  CHECK(pmoe_fp32_to_fp16(65504.f) == 0x7bff);
  CHECK(pmoe_fp32_to_fp16(1e-7f) == 0x0002);  // subnormal, rounded to nearest
  CHECK(pmoe_fp32_to_bf16(1.f) == 0x3f80);
  CHECK(pmoe_fp32_to_bf16(1.00390625f) == 0x3f80);  // tie -> even
}

TEST_CASE("synth vocabulary is a byte-level BPE in Qwen2's byte order") {
  const synth::BpeVocab v = synth::build_bpe_vocab(1024);
  REQUIRE(v.tokens.size() == 1024);
  CHECK(v.merges.size() >= 200);
  CHECK(v.tokens[v.endoftext] == "<|endoftext|>");
  CHECK(v.tokens[v.endoftext + 2] == "<|im_end|>");
  CHECK(v.token_types[v.endoftext + 1] == 3);
  CHECK(v.token_types.back() == 5);
  CHECK(v.tokens.back() == "[PAD1023]");
  // The first 256 ids are GPT-2's byte tokens, in the same order as Qwen2's vocabulary.
  auto q = GgufFile::open(fixture("models/st-a-f32.gguf"));
  const auto qt = q->get_string_array("tokenizer.ggml.tokens");
  for (int i = 0; i < 256; ++i) REQUIRE(v.tokens[i] == qt[i]);
  // No room for merges: still valid.
  CHECK(synth::build_bpe_vocab(259).merges.empty());
  CHECK_THROWS_AS(synth::build_bpe_vocab(258), Error);
}

TEST_CASE("synth tiny models of every type load, run and tokenize") {
  for (const char* type : {"f32", "f16", "bf16", "q8_0", "q4_0"}) {
    INFO("type " << std::string(type));
    const std::string path = write(tiny(type), std::string("tiny-") + type + ".gguf");
    auto m = Model::load(path);
    const Hparams& h = m->hp();
    CHECK(h.n_layer == 6);
    CHECK(h.n_embd == 256);
    CHECK(h.n_head == 4);
    CHECK(h.n_head_kv == 2);
    CHECK(h.head_dim == 64);
    CHECK(h.n_expert == 16);
    CHECK(h.n_expert_used == 4);
    CHECK(h.n_ff_exp == 128);
    CHECK(h.n_vocab == 1024);
    CHECK(h.sliding_window == 4096);
    CHECK(h.gating == Gating::Softmax);
    CHECK(m->tied_output());
    CHECK((!h.layers[0].rope && !h.layers[0].sliding && !h.layers[4].rope));
    CHECK((h.layers[1].rope && h.layers[1].sliding && h.layers[5].sliding));

    const GgufFile& f = m->file();
    CHECK(f.alignment() == 32);
    CHECK(f.get_string("general.architecture") == "smallthinker");
    CHECK(f.type_of("smallthinker.block_count") == GgufValueType::UINT32);
    CHECK(f.type_of("smallthinker.rope.freq_base") == GgufValueType::FLOAT32);
    CHECK(f.get_u32("general.quantization_version") == 2);
    CHECK(f.keys().size() == 28);  // exactly the fixtures' key set
    const uint32_t t = synth::parse_type(type);
    for (const GgufTensorInfo& ti : f.tensors()) {
      const bool f32_only = ti.name.find("norm") != std::string::npos ||
                            ti.name.find("gate_inp") != std::string::npos;
      CHECK_MESSAGE(ti.type == (f32_only ? uint32_t(PMOE_DTYPE_F32) : t), ti.name);
      CHECK(ti.offset % 32 == 0);
    }

    Session s(session_opts(path));
    const std::vector<int32_t> toks = {1, 500, 77, 1020, 3, 900, 42, 600};
    const std::vector<float> logits = run_logits(s, toks);
    REQUIRE(logits.size() == toks.size() * 1024);
    double sum = 0, sq = 0;
    bool finite = true;
    for (float x : logits) {
      finite = finite && std::isfinite(x);
      sum += x;
      sq += double(x) * x;
    }
    CHECK(finite);
    const double mean = sum / double(logits.size()),
                 sd = std::sqrt(sq / double(logits.size()) - mean * mean);
    CHECK(sd > 0.5);  // not collapsed, not exploded
    CHECK(sd < 20);

    // One token at a time through the KV cache gives the batch's logits up to f32 rounding. The
    // two paths sum some products in different orders (as llama.cpp's do: its routers and KQV use
    // tinyBLAS for a batch, vec_dot for one token), so a near-tie in a random model's top-k may
    // flip and move a row; most rows agree to rounding, and none by much more. bf16 activations
    // keep 8 bits: a last-bit difference upstream becomes a 2^-8 one there.
    const float rounding = (std::string(type) == "bf16" ? 1e-2f : 1e-4f) * float(sd);
    const std::string cfg = (tmp_dir() / "no-onednn.yaml").string();
    std::ofstream(cfg) << "compute: { plugin: cpu-onednn, onednn_min_tokens: 1000000 }\n";
    SessionOptions so = session_opts(path);
    so.config_path = cfg;
    Session plain(so);
    const std::vector<float> batch = run_logits(plain, toks);
    std::vector<float> seq;
    plain.engine().reset();
    for (int32_t id : toks) plain.engine().eval(std::span(&id, 1), true, seq);
    REQUIRE(seq.size() == batch.size());
    size_t close_rows = 0;
    float max_diff = 0;
    for (size_t r = 0; r < toks.size(); ++r) {
      float row_diff = 0;
      for (size_t i = r * 1024; i < (r + 1) * 1024; ++i) row_diff = std::max(row_diff, std::fabs(seq[i] - batch[i]));
      close_rows += row_diff <= rounding;
      max_diff = std::max(max_diff, row_diff);
    }
    INFO("rows within rounding: " << close_rows << " of " << toks.size() << ", largest difference " << max_diff);
    CHECK(close_rows + 2 >= toks.size());
    CHECK(max_diff <= 0.1f * float(sd));

    const Tokenizer& tok = s.tokenizer();
    CHECK(tok.n_vocab() == 1024);
    CHECK(tok.eos_id() == tok.find_token("<|endoftext|>"));
    const std::string text =
        synth::bpe_training_text() + " Grüße, 1234 \t tabs\n\n 日本語 🙂";
    const auto ids = tok.encode(text, false, false);
    CHECK(tok.decode(ids) == text);
    CHECK(ids.size() * 2 < text.size());  // the merges compress English
    const auto chat = tok.encode("<|im_start|>user\nhi<|im_end|>", false, true);
    CHECK(chat.front() == tok.find_token("<|im_start|>"));
    CHECK(chat.back() == tok.find_token("<|im_end|>"));
  }
}

TEST_CASE("synth output depends on the seed only, not on the thread count") {
  synth::Options o = tiny("q4_0");
  o.routing_skew = true;
  o.threads = 1;
  const std::string a = read_all(write(o, "det-1.gguf"));
  o.threads = 3;
  const std::string b = read_all(write(o, "det-3.gguf"));
  CHECK(a == b);
  o.seed = 2;
  CHECK(read_all(write(o, "det-seed2.gguf")) != a);
}

TEST_CASE("synth presets and shape errors") {
  const synth::Shape s4 = synth::preset("4b-a0.6b");
  CHECK(s4.n_layer == 32);
  CHECK(s4.n_embd == 1536);
  CHECK(s4.n_expert == 32);
  CHECK(s4.gating == Gating::Sigmoid);
  CHECK(s4.sliding_window == 0);
  const synth::Shape s21 = synth::preset("21b-a3b");
  CHECK(s21.n_head * s21.head_dim == 3584);
  CHECK(s21.n_expert_used == 6);
  CHECK_THROWS_WITH_AS(synth::preset("7b"), doctest::Contains("known: tiny"), Error);
  CHECK_THROWS_WITH_AS(synth::parse_type("q4_k"), doctest::Contains("q4_0"), Error);

  synth::Options o = tiny("q4_0");
  o.shape.n_embd = 240;
  CHECK_THROWS_WITH_AS(synth::write_model(o, (tmp_dir() / "bad.gguf").string()),
                       doctest::Contains("--embd = 240 is not a multiple of 32"), Error);
  o = tiny();
  o.shape.n_expert_used = 17;
  CHECK_THROWS_WITH_AS(synth::write_model(o, (tmp_dir() / "bad.gguf").string()),
                       doctest::Contains("--top-k"), Error);
  o = tiny();
  o.shape.n_head_kv = 3;
  CHECK_THROWS_WITH_AS(synth::write_model(o, (tmp_dir() / "bad.gguf").string()),
                       doctest::Contains("--kv-heads"), Error);
  CHECK(!fs::exists(tmp_dir() / "bad.gguf"));
}

TEST_CASE("synth --vocab-from copies the tokenizer and its size") {
  synth::Options o = tiny("q4_0");
  o.shape.n_layer = 1;
  o.shape.n_embd = 64;
  o.shape.n_head = 2;
  o.shape.n_head_kv = 1;
  o.shape.head_dim = 32;
  o.shape.n_expert = 4;
  o.shape.n_expert_used = 2;
  o.shape.n_ff_exp = 32;
  o.vocab_from = fixture("tokenizer/ggml-vocab-qwen2.gguf");
  const std::string path = write(o, "vocab-from.gguf");
  auto m = Model::load(path);
  CHECK(m->hp().n_vocab == 151936);
  auto ref_file = GgufFile::open(o.vocab_from);
  const Tokenizer ref = Tokenizer::from_gguf(*ref_file);
  const Tokenizer tok = Tokenizer::from_gguf(m->file());
  const std::string text = "Hello world! <|im_start|>system 123 ünïcödé";
  CHECK(tok.encode(text, false, true) == ref.encode(text, false, true));
  CHECK(tok.n_merges() == ref.n_merges());
}

TEST_CASE("synth --routing-skew concentrates the routing on a few experts per layer") {
  // 4B-like expert counts on a small body; thresholds checked against measured values
  // (skew: top-20% share 0.75-0.80, rare 0.72; uniform: 0.27-0.32, rare <= 0.06 over 128
  // tokens; a perfectly uniform router would give ~0.26 and 0 from sampling noise alone).
  synth::Options o = tiny();
  o.shape.n_expert = 32;
  o.shape.n_ff_exp = 64;
  o.shape.n_embd = 128;
  o.shape.head_dim = 32;
  for (bool skew : {false, true}) {
    CAPTURE(skew);
    o.routing_skew = skew;
    Session s(session_opts(write(o, skew ? "route-skew.gguf" : "route-uniform.gguf")));
    const synth::RoutingStats st = synth::measure_routing(s.engine(), 128);
    MESSAGE(st.report());
    REQUIRE(st.counts.size() == 6);
    for (uint32_t il = 0; il < 6; ++il) {
      CAPTURE(il);
      if (skew) {
        CHECK(st.top_share(il) > 0.55);
        CHECK(st.rare_fraction(il) >= 0.5);
      } else {
        CHECK(st.top_share(il) < 0.4);
        CHECK(st.rare_fraction(il) <= 0.2);
      }
    }
  }
}

TEST_CASE("synth --reglu-sparsity F leaves about F of the neurons inactive, as the engine measures") {
  // the backend counts active neurons (MOE_EXPERT's activity counters); unbiased gates give ~0.5
  for (float f : {0.f, 0.6f, 0.9f}) {
    CAPTURE(f);
    synth::Options o = tiny("q4_0");
    o.reglu_sparsity = f;
    Session s(session_opts(write(o, "sparsity.gguf")));
    (void)synth::measure_routing(s.engine(), 128);
    uint64_t active = 0, total = 0;
    for (const auto& [a, t, relaid, us] : s.engine().reglu_activity()) {
      CHECK(t > 0);
      CHECK(a <= t);
      active += a, total += t;
    }
    REQUIRE(total == uint64_t(128) * 6 * o.shape.n_expert_used * o.shape.n_ff_exp);
    const double inactive = 1 - double(active) / double(total);
    MESSAGE("inactive " << inactive);
    CHECK(std::abs(inactive - (f > 0 ? f : 0.5)) < 0.04);
  }
}

TEST_CASE("sparse_ffn on gives the dense bits whether a thread runs whole experts or the threads split their rows (cpu-onednn)") {
  // tiny Q4_0: 256 rows per expert `down`, two groups of 128. A decode step's four experts: with 2
  // threads each runs two whole experts; with 3 the stages are split into tasks (eight sparse
  // `down` tasks), and the threads' shares may end inside an expert
  synth::Options o = tiny("q4_0");
  const std::string path = write(o, "sparse-split.gguf");
  const std::vector<int32_t> toks = {1, 500, 77, 1020, 3, 900, 42, 600};
  auto logits = [&](const char* mode, int threads) {
    const std::string cfg = (tmp_dir() / (std::string("sparse-") + mode + std::to_string(threads) + ".yaml")).string();
    std::ofstream(cfg) << "compute: { plugin: cpu-onednn, threads: " << threads << ", sparse_ffn: " << mode << " }\n";
    SessionOptions so = session_opts(path);
    so.config_path = cfg;
    Session s(so);
    std::vector<float> out = run_logits(s, toks);  // batch, then one token at a time
    s.engine().reset();
    for (int32_t id : toks) s.engine().eval(std::span(&id, 1), true, out);
    uint64_t active = 0, total = 0;
    for (const auto& [a, t, relaid, us] : s.engine().reglu_activity()) active += a, total += t;
    return std::pair{out, double(active) / double(total)};
  };
  const auto [dense, dense_active] = logits("off", 2);
  for (int threads : {2, 3}) {
    INFO("threads " << threads);
    const auto [sparse, sparse_active] = logits("on", threads);
    CHECK(sparse_active < 0.6);  // there is something to skip
    REQUIRE(dense.size() == sparse.size());
    CHECK(std::memcmp(dense.data(), sparse.data(), dense.size() * 4) == 0);
    const auto [staged_dense, staged_active] = logits("off", threads);
    REQUIRE(dense.size() == staged_dense.size());
    CHECK(std::memcmp(dense.data(), staged_dense.data(), dense.size() * 4) == 0);
  }
}
