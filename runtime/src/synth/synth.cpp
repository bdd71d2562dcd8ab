#include "synth/synth.hpp"

#include <pocketmoe/dtype.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <numeric>
#include <thread>
#include <vector>

#include "common/error.hpp"
#include "synth/bpe_vocab.hpp"
#include "synth/convert.hpp"

namespace pmoe::synth {

namespace {

constexpr const char* kArch = "smallthinker";
constexpr float kSqrt3 = 1.7320508f;

// Scales. Weights are uniform with std 1/sqrt(fan_in), so every projection keeps unit RMS; the
// residual stream then grows by about kLayerVar per element and layer (random-walk growth, as in
// real pre-norm models), far from overflow even after 52 layers.
constexpr float kLogitStd = 3.f;  // std of the logits (like the fixtures) -> embedding scale
constexpr float kLayerVar = 0.5f;
constexpr float kNormJitter = 0.1f;  // norm weights uniform in 1 +- this

// Routing (docs/synth.md): router logit = bias + token code (std 1) + context (kContextStd).
// With skew, each layer ranks its experts in a random order and biases them by rank: a hot set
// (kHotFraction of the experts, at least 2k; biases falling linearly by kHotSpan), then a gap of
// kColdGap and a slowly falling tail. Without skew every bias is 0.
constexpr float kHotFraction = 0.27f, kHotSpan = 1.f, kColdGap = 2.f, kColdSlope = 0.05f;
constexpr float kContextStd = 0.15f;  // std of the context-dependent part of a router logit

uint64_t mix64(uint64_t z) {  // splitmix64's finaliser
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

/// The standard normal quantile: z with P(N(0,1) <= z) = p, 0 < p < 1 (bisection on erfc).
float normal_quantile(double p) {
  double lo = -10, hi = 10;
  for (int i = 0; i < 100; ++i) {
    const double mid = (lo + hi) / 2;
    (0.5 * std::erfc(-mid / std::sqrt(2.0)) < p ? lo : hi) = mid;
  }
  return float((lo + hi) / 2);
}

uint64_t name_hash(std::string_view s) {  // FNV-1a
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : s) h = (h ^ c) * 0x100000001b3ull;
  return h;
}

// Counter-based generator: the numbers of row `row` of stream `stream` depend on nothing else,
// so any split of the rows over threads gives the same file.
struct Rng {
  uint64_t s;
  Rng(uint64_t stream, uint64_t row) : s(mix64(stream ^ mix64(row * 0x9E3779B97F4A7C15ull + 1))) {}
  uint64_t next() { return mix64(s += 0x9E3779B97F4A7C15ull); }
  void uniform(float* out, uint64_t n, float amp) {  // uniform in [-amp, amp)
    const float k = amp * 0x1.0p-31f;
    uint64_t i = 0;
    for (; i + 1 < n; i += 2) {
      const uint64_t r = next();
      out[i] = float(int32_t(uint32_t(r))) * k;
      out[i + 1] = float(int32_t(uint32_t(r >> 32))) * k;
    }
    if (i < n) out[i] = float(int32_t(uint32_t(next()))) * k;
  }
};

using RowFn = std::function<void(uint64_t row, float* out)>;

// Generates rows [0, rows) of ne0 values with `fn` and converts them to `type` at dst, on
// `threads` threads taking chunks of rows.
void fill_rows(uint8_t* dst, uint64_t ne0, uint64_t rows, uint32_t type, const RowFn& fn,
               unsigned threads) {
  const uint64_t row_bytes = pmoe_dtype_row_bytes(type, ne0);
  const uint64_t chunk = std::max<uint64_t>(1, (uint64_t(1) << 16) / ne0);
  std::atomic<uint64_t> next{0};
  auto worker = [&] {
    std::vector<float> buf(ne0);
    for (uint64_t r0; (r0 = next.fetch_add(chunk)) < rows;)
      for (uint64_t r = r0; r < std::min(rows, r0 + chunk); ++r) {
        fn(r, buf.data());
        convert_row(buf.data(), dst + r * row_bytes, ne0, type);
      }
  };
  const unsigned n = unsigned(std::min<uint64_t>(threads, (rows + chunk - 1) / chunk));
  std::vector<std::thread> pool;
  for (unsigned i = 1; i < n; ++i) pool.emplace_back(worker);
  worker();
  for (auto& t : pool) t.join();
}

uint32_t file_type(uint32_t t) {  // llama_ftype "MOSTLY_<type>"
  switch (t) {
    case PMOE_DTYPE_F32:
      return 0;
    case PMOE_DTYPE_F16:
      return 1;
    case PMOE_DTYPE_Q4_0:
      return 2;
    case PMOE_DTYPE_Q8_0:
      return 7;
    default:
      return 32;  // BF16
  }
}

void check_shape(const Shape& s) {
  auto bad = [&](const std::string& what) { throw Error("synth: " + what); };
  auto positive = [&](uint32_t v, const char* name) {
    if (v == 0) bad(std::string(name) + " must be > 0");
  };
  positive(s.n_layer, "--layers");
  positive(s.n_embd, "--embd");
  positive(s.n_head, "--heads");
  positive(s.n_head_kv, "--kv-heads");
  positive(s.head_dim, "--head-dim");
  positive(s.n_expert, "--experts");
  positive(s.n_expert_used, "--top-k");
  positive(s.n_ff_exp, "--expert-ffn");
  positive(s.n_ctx, "--ctx");
  if (s.n_head % s.n_head_kv)
    bad("--heads (" + std::to_string(s.n_head) + ") must be a multiple of --kv-heads (" +
        std::to_string(s.n_head_kv) + ")");
  if (s.head_dim % 2) bad("--head-dim must be even (RoPE rotates pairs)");
  if (s.n_expert_used > s.n_expert)
    bad("--top-k (" + std::to_string(s.n_expert_used) + ") exceeds --experts (" +
        std::to_string(s.n_expert) + ")");
  if (s.n_embd < 16) bad("--embd must be at least 16");
  if (!(s.rope_base > 0.f)) bad("--rope-base must be > 0");
  if (!gguf_type_supported(s.type) || pmoe_dtype_block_elems(s.type) == 0)
    bad("unsupported --type");
  const uint32_t be = pmoe_dtype_block_elems(s.type);
  for (auto [v, name] : {std::pair{s.n_embd, "--embd"},
                         {s.n_head * s.head_dim, "--heads x --head-dim"},
                         {s.n_ff_exp, "--expert-ffn"}})
    if (v % be)
      bad(std::string(name) + " = " + std::to_string(v) + " is not a multiple of " +
          std::to_string(be) + ", the block size of " + pmoe_dtype_name(s.type));
}

}  // namespace

Shape preset(std::string_view name) {
  Shape s;
  s.name = std::string(name);
  if (name == "tiny") {  // 21B-style layout, small enough to run instantly; 6 layers so NoPE occurs
    s.n_layer = 6, s.n_embd = 256, s.n_head = 4, s.n_head_kv = 2, s.head_dim = 64;
    s.n_expert = 16, s.n_expert_used = 4, s.n_ff_exp = 128, s.n_vocab = 1024;
    s.sliding_window = 4096, s.gating = Gating::Softmax, s.rope_base = 10000.f,
    s.type = PMOE_DTYPE_F32;
  } else if (name == "4b-a0.6b") {
    s.n_layer = 32, s.n_embd = 1536, s.n_head = 12, s.n_head_kv = 2, s.head_dim = 128;
    s.n_expert = 32, s.n_expert_used = 4, s.n_ff_exp = 768, s.n_vocab = 151936;
    s.sliding_window = 0, s.gating = Gating::Sigmoid, s.rope_base = 1.5e6f,
    s.type = PMOE_DTYPE_Q4_0;
  } else if (name == "21b-a3b") {  // rope base of the real model unknown: the 4B's
    s.n_layer = 52, s.n_embd = 2560, s.n_head = 28, s.n_head_kv = 4, s.head_dim = 128;
    s.n_expert = 64, s.n_expert_used = 6, s.n_ff_exp = 768, s.n_vocab = 151936, s.n_ctx = 16384;
    s.sliding_window = 4096, s.gating = Gating::Softmax, s.rope_base = 1.5e6f,
    s.type = PMOE_DTYPE_Q4_0;
  } else {
    throw Error("synth: unknown shape '" + std::string(name) +
                "' (known: tiny, 4b-a0.6b, 21b-a3b)");
  }
  return s;
}

uint32_t parse_type(std::string_view name) {
  for (uint32_t t :
       {PMOE_DTYPE_F32, PMOE_DTYPE_F16, PMOE_DTYPE_BF16, PMOE_DTYPE_Q8_0, PMOE_DTYPE_Q4_0})
    if (name == pmoe_dtype_name(t)) return t;
  throw Error("synth: unknown type '" + std::string(name) +
              "' (known: f32, f16, bf16, q8_0, q4_0)");
}

Result write_model(const Options& o, const std::string& path, GgufWriter::Progress progress) {
  Shape s = o.shape;
  check_shape(s);
  const unsigned threads =
      o.threads ? o.threads : std::max(1u, std::thread::hardware_concurrency());
  Result res;
  GgufWriter w;

  // Vocabulary first: it fixes n_vocab.
  std::unique_ptr<GgufFile> vocab_file;
  BpeVocab bpe;
  if (!o.vocab_from.empty()) {
    vocab_file = GgufFile::open(o.vocab_from);
    if (!vocab_file->has("tokenizer.ggml.tokens"))
      throw Error(o.vocab_from + ": no 'tokenizer.ggml.tokens' to copy the vocabulary from");
    s.n_vocab = uint32_t(vocab_file->array_size("tokenizer.ggml.tokens"));
  } else {
    bpe = build_bpe_vocab(s.n_vocab);
    res.n_merges = uint32_t(bpe.merges.size());
  }
  res.n_vocab = s.n_vocab;

  // Metadata: the key set and order of the fixtures (and of llama.cpp's converter).
  const std::string a = std::string(kArch) + ".";
  w.add_string("general.architecture", kArch);
  w.add_string("general.name",
               "pocketmoe synthetic " + s.name + (o.routing_skew ? " (routing skew)" : ""));
  w.add_u32(a + "context_length", s.n_ctx);
  w.add_u32(a + "embedding_length", s.n_embd);
  w.add_u32(a + "block_count", s.n_layer);
  w.add_u32(a + "feed_forward_length", s.n_ff_exp);
  w.add_u32(a + "expert_feed_forward_length", s.n_ff_exp);
  w.add_u32(a + "expert_count", s.n_expert);
  w.add_u32(a + "expert_used_count", s.n_expert_used);
  w.add_u32(a + "expert_gating_func", uint32_t(s.gating));
  w.add_u32(a + "attention.head_count", s.n_head);
  w.add_u32(a + "attention.head_count_kv", s.n_head_kv);
  w.add_u32(a + "attention.key_length", s.head_dim);
  w.add_u32(a + "attention.value_length", s.head_dim);
  w.add_f32(a + "attention.layer_norm_rms_epsilon", s.rms_eps);
  w.add_u32(a + "rope.dimension_count", s.head_dim);
  w.add_f32(a + "rope.freq_base", s.rope_base);
  if (s.sliding_window) w.add_u32(a + "attention.sliding_window", s.sliding_window);
  if (s.swa_pattern) w.add_u32(a + "attention.sliding_window_pattern", *s.swa_pattern);
  w.add_u32("general.file_type", file_type(s.type));
  if (vocab_file) {
    for (const std::string& k : vocab_file->keys())
      if (k.starts_with("tokenizer.")) w.copy_key(*vocab_file, k);
  } else {
    w.add_string("tokenizer.ggml.model", "gpt2");
    w.add_string("tokenizer.ggml.pre", "qwen2");
    w.add_string_array("tokenizer.ggml.tokens", bpe.tokens);
    w.add_i32_array("tokenizer.ggml.token_type", bpe.token_types);
    w.add_string_array("tokenizer.ggml.merges", bpe.merges);
    for (const char* k : {"bos_token_id", "eos_token_id", "padding_token_id"})
      w.add_u32(std::string("tokenizer.ggml.") + k, uint32_t(bpe.endoftext));
  }
  w.add_u32("general.quantization_version", 2);

  // Weights. The first n_chan residual dimensions are "routing channels": dim 0 holds the same
  // constant for every token, dims 1..n_chan-1 a token-specific random code, and no layer writes
  // them (zero rows in attn_output and ffn_down_exps), so every router sees them unchanged.
  // Router rows read the code as unit-variance noise and the rest of the residual as a weaker
  // context term; with routing skew they also read the constant with a per-layer Zipf-like bias
  // per expert. Without the channels the routers would mostly see the component all tokens share
  // (attention averages over the context), and routing would be skewed by accident.
  const uint32_t n = s.n_embd, E = s.n_expert;
  const float emb_std = kLogitStd / std::sqrt(float(n));
  const float chan_const = 3.f * emb_std;  // > every random value: exact in Q4_0/Q8_0 (block max)
  const uint32_t n_chan = 1 + std::clamp<uint32_t>(n / 16, 4, 32);
  const uint64_t seed = mix64(o.seed ^ 0x706d6f652d73796eull);
  auto stream = [&](const std::string& name) { return seed ^ name_hash(name); };
  auto rho = [&](uint32_t il) { return std::sqrt(emb_std * emb_std + kLayerVar * float(il)); };

  auto uniform = [](uint64_t st, float amp, uint64_t ne0) -> RowFn {
    return [=](uint64_t r, float* out) { Rng(st, r).uniform(out, ne0, amp); };
  };
  auto add = [&](const std::string& name, uint32_t type, std::vector<int64_t> ne, RowFn fn) {
    const uint64_t ne0 = uint64_t(ne[0]);
    uint64_t rows = 1;
    for (size_t i = 1; i < ne.size(); ++i) rows *= uint64_t(ne[i]);
    res.n_params += ne0 * rows;
    ++res.n_tensors;
    w.add_tensor(name, type, std::move(ne), [=, fn = std::move(fn)](uint8_t* dst, uint64_t) {
      fill_rows(dst, ne0, rows, type, fn, threads);
    });
  };
  auto norm = [&](const std::string& name) {
    add(name, PMOE_DTYPE_F32, {n}, [st = stream(name), n](uint64_t r, float* out) {
      Rng(st, r).uniform(out, n, kNormJitter);
      for (uint32_t i = 0; i < n; ++i) out[i] += 1.f;
    });
  };
  // A matrix {in, out}; rows whose output index (row % out) is a routing channel stay zero.
  // `channel0`: a value for every row's input 0, the constant channel (a per-row bias)
  auto matrix = [&](const std::string& name, std::vector<int64_t> ne, bool protect_channels,
                    std::optional<float> channel0 = std::nullopt) {
    const uint64_t in = uint64_t(ne[0]), out_dim = uint64_t(ne[1]);
    RowFn fn = uniform(stream(name), kSqrt3 / std::sqrt(float(in)), in);
    if (channel0)
      fn = [fn, c = *channel0](uint64_t r, float* out) {
        fn(r, out);
        out[0] = c;
      };
    if (protect_channels)
      fn = [fn, in, out_dim, n_chan](uint64_t r, float* out) {
        if (r % out_dim < n_chan)
          std::fill(out, out + in, 0.f);
        else
          fn(r, out);
      };
    add(name, s.type, std::move(ne), std::move(fn));
  };

  const uint64_t embd_stream = stream("token_embd.weight");
  add("token_embd.weight", s.type, {n, s.n_vocab}, [=](uint64_t r, float* out) {
    Rng(embd_stream, r).uniform(out, n, kSqrt3 * emb_std);
    out[0] = chan_const;
  });
  norm("output_norm.weight");
  const int64_t qd = int64_t(s.n_head) * s.head_dim, kvd = int64_t(s.n_head_kv) * s.head_dim;
  const int64_t N = n, F = s.n_ff_exp;
  for (uint32_t il = 0; il < s.n_layer; ++il) {
    const std::string b = "blk." + std::to_string(il) + ".";
    norm(b + "attn_norm.weight");
    matrix(b + "attn_q.weight", {N, qd}, false);
    matrix(b + "attn_k.weight", {N, kvd}, false);
    matrix(b + "attn_v.weight", {N, kvd}, false);
    matrix(b + "attn_output.weight", {qd, N}, true);
    norm(b + "ffn_norm.weight");

    const uint64_t st = stream(b + "ffn_gate_inp.weight");
    std::vector<float> bias(E, 0.f);
    if (o.routing_skew) {  // by rank in a random per-layer order: hot set, gap, slow tail
      std::vector<uint32_t> order(E);
      std::iota(order.begin(), order.end(), 0u);
      Rng perm(st, ~uint64_t(0));
      for (uint32_t i = E - 1; i > 0; --i) std::swap(order[i], order[perm.next() % (i + 1)]);
      // At least 2k hot experts, or every token would pick the same set.
      const uint32_t hot = std::min(
          E, std::max(uint32_t(std::lround(kHotFraction * float(E))), 2 * s.n_expert_used));
      for (uint32_t j = 0; j < E; ++j)
        bias[order[j]] = j < hot ? 1.f - kHotSpan * float(j) / float(hot)
                                 : 1.f - kHotSpan - kColdGap - kColdSlope * float(j - hot);
    }
    const float code_amp = kSqrt3 / (emb_std * std::sqrt(float(n_chan - 1)));
    const float ctx_amp = kSqrt3 * kContextStd / (rho(il) * std::sqrt(float(n - n_chan)));
    RowFn router = [=](uint64_t e, float* out) {
      Rng rng(st, e);
      out[0] = bias[e] / chan_const;
      rng.uniform(out + 1, n_chan - 1, code_amp);
      rng.uniform(out + n_chan, n - n_chan, ctx_amp);
    };
    add(b + "ffn_gate_inp.weight", PMOE_DTYPE_F32, {N, int64_t(E)}, std::move(router));
    // ReGLU sparsity: a gate's pre-activation is about N(0, 1) (unit-RMS projection of a unit-RMS
    // input) plus its weight on the constant channel times that channel's value in the FFN input,
    // chan_const * ffn_norm[0] / rms(h), with rms(h) after this layer's attention about
    // sqrt(emb_std^2 + kLayerVar (il + 1/2)). A bias of -z, z the normal quantile of F, leaves a
    // fraction F of the neurons at or below zero.
    std::optional<float> gate_bias;
    if (o.reglu_sparsity > 0) {
      std::vector<float> norm_w(n);
      Rng(stream(b + "ffn_norm.weight"), 0).uniform(norm_w.data(), n, kNormJitter);
      const float rms = std::sqrt(emb_std * emb_std + kLayerVar * (float(il) + 0.5f));
      gate_bias = -normal_quantile(o.reglu_sparsity) / (chan_const * (1.f + norm_w[0]) / rms);
    }
    matrix(b + "ffn_gate_exps.weight", {N, F, int64_t(E)}, false, gate_bias);
    matrix(b + "ffn_up_exps.weight", {N, F, int64_t(E)}, false);
    matrix(b + "ffn_down_exps.weight", {F, N, int64_t(E)}, true);
  }

  std::error_code ec;
  const auto parent = std::filesystem::path(path).parent_path();
  if (!parent.empty()) std::filesystem::create_directories(parent, ec);
  w.write(path, std::move(progress));
  res.file_bytes = std::filesystem::file_size(path);
  return res;
}

GgufWriter::Progress stderr_progress(std::string label) {
  using Clock = std::chrono::steady_clock;
  const bool tty = isatty(STDERR_FILENO);
  const auto start = Clock::now();
  auto last = start;
  int last_step = 0;
  return [=](uint64_t done, uint64_t total) mutable {
    const auto now = Clock::now();
    const double secs = std::chrono::duration<double>(now - start).count();
    const double frac = total ? double(done) / double(total) : 1.0;
    const bool end = done >= total;
    if (tty) {
      if (!end && now - last < std::chrono::milliseconds(100)) return;
      last = now;
      const int width = 30, fill = int(frac * width);
      std::fprintf(stderr, "\r%s [%s%s] %3d%%  %.2f / %.2f GiB  %.1f s%s", label.c_str(),
                   std::string(size_t(fill), '#').c_str(),
                   std::string(size_t(width - fill), '.').c_str(), int(frac * 100),
                   double(done) / (1u << 30), double(total) / (1u << 30), secs, end ? "\n" : "");
    } else {
      const int step = int(frac * 10);
      if (step <= last_step && !end) return;
      if (end && last_step == 10) return;
      last_step = end ? 10 : step;
      std::fprintf(stderr, "%s: %3d%%  %.2f / %.2f GiB  %.1f s\n", label.c_str(), int(frac * 100),
                   double(done) / (1u << 30), double(total) / (1u << 30), secs);
    }
    std::fflush(stderr);
  };
}

}  // namespace pmoe::synth
