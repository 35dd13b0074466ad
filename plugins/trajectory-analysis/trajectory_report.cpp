#include "trajectory_report.hpp"

#include <aquin/sdk/json.hpp>

#include <algorithm>
#include <cmath>
#include <set>

namespace aquin::trajectory {

using json::Alloc;
using json::num;
using json::put;
using json::str;

namespace {

// Kinds in the order a reader expects them (the canonical ParamKind order).
const std::vector<std::string>& kind_order() {
  static const std::vector<std::string> k = {"q",     "k",     "v",       "o",    "mlp_gate", "mlp_up",
                                             "mlp_down", "embed", "unembed", "norm", "other"};
  return k;
}

double root(double sq) { return std::sqrt(sq); }

std::string percent(double rel) { return std::isfinite(rel) ? fmt_num(100.0 * rel, 3) + "%" : "-"; }

// "<path>: problem" -> "problem", for the table (the warnings keep the whole message).
std::string without_path(const Row& row) {
  const std::string prefix = row.path.string() + ": ";
  return row.error.compare(0, prefix.size(), prefix) == 0 ? row.error.substr(prefix.size()) : row.error;
}

rapidjson::Value kinds_json(const std::map<std::string, double>& kind_sq, Alloc& a) {
  rapidjson::Value o(rapidjson::kObjectType);
  for (const auto& k : kind_order())
    if (auto it = kind_sq.find(k); it != kind_sq.end()) put(o, k, num(root(it->second)), a);
  return o;
}

rapidjson::Value row_json(const Row& row, Alloc& a) {
  rapidjson::Value o(rapidjson::kObjectType);
  auto null = [] { return rapidjson::Value(rapidjson::kNullType); };
  put(o, "checkpoint", str(row.path.string(), a), a);
  put(o, "name", str(row.label, a), a);
  put(o, "format", row.format.empty() ? null() : str(row.format, a), a);
  put(o, "step", json::opt_int(row.step), a);
  put(o, "step_source", row.step ? str(row.step_source, a) : null(), a);
  put(o, "total_delta_norm", num(row.total_delta_norm), a);
  put(o, "total_base_norm", num(row.total_base_norm), a);
  put(o, "relative", num(row.relative), a);
  put(o, "relative_scope", row.ok() ? str(row.relative_scope, a) : null(), a);
  put(o, "compared", rapidjson::Value(row.compared), a);
  put(o, "changed", rapidjson::Value(row.changed), a);
  put(o, "below_noise_floor", rapidjson::Value(row.below_noise_floor), a);
  rapidjson::Value sr(rapidjson::kObjectType);
  put(sr, "min", num(row.stable_rank_min), a);
  put(sr, "median", num(row.stable_rank_median), a);
  put(sr, "max", num(row.stable_rank_max), a);
  put(o, "stable_rank", std::move(sr), a);
  rapidjson::Value layers(rapidjson::kArrayType);
  for (const auto& [layer, s] : row.layers) {
    rapidjson::Value l(rapidjson::kObjectType);
    put(l, "layer", rapidjson::Value(layer), a);
    put(l, "delta_norm", num(root(s.delta_sq)), a);
    put(l, "base_norm", num(root(s.base_sq)), a);
    put(l, "relative", num(s.base_sq > 0 ? root(s.delta_sq / s.base_sq) : NAN), a);
    put(l, "delta_norm_by_kind", kinds_json(s.kind_delta_sq, a), a);
    layers.PushBack(l, a);
  }
  put(o, "layers", std::move(layers), a);
  put(o, "delta_norm_by_kind", kinds_json(row.kind_delta_sq, a), a);
  rapidjson::Value moved(rapidjson::kArrayType);
  for (const auto& m : row.most_moved) {
    rapidjson::Value x(rapidjson::kObjectType);
    put(x, "param", str(m.param, a), a);
    put(x, "delta_norm", num(m.delta_norm), a);
    put(x, "relative", num(m.relative), a);
    put(x, "stable_rank", num(m.stable_rank), a);
    moved.PushBack(x, a);
  }
  put(o, "most_moved", std::move(moved), a);
  if (!row.ok()) put(o, "error", str(row.error, a), a);
  return o;
}

rapidjson::Value number_array(const std::vector<double>& v, Alloc& a) {
  rapidjson::Value arr(rapidjson::kArrayType);
  for (double x : v) arr.PushBack(num(x), a);
  return arr;
}

// Per-layer and per-kind ‖ΔW‖_F, one value per row (NaN where a row failed or lacks that layer/kind).
struct Series {
  std::map<int, std::vector<double>> by_layer;
  std::map<std::string, std::vector<double>> by_kind;  // in kind_order() when read through kinds()
  std::vector<double> total, relative, srank_median;
  std::vector<std::string> kinds() const {
    std::vector<std::string> out;
    for (const auto& k : kind_order())
      if (by_kind.count(k)) out.push_back(k);
    return out;
  }
};

Series make_series(const std::vector<Row>& rows) {
  Series s;
  std::set<int> layers;
  std::set<std::string> kinds;
  for (const auto& r : rows) {
    for (const auto& [l, _] : r.layers) layers.insert(l);
    for (const auto& [k, _] : r.kind_delta_sq) kinds.insert(k);
  }
  for (int l : layers) s.by_layer[l].assign(rows.size(), NAN);
  for (const auto& k : kinds) s.by_kind[k].assign(rows.size(), NAN);
  for (std::size_t i = 0; i < rows.size(); ++i) {
    const Row& r = rows[i];
    s.total.push_back(r.total_delta_norm);
    s.relative.push_back(r.relative);
    s.srank_median.push_back(r.stable_rank_median);
    for (const auto& [l, sums] : r.layers) s.by_layer[l][i] = root(sums.delta_sq);
    for (const auto& [k, sq] : r.kind_delta_sq) s.by_kind[k][i] = root(sq);
  }
  return s;
}

rapidjson::Value series_json(const std::vector<Row>& rows, const Series& s, Alloc& a) {
  rapidjson::Value o(rapidjson::kObjectType);
  rapidjson::Value names(rapidjson::kArrayType), steps(rapidjson::kArrayType);
  for (const auto& r : rows) {
    names.PushBack(str(r.label, a), a);
    steps.PushBack(json::opt_int(r.step), a);
  }
  put(o, "checkpoints", std::move(names), a);
  put(o, "steps", std::move(steps), a);
  put(o, "total_delta_norm", number_array(s.total, a), a);
  put(o, "relative", number_array(s.relative, a), a);
  put(o, "stable_rank_median", number_array(s.srank_median, a), a);
  rapidjson::Value by_layer(rapidjson::kObjectType);
  for (const auto& [l, v] : s.by_layer) put(by_layer, std::to_string(l), number_array(v, a), a);
  put(o, "by_layer", std::move(by_layer), a);
  rapidjson::Value by_kind(rapidjson::kObjectType);
  for (const auto& k : s.kinds()) put(by_kind, k, number_array(s.by_kind.at(k), a), a);
  put(o, "by_kind", std::move(by_kind), a);
  return o;
}

std::string step_text(const Row& r) { return r.step ? std::to_string(*r.step) : "-"; }

Table step_table(const std::vector<Row>& rows) {
  Table t;
  t.title = "Trajectory, by training step (checkpoints without a step last)";
  t.columns = {"step", "from", "checkpoint", "‖ΔW‖_F", "relative", "stable rank min/med/max", "moved most (relative)"};
  for (const auto& r : rows) {
    if (!r.ok()) {
      t.rows.push_back({step_text(r), r.step ? r.step_source : "-", r.label, "failed", "", "", without_path(r)});
      continue;
    }
    std::string srank = std::isfinite(r.stable_rank_median)
                            ? fmt_num(r.stable_rank_min, 3) + " / " + fmt_num(r.stable_rank_median, 3) + " / " +
                                  fmt_num(r.stable_rank_max, 3)
                            : "-";
    std::string moved = r.most_moved.empty() ? "-" : r.most_moved[0].param + " (" + percent(r.most_moved[0].relative) + ")";
    t.rows.push_back({step_text(r), r.step ? r.step_source : "-", r.label, fmt_num(r.total_delta_norm), percent(r.relative),
                      srank, moved});
  }
  t.notes.push_back("from: where the step came from (pt: the file's \"step\"; trainer_state: global_step; name: a number in the name)");
  t.notes.push_back("relative: ‖ΔW‖_F / ‖W_base‖_F over all compared tensors (over the adapted matrices for a LoRA adapter)");
  t.notes.push_back("stable rank of ΔW = ‖ΔW‖_F² / ‖ΔW‖_2², over the 2-D matrices of each checkpoint");
  return t;
}

void add_trend_row(Table& t, const std::string& name, const std::vector<double>& v) {
  double first = NAN, last = NAN, peak = NAN;
  for (double x : v) {
    if (!std::isfinite(x)) continue;
    if (std::isnan(first)) first = x;
    last = x;
    peak = std::isnan(peak) ? x : std::max(peak, x);
  }
  t.rows.push_back({name, fmt_num(first, 3), fmt_num(last, 3), fmt_num(peak, 3), sparkline(v)});
}

Table trend_table(const Series& s) {
  Table t;
  t.title = "‖ΔW‖_F over steps, per layer and per kind";
  t.columns = {"", "first", "last", "max", "trend"};
  for (const auto& [l, v] : s.by_layer) add_trend_row(t, "layer " + std::to_string(l), v);
  for (const auto& k : s.kinds()) add_trend_row(t, k, s.by_kind.at(k));
  t.notes.push_back("each trend is scaled to its own range; · marks a checkpoint that failed or lacks that layer/kind");
  return t;
}

}  // namespace

void sort_by_step(std::vector<Row>& rows) {
  std::stable_sort(rows.begin(), rows.end(), [](const Row& a, const Row& b) {
    if (a.step.has_value() != b.step.has_value()) return a.step.has_value();
    if (a.step && *a.step != *b.step) return *a.step < *b.step;
    return a.path < b.path;
  });
}

std::string sparkline(const std::vector<double>& values) {
  static const char* const bars[] = {"▁", "▂", "▃", "▄", "▅", "▆", "▇", "█"};
  double lo = INFINITY, hi = -INFINITY;
  for (double x : values)
    if (std::isfinite(x)) {
      lo = std::min(lo, x);
      hi = std::max(hi, x);
    }
  std::string out;
  for (double x : values) {
    if (!std::isfinite(x)) {
      out += "·";
      continue;
    }
    long level = hi > lo ? std::lround((x - lo) / (hi - lo) * 7.0) : (hi != 0 ? 3 : 0);
    out += bars[std::clamp(level, 0L, 7L)];
  }
  return out;
}

void build_report(const std::vector<Row>& rows, const std::vector<std::string>& discovery_warnings,
                  const ReportSettings& settings, Result& r) {
  r.card = "trajectoryAnalysis";
  auto& a = r.doc.GetAllocator();
  std::vector<const Row*> ok, failed;
  for (const auto& row : rows) (row.ok() ? ok : failed).push_back(&row);
  const Series series = make_series(rows);

  rapidjson::Value summary(rapidjson::kObjectType);
  put(summary, "checkpoints", rapidjson::Value(static_cast<uint64_t>(rows.size())), a);
  put(summary, "completed", rapidjson::Value(static_cast<uint64_t>(ok.size())), a);
  put(summary, "failed", rapidjson::Value(static_cast<uint64_t>(failed.size())), a);
  put(summary, "spectra", rapidjson::Value(settings.spectra), a);
  put(summary, "spectral_tol", settings.spectra ? num(settings.spectral_tol) : rapidjson::Value(rapidjson::kNullType), a);
  put(summary, "most_moved_per_row", rapidjson::Value(static_cast<uint64_t>(settings.top)), a);
  put(r.doc, "summary", std::move(summary), a);
  rapidjson::Value arr(rapidjson::kArrayType);
  for (const auto& row : rows) arr.PushBack(row_json(row, a), a);
  put(r.doc, "rows", std::move(arr), a);
  put(r.doc, "series", series_json(rows, series, a), a);

  std::size_t without_step = 0;
  std::optional<int64_t> first_step, last_step;
  for (const auto& row : rows) {
    if (!row.step) {
      ++without_step;
      continue;
    }
    if (!first_step) first_step = row.step;
    last_step = row.step;
  }
  std::string line = std::to_string(rows.size()) + " checkpoint(s) vs base " + settings.base_model;
  if (first_step) line += ": steps " + std::to_string(*first_step) + " to " + std::to_string(*last_step);
  if (without_step > 0) line += " (" + std::to_string(without_step) + " without a step, listed last)";
  r.headline.push_back(line);
  if (!ok.empty())
    r.headline.push_back("total ‖ΔW‖_F  " + sparkline(series.total) + "  " + fmt_num(ok.front()->total_delta_norm) +
                         " (" + ok.front()->label + ") to " + fmt_num(ok.back()->total_delta_norm) + " (" +
                         ok.back()->label + ")");
  r.headline.push_back(settings.spectra ? "stable ranks from spectral norms to relative tolerance " +
                                              fmt_num(settings.spectral_tol, 2)
                                        : "spectral norms skipped (--no-spectra): stable ranks only for LoRA adapters");
  if (!failed.empty())
    r.headline.push_back(std::to_string(failed.size()) + " of " + std::to_string(rows.size()) +
                         " checkpoint(s) failed: listed under warnings; the others are complete");

  r.tables.push_back(step_table(rows));
  if (!ok.empty()) r.tables.push_back(trend_table(series));

  r.warnings = discovery_warnings;
  for (const Row* f : failed) r.warnings.push_back("failed: " + f->error);
  std::set<std::string> seen(r.warnings.begin(), r.warnings.end());
  for (const auto& row : rows)
    for (const auto& w : row.warnings)
      if (seen.insert(w).second) r.warnings.push_back(w);

  r.exit_code = 0;
  for (const Row* f : failed) r.exit_code = std::max(r.exit_code, f->internal_error ? 3 : 1);
}

}  // namespace aquin::trajectory
