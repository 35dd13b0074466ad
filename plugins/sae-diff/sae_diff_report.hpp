// `sae diff`'s export document and terminal view.
#pragma once

#include <aquin/sdk/result.hpp>
#include <aquin/sdk/sae.hpp>
#include <aquin/sdk/sae_features.hpp>
#include <aquin/sdk/tokenizer.hpp>

#include <string>
#include <vector>

namespace aquin::sae_diff {

/// Everything the report needs, gathered by the plugin.
struct Inputs {
  std::string model;             ///< the base model as the user named it
  std::string checkpoint, checkpoint_format;
  const Sae* sae = nullptr;
  SaeReduce reduce = SaeReduce::Tokens;
  std::vector<std::string> prompts;
  const SaePrompts* tokens = nullptr;
  const Tokenizer* tokenizer = nullptr;
  const FeatureStats* base = nullptr;
  const FeatureStats* ft = nullptr;
  std::vector<FeatureDelta> deltas;  ///< every feature, in feature order
  double threshold = 0;
  std::string threshold_source;  ///< "flag", "split-half" or "none"
  int64_t top = 20;              ///< features listed (0: all)
  int64_t examples = 3;          ///< top prompts shown per listed feature
  bool builtin_prompts = false;
  std::vector<std::pair<std::string, double>> timings;  ///< stage -> seconds
};

/// FVU on the fine-tune above the base's by more than this (absolute) and by more than
/// kFvuWarnRatio (relative) is reported: the SAE no longer reconstructs the fine-tune.
constexpr double kFvuWarnAbs = 0.05;
constexpr double kFvuWarnRatio = 1.25;

/// Fills the export fields, headline, tables and warnings of `r` (card saeDiff).
void build_report(const Inputs& in, Result& r);

}  // namespace aquin::sae_diff
