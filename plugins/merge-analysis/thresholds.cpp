#include "thresholds.hpp"

#include <aquin/sdk/atomic_file.hpp>
#include <aquin/sdk/errors.hpp>

#include <cmath>
#include <sstream>

namespace aquin::merge {

std::string ThresholdDef::flag() const {
  std::string f = key;
  for (auto& c : f) c = c == '_' ? '-' : c;
  return f;
}

double ThresholdDef::get(const Thresholds& t) const {
  return real != nullptr ? t.*real : static_cast<double>(t.*whole);
}

void ThresholdDef::set(Thresholds& t, double v) const {
  if (real != nullptr) t.*real = v;
  else t.*whole = static_cast<int64_t>(v);
}

const std::vector<ThresholdDef>& threshold_defs() {
  // Ranges reject values that would make a signal meaningless (a cosine above 1, a z of 0),
  // not merely unusual ones: a team may run a strict or a lax gate.
  static const std::vector<ThresholdDef> defs = {
      {"max_stable_rank_ratio", &Thresholds::max_stable_rank_ratio, nullptr, 0.0, 1.0,
       "LoRA: warn when the stable rank of ΔW over the module's rank r exceeds this (the update spreads evenly over all r directions, like noise)"},
      {"stable_rank_z", &Thresholds::stable_rank_z, nullptr, 0.5, 1e6,
       "merged checkpoints: warn when a matrix's log stable rank of ΔW is this many robust standard deviations above its peers'"},
      {"collapse_stable_rank", &Thresholds::collapse_stable_rank, nullptr, 1.0, 1e6,
       "warn when the stable rank of ΔW is below this (one direction carries the update)"},
      {"intruder_cos", &Thresholds::intruder_cos, nullptr, 0.0, 1.0,
       "a top singular vector of W+ΔW whose best |cos| with the base's top singular vectors is below this is an intruder dimension"},
      {"intruder_top_k", nullptr, &Thresholds::intruder_top_k, 1, 256,
       "top singular vectors of W+ΔW examined for intruders"},
      {"intruder_base_k", nullptr, &Thresholds::intruder_base_k, 1, 512,
       "top singular vectors of the base W that intruders are matched against"},
      {"intruder_fail_sigma", &Thresholds::intruder_fail_sigma, nullptr, 0.0, 1e6,
       "an intruder fails the merge when its singular value is at least this times the base's largest (it dominates the layer)"},
      {"outlier_z", &Thresholds::outlier_z, nullptr, 0.5, 1e6,
       "warn when a matrix's log relative change ‖ΔW‖/‖W‖ is this many robust standard deviations above its peers'"},
      {"outlier_fail_z", &Thresholds::outlier_fail_z, nullptr, 0.5, 1e6,
       "fail when the robust z of the relative change exceeds this"},
      {"min_peers", nullptr, &Thresholds::min_peers, 3, 1e6,
       "fewest peers (the same weight in other layers) a robust z is computed from; smaller groups are not scored"},
      {"behavior_kl_warn", &Thresholds::behavior_kl_warn, nullptr, 0.0, 1e6,
       "probes (--prompts): warn when the mean KL divergence of the next-token distributions, base to fine-tune, exceeds this (nats)"},
      {"behavior_kl_fail", &Thresholds::behavior_kl_fail, nullptr, 0.0, 1e6,
       "probes: fail when the mean next-token KL divergence exceeds this (nats)"},
      {"behavior_top1_warn", &Thresholds::behavior_top1_warn, nullptr, 0.0, 1.0,
       "probes: warn when the share of prompts on which base and fine-tune pick the same next token is below this"},
      {"behavior_top1_fail", &Thresholds::behavior_top1_fail, nullptr, 0.0, 1.0,
       "probes: fail when the top-1 agreement is below this"},
      {"behavior_edit_warn", &Thresholds::behavior_edit_warn, nullptr, 0.0, 1.0,
       "probes: warn when the greedy continuations' mean token edit distance, as a share of their length, exceeds this"},
  };
  return defs;
}

// Defaults, from the measurements in README.md ("How the thresholds were chosen"); reproduce them
// with `tests/fixtures/make_merge_fixtures.py --measure` (400 synthetic LoRA spectra per family and
// rank, 2000 synthetic models per robust-z setting, 200 weights per intruder case).
Thresholds default_thresholds() {
  Thresholds t;
  // Trained-like LoRA spectra (geometric 0.5-0.85, power law 0.5-1.5) reach at most 0.65 (r = 4),
  // 0.42 (r = 8), 0.22 (r = 16); isotropic updates are 0.92 or more at every rank; Gaussian factors
  // (an untrained update) at Llama sizes are 0.75-0.97 for r ≤ 16. 0.75 keeps every healthy draw out
  // with 0.1 to spare and flags the isotropic and most Gaussian ones.
  t.max_stable_rank_ratio = 0.75;
  // The robust-z convention (Iglewicz & Hoaglin's 3.5 for the modified z-score), as for outlier_z.
  t.stable_rank_z = 3.5;
  // The lowest healthy stable rank measured is 1.18 (power law 1.5, r = 4); updates whose other
  // directions hold at most 10% of the first one's singular value stay below 1.09 for r ≤ 16, and
  // at most 20%, below 1.18 in 99% of r ≤ 8 draws. 1.15 sits between.
  t.collapse_stable_rank = 1.15;
  // PEFT's intruders.py default. With base singular vectors matched as clusters (intruders.hpp),
  // healthy updates score ≥ 0.96 and planted new directions ≈ 0, so the choice is not delicate.
  t.intruder_cos = 0.5;
  // PEFT's top_k; matched against 3× as many base vectors, so that a base direction moving up a few
  // ranks is not taken for a new one.
  t.intruder_top_k = 10;
  t.intruder_base_k = 32;
  // A new direction at least as strong as everything the layer had before overrides the layer.
  t.intruder_fail_sigma = 1.0;
  // With the 0.25 log-spread floor (signals.hpp): healthy models warned in ≤ 0.2% of draws (per-module
  // spread 20%), a module 3× its peers warned in 68-98%, one 40× its peers past 10 (median z 11-15).
  t.outlier_z = 3.5;
  t.outlier_fail_z = 10.0;
  // A median and a MAD from fewer than five values are not worth a verdict.
  t.min_peers = 5;
  // Behavioural probes are prompts the fine-tune should leave alone (general text, safety, formats):
  // a regression check, not a measure of what the fine-tune was for. Measured on the demo models
  // (README, "Behavioural scores"; 8 in-domain and the 8 built-in probes): the healthy LoRA, the full
  // fine-tune and its checkpoints reach a mean KL of 0.10-0.41 nats, a top-1 agreement of 0.5-1.0
  // and greedy edit fractions of 0.44-0.70; the same LoRA with its alpha doubled, 1.24-1.75 nats,
  // 0.38-0.50 and 0.78-0.88; alpha x4 to x16, 4.6-12.8 nats, 0-0.25 and 0.95-1.0. The warn lines sit
  // above every healthy figure, the KL fail line below every broken one.
  t.behavior_kl_warn = 0.5;
  t.behavior_kl_fail = 1.0;
  t.behavior_top1_warn = 0.5;
  t.behavior_top1_fail = 0.3;
  // Greedy continuations of a healthy fine-tune part ways quickly (on a character-level model, after
  // a few characters): only near-total divergence is a signal.
  t.behavior_edit_warn = 0.9;
  return t;
}

std::vector<OptionSpec> threshold_options() {
  const Thresholds d = default_thresholds();
  std::vector<OptionSpec> out;
  for (const auto& def : threshold_defs()) {
    OptionSpec o;
    o.name = def.flag();
    o.type = def.real != nullptr ? OptionType::Float : OptionType::Int;
    o.value_name = def.real != nullptr ? "X" : "N";
    std::ostringstream help;
    help << def.help << " (default " << def.get(d) << ")";
    o.help = help.str();
    out.push_back(std::move(o));
  }
  return out;
}

namespace {

const ThresholdDef* find_def(const std::string& key) {
  for (const auto& d : threshold_defs())
    if (key == d.key) return &d;
  return nullptr;
}

std::string known_keys() {
  std::string s;
  for (const auto& d : threshold_defs()) s += (s.empty() ? "" : ", ") + std::string(d.key);
  return s;
}

// A value in range (and whole for an integer threshold); returns the reason when it is not.
std::string check_value(const ThresholdDef& d, double v) {
  if (!std::isfinite(v) || v < d.min || v > d.max) {
    std::ostringstream s;
    s << "must be in [" << d.min << ", " << d.max << "], got " << v;
    return s.str();
  }
  if (d.whole != nullptr && v != std::floor(v)) return "must be an integer, got " + std::to_string(v);
  return "";
}

void check_consistency(const Thresholds& t, const std::string& where) {
  if (t.outlier_fail_z < t.outlier_z)
    throw UsageError(where + "outlier_fail_z (" + std::to_string(t.outlier_fail_z) + ") is below outlier_z (" +
                     std::to_string(t.outlier_z) + ")");
  if (t.behavior_kl_fail < t.behavior_kl_warn)
    throw UsageError(where + "behavior_kl_fail (" + std::to_string(t.behavior_kl_fail) + ") is below behavior_kl_warn (" +
                     std::to_string(t.behavior_kl_warn) + ")");
  if (t.behavior_top1_fail > t.behavior_top1_warn)
    throw UsageError(where + "behavior_top1_fail (" + std::to_string(t.behavior_top1_fail) +
                     ") is above behavior_top1_warn (" + std::to_string(t.behavior_top1_warn) + ")");
}

}  // namespace

void apply_threshold_file(ResolvedThresholds& r, const rapidjson::Value& doc, const std::string& file) {
  if (!doc.IsObject()) throw InputError(file, "expected a JSON object of thresholds, e.g. {\"outlier_z\": 5}");
  for (auto it = doc.MemberBegin(); it != doc.MemberEnd(); ++it) {
    const std::string key = it->name.GetString();
    const ThresholdDef* d = find_def(key);
    if (d == nullptr) throw InputError(file, "unknown threshold '" + key + "' (known: " + known_keys() + ")");
    if (!it->value.IsNumber()) throw InputError(file, "threshold '" + key + "' must be a number");
    const double v = it->value.GetDouble();
    const std::string bad = check_value(*d, v);
    if (!bad.empty()) throw InputError(file, "threshold '" + key + "' " + bad);
    d->set(r.values, v);
    r.source[key] = "file";
  }
  r.file = file;
}

ResolvedThresholds resolve_thresholds(const Args& args) {
  ResolvedThresholds r;
  r.values = default_thresholds();
  for (const auto& d : threshold_defs()) r.source[d.key] = "default";
  if (auto file = args.opt_str("thresholds")) {
    const rapidjson::Document doc = json::parse(read_text_file(*file), *file);
    apply_threshold_file(r, doc, *file);
  }
  for (const auto& d : threshold_defs()) {
    if (!args.has(d.flag())) continue;
    const double v = d.real != nullptr ? args.number(d.flag()) : static_cast<double>(args.integer(d.flag()));
    const std::string bad = check_value(d, v);
    if (!bad.empty()) throw UsageError("option --" + d.flag() + ": " + bad);
    d.set(r.values, v);
    r.source[d.key] = "flag";
  }
  check_consistency(r.values, r.file.empty() ? "thresholds: " : r.file + ": ");
  return r;
}

rapidjson::Value thresholds_json(const Thresholds& t, json::Alloc& a) {
  rapidjson::Value o(rapidjson::kObjectType);
  for (const auto& d : threshold_defs()) {
    if (d.whole != nullptr) json::put(o, d.key, rapidjson::Value(t.*d.whole), a);
    else json::put(o, d.key, json::num(t.*d.real), a);
  }
  return o;
}

}  // namespace aquin::merge
