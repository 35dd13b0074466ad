// Behavioural comparison of two LLMs on probe prompts: next-token distributions and short greedy
// continuations. Used by merge-analysis's behavioural scores.
#pragma once

#include <aquin/sdk/activation_drift.hpp>
#include <aquin/sdk/model_runtime.hpp>

#include <ATen/core/Tensor.h>

#include <boost/config.hpp>
#include <vector>

namespace aquin {

/// What one model says about each prompt.
struct ProbeOutput {
  at::Tensor next_logprobs;                     ///< [n_prompts, vocab] fp64 log-softmax at the last real token
  std::vector<std::vector<int64_t>> greedy;     ///< per prompt: `n_new` greedily generated token ids
};

/// Runs `model` on the prompts, `batch_size` at a time, and greedily extends each by up to `n_new`
/// tokens through LoadedModel::generate_greedy (KV-cached where the adapter implements it; else a
/// full forward per new token). A continuation stops after `eos_id` (kept as its last token), as
/// Hugging Face's generate does; eos_id < 0: never.
BOOST_SYMBOL_VISIBLE ProbeOutput probe_model(LoadedModel& model, const Tokenized& prompts, int n_new,
                                             std::size_t batch_size = 8, int64_t eos_id = -1);

struct PromptBehavior {
  double kl = 0;              ///< KL(base ‖ fine-tuned) of the next-token distributions, in nats
  bool top1_agree = false;    ///< the two argmax next tokens are equal
  int edit_distance = 0;      ///< Levenshtein distance between the two greedy continuations (tokens)
};

/// Per-prompt comparison of two probe outputs over the same prompts.
BOOST_SYMBOL_VISIBLE std::vector<PromptBehavior> compare_behavior(const ProbeOutput& base, const ProbeOutput& ft);

/// Levenshtein distance between token sequences.
BOOST_SYMBOL_VISIBLE int token_edit_distance(const std::vector<int64_t>& a, const std::vector<int64_t>& b);

}  // namespace aquin
