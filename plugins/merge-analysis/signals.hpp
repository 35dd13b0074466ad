// The signals a merge verdict is made of. Each looks at the weight-diff figures (and the intruder
// analysis) of every matrix and returns the reasons it raises, each with the value it measured,
// the threshold that value crossed and a severity. Pure functions: no I/O, unit-tested directly.
#pragma once

#include "intruders.hpp"
#include "thresholds.hpp"

#include <aquin/sdk/weight_diff.hpp>

#include <limits>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace aquin::merge {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

struct Reason {
  /// "non_finite", "shape_mismatch", "missing_in_checkpoint", "missing_in_base" (integrity),
  /// "stable_rank_ratio", "stable_rank_z", "rank_collapse", "intruder", "relative_change_outlier"
  std::string signal;
  std::string param;
  double value = kNaN;
  double threshold = kNaN;
  std::string severity;  ///< "warn" or "fail"
  std::string detail;    ///< one line for people
  std::vector<std::pair<std::string, double>> figures;  ///< context (peers' median, the rank r, ...)
};

/// What the robust scores found for one matrix (exported beside its weight-diff figures).
struct MatrixScores {
  std::string peer_group;             ///< e.g. "blocks.*.attn.q.weight"; "" outside the blocks
  int peers = 0;                      ///< scored members of the group, this matrix included
  double stable_rank_ratio = kNaN;    ///< LoRA: stable rank / r
  double stable_rank_z = kNaN;        ///< merged: robust z of log stable rank in its group
  double relative_z = kNaN;           ///< robust z of log relative change in its group
};

/// Per-matrix scores, keyed by canonical name.
using ScoreTable = std::map<std::string, MatrixScores>;

/// What one signal found: its reasons, how many matrices it could judge, and what it could not.
struct SignalResult {
  std::vector<Reason> reasons;
  int evaluated = 0;
  std::vector<std::string> notes;  ///< e.g. peer groups too small to score
};

/// Whether a matrix's ΔW carries a measurable update: status ok, finite, non-zero and (for a
/// half-precision checkpoint) above its rounding-noise floor.
bool measurable(const MatrixDiff& m);

/// The canonical name with its layer number replaced by '*', or "" for tensors outside the blocks.
std::string peer_group(const MatrixDiff& m);

/// Robust z-scores of `x`: (x − median) / s with s = max(1.4826 · MAD, min_scale). 1.4826 · MAD
/// estimates a normal standard deviation while ignoring up to half the values as outliers; the
/// floor keeps a group of near-identical values (a synthetic adapter) from calling a 1% excess
/// an outlier. Writes the median and s used.
std::vector<double> robust_z(const std::vector<double>& x, double min_scale, double* median = nullptr,
                             double* scale = nullptr);

/// The spread, in natural-log units, below which peers count as identical, so that a robust z then
/// counts steps of e^0.25 ≈ 1.28×: z = 3.5 is 2.4× the peers' median, z = 10 is 12×. Measured (README,
/// make_merge_fixtures.py --measure): with 0.1, about 30% of healthy models whose per-module
/// magnitudes spread by 20% (log-normal) drew a warning; with 0.25, at most 0.2%, while a module 3×
/// its peers is still caught in 68-98% of draws and one 40× its peers fails (median z 11-15).
constexpr double kMinLogSpread = 0.25;

/// Integrity (fail): NaN/Inf, shape mismatches, and keys on one side only, from compute_weight_diff's statuses.
SignalResult integrity_reasons(const WeightDiff& wd);

/// Elevated stable rank (warn): LoRA modules against their rank r, merged matrices against their peers.
SignalResult stable_rank_reasons(const WeightDiff& wd, const Thresholds& t, ScoreTable& scores);

/// Rank collapse (warn): stable rank of ΔW below the threshold.
SignalResult collapse_reasons(const WeightDiff& wd, const Thresholds& t);

/// Relative-change outliers (warn, or fail past outlier_fail_z): robust z of log ‖ΔW‖/‖W‖ among peers.
SignalResult outlier_reasons(const WeightDiff& wd, const Thresholds& t, ScoreTable& scores);

/// Intruder dimensions (warn; fail when an intruder's σ reaches intruder_fail_sigma · σ₁(W)):
/// one reason per matrix, its value the lowest best |cos| among its intruders.
SignalResult intruder_reasons(const std::vector<IntruderResult>& results, const Thresholds& t);

/// "fail" if any reason fails, "warn" if any warns, else "pass".
std::string verdict(const std::vector<Reason>& reasons);

}  // namespace aquin::merge
