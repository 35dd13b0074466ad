// SAE feature statistics of a model on a set of prompts, and their difference between two models
// (the core of `sae diff`; capture and simulate reuse it).
#pragma once

#include <aquin/sdk/model_runtime.hpp>
#include <aquin/sdk/sae.hpp>
#include <aquin/sdk/tokenizer.hpp>

#include <ATen/core/Tensor.h>

#include <boost/config.hpp>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace aquin {

/// Which vectors of a prompt are encoded.
enum class SaeReduce {
  Tokens,     ///< every real token except the template's special tokens, one vector each
  TokenMean,  ///< one vector per prompt: the mean residual over those tokens
  LastToken,  ///< one vector per prompt: the last of those tokens
  Pooled,     ///< one vector per prompt: the mask-weighted mean over all real tokens (embedding models)
};
BOOST_SYMBOL_VISIBLE const char* sae_reduce_name(SaeReduce r);  ///< "tokens", "mean", "last", "pooled"

/// Prompts as token ids with the template's special-token mask (Encoding::special_tokens_mask).
struct SaePrompts {
  std::vector<std::vector<int64_t>> ids;
  std::vector<std::vector<uint8_t>> special;  ///< same shape as ids; 1 where the template added the token
  int truncated = 0;                           ///< prompts cut to the model's positions
};
/// Tokenizes with the template's special tokens; an empty prompt, or one with nothing but special
/// tokens, is an InputError naming it.
BOOST_SYMBOL_VISIBLE SaePrompts tokenize_for_sae(const Tokenizer& tok, const std::vector<std::string>& prompts,
                                                 std::size_t max_len);

/// One model's feature statistics over the prompts.
struct FeatureStats {
  int64_t n_prompts = 0;
  int64_t d_sae = 0;
  at::Tensor prompt_values;  ///< [n_prompts, d_sae] fp64: each feature averaged over the prompt's encoded vectors
  at::Tensor active;         ///< [d_sae] int64: encoded vectors (all prompts) where the feature is > 0
  at::Tensor top_value;      ///< [n_prompts, d_sae] fp32: the feature's largest value in the prompt
  at::Tensor top_position;   ///< [n_prompts, d_sae] int32: token position of it (-1: none, or a pooled vector)
  std::vector<int64_t> vectors_per_prompt;  ///< encoded vectors of each prompt
  int64_t n_vectors = 0;     ///< all encoded vectors
  double sq_error = 0;       ///< Σ‖x − x̂‖² over the encoded vectors
  double sq_total = 0;       ///< Σ‖x − x̄‖² (x̄: the mean encoded vector)
  double l0_sum = 0;         ///< Σ active features per vector
  at::Tensor sum_x;          ///< [d_in] fp64 Σx, and Σ‖x‖² below: sq_total is made from them at the end
  double sum_sq = 0;

  double fvu() const;        ///< sq_error / sq_total (NaN when sq_total is 0)
  double mean_l0() const;
  int64_t dead() const;      ///< features never active on any encoded vector
};

/// Progress of a long loop: (items done, items in all).
using ProgressFn = std::function<void(int64_t, int64_t)>;

/// Runs `model` over the prompts (right-padded batches, stopping after the SAE's layer), encodes
/// the vectors `reduce` selects at the SAE's hook and accumulates their statistics. The hook must
/// be one the model offers (else InputError listing those it does); Pooled reads
/// blocks.{L}.hook_resid_post and pools it with the attention mask, special tokens included.
BOOST_SYMBOL_VISIBLE FeatureStats collect_feature_stats(LoadedModel& model, const Sae& sae, const SaePrompts& prompts,
                                                        SaeReduce reduce, int64_t pad_id, std::size_t batch_size,
                                                        const ProgressFn& progress = {});

/// Accumulates already-captured vectors [n, d_in] of prompt `prompt` (positions `positions`, -1 for
/// a pooled or mean vector) into `stats`. collect_feature_stats calls it; capture files can too.
BOOST_SYMBOL_VISIBLE void accumulate_vectors(FeatureStats& stats, const Sae& sae, const at::Tensor& vectors,
                                             const std::vector<int64_t>& prompt_of_row,
                                             const std::vector<int32_t>& position_of_row);
/// An empty accumulator for `n_prompts` prompts; finish_feature_stats turns sums into means.
BOOST_SYMBOL_VISIBLE FeatureStats start_feature_stats(int64_t n_prompts, int64_t d_sae, int64_t d_in);
BOOST_SYMBOL_VISIBLE void finish_feature_stats(FeatureStats& stats);

/// One feature's change between two models.
struct FeatureDelta {
  int64_t feature = 0;
  double base_mean = 0, ft_mean = 0, delta = 0;
  double base_freq = 0, ft_freq = 0;
  double delta_se = 0;  ///< standard error of the mean paired per-prompt difference (NaN below 2 prompts)
  double p_value = 1;   ///< two-sided paired t-test over prompts, n−1 degrees of freedom (NaN below 2 prompts)
};

/// Per-feature comparison of two models' statistics on the same prompts (every feature, in order).
BOOST_SYMBOL_VISIBLE std::vector<FeatureDelta> diff_features(const FeatureStats& base, const FeatureStats& ft);

/// The prompt-sampling noise of feature means: the 99th percentile over features of
/// |mean over even-index prompts − mean over odd-index prompts| of the base statistics. NaN with
/// fewer than 2 prompts in a half.
BOOST_SYMBOL_VISIBLE double split_half_threshold(const FeatureStats& base);

/// Two-sided p-value of Student's t with `dof` degrees of freedom (regularised incomplete beta).
BOOST_SYMBOL_VISIBLE double student_t_two_sided_p(double t, double dof);

}  // namespace aquin
