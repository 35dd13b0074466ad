#include "report.hpp"

#include <aquin/sdk/json.hpp>
#include <aquin/sdk/weight_diff_report.hpp>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <map>

namespace aquin::merge {

namespace {

using json::Alloc;
using json::num;
using json::put;
using json::str;

rapidjson::Value reason_json(const Reason& r, Alloc& a) {
  rapidjson::Value o(rapidjson::kObjectType);
  put(o, "signal", str(r.signal, a), a);
  put(o, "param", str(r.param, a), a);
  put(o, "value", num(r.value), a);
  put(o, "threshold", num(r.threshold), a);
  put(o, "severity", str(r.severity, a), a);
  put(o, "detail", str(r.detail, a), a);
  for (const auto& [k, v] : r.figures) put(o, k, num(v), a);
  return o;
}

rapidjson::Value intruder_json(const IntruderResult& res, Alloc& a) {
  rapidjson::Value o(rapidjson::kObjectType);
  put(o, "count", rapidjson::Value(res.intruders()), a);
  put(o, "method", str(res.exact ? "exact" : "randomized", a), a);
  put(o, "passes", rapidjson::Value(res.passes), a);
  put(o, "top_k", rapidjson::Value(res.top_k), a);
  put(o, "base_k", rapidjson::Value(res.base_k), a);
  put(o, "base_sigma1", num(res.base_sigma1), a);
  put(o, "update_norm", num(res.update_norm), a);
  put(o, "clusters", rapidjson::Value(res.clusters), a);
  put(o, "max_residual", num(res.max_residual), a);
  put(o, "seconds", num(res.seconds), a);
  rapidjson::Value vs(rapidjson::kArrayType);
  for (const auto& v : res.vectors) {
    rapidjson::Value x(rapidjson::kObjectType);
    put(x, "index", rapidjson::Value(v.index), a);
    put(x, "sigma", num(v.sigma), a);
    put(x, "best_cos", num(v.best_cos), a);
    put(x, "plain_cos", num(v.plain_cos), a);
    put(x, "best_match", rapidjson::Value(v.best_match), a);
    put(x, "overlap", num(v.overlap), a);
    put(x, "intruder", rapidjson::Value(v.intruder), a);
    vs.PushBack(x, a);
  }
  put(o, "vectors", std::move(vs), a);
  return o;
}

std::string seconds_text(double s) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3f", s);
  return buf;
}

std::string severity_upper(const std::string& v) {
  std::string s = v;
  for (auto& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return s;
}

}  // namespace

void fill_export(Result& r, const Analysis& an, const Checkpoint& ck, const WeightDiff& wd) {
  auto& a = r.doc.GetAllocator();
  put(r.doc, "mergeVerdict", str(an.verdict, a), a);
  put(r.doc, "verdict_basis", str(an.behavior ? "weights+behavior" : "weights", a), a);
  put(r.doc, "behavioral", rapidjson::Value(an.behavior.has_value()), a);
  put(r.doc, "behavioral_requested", rapidjson::Value(an.behavioral_requested), a);
  put(r.doc, "prompts", an.prompts.empty() ? rapidjson::Value(rapidjson::kNullType) : str(an.prompts, a), a);
  put(r.doc, "behavioral_scores",
      an.behavior ? behavior_json(*an.behavior, a) : rapidjson::Value(rapidjson::kNullType), a);
  rapidjson::Value reasons(rapidjson::kArrayType);
  for (const auto& x : an.reasons) reasons.PushBack(reason_json(x, a), a);
  put(r.doc, "reasons", std::move(reasons), a);

  put(r.doc, "thresholds", thresholds_json(an.thresholds.values, a), a);
  rapidjson::Value src(rapidjson::kObjectType);
  for (const auto& d : threshold_defs()) put(src, d.key, str(an.thresholds.source.at(d.key), a), a);
  put(r.doc, "thresholds_source", std::move(src), a);
  put(r.doc, "thresholds_file",
      an.thresholds.file.empty() ? rapidjson::Value(rapidjson::kNullType) : str(an.thresholds.file, a), a);

  rapidjson::Value sig(rapidjson::kObjectType);
  for (const auto& [name, s] : an.signals) {
    rapidjson::Value o(rapidjson::kObjectType);
    put(o, "evaluated", rapidjson::Value(s.evaluated), a);
    int warn = 0, fail = 0;
    for (const auto& x : s.reasons) (x.severity == "fail" ? fail : warn)++;
    put(o, "warn", rapidjson::Value(warn), a);
    put(o, "fail", rapidjson::Value(fail), a);
    put(o, "notes", json::str_array(s.notes, a), a);
    put(sig, name, std::move(o), a);
  }
  put(r.doc, "signals", std::move(sig), a);

  put(r.doc, "checkpoint", checkpoint_json(ck, a), a);
  put(r.doc, "summary", summary_json(wd, ck, a), a);
  std::map<std::string, const IntruderResult*> intr;
  for (const auto& x : an.intruders) intr[x.param] = &x;
  rapidjson::Value mats(rapidjson::kArrayType);
  for (const auto& m : wd.matrices) {
    rapidjson::Value o = matrix_json(m, a);
    rapidjson::Value merge(rapidjson::kObjectType);
    auto sit = an.scores.find(m.param);
    if (sit != an.scores.end()) {
      const MatrixScores& s = sit->second;
      put(merge, "peer_group", s.peer_group.empty() ? rapidjson::Value(rapidjson::kNullType) : str(s.peer_group, a), a);
      put(merge, "peers", rapidjson::Value(s.peers), a);
      put(merge, "stable_rank_ratio", num(s.stable_rank_ratio), a);
      put(merge, "stable_rank_z", num(s.stable_rank_z), a);
      put(merge, "relative_z", num(s.relative_z), a);
    }
    auto iit = intr.find(m.param);
    if (iit != intr.end()) put(merge, "intruders", intruder_json(*iit->second, a), a);
    put(o, "merge", std::move(merge), a);
    mats.PushBack(o, a);
  }
  put(r.doc, "matrices", std::move(mats), a);

  rapidjson::Value tm(rapidjson::kObjectType);
  for (const auto& [k, v] : an.timings) put(tm, k, num(v), a);
  put(r.doc, "timings_s", std::move(tm), a);
}

void fill_terminal(Result& r, const Analysis& an, const Checkpoint& ck, const WeightDiff& wd, const std::string& base) {
  int fail = 0, warn = 0;
  for (const auto& x : an.reasons) (x.severity == "fail" ? fail : warn)++;
  r.headline.push_back("merge verdict: " + severity_upper(an.verdict) + " (" + std::to_string(fail) + " fail, " +
                       std::to_string(warn) + " warn; " + (an.behavior ? "weights and behaviour" : "weight-only") + ")");
  std::string step = ck.step ? " step " + std::to_string(*ck.step) : "";
  r.headline.push_back("checkpoint " + ck.path.string() + " (" + ck.format + step + ") vs base " + base);
  if (an.verdict == "fail") r.headline.push_back("exit code 2: do not merge as is");

  if (!an.reasons.empty()) {
    Table t;
    t.title = "Reasons";
    t.columns = {"severity", "signal", "param", "value", "threshold", "detail"};
    for (const auto& x : an.reasons)
      t.rows.push_back({x.severity, x.signal, x.param, fmt_num(x.value), fmt_num(x.threshold), x.detail});
    r.tables.push_back(std::move(t));
  }
  Table s;
  s.title = "Signals";
  s.columns = {"signal", "evaluated", "warn", "fail", "seconds"};
  std::map<std::string, double> secs(an.timings.begin(), an.timings.end());
  for (const auto& [name, res] : an.signals) {
    int w = 0, f = 0;
    for (const auto& x : res.reasons) (x.severity == "fail" ? f : w)++;
    s.rows.push_back({name, std::to_string(res.evaluated), std::to_string(w), std::to_string(f),
                      secs.count(name) ? seconds_text(secs[name]) : "-"});
    for (const auto& n : res.notes) s.notes.push_back(name + ": " + n);
  }
  r.tables.push_back(std::move(s));
  if (an.behavior) r.tables.push_back(behavior_table(*an.behavior));
  // The per-layer grid of the weight diff gives the reasons their context.
  auto wt = weight_diff_tables(wd, ck);
  if (!wt.empty()) r.tables.push_back(std::move(wt.front()));
}

}  // namespace aquin::merge
