// BertModel's forward pass (post-LN encoder) in fp32, following transformers' modeling_bert.py:
//   embeddings = LayerNorm(word[ids] + position[0..T-1] + token_type[0])
//   per block:  a = LayerNorm(x + dense_o(attention(x)));  x = LayerNorm(a + dense_down(act(dense_up(a))))
//   attention:  softmax(q kᵀ / sqrt(d_head) + (1 - mask) · finfo(float).min) v, per head
// and sentence-transformers' mean pooling: Σ_t h_t · mask_t / max(Σ_t mask_t, 1e-9).
//
// Activations run as [B·T, d] matrices so every dense layer is one GEMM against the stored
// [out, in] weight (no transposed copy). Weights alias the files' memory maps when stored as fp32.
#include "bert.hpp"

#include "../overlay.hpp"

#include <aquin/sdk/atomic_file.hpp>
#include <aquin/sdk/config_json.hpp>
#include <aquin/sdk/errors.hpp>
#include <aquin/sdk/json.hpp>

#include <ATen/ATen.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <filesystem>
#include <limits>
#include <optional>

namespace aquin::bert {

namespace {

namespace fs = std::filesystem;

enum class Act { GeluErf, GeluTanh, QuickGelu, Relu, Silu };

// hidden_act values transformers' ACT2FN maps to these functions.
Act parse_act(const std::string& name, const std::string& where) {
  if (name == "gelu" || name == "gelu_python") return Act::GeluErf;
  // NewGELUActivation, PytorchGELUTanh and FastGELUActivation are the same tanh formula.
  if (name == "gelu_new" || name == "gelu_pytorch_tanh" || name == "gelu_fast") return Act::GeluTanh;
  if (name == "quick_gelu") return Act::QuickGelu;
  if (name == "relu") return Act::Relu;
  if (name == "silu" || name == "swish") return Act::Silu;
  throw InputError(where, "hidden_act '" + name +
                              "' is not supported; supported: gelu, gelu_python, gelu_new, gelu_pytorch_tanh, "
                              "gelu_fast, quick_gelu, relu, silu, swish");
}

void apply_act_(at::Tensor& h, Act act) {
  switch (act) {
    case Act::GeluErf: at::gelu_(h); return;
    case Act::GeluTanh: at::gelu_(h, "tanh"); return;
    case Act::QuickGelu: h.mul_(at::sigmoid(h * 1.702)); return;
    case Act::Relu: at::relu_(h); return;
    case Act::Silu: at::silu_(h); return;
  }
}

// A dense layer, y = x Wᵀ + b, with an optional LoRA update applied factored:
// y += scale · (x Aᵀ) Bᵀ, which costs r·(in + out) per row and never materialises ΔW.
struct Linear {
  at::Tensor weight;  // [out, in]
  at::Tensor bias;    // [out]
  std::optional<embedding::LoraDelta> lora;

  at::Tensor operator()(const at::Tensor& x) const {
    at::Tensor y = at::addmm(bias, x, weight.t());
    if (lora) y.addmm_(at::mm(x, lora->a.t()), lora->b.t(), 1.0, lora->scale);
    return y;
  }
};

struct Table {
  at::Tensor weight;  // [rows, d]
  std::optional<embedding::LoraDelta> lora;

