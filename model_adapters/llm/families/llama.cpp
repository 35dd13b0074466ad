// The Llama family (llama, mistral, qwen2), written to match Hugging Face transformers' eager
// forward in fp32 (modeling_llama.py and the mistral / qwen2 files derived from it):
//
//   resid_pre(0) = embed[ids]
//   per block L:  resid_mid  = resid_pre + o_proj(attention(rope(q), rope(k), v))   on rms_norm(resid_pre)·ln1
//                 resid_post = resid_mid + down(silu(gate(x)) · up(x))             on x = rms_norm(resid_mid)·ln2
//   ln_final.hook_normalized = rms_norm(resid_post(n-1))·ln_final;  logits = that @ unembedᵀ
//
// Hooks carry TransformerLens's meaning (the residual stream is never normalised). The stages are
// numbered so that a forward can stop at the last one a request needs.
#include "llama.hpp"

#include "../weights.hpp"

#include <aquin/sdk/atomic_file.hpp>
#include <aquin/sdk/config_json.hpp>
#include <aquin/sdk/errors.hpp>
#include <aquin/sdk/json.hpp>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/Exception.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace aquin::llm {

namespace {

// ------------------------------------------------------------------------------------------------
// Configuration beyond ModelInfo: RoPE, biases, sliding windows.

struct LlamaConfig {
  ModelInfo info;
  at::Tensor inv_freq;            ///< [d_head / 2] float32, after any rope scaling
  bool qkv_bias = false;          ///< q/k/v projections carry a bias (qwen2; llama's attention_bias)
  bool o_bias = false;            ///< o_proj carries a bias (llama's attention_bias)
  bool mlp_bias = false;          ///< gate/up/down carry biases (llama's mlp_bias)
  std::vector<int64_t> window;    ///< per block: sliding-window length, 0 for plain causal attention
};

const rapidjson::Value* member_object(const rapidjson::Value& v, const char* key) {
  auto it = v.FindMember(key);
  return it != v.MemberEnd() && it->value.IsObject() ? &it->value : nullptr;
}

// HF's rope init functions, op for op in float32 so the frequencies are the same floats:
// default (1 / theta^(2i/d)), linear (÷ factor) and llama3 (_compute_llama3_parameters: long
// wavelengths ÷ factor, short ones kept, a smooth blend between).
at::Tensor rope_inv_freq(const rapidjson::Document& cfg, int64_t dim) {
  // transformers 5 moves theta and scaling into "rope_parameters"; older configs use rope_theta /
  // rope_scaling. Either spelling is read.
  const rapidjson::Value* scaling = member_object(cfg, "rope_scaling");
  const rapidjson::Value* params = member_object(cfg, "rope_parameters");
  if (scaling == nullptr) scaling = params;
  double theta = config::get_double(cfg, "rope_theta", params ? config::get_double(*params, "rope_theta", 10000.0) : 10000.0);
  if (config::get_double(cfg, "partial_rotary_factor", 1.0) != 1.0)
    throw InputError("config.json", "partial_rotary_factor is not supported for Llama-family models");

  at::Tensor exponent = at::arange(0, dim, 2, at::TensorOptions().dtype(at::kLong)).to(at::kFloat) / static_cast<double>(dim);
  at::Tensor inv_freq = at::reciprocal(at::pow(theta, exponent));
  const std::string type = scaling ? config::get_string(*scaling, "rope_type", config::get_string(*scaling, "type", "default"))
                                   : "default";
  if (type == "default") return inv_freq;
  const double factor = config::get_double(*scaling, "factor");
  if (type == "linear") return inv_freq / factor;
  if (type == "llama3") {
    const double low = config::get_double(*scaling, "low_freq_factor");
    const double high = config::get_double(*scaling, "high_freq_factor");
    const double old_len = static_cast<double>(config::get_int(*scaling, "original_max_position_embeddings"));
    if (high == low) throw InputError("config.json", "rope_scaling: high_freq_factor equals low_freq_factor");
    const double low_wavelen = old_len / low, high_wavelen = old_len / high;
    // Python's `scalar / tensor` is reciprocal(tensor) * scalar; written the same way here.
    at::Tensor wavelen = at::reciprocal(inv_freq) * (2 * M_PI);
    at::Tensor scaled = at::where(wavelen > low_wavelen, inv_freq / factor, inv_freq);
    at::Tensor smooth = (at::reciprocal(wavelen) * old_len - low) / (high - low);
    at::Tensor smoothed = at::rsub(smooth, 1) * scaled / factor + smooth * scaled;
    at::Tensor medium = (wavelen < high_wavelen).logical_not() & (wavelen > low_wavelen).logical_not();
    return at::where(medium, smoothed, scaled);
  }
  throw InputError("config.json", "rope_scaling type '" + type + "' is not supported (supported: default, linear, llama3)");
}

LlamaConfig read_config(const ModelInfo& info) {
  const std::filesystem::path path = std::filesystem::path(info.path) / "config.json";
  rapidjson::Document cfg = json::parse(read_text_file(path), path.string());
  LlamaConfig c;
  c.info = info;
  const std::string& type = info.model_type;
  if (info.n_heads <= 0 || info.n_kv_heads <= 0 || info.n_heads % info.n_kv_heads != 0)
    throw InputError(path.string(), "num_attention_heads must be a positive multiple of num_key_value_heads");
  if (info.d_head <= 0 || info.d_head % 2 != 0) throw InputError(path.string(), "head_dim must be positive and even for RoPE");
  const std::string act = config::get_string(cfg, "hidden_act", "silu");
  if (act != "silu" && act != "swish")
    throw InputError(path.string(), "hidden_act '" + act + "' is not supported (Llama-family MLPs use silu)");
  c.inv_freq = rope_inv_freq(cfg, info.d_head);

  if (type == "qwen2") {
    c.qkv_bias = true;
  } else if (type == "llama") {
    c.qkv_bias = c.o_bias = config::get_bool(cfg, "attention_bias", false);
    c.mlp_bias = config::get_bool(cfg, "mlp_bias", false);
  }

  // Sliding windows. Mistral applies `sliding_window` (when not null) to every layer. Qwen2 applies
  // it only with use_sliding_window, to the layers `layer_types` marks "sliding_attention" (newer
  // configs) or else to layers from max_window_layers on. Llama has none.
  c.window.assign(static_cast<std::size_t>(info.n_layers), 0);
  const int64_t sw = std::max<int64_t>(config::get_int(cfg, "sliding_window", 0), 0);
  if (type == "mistral") {
    std::fill(c.window.begin(), c.window.end(), sw);
  } else if (type == "qwen2" && sw > 0 && config::get_bool(cfg, "use_sliding_window", false)) {
    auto lt = cfg.FindMember("layer_types");
    if (lt != cfg.MemberEnd() && lt->value.IsArray() && lt->value.Size() == static_cast<rapidjson::SizeType>(info.n_layers)) {
      for (rapidjson::SizeType l = 0; l < lt->value.Size(); ++l)
        if (lt->value[l].IsString() && std::string(lt->value[l].GetString()) == "sliding_attention") c.window[l] = sw;
    } else {
      const int64_t from = std::max<int64_t>(config::get_int(cfg, "max_window_layers", 0), 0);
      for (int64_t l = from; l < info.n_layers; ++l) c.window[static_cast<std::size_t>(l)] = sw;
    }
  }
  return c;
}

std::string block_param(int64_t layer, const std::string& rest) { return "blocks." + std::to_string(layer) + "." + rest; }

// Every parameter the model runs on, with its HF-layout shape from the config.
std::vector<ExpectedParam> expected_params(const LlamaConfig& c) {
  const ModelInfo& m = c.info;
  const int64_t q_out = m.n_heads * m.d_head, kv_out = m.n_kv_heads * m.d_head;
  std::vector<ExpectedParam> out;
  auto add = [&](std::string name, std::vector<int64_t> shape, bool lora_target = false) {
    out.push_back({std::move(name), std::move(shape), true, lora_target, false});
  };
  out.push_back({"embed.weight", {m.vocab_size, m.d_model}, true, true, true});
  for (int64_t l = 0; l < m.n_layers; ++l) {
    add(block_param(l, "ln1.weight"), {m.d_model});
    add(block_param(l, "ln2.weight"), {m.d_model});
    add(block_param(l, "attn.q.weight"), {q_out, m.d_model}, true);
    add(block_param(l, "attn.k.weight"), {kv_out, m.d_model}, true);
    add(block_param(l, "attn.v.weight"), {kv_out, m.d_model}, true);
    add(block_param(l, "attn.o.weight"), {m.d_model, q_out}, true);
    add(block_param(l, "mlp.gate.weight"), {m.d_mlp, m.d_model}, true);
    add(block_param(l, "mlp.up.weight"), {m.d_mlp, m.d_model}, true);
    add(block_param(l, "mlp.down.weight"), {m.d_model, m.d_mlp}, true);
    if (c.qkv_bias) {
      add(block_param(l, "attn.q.bias"), {q_out});
      add(block_param(l, "attn.k.bias"), {kv_out});
      add(block_param(l, "attn.v.bias"), {kv_out});
    }
    if (c.o_bias) add(block_param(l, "attn.o.bias"), {m.d_model});
    if (c.mlp_bias) {
      add(block_param(l, "mlp.gate.bias"), {m.d_mlp});
      add(block_param(l, "mlp.up.bias"), {m.d_mlp});
      add(block_param(l, "mlp.down.bias"), {m.d_model});
    }
  }
  add("ln_final.weight", {m.d_model});
  // Tied models run lm_head on the embedding table (as HF's tie_weights does, whatever a file's
  // lm_head holds); the entry stays so a LoRA adapter may still adapt the lm_head linear.
  out.push_back({"unembed.weight", {m.vocab_size, m.d_model}, !m.tied_embeddings, true, false});
  return out;
}

// ------------------------------------------------------------------------------------------------
// The model.

struct Linear {
  const ParamSource* weight = nullptr;
  const ParamSource* bias = nullptr;  ///< null when the layer has none
  const LoraFactors* lora = nullptr;  ///< null when no adapter touches it
};

struct Block {
  const ParamSource* ln1 = nullptr;
  const ParamSource* ln2 = nullptr;
  Linear q, k, v, o, gate, up, down;
};

// One forward's inputs, prepared once and shared by every block. A forward (or a generation's
// prefill) has T query tokens per row at positions 0..T-1 reading keys 0..T-1; a cached generation
// step has one query token per row at a per-row position, reading the first n_keys cached keys.
struct Batch {
  int64_t b = 0, t = 0;
  int64_t n_keys = 0;                  ///< keys each row's queries may read: T, or the cache prefix of a step
  c10::ScalarType dt = at::kFloat;
  at::Tensor ids;                      ///< [B*T] int64
  at::Tensor cos, sin;                 ///< in dt: [T, 1, d_head] (positions 0..T-1), or [B, 1, 1, d_head] for a step
  std::map<int64_t, at::Tensor> mask;  ///< window (0: none) -> additive mask [B, 1, 1, T, n_keys] in dt
};

// A generation's key/value cache.
struct KvCache {
  std::vector<at::Tensor> k, v;  ///< per layer [B, kv_heads, T_total, d_head] in dt: post-RoPE keys, values
  std::vector<int64_t> pos;      ///< a step's per-row position (where its token's k/v go); empty in the prefill
};

// HF's RoPE angles for `pos` (float32 positions): cos and sin [n, d_head] in float32.
std::pair<at::Tensor, at::Tensor> rope_table(const at::Tensor& pos, const at::Tensor& inv_freq) {
  at::Tensor freqs = pos.unsqueeze(1) * inv_freq.unsqueeze(0);
  at::Tensor emb = at::cat({freqs, freqs}, -1);
  return {emb.cos(), emb.sin()};
}

double lowest_value(c10::ScalarType dt) {
  return dt == at::kBFloat16 ? static_cast<double>(std::numeric_limits<c10::BFloat16>::lowest())
                             : static_cast<double>(std::numeric_limits<float>::lowest());
}

// Runs `f`; any exception becomes a Status naming `what` (nothing throws across the boundary).
template <class F>
Status guarded(const std::string& path, const char* what, F&& f) noexcept {
  try {
    f();
    return {};
  } catch (const InputError& e) {
    return {StatusCode::Input, e.what()};
  } catch (const c10::Error& e) {
    return {StatusCode::Internal, path + ": " + what + " failed: " + e.what_without_backtrace()};
  } catch (const std::exception& e) {
    return {StatusCode::Internal, path + ": " + what + " failed: " + e.what()};
  } catch (...) {
    return {StatusCode::Internal, path + ": " + what + " failed"};
  }
}

// Stage numbers: block L's resid_pre / resid_mid / resid_post are 3L, 3L+1, 3L+2; the final norm
// (and logits) is 3n.
constexpr int64_t kPre = 0, kMid = 1, kPost = 2;
const char* const kStageHook[] = {"hook_resid_pre", "hook_resid_mid", "hook_resid_post"};

// Score chunks are capped at this many bytes: long prompts then never materialise a full
// [B, heads, T, T] score tensor.
constexpr int64_t kScoreBudgetBytes = int64_t{64} << 20;

// Threads. The big GEMMs use every thread the host allows. Everything else is small and many
// (a dozen elementwise ops per block, one attention product per head), and each parallel region
// is a fork-join whose waiting threads spin: on a busy machine (measured here: 2 cores shared with
// other work) one short region cost up to seconds, and concurrent OpenBLAS calls from parallel
// tasks contend inside OpenBLAS. So elementwise work gets one thread per kElementsPerThread
// elements of the tensor it works on (on a Llama-3.2-1B-sized batch of 512 tokens: the residual
// stream's ops run on one thread, the MLP's silu·up on two), and the attention core runs on the
// calling thread unless each (prompt, kv head) task is big enough to pay for a region.
constexpr int64_t kElementsPerThread = int64_t{2} << 20;
constexpr double kParallelAttentionFlopsPerTask = 64e6;

// Sets this thread's OpenMP thread count (an ICV of the calling thread only; ATen's parallel_for,
// OpenBLAS and oneDNN all read it) for the enclosing scope.
class OmpThreads {
 public:
  explicit OmpThreads(int n) : saved_(omp_get_max_threads()) { omp_set_num_threads(std::max(n, 1)); }
  ~OmpThreads() { omp_set_num_threads(saved_); }
  OmpThreads(const OmpThreads&) = delete;
  OmpThreads& operator=(const OmpThreads&) = delete;

