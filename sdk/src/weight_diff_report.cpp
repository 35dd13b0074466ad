#include <aquin/sdk/json.hpp>
#include <aquin/sdk/weight_diff_report.hpp>

#include <algorithm>
#include <cmath>
#include <map>

namespace aquin {

using json::Alloc;
using json::num;
using json::put;
using json::str;

rapidjson::Value checkpoint_json(const Checkpoint& ck, Alloc& a) {
  rapidjson::Value o(rapidjson::kObjectType);
  put(o, "path", str(ck.path.string(), a), a);
  put(o, "format", str(ck.format, a), a);
  put(o, "step", json::opt_int(ck.step), a);
  put(o, "step_source", ck.step ? str(ck.step_source, a) : rapidjson::Value(rapidjson::kNullType), a);
  put(o, "tensors", rapidjson::Value(static_cast<uint64_t>(ck.tensors->tensors().size())), a);
  if (ck.is_lora) {
    rapidjson::Value l(rapidjson::kObjectType);
    put(l, "modules", rapidjson::Value(static_cast<uint64_t>(ck.lora.size())), a);
    std::map<int64_t, int> ranks;
    std::map<double, int> scales;
    for (const auto& m : ck.lora) {
      ranks[m.rank]++;
      scales[m.scale]++;
    }
    rapidjson::Value r(rapidjson::kArrayType), s(rapidjson::kArrayType);
    for (const auto& [k, _] : ranks) r.PushBack(rapidjson::Value(k), a);
    for (const auto& [k, _] : scales) s.PushBack(num(k), a);
    put(l, "ranks", std::move(r), a);
    put(l, "scales", std::move(s), a);
    for (const auto& [k, v] : ck.notes) put(l, k, str(v, a), a);
    put(o, "lora", std::move(l), a);
  }
  return o;
}

rapidjson::Value matrix_json(const MatrixDiff& m, Alloc& a) {
  rapidjson::Value o(rapidjson::kObjectType);
  put(o, "param", str(m.param, a), a);
  put(o, "source_name", str(m.source_name.empty() ? m.base_source_name : m.source_name, a), a);
  put(o, "layer", m.layer ? rapidjson::Value(*m.layer) : rapidjson::Value(rapidjson::kNullType), a);
  put(o, "kind", str(kind_name(m.kind), a), a);
  put(o, "shape", json::int_array(m.shape, a), a);
  put(o, "status", str(m.status, a), a);
  if (!m.detail.empty()) put(o, "detail", str(m.detail, a), a);
  put(o, "base_norm", num(m.base_norm), a);
  put(o, "delta_norm", num(m.delta_norm), a);
  put(o, "relative", num(m.relative), a);
  put(o, "spectral_norm", num(m.spectral_norm), a);
  put(o, "spectral_rel_error", num(m.spectral_rel_error), a);
  put(o, "stable_rank", num(m.stable_rank), a);
  put(o, "max_abs_delta", num(m.max_abs_delta), a);
  put(o, "noise_floor", num(m.noise_floor), a);
  put(o, "below_noise_floor", rapidjson::Value(m.below_noise_floor), a);
  if (!m.base_dtype.empty()) put(o, "base_dtype", str(m.base_dtype, a), a);
  if (!m.checkpoint_dtype.empty()) put(o, "checkpoint_dtype", str(m.checkpoint_dtype, a), a);
  if (m.non_finite > 0) put(o, "non_finite", rapidjson::Value(m.non_finite), a);
  if (m.lora) {
    put(o, "lora_rank", rapidjson::Value(m.lora_rank), a);
    put(o, "lora_scale", num(m.lora_scale), a);
  }
  return o;
}

namespace {

struct Agg {
  double base_sq = 0, delta_sq = 0;
  std::map<std::string, double> kind_delta_sq;
};

bool counted(const MatrixDiff& m) { return m.status == "ok" && std::isfinite(m.delta_norm); }

std::map<int, Agg> by_layer(const WeightDiff& wd) {
  std::map<int, Agg> out;
  for (const auto& m : wd.matrices) {
    if (!m.layer || !counted(m)) continue;
    Agg& g = out[*m.layer];
    g.base_sq += m.base_norm * m.base_norm;
    g.delta_sq += m.delta_norm * m.delta_norm;
    g.kind_delta_sq[kind_name(m.kind)] += m.delta_norm * m.delta_norm;
  }
  return out;
}

}  // namespace

rapidjson::Value layers_json(const WeightDiff& wd, Alloc& a) {
  rapidjson::Value arr(rapidjson::kArrayType);
  for (const auto& [layer, g] : by_layer(wd)) {
    rapidjson::Value o(rapidjson::kObjectType);
    put(o, "layer", rapidjson::Value(layer), a);
    put(o, "base_norm", num(std::sqrt(g.base_sq)), a);
    put(o, "delta_norm", num(std::sqrt(g.delta_sq)), a);
    put(o, "relative", num(g.base_sq > 0 ? std::sqrt(g.delta_sq / g.base_sq) : NAN), a);
    rapidjson::Value k(rapidjson::kObjectType);
    for (const auto& [kind, d] : g.kind_delta_sq) put(k, kind, num(std::sqrt(d)), a);
    put(o, "delta_norm_by_kind", std::move(k), a);
    arr.PushBack(o, a);
  }
  return arr;
}

rapidjson::Value summary_json(const WeightDiff& wd, const Checkpoint& ck, Alloc& a) {
  rapidjson::Value o(rapidjson::kObjectType);
  std::map<std::string, int> status_counts;
  int changed = 0, below_floor = 0;
  double max_rel = -1;
  std::string max_rel_param;
  std::vector<double> sranks;
  for (const auto& m : wd.matrices) {
    status_counts[m.status]++;
    if (!counted(m)) continue;
    if (m.delta_norm > 0) ++changed;
    if (m.below_noise_floor) ++below_floor;
    if (std::isfinite(m.relative) && m.relative > max_rel) {
      max_rel = m.relative;
      max_rel_param = m.param;
    }
    if (std::isfinite(m.stable_rank) && !m.shape.empty() && m.shape.size() == 2) sranks.push_back(m.stable_rank);
  }
  put(o, "matrices", rapidjson::Value(static_cast<uint64_t>(wd.matrices.size())), a);
  put(o, "compared", rapidjson::Value(status_counts["ok"]), a);
  put(o, "changed", rapidjson::Value(changed), a);
  put(o, "below_noise_floor", rapidjson::Value(below_floor), a);
  put(o, "missing_in_checkpoint", rapidjson::Value(status_counts["missing_in_checkpoint"]), a);
  put(o, "missing_in_base", rapidjson::Value(status_counts["missing_in_base"]), a);
  put(o, "shape_mismatch", rapidjson::Value(status_counts["shape_mismatch"]), a);
  put(o, "non_finite", rapidjson::Value(status_counts["non_finite"]), a);
  put(o, "total_base_norm", num(wd.total_base_norm), a);
  put(o, "total_delta_norm", num(wd.total_delta_norm), a);
  put(o, "relative", num(wd.total_base_norm > 0 ? wd.total_delta_norm / wd.total_base_norm : NAN), a);
  put(o, "relative_scope", str(ck.is_lora ? "adapted matrices" : "all compared tensors", a), a);
  put(o, "max_relative", num(max_rel >= 0 ? max_rel : NAN), a);
  put(o, "max_relative_param", max_rel_param.empty() ? rapidjson::Value(rapidjson::kNullType) : str(max_rel_param, a), a);
  if (!sranks.empty()) {
    std::sort(sranks.begin(), sranks.end());
    rapidjson::Value s(rapidjson::kObjectType);
    put(s, "min", num(sranks.front()), a);
    put(s, "median", num(sranks[sranks.size() / 2]), a);
    put(s, "max", num(sranks.back()), a);
    put(o, "stable_rank", std::move(s), a);
  }
  return o;
}

std::vector<Table> weight_diff_tables(const WeightDiff& wd, const Checkpoint& ck) {
  std::vector<Table> tables;
  static const std::vector<std::pair<std::string, std::string>> cols = {
      {"q", "q"}, {"k", "k"}, {"v", "v"}, {"o", "o"}, {"mlp_gate", "gate"}, {"mlp_up", "up"}, {"mlp_down", "down"}};
  // Per-layer grid: ‖ΔW‖_F (stable rank) of each weight matrix.
  std::map<int, std::map<std::string, const MatrixDiff*>> grid;
  std::map<int, double> norm_delta_sq;
  bool any_floor = false;
  for (const auto& m : wd.matrices) {
    if (!m.layer) continue;
    const std::string k = kind_name(m.kind);
    bool is_weight = m.param.size() > 7 && m.param.compare(m.param.size() - 7, 7, ".weight") == 0;
    if (k == "norm" || !is_weight) {
      if (counted(m)) norm_delta_sq[*m.layer] += m.delta_norm * m.delta_norm;
      continue;
    }
    grid[*m.layer][k] = &m;
  }
  auto layers = by_layer(wd);
  if (!grid.empty()) {
    Table t;
    t.title = "Per layer: ‖ΔW‖_F (stable rank of ΔW)";
    t.columns = {"layer"};
    std::vector<std::string> present;
    for (const auto& [k, label] : cols) {
      bool any = false;
      for (const auto& [l, row] : grid) any = any || row.count(k);
      if (any) {
        present.push_back(k);
        t.columns.push_back(label);
      }
    }
    t.columns.push_back("norms+bias");
    t.columns.push_back("layer rel");
    for (const auto& [l, row] : grid) {
      std::vector<std::string> r = {std::to_string(l)};
      for (const auto& k : present) {
        auto it = row.find(k);
        if (it == row.end()) {
          r.push_back("");
          continue;
        }
        const MatrixDiff& m = *it->second;
        if (m.status != "ok") {
          r.push_back(m.status);
          continue;
        }
        std::string cell = fmt_num(m.delta_norm, 3);
        if (std::isfinite(m.stable_rank)) cell += " (" + fmt_num(m.stable_rank, 3) + ")";
        if (m.below_noise_floor) {
          cell += "*";
          any_floor = true;
        }
        r.push_back(cell);
      }
      r.push_back(norm_delta_sq.count(l) ? fmt_num(std::sqrt(norm_delta_sq[l]), 3) : "");
      auto lit = layers.find(l);
      r.push_back(lit != layers.end() && lit->second.base_sq > 0
                      ? fmt_num(100.0 * std::sqrt(lit->second.delta_sq / lit->second.base_sq), 3) + "%"
                      : "-");
      t.rows.push_back(std::move(r));
    }
    if (any_floor) t.notes.push_back("* at or below the checkpoint's half-precision rounding-noise floor");
    if (ck.is_lora) t.notes.push_back("LoRA: ΔW = scale·B@A; norms and stable ranks from the r×r problem");
    tables.push_back(std::move(t));
  }
  // Tensors outside the blocks and anything not compared.
  Table out;
  out.title = "Outside the blocks, and tensors not compared";
  out.columns = {"param", "shape", "status", "‖W‖_F", "‖ΔW‖_F", "relative", "stable rank", "max|Δ|"};
  auto shape_str = [](const std::vector<int64_t>& s) {
    std::string r;
    for (std::size_t i = 0; i < s.size(); ++i) r += (i ? "x" : "") + std::to_string(s[i]);
    return r;
  };
  for (const auto& m : wd.matrices) {
    if (m.layer && m.status == "ok") continue;
    out.rows.push_back({m.param, shape_str(m.shape), m.status + (m.below_noise_floor ? "*" : ""), fmt_num(m.base_norm),
                        fmt_num(m.delta_norm), fmt_num(m.relative), fmt_num(m.stable_rank), fmt_num(m.max_abs_delta)});
  }
  if (!out.rows.empty()) tables.push_back(std::move(out));
  // The largest relative changes.
  std::vector<const MatrixDiff*> moved;
  for (const auto& m : wd.matrices)
    if (counted(m) && std::isfinite(m.relative) && m.delta_norm > 0) moved.push_back(&m);
  std::sort(moved.begin(), moved.end(), [](auto* x, auto* y) { return x->relative > y->relative; });
  if (!moved.empty()) {
    Table top;
    top.title = "Largest relative changes";
    top.columns = {"param", "‖ΔW‖_F", "relative", "‖ΔW‖_2", "stable rank", "max|Δ|"};
    for (std::size_t i = 0; i < moved.size() && i < 8; ++i) {
      const auto& m = *moved[i];
      top.rows.push_back({m.param, fmt_num(m.delta_norm), fmt_num(m.relative), fmt_num(m.spectral_norm),
                          fmt_num(m.stable_rank), fmt_num(m.max_abs_delta)});
    }
    tables.push_back(std::move(top));
  }
  return tables;
}

}  // namespace aquin
