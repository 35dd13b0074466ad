// Behavioural scores for merge-analysis (LLMs): base and fine-tune run on probe prompts; the
// next-token distributions and short greedy continuations are compared, and thresholds on the
// summary feed the verdict. Models are reached only through the SDK's ModelLoader.
#pragma once

#include "signals.hpp"
#include "thresholds.hpp"

#include <aquin/sdk/analyzer.hpp>
#include <aquin/sdk/behavior.hpp>
#include <aquin/sdk/checkpoint.hpp>
#include <aquin/sdk/json.hpp>
#include <aquin/sdk/result.hpp>
#include <aquin/sdk/tokenizer.hpp>

#include <string>
#include <vector>

namespace aquin::merge {

struct ProbeRow {
  std::string text;
  std::size_t tokens = 0;                  ///< prompt tokens, template tokens included
  PromptBehavior score;
  int64_t base_top1 = -1, ft_top1 = -1;    ///< argmax next token of each model
  std::vector<int64_t> base_greedy, ft_greedy;
  std::string base_text, ft_text;          ///< the continuations decoded
};

struct BehaviorResult {
  std::string prompts_file;
  int new_tokens = 0;
  std::vector<ProbeRow> rows;
  double mean_kl = 0, max_kl = 0;
  int worst_prompt = -1;                   ///< index of the largest KL
  double top1_agreement = 0;               ///< share of prompts whose top-1 next tokens agree
  double mean_edit_fraction = 0;           ///< mean of edit distance / longer continuation's length
  int truncated = 0;                       ///< prompts cut to fit the model's positions
};

/// Loads the base, then the fine-tune (one at a time), and scores them on `prompts` (read from
/// `file`), tokenized with `tok` (the base model's tokenizer).
BehaviorResult run_behavior(const RunContext& ctx, const Checkpoint& ck, const Tokenizer& tok, const std::string& file,
                            const std::vector<std::string>& prompts, int new_tokens, std::size_t batch_size);

/// The summary's scores (mean KL, top-1 agreement, greedy edit distance) set against the thresholds.
SignalResult behavior_reasons(const BehaviorResult& b, const Thresholds& t);

/// The export's "behavioral_scores" object.
rapidjson::Value behavior_json(const BehaviorResult& b, json::Alloc& a);

/// Per-prompt table for the terminal.
Table behavior_table(const BehaviorResult& b);

}  // namespace aquin::merge