 private:
  int saved_;
};

// A matrix product accumulated in fp32 and rounded to the operands' dtype, which is what HF's bf16
// attention products compute (oneDNN and ATen's batched kernel both accumulate in fp32). ATen
// 1.13's generic bf16 GEMM, which small shapes fall back to, accumulates in bf16 instead; widening
// the operands (bf16 products are exact in fp32) keeps the result independent of that choice.
at::Tensor matmul_f32_acc(const at::Tensor& a, const at::Tensor& b) {
  if (a.scalar_type() == at::kFloat) return at::matmul(a, b);
  return at::matmul(a.to(at::kFloat), b.to(at::kFloat)).to(a.scalar_type());
}

std::string shape_text(at::IntArrayRef s) {
  std::string out = "[";
  for (std::size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

class LlamaModel final : public LoadedModel {
 public:
  LlamaModel(LlamaConfig cfg, std::unique_ptr<WeightSet> weights) : cfg_(std::move(cfg)), w_(std::move(weights)) {
    const ModelInfo& m = cfg_.info;
    auto make_linear = [&](int64_t l, const std::string& name, bool bias) {
      Linear lin;
      lin.weight = &w_->param(block_param(l, name + ".weight"));
      if (bias) lin.bias = &w_->param(block_param(l, name + ".bias"));
      lin.lora = w_->lora(block_param(l, name + ".weight"));
      return lin;
    };
    for (int64_t l = 0; l < m.n_layers; ++l) {
      Block b;
      b.ln1 = &w_->param(block_param(l, "ln1.weight"));
      b.ln2 = &w_->param(block_param(l, "ln2.weight"));
      b.q = make_linear(l, "attn.q", cfg_.qkv_bias);
      b.k = make_linear(l, "attn.k", cfg_.qkv_bias);
      b.v = make_linear(l, "attn.v", cfg_.qkv_bias);
      b.o = make_linear(l, "attn.o", cfg_.o_bias);
      b.gate = make_linear(l, "mlp.gate", cfg_.mlp_bias);
      b.up = make_linear(l, "mlp.up", cfg_.mlp_bias);
      b.down = make_linear(l, "mlp.down", cfg_.mlp_bias);
      blocks_.push_back(b);
    }
    // The vocabulary-sized tables are converted in row chunks no larger than what a block already
    // puts in the conversion buffer (gate and up side by side), so it never grows to a whole table
    // (1 GB in fp32 for Llama 3).
    vocab_chunk_rows_ = std::max({m.n_heads * m.d_head + 2 * m.n_kv_heads * m.d_head, 2 * m.d_mlp, int64_t{1}});
  }

  const ModelInfo& info() const noexcept override { return cfg_.info; }

  std::vector<std::string> hook_names() const override {
    std::vector<std::string> out;
    for (int64_t l = 0; l < cfg_.info.n_layers; ++l)
      for (const char* h : kStageHook) out.push_back("blocks." + std::to_string(l) + "." + h);
    out.push_back("ln_final.hook_normalized");
    return out;
  }

  Status forward(const ForwardRequest& request, const HookSink& sink, at::Tensor& logits) noexcept override {
    return guarded(cfg_.info.path, "forward", [&] { run(request, sink, logits); });
  }

  // KV-cached greedy generation: the same tokens as the SDK's full-forward default.
  Status generate_greedy(const GenerateRequest& req, GenerateResult& out) noexcept override {
    return guarded(cfg_.info.path, "generate", [&] { generate(req, out); });
  }

 private:
  // ---- request handling -------------------------------------------------------------------------

  // The stage a hook name asks for, or an InputError listing what exists.
  int64_t stage_of(const std::string& hook) const {
    const int64_t n = cfg_.info.n_layers;
    if (hook == "ln_final.hook_normalized") return 3 * n;
    const std::string prefix = "blocks.";
    if (hook.compare(0, prefix.size(), prefix) == 0) {
      const std::size_t dot = hook.find('.', prefix.size());
      const std::string layer = hook.substr(prefix.size(), dot == std::string::npos ? std::string::npos : dot - prefix.size());
      if (dot != std::string::npos && !layer.empty() && layer.size() < 6 &&
          std::all_of(layer.begin(), layer.end(), [](char ch) { return ch >= '0' && ch <= '9'; })) {
        const int64_t l = std::stoll(layer);
        for (int64_t s = kPre; s <= kPost; ++s)
          if (l < n && hook.compare(dot + 1, std::string::npos, kStageHook[s]) == 0) return 3 * l + s;
      }
    }
    throw InputError(cfg_.info.model.empty() ? cfg_.info.path : cfg_.info.model,
                     "unknown hook '" + hook + "'; this model offers blocks.{0.." + std::to_string(n - 1) +
                         "}.hook_resid_{pre,mid,post} and ln_final.hook_normalized");
  }

  Batch prepare(const ForwardRequest& r) const {
    const std::string who = cfg_.info.model.empty() ? cfg_.info.path : cfg_.info.model;
    if (!r.input_ids.defined() || r.input_ids.dim() != 2 || r.input_ids.size(0) < 1 || r.input_ids.size(1) < 1)
      throw InputError(who, "input_ids must be a non-empty [batch, tokens] tensor");
    if (!at::isIntegralType(r.input_ids.scalar_type(), /*includeBool=*/false) || !r.input_ids.device().is_cpu())
      throw InputError(who, "input_ids must be an integer CPU tensor");
    if (r.dtype != at::kFloat && r.dtype != at::kBFloat16)
      throw InputError(who, std::string("compute dtype ") + c10::toString(r.dtype) + " is not supported (Float or BFloat16)");
    Batch b;
    b.b = r.input_ids.size(0);
    b.t = r.input_ids.size(1);
    b.n_keys = b.t;
    b.dt = r.dtype;
    b.ids = r.input_ids.to(at::kLong).reshape({-1}).contiguous();
    const int64_t lo = b.ids.min().item<int64_t>(), hi = b.ids.max().item<int64_t>();
    if (lo < 0 || hi >= cfg_.info.vocab_size)
      throw InputError(who, "token id " + std::to_string(lo < 0 ? lo : hi) + " is outside the vocabulary [0, " +
                                std::to_string(cfg_.info.vocab_size) + ")");
    at::Tensor mask = r.attention_mask.defined() ? r.attention_mask : at::ones_like(r.input_ids);
    if (mask.sizes() != r.input_ids.sizes())
      throw InputError(who, "attention_mask " + shape_text(mask.sizes()) + " does not match input_ids " +
                                shape_text(r.input_ids.sizes()));

    // RoPE tables as HF builds them: positions 0..T-1 (HF's default position_ids, which is what
    // right padding needs), float32 angles, then cast to the compute dtype.
    auto [cos, sin] = rope_table(at::arange(b.t, at::TensorOptions().dtype(at::kFloat)), cfg_.inv_freq);
    b.cos = cos.to(b.dt).unsqueeze(1);
    b.sin = sin.to(b.dt).unsqueeze(1);

    // Additive masks, as HF's eager attention adds them: 0 where query i may read key j, the
    // dtype's lowest value elsewhere. Keys are visible when j <= i and j is a real token; with a
    // sliding window W also when j > i - W (HF's sliding_window_overlay: kv_idx > q_idx - W, so a
    // token sees itself and W-1 predecessors). A window no shorter than the prompt changes nothing.
    // Padded queries keep at least key 0 under right padding; a row with no visible key (a padded
    // query outside every window) gets a uniform softmax over the lowest value: finite, never NaN.
    at::Tensor i = at::arange(b.t).unsqueeze(1), j = at::arange(b.t).unsqueeze(0);
    at::Tensor keys = mask.to(at::kBool).view({b.b, 1, b.t});
    const double lowest = lowest_value(b.dt);
    for (int64_t w : cfg_.window) {
      const int64_t key = w > 0 && w < b.t ? w : 0;
      if (b.mask.count(key)) continue;
      at::Tensor visible = (j <= i).unsqueeze(0) & keys;
      if (key > 0) visible = visible & (j > i - key).unsqueeze(0);
      b.mask[key] = at::zeros({b.b, 1, 1, b.t, b.t}, at::TensorOptions().dtype(b.dt))
                        .masked_fill_(visible.logical_not().view({b.b, 1, 1, b.t, b.t}), lowest);
    }
    return b;
  }

  // One cached step: token `tokens[i]` of row i at position pos[i], reading cached keys
  // 0..pos[i] (n_keys = max pos + 1 keys are in play; each row's later ones are masked). Every key
  // up to pos[i] is real (prompt, then generated tokens), so the mask is causal plus the window: a
  // key j is visible from position i when j <= i and, with a window W, j > i - W (as in prepare).
  Batch prepare_step(const std::vector<int64_t>& tokens, const std::vector<int64_t>& pos, c10::ScalarType dt) const {
    Batch b;
    b.b = static_cast<int64_t>(tokens.size());
    b.t = 1;
    b.n_keys = *std::max_element(pos.begin(), pos.end()) + 1;
    b.dt = dt;
    b.ids = at::tensor(tokens, at::kLong);
    at::Tensor p = at::tensor(pos, at::kLong);
    auto [cos, sin] = rope_table(p.to(at::kFloat), cfg_.inv_freq);
    b.cos = cos.to(dt).view({b.b, 1, 1, -1});
    b.sin = sin.to(dt).view({b.b, 1, 1, -1});
    at::Tensor i = p.unsqueeze(1), j = at::arange(b.n_keys).unsqueeze(0);  // [B, 1], [1, n_keys]
    const double lowest = lowest_value(dt);
    for (int64_t w : cfg_.window) {
      const int64_t key = w > 0 && w < b.n_keys ? w : 0;
      if (b.mask.count(key)) continue;
      at::Tensor visible = j <= i;
      if (key > 0) visible = visible & (j > i - key);
      b.mask[key] = at::zeros({b.b, 1, 1, 1, b.n_keys}, at::TensorOptions().dtype(dt))
                        .masked_fill_(visible.logical_not().view({b.b, 1, 1, 1, b.n_keys}), lowest);
    }
    return b;
  }

  // The blocks over `resid` ([B*T, d]), keeping keys and values in `cache`.
  at::Tensor run_blocks(at::Tensor resid, const Batch& b, KvCache& cache) {
    for (int64_t l = 0; l < cfg_.info.n_layers; ++l) {
      const Block& blk = blocks_[static_cast<std::size_t>(l)];
      at::Tensor mid = resid + attention(l, norm(resid, *blk.ln1, b.dt), b, &cache);
      resid = mid + mlp(blk, norm(mid, *blk.ln2, b.dt), b.dt);
    }
    return resid;
  }

  // Next-token log-probabilities (fp64) from the residual rows of each prompt's last token ([B, d]).
  at::Tensor next_logprobs(const at::Tensor& last_rows, const Batch& b) {
    at::Tensor logits = unembed(norm(last_rows, w_->param("ln_final.weight"), b.dt), b);
    return at::log_softmax(logits.to(at::kDouble), -1);
  }

  // Greedy generation with a KV cache. Prefill: the right-padded prompts in one forward, keeping
  // each layer's post-RoPE keys and values, logits only at each row's last real token. Then one
  // token per row per step at position len_i + step. Rows whose continuation ended keep running
  // (their tokens are ignored).
  void generate(const GenerateRequest& r, GenerateResult& out) {
    at::NoGradGuard no_grad;
    const std::string who = cfg_.info.model.empty() ? cfg_.info.path : cfg_.info.model;
    if (r.max_new_tokens < 0) throw InputError(who, "max_new_tokens must not be negative");
    out = GenerateResult{};
    const int64_t B = static_cast<int64_t>(r.prompts.size());
    out.tokens.resize(r.prompts.size());
    if (B == 0) {
      out.first_logprobs = at::empty({0, 0}, at::kDouble);
      return;
    }
    std::vector<int64_t> len(r.prompts.size());
    int64_t t_max = 0;
    for (std::size_t i = 0; i < r.prompts.size(); ++i) {
      if (r.prompts[i].empty()) throw InputError(who, "prompt " + std::to_string(i) + " has no tokens");
      len[i] = static_cast<int64_t>(r.prompts[i].size());
      t_max = std::max(t_max, len[i]);
    }
    ForwardRequest fr;
    fr.input_ids = at::zeros({B, t_max}, at::kLong);
    fr.attention_mask = at::zeros({B, t_max}, at::kLong);
    {
      auto ids = fr.input_ids.accessor<int64_t, 2>();
      auto mask = fr.attention_mask.accessor<int64_t, 2>();
      for (int64_t i = 0; i < B; ++i)
        for (int64_t j = 0; j < len[static_cast<std::size_t>(i)]; ++j) {
          ids[i][j] = r.prompts[static_cast<std::size_t>(i)][static_cast<std::size_t>(j)];
          mask[i][j] = 1;
        }
    }
    fr.dtype = r.dtype;
    const Batch pre = prepare(fr);  // validates ids and dtype
    const ModelInfo& m = cfg_.info;
    const int64_t d = m.d_model, t_total = t_max + r.max_new_tokens;
    KvCache cache;
    for (int64_t l = 0; l < m.n_layers; ++l) {
      cache.k.push_back(at::zeros({B, m.n_kv_heads, t_total, m.d_head}, at::TensorOptions().dtype(pre.dt)));
      cache.v.push_back(at::zeros({B, m.n_kv_heads, t_total, m.d_head}, at::TensorOptions().dtype(pre.dt)));
    }

    at::Tensor lp;
    {
      gemm_threads_ = omp_get_max_threads();
      filling_ = ++forwards_ >= 2;
      OmpThreads elementwise(elementwise_threads(B * t_max * d));
      at::Tensor resid = run_blocks(embed(pre), pre, cache);  // [B*T, d]
      at::Tensor rows = at::arange(B, at::kLong) * t_max + at::tensor(len, at::kLong) - 1;
      lp = next_logprobs(at::index_select(resid, 0, rows), pre);
    }
    out.first_logprobs = lp;

    std::vector<bool> done(r.prompts.size(), false);
    std::vector<int64_t> next(r.prompts.size());
    cache.pos.resize(r.prompts.size());
    for (int step = 0; step < r.max_new_tokens; ++step) {
      at::Tensor best = lp.argmax(-1);
      auto ba = best.accessor<int64_t, 1>();
      for (std::size_t i = 0; i < next.size(); ++i) {
        next[i] = ba[static_cast<int64_t>(i)];
        if (done[i]) continue;
        out.tokens[i].push_back(next[i]);
        done[i] = r.eos_id >= 0 && next[i] == r.eos_id;
      }
      if (step + 1 == r.max_new_tokens || std::all_of(done.begin(), done.end(), [](bool x) { return x; })) break;
      for (std::size_t i = 0; i < next.size(); ++i) cache.pos[i] = len[i] + step;
      const Batch b = prepare_step(next, cache.pos, pre.dt);
      gemm_threads_ = omp_get_max_threads();
      filling_ = ++forwards_ >= 2;
      OmpThreads elementwise(elementwise_threads(B * d));
      lp = next_logprobs(run_blocks(embed(b), b, cache), b);
    }
  }

  void run(const ForwardRequest& r, const HookSink& sink, at::Tensor& logits_out) {
    at::NoGradGuard no_grad;
    const int64_t n = cfg_.info.n_layers;
    std::vector<bool> wanted(static_cast<std::size_t>(3 * n + 1), false);
    int64_t last = r.logits ? 3 * n : -1;  // the last stage this request needs
    for (const auto& h : r.hooks) {
      const int64_t s = stage_of(h);
      wanted[static_cast<std::size_t>(s)] = true;
      last = std::max(last, s);
    }
    Batch b = prepare(r);
    if (last < 0) return;
    const int64_t d = cfg_.info.d_model;
    gemm_threads_ = omp_get_max_threads();
    filling_ = ++forwards_ >= 2;
    OmpThreads elementwise(elementwise_threads(b.b * b.t * d));
    auto emit = [&](int64_t stage, const std::string& name, const at::Tensor& x) {
      if (wanted[static_cast<std::size_t>(stage)]) sink(name, x.view({b.b, b.t, d}));
    };

    at::Tensor resid = embed(b);  // [B*T, d]
    for (int64_t l = 0; l < n; ++l) {
      const Block& blk = blocks_[static_cast<std::size_t>(l)];
      const std::string prefix = "blocks." + std::to_string(l) + ".";
      emit(3 * l + kPre, prefix + kStageHook[kPre], resid);
      if (last == 3 * l + kPre) return;
      // New tensors at each step (no in-place residual updates): hooks handed out stay valid.
      at::Tensor mid = resid + attention(l, norm(resid, *blk.ln1, b.dt), b);
      emit(3 * l + kMid, prefix + kStageHook[kMid], mid);
      if (last == 3 * l + kMid) return;
      resid = mid + mlp(blk, norm(mid, *blk.ln2, b.dt), b.dt);
      emit(3 * l + kPost, prefix + kStageHook[kPost], resid);
      if (last == 3 * l + kPost) return;
    }
    at::Tensor final_norm = norm(resid, w_->param("ln_final.weight"), b.dt);
    emit(3 * n, "ln_final.hook_normalized", final_norm);
    if (r.logits) logits_out = unembed(final_norm, b).view({b.b, b.t, cfg_.info.vocab_size});
  }

  // ---- layers -------------------------------------------------------------------------------------

  at::Tensor embed(const Batch& b) {
    // Gathers only the rows the prompt uses; the table's other pages are never touched.
    at::Tensor h = at::index_select(w_->param("embed.weight").load(), 0, b.ids).to(b.dt);
    if (const LoraFactors* f = w_->lora("embed.weight"))  // PEFT: embed + (A.T[ids] @ B.T) · scale
      h.add_(at::mm(at::index_select(f->a.t(), 0, b.ids), f->b.t()), f->scale);
    return h;
  }

  // HF's LlamaRMSNorm: in float32, x · rsqrt(mean(x²) + eps), back to the input dtype, times weight.
  at::Tensor norm(const at::Tensor& x, const ParamSource& weight, c10::ScalarType dt) const {
    at::Tensor x32 = x.to(at::kFloat);
    at::Tensor normed = x32 * at::rsqrt(x32.pow(2).mean(-1, /*keepdim=*/true) + cfg_.info.norm_eps);
    return weight.load().to(dt) * normed.to(x.scalar_type());
  }

  // y = x Wᵀ (+ b) (+ scale · (x Aᵀ) Bᵀ). The weight is converted to the compute dtype in the
  // scratch buffer (or used in place from the memory map when it is stored in that dtype); the
  // LoRA term is computed in fp32, as PEFT does with fp32 adapter weights, then added.
  at::Tensor linear(const at::Tensor& x, const Linear& lin, c10::ScalarType dt) {
    at::Tensor w = compute_weight({lin.weight}, dt);
    at::Tensor y = gemm(x, w, lin.bias ? lin.bias->load().to(dt) : at::Tensor());
    add_lora(y, x, lin.lora);
    return y;
  }

  int elementwise_threads(int64_t numel) const {
    return static_cast<int>(std::clamp<int64_t>(numel / kElementsPerThread, 1, gemm_threads_));
  }

  // x Wᵀ (+ bias), with every thread.
  at::Tensor gemm(const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias) const {
    OmpThreads all(gemm_threads_);
    return bias.defined() ? at::addmm(bias, x, w.t()) : at::mm(x, w.t());
  }

  // y += scale · (x Aᵀ) Bᵀ. The rank-r update is small: it stays on the calling thread. In fp32
  // it accumulates straight into y (no [tokens, out] temporary); a bf16 y takes the fp32 update
  // and rounds once, as PEFT's fp32 adapters do.
  static void add_lora(at::Tensor& y, const at::Tensor& x, const LoraFactors* f) {
    if (!f) return;
    at::Tensor xa = at::mm(x.to(at::kFloat), f->a.t());
    if (y.scalar_type() == at::kFloat) y.addmm_(xa, f->b.t(), /*beta=*/1.0, /*alpha=*/f->scale);
    else y.add_(at::mm(xa, f->b.t()), f->scale);
  }

  // Several linears of one input. When every weight needs converting anyway (bf16 storage, fp32
  // compute), they are converted side by side into the scratch buffer and run as one wider GEMM,
  // which runs nearer peak (q/k/v together measured ~25% faster than apart); each output is then
  // a column block of that product. Weights usable in place from the memory map run separately,
  // so fp32 checkpoints are never copied.
  std::vector<at::Tensor> linears(const at::Tensor& x, const std::vector<const Linear*>& lins, c10::ScalarType dt) {
    bool fuse = lins.size() > 1;
    for (const Linear* l : lins) fuse = fuse && to_scalar_type(l->weight->dtype) != dt;
    std::vector<at::Tensor> out;
    if (!fuse) {
      for (const Linear* l : lins) out.push_back(linear(x, *l, dt));
      return out;
    }
    std::vector<const ParamSource*> sources;
    std::vector<at::Tensor> biases;
    bool any_bias = false;
    for (const Linear* l : lins) {
      sources.push_back(l->weight);
      any_bias = any_bias || l->bias;
    }
    at::Tensor w = compute_weight(sources, dt);
    if (any_bias)
      for (const Linear* l : lins)
        biases.push_back(l->bias ? l->bias->load().to(dt) : at::zeros({l->weight->shape[0]}, x.options()));
    at::Tensor y = gemm(x, w, any_bias ? at::cat(biases) : at::Tensor());
    int64_t col = 0;
    for (const Linear* l : lins) {
      at::Tensor part = y.narrow(1, col, l->weight->shape[0]);
      add_lora(part, x, l->lora);
      out.push_back(part);
      col += l->weight->shape[0];
    }
    return out;
  }

  // HF's rotate_half convention: x·cos + cat(-x₂, x₁)·sin over the two halves of each head.
  // b.cos / b.sin broadcast over x [B, T, heads, d_head] (per token, or per row for a step).
  static at::Tensor rope(const at::Tensor& x, const Batch& b) {
    const int64_t half = x.size(-1) / 2;
    at::Tensor rotated = at::cat({x.narrow(-1, half, half).neg(), x.narrow(-1, 0, half)}, -1);
    return x * b.cos + rotated * b.sin;
  }

  // Attention of block `layer` on x ([B*T, d], normalised). Without a cache: a forward (queries
  // 0..T-1 over keys 0..T-1). With one: in the prefill (cache->pos empty) the same, also keeping the
  // keys and values in the cache; in a step (T = 1) the token's key and value go into the cache at
  // its row's position and the query reads the cache's first b.n_keys keys.
  at::Tensor attention(int64_t layer, const at::Tensor& x, const Batch& b, KvCache* cache = nullptr) {
    const Block& blk = blocks_[static_cast<std::size_t>(layer)];
    const int64_t heads = cfg_.info.n_heads, kv_heads = cfg_.info.n_kv_heads, hd = cfg_.info.d_head;
    const int64_t group = heads / kv_heads, B = b.b, T = b.t, K = b.n_keys;
    std::vector<at::Tensor> qkv = linears(x, {&blk.q, &blk.k, &blk.v}, b.dt);
    at::Tensor q = rope(qkv[0].view({B, T, heads, hd}), b);
    at::Tensor k = rope(qkv[1].view({B, T, kv_heads, hd}), b);
    at::Tensor v = qkv[2].view({B, T, kv_heads, hd});

    // Grouped-query attention without repeat_kv's copies: query head h reads kv head h / group
    // (HF's repeat_kv order), so each (prompt, kv head) pair is one task holding that head's keys
    // and values and the `group` query heads that read them.
    at::Tensor qg = q.view({B, T, kv_heads, group, hd}).permute({0, 2, 3, 1, 4}).contiguous();  // [B, kv, group, T, hd]
    at::Tensor kt, vv;  // [B, kv, hd, K] (a transposed view of a step's cache), [B, kv, K, hd]
    if (cache != nullptr && !cache->pos.empty()) {
      at::Tensor& kc = cache->k[static_cast<std::size_t>(layer)];
      at::Tensor& vc = cache->v[static_cast<std::size_t>(layer)];
      for (int64_t p = 0; p < B; ++p) {  // kc[p]: [kv, T_total, hd]; k[p][0]: [kv, hd]
        const int64_t at_pos = cache->pos[static_cast<std::size_t>(p)];
        kc[p].select(1, at_pos).copy_(k[p][0]);
        vc[p].select(1, at_pos).copy_(v[p][0]);
      }
      kt = kc.narrow(2, 0, K).transpose(2, 3);
      vv = vc.narrow(2, 0, K);
    } else {
      kt = k.permute({0, 2, 3, 1}).contiguous();
      vv = v.permute({0, 2, 1, 3}).contiguous();
      if (cache != nullptr) {  // prefill: keys 0..T-1 of every row (padding's too: later steps overwrite it)
        cache->k[static_cast<std::size_t>(layer)].narrow(2, 0, T).copy_(kt.transpose(2, 3));
        cache->v[static_cast<std::size_t>(layer)].narrow(2, 0, T).copy_(vv);
      }
    }
    at::Tensor out = at::empty({B, kv_heads, group, T, hd}, q.options());
    const int64_t w = cfg_.window[static_cast<std::size_t>(layer)];
    const at::Tensor& mask = b.mask.at(w > 0 && w < K ? w : 0);  // [B, 1, 1, T, K]
    const double scaling = 1.0 / std::sqrt(static_cast<double>(hd));
    const bool parallel = 4.0 * group * T * K * hd >= kParallelAttentionFlopsPerTask;
    const int64_t per_task = kScoreBudgetBytes / (parallel ? std::max(gemm_threads_, 1) : 1);
    const int64_t chunk = std::max<int64_t>(1, per_task / std::max<int64_t>(1, group * K * 4));
    const c10::ScalarType dt = b.dt;
    auto run_tasks = [&](int64_t begin, int64_t end) {
      for (int64_t task = begin; task < end; ++task) {
        const int64_t p = task / kv_heads, h = task % kv_heads;
        const at::Tensor qh = qg[p][h], kh = kt[p][h], vh = vv[p][h], oh = out[p][h], mh = mask[p][0];
        for (int64_t t0 = 0; t0 < T; t0 += chunk) {
          // Causal: query t (at position t + K - T) reads no key after it; later keys are masked anyway.
          const int64_t tq = std::min(chunk, T - t0), keys = std::min(K, t0 + tq + (K - T));
          at::Tensor scores = matmul_f32_acc(qh.narrow(1, t0, tq), kh.narrow(1, 0, keys)).mul_(scaling);  // [group, tq, keys]
          scores.add_(mh.narrow(1, t0, tq).narrow(2, 0, keys));
          // HF: softmax in float32, back to the compute dtype.
          at::Tensor probs = at::softmax(scores, -1, at::kFloat).to(dt);
          oh.narrow(1, t0, tq).copy_(matmul_f32_acc(probs, vh.narrow(0, 0, keys)));
        }
      }
    };
    if (parallel) {
      // Inside the region each task's BLAS calls run single-threaded (omp_in_parallel).
      OmpThreads all(gemm_threads_);
      at::parallel_for(0, B * kv_heads, 1, run_tasks);
    } else {
      OmpThreads one(1);
      run_tasks(0, B * kv_heads);
    }
    out = out.permute({0, 3, 1, 2, 4}).reshape({B * T, heads * hd});
    return linear(out, blk.o, b.dt);
  }

  // SwiGLU: down(silu(gate(x)) · up(x)).
  at::Tensor mlp(const Block& blk, const at::Tensor& x, c10::ScalarType dt) {
    std::vector<at::Tensor> gate_up = linears(x, {&blk.gate, &blk.up}, dt);
    at::Tensor act;
    {
      OmpThreads wide(elementwise_threads(gate_up[0].numel()));
      act = at::silu(gate_up[0]).mul_(gate_up[1]);
    }
    return linear(act, blk.down, dt);
  }

  // logits = x @ Wᵤᵀ in vocabulary chunks: each chunk of the (memory-mapped) table is converted
  // (or taken from the converted-weight cache), multiplied into its columns of the output, and its
  // pages released before the next.
  at::Tensor unembed(const at::Tensor& x, const Batch& b) {
    const ParamSource& w = w_->param(cfg_.info.tied_embeddings ? "embed.weight" : "unembed.weight");
    const int64_t vocab = cfg_.info.vocab_size;
    at::Tensor table;
    at::Tensor out = at::empty({x.size(0), vocab}, x.options());
    for (int64_t r0 = 0, chunk = 0; r0 < vocab; r0 += vocab_chunk_rows_, ++chunk) {
      const int64_t rows = std::min(vocab_chunk_rows_, vocab - r0);
      const int64_t key = -1 - chunk;  // apart from compute_weight's keys (1, 2, 3 sources)
      at::Tensor part, w_part = cache_.find(&w, key, b.dt);
      if (!w_part.defined()) {
        if (!table.defined()) table = w.load();
        part = table.narrow(0, r0, rows);
        if (filling_ && part.scalar_type() != b.dt) w_part = cache_.reserve(&w, key, b.dt, {rows, part.size(1)});
        if (w_part.defined()) convert_rows_into({part}, w_part);
        else w_part = scratch_.convert(part, b.dt);
      }
      {
        at::Tensor cols = out.narrow(1, r0, rows);
        OmpThreads all(gemm_threads_);
        at::mm_out(cols, x, w_part.t());  // straight into the strided columns (BLAS's ldc)
      }
      if (part.defined()) release_mapped_pages(part);
    }
    add_lora(out, x, w_->lora("unembed.weight"));
    return out;
  }

  // The weights `sources` (one, or several with one column count, stacked by rows) in the compute
  // dtype: used in place from the memory map when stored in it, else the kept conversion from an
  // earlier forward, else converted now (into the cache while it fills, else into the scratch
  // buffer). The mapped pages leave the resident set when the loaded views die, on return.
  at::Tensor compute_weight(const std::vector<const ParamSource*>& sources, c10::ScalarType dt) {
    const int64_t part = static_cast<int64_t>(sources.size());  // q/k/v fused vs q alone: different entries
    if (at::Tensor kept = cache_.find(sources.front(), part, dt); kept.defined()) return kept;
    std::vector<at::Tensor> parts;
    for (const ParamSource* s : sources) parts.push_back(s->load());
    if (parts.size() == 1 && parts.front().scalar_type() == dt && parts.front().is_contiguous()) return parts.front();
    if (filling_) {
      int64_t rows = 0;
      for (const auto& p : parts) rows += p.size(0);
      if (at::Tensor slot = cache_.reserve(sources.front(), part, dt, {rows, parts.front().size(1)}); slot.defined()) {
        convert_rows_into(parts, slot);
        return slot;
      }
    }
    return parts.size() == 1 ? scratch_.convert(parts.front(), dt) : scratch_.stack_rows(parts, dt);
  }

  LlamaConfig cfg_;
  std::unique_ptr<WeightSet> w_;
  std::vector<Block> blocks_;
  int64_t vocab_chunk_rows_ = 1;
  int gemm_threads_ = 1;  ///< the caller's OpenMP thread count, read at the start of each forward
  Scratch scratch_;
  ConvertedCache cache_{converted_cache_budget()};
  int64_t forwards_ = 0;
  bool filling_ = false;  ///< conversions are kept from a model's second forward on
};

}  // namespace

std::unique_ptr<LoadedModel> load_llama(const ModelInfo& base, const Checkpoint* overlay) {
  LlamaConfig cfg = read_config(base);
  auto weights = std::make_unique<WeightSet>(base.path, expected_params(cfg), overlay, base.n_layers);
  return std::make_unique<LlamaModel>(std::move(cfg), std::move(weights));
}

}  // namespace aquin::llm