  // Rows `idx` of the table; a LoRA update (B @ A)ᵀ contributes row i as scale · A[:, i]ᵀ Bᵀ.
  at::Tensor rows(const at::Tensor& idx) const {
    at::Tensor out = at::index_select(weight, 0, idx);
    if (lora) out.addmm_(at::index_select(lora->a.t(), 0, idx), lora->b.t(), 1.0, lora->scale);
    return out;
  }
};

struct Norm {
  at::Tensor weight, bias;
};

struct Block {
  Linear q, k, v, o, up, down;
  Norm ln1, ln2;  // attention.output.LayerNorm, output.LayerNorm
};

// What a request asks for, and so how many blocks must run.
struct Plan {
  bool embed = false, pooled = false;
  std::vector<char> pre, post;  // per block
  int64_t n_run = 0;
};

std::optional<int64_t> block_hook(const std::string& hook, const std::string& suffix) {
  const std::string prefix = "blocks.";
  if (hook.size() <= prefix.size() + suffix.size() || hook.compare(0, prefix.size(), prefix) != 0 ||
      hook.compare(hook.size() - suffix.size(), suffix.size(), suffix) != 0)
    return std::nullopt;
  const std::string digits = hook.substr(prefix.size(), hook.size() - prefix.size() - suffix.size());
  if (digits.empty() || digits.size() > 9 || !std::all_of(digits.begin(), digits.end(), [](unsigned char c) { return std::isdigit(c) != 0; })) return std::nullopt;
  return std::stoll(digits);
}

class BertModel final : public LoadedModel {
 public:
  BertModel(const ModelInfo& base, const Checkpoint* overlay) : info_(base) {
    const fs::path dir = fs::is_directory(base.path) ? fs::path(base.path) : fs::path(base.path).parent_path();
    const std::string cfg_path = (dir / "config.json").string();
    const auto cfg = json::parse(read_text_file(cfg_path), cfg_path);
    act_ = parse_act(config::get_string(cfg, "hidden_act", "gelu"), cfg_path);
    const std::string pos_type = config::get_string(cfg, "position_embedding_type", "absolute");
    if (pos_type != "absolute")
      throw InputError(cfg_path, "position_embedding_type '" + pos_type + "' is not supported (only absolute)");
    const int64_t type_vocab = config::get_int(cfg, "type_vocab_size", 2);

    const int64_t d = base.d_model, f = base.d_mlp;
    if (d <= 0 || f <= 0 || base.n_layers <= 0 || base.n_heads <= 0 || d % base.n_heads != 0)
      throw InputError(cfg_path, "hidden_size, intermediate_size, num_hidden_layers and num_attention_heads must be "
                                 "positive, hidden_size a multiple of num_attention_heads");
    embedding::OverlaidWeights w(base, overlay);
    auto table = [&](const std::string& name, int64_t rows) {
      return Table{w.get(name, {rows, d}), w.lora(name, {rows, d}, true)};
    };
    auto linear = [&](const std::string& name, int64_t out, int64_t in) {
      return Linear{w.get(name + ".weight", {out, in}), w.get(name + ".bias", {out}), w.lora(name + ".weight", {out, in}, false)};
    };
    auto norm = [&](const std::string& name) { return Norm{w.get(name + ".weight", {d}), w.get(name + ".bias", {d})}; };

    word_ = table("embed.word.weight", base.vocab_size);
    position_ = table("embed.position.weight", base.max_positions);
    // Every BertModel has token types, but a stripped-down export may not; type 0 then adds nothing.
    if (type_vocab > 0 && w.has("embed.token_type.weight")) token_type_ = table("embed.token_type.weight", type_vocab);
    embed_ln_ = norm("embed.ln");
    for (int64_t l = 0; l < base.n_layers; ++l) {
      const std::string p = "blocks." + std::to_string(l) + ".";
      Block b;
      b.q = linear(p + "attn.q", d, d);
      b.k = linear(p + "attn.k", d, d);
      b.v = linear(p + "attn.v", d, d);
      b.o = linear(p + "attn.o", d, d);
      b.ln1 = norm(p + "ln1");
      b.up = linear(p + "mlp.up", f, d);
      b.down = linear(p + "mlp.down", d, f);
      b.ln2 = norm(p + "ln2");
      blocks_.push_back(std::move(b));
    }
  }

  const ModelInfo& info() const noexcept override { return info_; }

  std::vector<std::string> hook_names() const override {
    std::vector<std::string> out{"embed"};
    for (int64_t l = 0; l < info_.n_layers; ++l) out.push_back("blocks." + std::to_string(l) + ".hook_resid_pre");
    for (int64_t l = 0; l < info_.n_layers; ++l) out.push_back("blocks." + std::to_string(l) + ".hook_resid_post");
    out.push_back("pooled");
    return out;
  }

  Status forward(const ForwardRequest& request, const HookSink& sink, at::Tensor& logits) noexcept override {
    try {
      logits = at::Tensor();
      run(request, sink);
      return {};
    } catch (const InputError& e) {
      return {StatusCode::Input, e.what()};
    } catch (const UsageError& e) {
      return {StatusCode::Usage, e.what()};
    } catch (const c10::Error& e) {
      return {StatusCode::Internal, info_.model + ": " + e.what_without_backtrace()};
    } catch (const std::exception& e) {
      return {StatusCode::Internal, info_.model + ": " + e.what()};
    } catch (...) {
      return {StatusCode::Internal, info_.model + ": unknown error in the BERT forward pass"};
    }
  }

