// The thresholds a merge verdict is decided by: one table gives each its JSON key, CLI flag, help,
// valid range and default, so the flags, the --thresholds file and the export cannot drift apart.
#pragma once

#include <aquin/sdk/json.hpp>
#include <aquin/sdk/options.hpp>

#include <rapidjson/document.h>

#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

namespace aquin::merge {

struct Thresholds {
  double max_stable_rank_ratio = 0;  ///< LoRA: warn when stable_rank / r exceeds it
  double stable_rank_z = 0;          ///< merged: warn when the robust z of log stable rank among peers exceeds it
  double collapse_stable_rank = 0;   ///< warn when the stable rank of ΔW is below it
  double intruder_cos = 0;           ///< a top singular vector of W+ΔW is an intruder when its best |cos| is below it
  int64_t intruder_top_k = 0;        ///< top singular vectors of W+ΔW examined
  int64_t intruder_base_k = 0;       ///< top singular vectors of W they are matched against
  double intruder_fail_sigma = 0;    ///< an intruder fails when its σ ≥ this × σ₁(W) (it dominates the layer)
  double outlier_z = 0;              ///< warn when the robust z of log ‖ΔW‖/‖W‖ among peers exceeds it
  double outlier_fail_z = 0;         ///< fail when it exceeds this
  int64_t min_peers = 0;             ///< fewest peers (same weight in other layers) a robust z is computed from
  double behavior_kl_warn = 0;       ///< probes: warn when the mean next-token KL(base ‖ fine-tune) exceeds it (nats)
  double behavior_kl_fail = 0;       ///< probes: fail when it exceeds this
  double behavior_top1_warn = 0;     ///< probes: warn when the share of prompts whose top-1 next token agrees is below it
  double behavior_top1_fail = 0;     ///< probes: fail when it is below this
  double behavior_edit_warn = 0;     ///< probes: warn when the mean edit distance of greedy continuations, over their length, exceeds it
};

/// One threshold: its key in the export and the --thresholds file ("outlier_z"), its flag
/// (--outlier-z), where it lives in Thresholds, and what it accepts.
struct ThresholdDef {
  const char* key;
  double Thresholds::*real = nullptr;    ///< set for a number
  int64_t Thresholds::*whole = nullptr;  ///< set for an integer
  double min, max;                       ///< valid closed range
  const char* help;
  std::string flag() const;
  double get(const Thresholds& t) const;
  void set(Thresholds& t, double v) const;
};

/// Every threshold, in the order the export lists them.
const std::vector<ThresholdDef>& threshold_defs();

/// The documented defaults (see the measurements in thresholds.cpp and README.md).
Thresholds default_thresholds();

/// One CLI option per threshold (no default_value: an absent flag leaves the file or default).
std::vector<OptionSpec> threshold_options();

/// The thresholds in force and where each came from ("default", "file" or "flag").
struct ResolvedThresholds {
  Thresholds values;
  std::map<std::string, std::string> source;
  std::string file;  ///< the --thresholds file, "" when none
};

/// Applies a --thresholds document over `r`: an object of known keys with numbers in range.
/// Throws InputError("<file>: ...") naming an unknown key, a non-number or an out-of-range value.
void apply_threshold_file(ResolvedThresholds& r, const rapidjson::Value& doc, const std::string& file);

/// Defaults, then the --thresholds file, then the flags. Throws InputError / UsageError.
ResolvedThresholds resolve_thresholds(const Args& args);

/// {"key": value, ...} in table order.
rapidjson::Value thresholds_json(const Thresholds& t, json::Alloc& a);

}  // namespace aquin::merge
