// Running a model: what a model-adapter plugin returns from load() (DESIGN.md §4).
//
// Hook names (TransformerLens meaning; shapes for a batch of B prompts of T tokens):
//   "blocks.{L}.hook_resid_pre"    [B, T, d_model]  input of block L (never normalised)
//   "blocks.{L}.hook_resid_mid"    [B, T, d_model]  after attention, before the MLP (LLMs)
//   "blocks.{L}.hook_resid_post"   [B, T, d_model]  output of block L: resid_pre + attn_out + mlp_out;
//                                                   for BERT (post-LN) the block's output hidden state
//   "ln_final.hook_normalized"     [B, T, d_model]  the final norm's output (LLMs)
//   "embed"                        [B, T, d_model]  embedding output (BERT: after the embedding LayerNorm)
//   "pooled"                       [B, d_model]     mask-weighted mean of the last hidden state (embedding models)
// A forward stops after the last block a requested hook needs, unless logits are wanted.
#pragma once

#include <aquin/sdk/model_info.hpp>
#include <aquin/sdk/status.hpp>

#include <ATen/core/Tensor.h>

#include <boost/config.hpp>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace aquin {

class Tokenizer;
struct Checkpoint;

struct ForwardRequest {
  at::Tensor input_ids;       ///< [B, T] int64 token ids, right-padded
  at::Tensor attention_mask;  ///< [B, T] int64, 1 for real tokens, 0 for padding
  std::vector<std::string> hooks;  ///< hook names to capture (see above)
  bool logits = false;        ///< also return logits [B, T, vocab] (LLMs)
  c10::ScalarType dtype = c10::ScalarType::Float;  ///< compute dtype: Float (default) or BFloat16
};

/// Greedy continuation of prompts (LLMs). Prompts are token ids, one row each, unpadded.
struct GenerateRequest {
  std::vector<std::vector<int64_t>> prompts;  ///< token ids, one row per prompt (no padding; each non-empty)
  int max_new_tokens = 0;                     ///< tokens to generate per prompt (0: first_logprobs only)
  int64_t eos_id = -1;                        ///< a continuation stops after EOS (kept as its last token); <0: never
  c10::ScalarType dtype = c10::ScalarType::Float;  ///< compute dtype: Float (default) or BFloat16
};

struct GenerateResult {
  at::Tensor first_logprobs;  ///< [n_prompts, vocab] fp64 log_softmax of the next-token logits at each prompt's last token
  std::vector<std::vector<int64_t>> tokens;  ///< per prompt: the greedily generated ids (<= max_new_tokens)
};

/// Receives each requested activation as soon as it is computed. The tensor is the caller's to
/// keep (it is not reused by the model).
using HookSink = std::function<void(const std::string& hook, const at::Tensor& value)>;

/// A model ready to run: the base weights with a checkpoint laid over them (merged tensors replace
/// the base's; LoRA updates are applied inside the linear layers, never merged into a second copy).
/// Implemented in a model-adapter plugin; nothing throws across this boundary.
class BOOST_SYMBOL_VISIBLE LoadedModel {
 public:
  virtual ~LoadedModel() = default;
  virtual const ModelInfo& info() const noexcept = 0;
  /// Runs the model; calls `sink` for each requested hook; sets `logits` when requested.
  virtual Status forward(const ForwardRequest& request, const HookSink& sink, at::Tensor& logits) noexcept = 0;
  /// The hook names this model offers (for validation and messages).
  virtual std::vector<std::string> hook_names() const = 0;
  /// Greedily extends each prompt by up to `max_new_tokens` tokens. The default implementation
  /// (in the SDK) runs a full forward with logits per new token over the right-padded batch (no KV
  /// cache); adapters may override it with a cached one that gives the same tokens.
  virtual Status generate_greedy(const GenerateRequest& req, GenerateResult& out) noexcept;
};

}  // namespace aquin