 private:
  Plan plan(const std::vector<std::string>& hooks) const {
    Plan p;
    p.pre.assign(static_cast<std::size_t>(info_.n_layers), 0);
    p.post.assign(static_cast<std::size_t>(info_.n_layers), 0);
    for (const auto& h : hooks) {
      if (h == "embed") {
        p.embed = true;
      } else if (h == "pooled") {
        p.pooled = true;
        p.n_run = info_.n_layers;
      } else if (auto l = block_hook(h, ".hook_resid_post"); l && *l < info_.n_layers) {
        p.post[static_cast<std::size_t>(*l)] = 1;
        p.n_run = std::max(p.n_run, *l + 1);
      } else if (auto l2 = block_hook(h, ".hook_resid_pre"); l2 && *l2 < info_.n_layers) {
        p.pre[static_cast<std::size_t>(*l2)] = 1;
        p.n_run = std::max(p.n_run, *l2);  // the input of block L is the output of block L-1
      } else {
        throw InputError(info_.model, "no hook '" + h + "' in a " + std::to_string(info_.n_layers) +
                                          "-layer BERT model; hooks: embed, blocks.{0.." +
                                          std::to_string(info_.n_layers - 1) +
                                          "}.hook_resid_pre, blocks.{L}.hook_resid_post, pooled");
      }
    }
    return p;
  }

