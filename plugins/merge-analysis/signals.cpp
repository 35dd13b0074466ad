#include "signals.hpp"

#include <aquin/sdk/json.hpp>

#include <algorithm>
#include <cmath>

namespace aquin::merge {

namespace {

// Below this rank a LoRA's stable rank says little about its shape: a rank-1 module has stable rank
// 1 (and ratio 1) by construction, a rank-2 one cannot be told from a healthy steep spectrum.
constexpr int64_t kMinLoraRank = 4;

double median_of(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

bool is_matrix(const MatrixDiff& m) { return m.shape.size() == 2; }

// LoRA modules whose rank is too small for their stable rank to be judged.
bool lora_rank_too_small(const MatrixDiff& m) { return m.lora && m.lora_rank < kMinLoraRank; }

std::string g4(double v) { return fmt_num(v, 4); }

std::string too_few(const std::string& group, std::size_t n, const Thresholds& t) {
  return group + ": " + std::to_string(n) + " measurable member(s), fewer than min_peers = " +
         std::to_string(t.min_peers) + "; not scored against peers";
}

// The members of one peer group with a usable (positive, finite) value, and the logs of those values.
struct Group {
  std::vector<const MatrixDiff*> members;
  std::vector<double> logs;
};

template <class Value>
std::map<std::string, Group> groups_of(const WeightDiff& wd, Value value) {
  std::map<std::string, Group> out;
  for (const auto& m : wd.matrices) {
    const std::string g = peer_group(m);
    if (g.empty() || !measurable(m)) continue;
    const double v = value(m);
    if (!(v > 0) || !std::isfinite(v)) continue;
    out[g].members.push_back(&m);
    out[g].logs.push_back(std::log(v));
  }
  return out;
}

// Scores every group of `value`'s peer groups with at least min_peers members by the robust z of
// its log values (groups too small are noted), records each member's group in `scores`, and calls
// visit(member, z, peer_median, group_name, group_size, its MatrixScores).
template <class Value, class Visit>
void score_peer_groups(const WeightDiff& wd, Value value, const Thresholds& t, SignalResult& out, ScoreTable& scores,
                       Visit visit) {
  for (const auto& [name, g] : groups_of(wd, value)) {
    if (static_cast<int64_t>(g.members.size()) < t.min_peers) {
      out.notes.push_back(too_few(name, g.members.size(), t));
      continue;
    }
    double med = 0;
    const std::vector<double> z = robust_z(g.logs, kMinLogSpread, &med);
    out.evaluated += static_cast<int>(z.size());
    for (std::size_t i = 0; i < z.size(); ++i) {
      const MatrixDiff& m = *g.members[i];
      MatrixScores& s = scores[m.param];
      s.peer_group = name;
      s.peers = static_cast<int>(g.members.size());
      visit(m, z[i], std::exp(med), name, g.members.size(), s);
    }
  }
}

}  // namespace

bool measurable(const MatrixDiff& m) {
  return m.status == "ok" && std::isfinite(m.delta_norm) && m.delta_norm > 0 && !m.below_noise_floor;
}

std::string peer_group(const MatrixDiff& m) {
  if (!m.layer) return "";
  const std::string needle = "." + std::to_string(*m.layer) + ".";
  const std::string prefix = "blocks." + std::to_string(*m.layer) + ".";
  if (m.param.compare(0, prefix.size(), prefix) == 0) return "blocks.*." + m.param.substr(prefix.size());
  const auto at = m.param.find(needle);
  if (at == std::string::npos) return "";
  return m.param.substr(0, at) + ".*." + m.param.substr(at + needle.size());
}

std::vector<double> robust_z(const std::vector<double>& x, double min_scale, double* median, double* scale) {
  if (x.empty()) return {};
  const double med = median_of(x);
  std::vector<double> dev;
  dev.reserve(x.size());
  for (double v : x) dev.push_back(std::abs(v - med));
  const double s = std::max(1.4826 * median_of(dev), min_scale);
  if (median) *median = med;
  if (scale) *scale = s;
  std::vector<double> z;
  z.reserve(x.size());
  for (double v : x) z.push_back((v - med) / s);
  return z;
}

SignalResult integrity_reasons(const WeightDiff& wd) {
  SignalResult out;
  out.evaluated = static_cast<int>(wd.matrices.size());
  for (const auto& m : wd.matrices) {
    if (m.status == "ok") continue;
    Reason r;
    r.signal = m.status;
    r.param = m.param;
    r.severity = "fail";
    if (m.status == "non_finite") {
      r.value = static_cast<double>(m.non_finite);
      r.threshold = 0;
      r.detail = m.detail + " in the merged weight: merging would poison the model";
    } else if (m.status == "shape_mismatch") {
      r.detail = m.detail + ": the checkpoint was not made from this base model";
    } else if (m.status == "missing_in_checkpoint") {
      r.detail = "the base model has this tensor and the checkpoint does not";
    } else {
      r.detail = m.lora ? "the adapter targets a weight the base model does not have"
                        : "the checkpoint has a tensor the base model does not";
    }
    out.reasons.push_back(std::move(r));
  }
  return out;
}

SignalResult stable_rank_reasons(const WeightDiff& wd, const Thresholds& t, ScoreTable& scores) {
  SignalResult out;
  int small_rank = 0;
  // LoRA: the stable rank can reach r only when all r directions carry equal weight, which is what
  // an untrained or noise-driven update looks like; trained updates concentrate in a few.
  for (const auto& m : wd.matrices) {
    if (!m.lora || !measurable(m) || !is_matrix(m) || !std::isfinite(m.stable_rank)) continue;
    if (lora_rank_too_small(m)) {
      ++small_rank;
      continue;
    }
    const double ratio = m.stable_rank / static_cast<double>(m.lora_rank);
    scores[m.param].stable_rank_ratio = ratio;
    ++out.evaluated;
    if (ratio <= t.max_stable_rank_ratio) continue;
    Reason r;
    r.signal = "stable_rank_ratio";
    r.param = m.param;
    r.value = ratio;
    r.threshold = t.max_stable_rank_ratio;
    r.severity = "warn";
    r.detail = "stable rank " + g4(m.stable_rank) + " of rank " + std::to_string(m.lora_rank) +
               ": the update spreads almost evenly over all its directions, like noise";
    r.figures = {{"stable_rank", m.stable_rank}, {"rank", static_cast<double>(m.lora_rank)}};
    out.reasons.push_back(std::move(r));
  }
  if (small_rank > 0)
    out.notes.push_back(std::to_string(small_rank) + " LoRA module(s) of rank below " + std::to_string(kMinLoraRank) +
                        " not scored (their stable rank cannot tell noise from a trained update)");
  // Merged: no rank to compare with, so each matrix is compared with the same weight in other layers.
  score_peer_groups(
      wd, [](const MatrixDiff& m) { return !m.lora && is_matrix(m) ? m.stable_rank : kNaN; }, t, out, scores,
      [&](const MatrixDiff& m, double z, double median, const std::string& name, std::size_t peers, MatrixScores& s) {
        s.stable_rank_z = z;
        if (z <= t.stable_rank_z) return;
        Reason r;
        r.signal = "stable_rank_z";
        r.param = m.param;
        r.value = z;
        r.threshold = t.stable_rank_z;
        r.severity = "warn";
        r.detail = "stable rank " + g4(m.stable_rank) + " against a median of " + g4(median) + " over " +
                   std::to_string(peers) + " " + name + ": a noise-like change in this layer";
        r.figures = {{"stable_rank", m.stable_rank}, {"peer_median", median}, {"peers", static_cast<double>(peers)}};
        out.reasons.push_back(std::move(r));
      });
  return out;
}

SignalResult collapse_reasons(const WeightDiff& wd, const Thresholds& t) {
  SignalResult out;
  for (const auto& m : wd.matrices) {
    if (!measurable(m) || !is_matrix(m) || !std::isfinite(m.stable_rank) || lora_rank_too_small(m)) continue;
    if (std::min(m.shape[0], m.shape[1]) < kMinLoraRank) continue;
    ++out.evaluated;
    if (m.stable_rank >= t.collapse_stable_rank) continue;
    Reason r;
    r.signal = "rank_collapse";
    r.param = m.param;
    r.value = m.stable_rank;
    r.threshold = t.collapse_stable_rank;
    r.severity = "warn";
    r.detail = "stable rank " + g4(m.stable_rank) +
               (m.lora ? " of rank " + std::to_string(m.lora_rank) : std::string()) +
               ": one direction carries the whole update";
    r.figures = {{"stable_rank", m.stable_rank}};
    if (m.lora) r.figures.emplace_back("rank", static_cast<double>(m.lora_rank));
    out.reasons.push_back(std::move(r));
  }
  return out;
}

SignalResult outlier_reasons(const WeightDiff& wd, const Thresholds& t, ScoreTable& scores) {
  SignalResult out;
  score_peer_groups(
      wd, [](const MatrixDiff& m) { return m.relative; }, t, out, scores,
      [&](const MatrixDiff& m, double z, double median, const std::string& name, std::size_t peers, MatrixScores& s) {
        s.relative_z = z;
        if (z <= t.outlier_z) return;
        const bool fail = z > t.outlier_fail_z;
        Reason r;
        r.signal = "relative_change_outlier";
        r.param = m.param;
        r.value = z;
        r.threshold = fail ? t.outlier_fail_z : t.outlier_z;
        r.severity = fail ? "fail" : "warn";
        r.detail = "‖ΔW‖/‖W‖ = " + g4(m.relative) + ", " + g4(m.relative / median) + "× the median of " +
                   std::to_string(peers) + " " + name;
        r.figures = {{"relative", m.relative}, {"peer_median", median}, {"peers", static_cast<double>(peers)}};
        out.reasons.push_back(std::move(r));
      });
  return out;
}

SignalResult intruder_reasons(const std::vector<IntruderResult>& results, const Thresholds& t) {
  SignalResult out;
  out.evaluated = static_cast<int>(results.size());
  for (const auto& res : results) {
    const int n = res.intruders();
    if (n == 0) continue;
    const VectorMatch* worst = nullptr;  // lowest best |cos|
    double top_sigma = 0;                // largest intruder σ
    for (const auto& v : res.vectors) {
      if (!v.intruder) continue;
      if (worst == nullptr || v.best_cos < worst->best_cos) worst = &v;
      top_sigma = std::max(top_sigma, v.sigma);
    }
    const double ratio = res.base_sigma1 > 0 ? top_sigma / res.base_sigma1 : kNaN;
    const bool fail = ratio >= t.intruder_fail_sigma;
    Reason r;
    r.signal = "intruder";
    r.param = res.param;
    r.value = worst->best_cos;
    r.threshold = t.intruder_cos;
    r.severity = fail ? "fail" : "warn";
    r.detail = "W+ΔW has " + std::to_string(n) + " of its top " + std::to_string(res.top_k) +
               " singular vectors matching none of the base's top " + std::to_string(res.base_k) +
               " (best |cos| " + g4(worst->best_cos) + " for #" + std::to_string(worst->index + 1) +
               "); the largest such σ is " + g4(ratio) + "·σ₁(W)" + (fail ? ": it dominates the layer" : "");
    r.figures = {{"intruders", static_cast<double>(n)},
                 {"index", static_cast<double>(worst->index)},
                 {"plain_cos", worst->plain_cos},
                 {"overlap", worst->overlap},
                 {"sigma_ratio", ratio}};
    out.reasons.push_back(std::move(r));
  }
  return out;
}

std::string verdict(const std::vector<Reason>& reasons) {
  bool warn = false;
  for (const auto& r : reasons) {
    if (r.severity == "fail") return "fail";
    warn = warn || r.severity == "warn";
  }
  return warn ? "warn" : "pass";
}

}  // namespace aquin::merge
