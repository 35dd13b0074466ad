// Per-layer activation drift between two models on the same prompts.
#pragma once

#include <aquin/sdk/model_runtime.hpp>
#include <aquin/sdk/tokenizer.hpp>

#include <ATen/core/Tensor.h>

#include <boost/config.hpp>
#include <string>
#include <vector>

namespace aquin {

enum class Reduce { LastToken, TokenMean };

/// Token ids of each prompt, truncated to `max_len` (0: no limit); truncated prompts are counted.
struct Tokenized {
  std::vector<std::vector<int64_t>> ids;
  int truncated = 0;
};
BOOST_SYMBOL_VISIBLE Tokenized tokenize(const Tokenizer& tok, const std::vector<std::string>& prompts, std::size_t max_len);

/// Prompts [start, start + b) as one right-padded batch: ids [b, T] int64 (pad_id after each
/// prompt) and the attention mask [b, T]. A token id outside [0, vocab_size) is an InputError.
struct PaddedBatch {
  at::Tensor ids, mask;
};
BOOST_SYMBOL_VISIBLE PaddedBatch padded_batch(const std::vector<std::vector<int64_t>>& prompts, int64_t start, int64_t b,
                                              int64_t pad_id, int64_t vocab_size);

/// Runs `model` over the prompts in batches (right-padded) and returns, for each layer, the
/// reduced `blocks.{L}.hook_resid_post`: [n_prompts, d_model] in fp64. The reduction is over the
/// real tokens only: the last one, or their mean.
BOOST_SYMBOL_VISIBLE std::vector<at::Tensor> reduced_resid_post(LoadedModel& model, const Tokenized& prompts, Reduce reduce,
                                           int64_t pad_id, std::size_t batch_size = 8);

struct LayerDrift {
  int layer = 0;
  std::vector<double> cosine_distance;  ///< per prompt: 1 - cos(base, fine-tuned)
  std::vector<double> relative_norm_change;  ///< per prompt: (‖ft‖ - ‖base‖) / ‖base‖
  std::vector<double> relative_distance;     ///< per prompt: ‖ft - base‖ / ‖base‖
};

/// Compares per-layer reduced activations ([n_prompts, d] each, fp64).
BOOST_SYMBOL_VISIBLE std::vector<LayerDrift> compare_layers(const std::vector<at::Tensor>& base, const std::vector<at::Tensor>& ft);

}  // namespace aquin