  void run(const ForwardRequest& req, const HookSink& sink) const {
    if (req.logits) throw InputError(info_.model, "an embedding model has no logits; ask for the 'pooled' hook instead");
    if (req.dtype != at::kFloat)
      throw InputError(info_.model, std::string("compute dtype ") + c10::toString(req.dtype) +
                                        " is not supported for BERT models; use Float");
    const Plan p = plan(req.hooks);
    if (!req.input_ids.defined() || req.input_ids.dim() != 2 || !at::isIntegralType(req.input_ids.scalar_type(), false))
      throw InputError(info_.model, "input_ids must be a [batch, tokens] integer tensor");
    const int64_t B = req.input_ids.size(0), T = req.input_ids.size(1), d = info_.d_model;
    if (B == 0 || T == 0) throw InputError(info_.model, "input_ids is empty");
    if (T > info_.max_positions)
      throw InputError(info_.model, std::to_string(T) + " tokens exceed max_position_embeddings " +
                                        std::to_string(info_.max_positions));
    const at::Tensor ids = req.input_ids.to(at::kLong).contiguous().view({-1});
    const int64_t lo = ids.min().item<int64_t>(), hi = ids.max().item<int64_t>();
    if (lo < 0 || hi >= info_.vocab_size)
      throw InputError(info_.model, "token id " + std::to_string(lo < 0 ? lo : hi) + " is outside the vocabulary (size " +
                                        std::to_string(info_.vocab_size) + ")");
    at::Tensor mask;
    if (req.attention_mask.defined()) {
      if (req.attention_mask.sizes() != req.input_ids.sizes())
        throw InputError(info_.model, "attention_mask must have the shape of input_ids");
      mask = req.attention_mask.to(at::kFloat).contiguous();
    } else {
      mask = at::ones({B, T}, at::kFloat);
    }

    // Every per-token step (embeddings, dense layers, LayerNorms, activation) runs on the real
    // tokens only, packed as [n_real, d]: padding costs nothing there, and real positions come
    // out exactly as in transformers, where a padded key's weight exp(finfo.min - max) is 0.
    // Only attention works on the padded [B, T] layout; its padded rows are zeros.
    const bool padded = !mask.eq(1).all().item<bool>();
    const at::Tensor rows = padded ? mask.view({-1}).nonzero().view({-1}) : at::Tensor();  // flat index of each real token
    const c10::List<c10::optional<at::Tensor>> prompt_token =  // (prompt, position) of each real token
        padded ? c10::List<c10::optional<at::Tensor>>({at::div(rows, T, "trunc"), at::remainder(rows, T)})
               : c10::List<c10::optional<at::Tensor>>();
    auto unpack = [&](const at::Tensor& x) {  // [n_real, d] -> [B·T, d], zeros at padding
      if (!padded) return x;
      return at::zeros({B * T, x.size(1)}, x.options()).index_copy_(0, rows, x);
    };
    auto pack = [&](const at::Tensor& x) { return padded ? x.index_select(0, rows) : x; };

    // `x` is the input of block `l` (the embeddings for l = 0, else block l-1's output). The
    // caller keeps what it is given, so a tensor sent under two names goes out once as a copy.
    auto emit = [&](const at::Tensor& x, int64_t l) {
      bool sent = false;
      auto send = [&](const std::string& name) {
        at::Tensor t = unpack(x);
        if (sent && !padded) t = t.clone();
        sink(name, t.view({B, T, d}));
        sent = true;
      };
      if (l == 0 && p.embed) send("embed");
      if (l > 0 && p.post[static_cast<std::size_t>(l - 1)]) send("blocks." + std::to_string(l - 1) + ".hook_resid_post");
      if (l < info_.n_layers && p.pre[static_cast<std::size_t>(l)]) send("blocks." + std::to_string(l) + ".hook_resid_pre");
    };

    // Embeddings: position ids are 0..T-1 whatever the padding (BERT's default), token type 0.
    const at::Tensor positions = at::arange(T, at::kLong).repeat({B});
    at::Tensor x = word_.rows(pack(ids));
    x.add_(position_.rows(pack(positions)));
    if (token_type_.weight.defined()) x.add_(token_type_.rows(at::zeros({1}, at::kLong)));
    x = at::layer_norm(x, {d}, embed_ln_.weight, embed_ln_.bias, info_.norm_eps);
    emit(x, 0);

    const int64_t H = info_.n_heads, dh = d / H;
    const double inv_sqrt_dh = 1.0 / std::sqrt(static_cast<double>(dh));
    // Additive key mask, one row per (prompt, head) broadcast over queries: finfo(float).min as
    // transformers uses, not -inf, so a prompt with no real token at all still gets a finite
    // (uniform) softmax instead of NaN.
    const at::Tensor key_bias = ((1.0 - mask) * std::numeric_limits<float>::lowest())
                                    .view({B, 1, 1, T})
                                    .expand({B, H, 1, T})
                                    .reshape({B * H, 1, T});
    // [n_real, d] -> per-head [B·H, T, dh], and kᵀ as [B·H, dh, T]. Both are contiguous on
    // purpose: this libtorch's batched GEMM is ~50x slower on a transposed (strided) operand.
    // With padding, the real tokens are scattered straight into that layout (through a
    // [B, T, H, dh] view of it) over zeros.
    auto heads = [&](const at::Tensor& t) {
      if (!padded) return t.view({B, T, H, dh}).permute({0, 2, 1, 3}).reshape({B * H, T, dh});
      at::Tensor out = at::zeros({B, H, T, dh}, t.options());
      out.permute({0, 2, 1, 3}).index_put_(prompt_token, t.view({-1, H, dh}));
      return out.view({B * H, T, dh});
    };
    auto heads_t = [&](const at::Tensor& t) {
      if (!padded) return t.view({B, T, H, dh}).permute({0, 2, 3, 1}).reshape({B * H, dh, T});
      at::Tensor out = at::zeros({B, H, dh, T}, t.options());
      out.permute({0, 3, 1, 2}).index_put_(prompt_token, t.view({-1, H, dh}));
      return out.view({B * H, dh, T});
    };
    for (int64_t l = 0; l < p.n_run; ++l) {
      const Block& b = blocks_[static_cast<std::size_t>(l)];
      const at::Tensor q = heads(b.q(x)), k_t = heads_t(b.k(x)), v = heads(b.v(x));
      // One GEMM for q kᵀ / sqrt(d_head) + mask.
      const at::Tensor scores = at::baddbmm(key_bias, q, k_t, 1.0, inv_sqrt_dh);
      const at::Tensor probs = at::softmax(scores, -1);
      const at::Tensor ctx_heads = at::bmm(probs, v).view({B, H, T, dh}).permute({0, 2, 1, 3});  // [B, T, H, dh]
      const at::Tensor ctx = padded ? at::index(ctx_heads, prompt_token).view({-1, d}) : ctx_heads.reshape({B * T, d});

      at::Tensor attn_out = b.o(ctx);
      attn_out.add_(x);
      const at::Tensor a = at::layer_norm(attn_out, {d}, b.ln1.weight, b.ln1.bias, info_.norm_eps);
      at::Tensor h = b.up(a);
      apply_act_(h, act_);
      at::Tensor mlp_out = b.down(h);
      mlp_out.add_(a);
      x = at::layer_norm(mlp_out, {d}, b.ln2.weight, b.ln2.bias, info_.norm_eps);
      emit(x, l + 1);
    }

    if (p.pooled) {
      // Σ_t mask_t · h_t as one batched product; padding rows are zeros and weighted 0. A prompt
      // with no real token pools to zeros (the 1e-9 floor) rather than NaN.
      const at::Tensor sum = at::bmm(mask.unsqueeze(1), unpack(x).view({B, T, d})).squeeze(1);  // [B, d]
      sink("pooled", sum / mask.sum(1, /*keepdim=*/true).clamp_min(1e-9));
    }
  }

  ModelInfo info_;
  Act act_ = Act::GeluErf;
  Table word_, position_, token_type_;
  Norm embed_ln_;
  std::vector<Block> blocks_;
};

}  // namespace

std::unique_ptr<LoadedModel> load(const ModelInfo& base, const Checkpoint* overlay) {
  return std::make_unique<BertModel>(base, overlay);
}

}  // namespace aquin::bert
