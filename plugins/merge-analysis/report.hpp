// The merge-analysis export and terminal view. The weight-diff parts come from the SDK
// (checkpoint_json, summary_json, matrix_json, weight_diff_tables); this adds the verdict.
#pragma once

#include "behavioral.hpp"
#include "intruders.hpp"
#include "signals.hpp"
#include "thresholds.hpp"

#include <aquin/sdk/checkpoint.hpp>
#include <aquin/sdk/result.hpp>
#include <aquin/sdk/weight_diff.hpp>

#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace aquin::merge {

/// Everything one run decided, for the report.
struct Analysis {
  std::string verdict;                                   ///< pass | warn | fail
  std::vector<Reason> reasons;                           ///< fail first, then warn
  std::vector<std::pair<std::string, SignalResult>> signals;  ///< by signal, in evaluation order
  ScoreTable scores;
  std::vector<IntruderResult> intruders;
  ResolvedThresholds thresholds;
  bool behavioral_requested = false;
  std::string prompts;                                   ///< --prompts as given, "" when absent
  std::optional<BehaviorResult> behavior;                ///< set when the probes ran (LLMs)
  std::vector<std::pair<std::string, double>> timings;   ///< stage -> seconds
};

/// The export fields (Result.doc) of a run.
void fill_export(Result& r, const Analysis& an, const Checkpoint& ck, const WeightDiff& wd);

/// Headline lines and tables for the terminal.
void fill_terminal(Result& r, const Analysis& an, const Checkpoint& ck, const WeightDiff& wd, const std::string& base);

}  // namespace aquin::merge
