#include "checkpoint_summary.hpp"

#include "checkpoint_discovery.hpp"

#include <aquin/sdk/atomic_file.hpp>
#include <aquin/sdk/checkpoint.hpp>
#include <aquin/sdk/errors.hpp>
#include <aquin/sdk/json.hpp>

#include <algorithm>
#include <cmath>
#include <exception>

namespace aquin::trajectory {

namespace fs = std::filesystem;

namespace {

bool counted(const MatrixDiff& m) { return m.status == "ok" && std::isfinite(m.delta_norm); }


// The middle value, or the mean of the two middle values.
double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 == 1 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

void summarise(const WeightDiff& wd, const Checkpoint& ck, std::size_t top, Row& row) {
  row.total_delta_norm = wd.total_delta_norm;
  row.total_base_norm = wd.total_base_norm;
  row.relative = wd.total_base_norm > 0 ? wd.total_delta_norm / wd.total_base_norm : kNaN;
  row.relative_scope = ck.is_lora ? "adapted matrices" : "all compared tensors";
  std::vector<double> sranks;
  std::vector<const MatrixDiff*> moved;
  for (const auto& m : wd.matrices) {
    if (m.status == "ok") ++row.compared;
    if (!counted(m)) continue;
    const double dsq = m.delta_norm * m.delta_norm;
    if (m.delta_norm > 0) ++row.changed;
    if (m.below_noise_floor) ++row.below_noise_floor;
    row.kind_delta_sq[kind_name(m.kind)] += dsq;
    if (m.layer) {
      LayerSums& l = row.layers[*m.layer];
      l.delta_sq += dsq;
      if (std::isfinite(m.base_norm)) l.base_sq += m.base_norm * m.base_norm;
      l.kind_delta_sq[kind_name(m.kind)] += dsq;
    }
    if (m.shape.size() == 2 && std::isfinite(m.stable_rank)) sranks.push_back(m.stable_rank);
    if (std::isfinite(m.relative) && m.delta_norm > 0) moved.push_back(&m);
  }
  if (!sranks.empty()) {
    row.stable_rank_min = *std::min_element(sranks.begin(), sranks.end());
    row.stable_rank_max = *std::max_element(sranks.begin(), sranks.end());
    row.stable_rank_median = median(sranks);
  }
  const std::size_t n = std::min(top, moved.size());
  std::partial_sort(moved.begin(), moved.begin() + static_cast<std::ptrdiff_t>(n), moved.end(),
                    [](const MatrixDiff* a, const MatrixDiff* b) { return a->relative > b->relative; });
  for (std::size_t i = 0; i < n; ++i)
    row.most_moved.push_back({moved[i]->param, moved[i]->delta_norm, moved[i]->relative, moved[i]->stable_rank});
}

// A weights file matched inside a checkpoint folder (`out/checkpoint-500/model.safetensors`) has no
// step of its own: the folder's trainer_state.json or name has it. The folder, not the file, is what
// the SDK reads a step from, so the same order applies one level up. Only a checkpoint folder
// counts: the "3" of `runs/exp3/final.pt` is not a step.
void step_from_folder(const fs::path& file, Row& row) {
  std::error_code ec;
  const fs::path folder = file.parent_path();
  if (folder.empty() || !fs::is_regular_file(file, ec) || !is_checkpoint_dir(folder)) return;
  const fs::path state = folder / "trainer_state.json";
  if (fs::exists(state, ec)) {
    try {
      const auto d = json::parse(read_text_file(state), state.string());
      if (d.IsObject() && d.HasMember("global_step") && d["global_step"].IsInt64()) {
        row.step = d["global_step"].GetInt64();
        row.step_source = "trainer_state";
        return;
      }
    } catch (const InputError&) {
      // An unreadable trainer_state.json only loses this fallback; the name may still tell.
    }
  }
  if (auto s = step_from_name(folder)) {
    row.step = s;
    row.step_source = "name";
  }
}

}  // namespace

Row analyse_checkpoint(const fs::path& path, const std::string& label, const TensorStore& base,
                       const std::string& family, const WeightDiffOptions& opts, std::size_t top) {
  Row row;
  row.path = path;
  row.label = label;
  // Keeps what was learnt about the checkpoint (format, step) and drops any partial figures.
  auto fail = [&](const std::string& message, bool internal) {
    Row failed;
    failed.path = path;
    failed.label = label;
    failed.format = row.format;
    failed.step = row.step;
    failed.step_source = row.step_source;
    failed.error = message;
    failed.internal_error = internal;
    row = std::move(failed);
  };
  try {
    // The checkpoint (its maps and readers) lives only for this call.
    Checkpoint ck = open_checkpoint(path);
    row.format = ck.format;
    row.step = ck.step;
    row.step_source = ck.step ? ck.step_source : "";
    WeightDiff wd = compute_weight_diff(base, ck, family, opts);
    // As weight-diff does without --keep-going: the row fails, naming the broken tensors.
    if (const std::string broken = broken_tensors_message(wd); !broken.empty()) throw InputError(path.string(), broken);
    summarise(wd, ck, top, row);
    row.warnings = ck.warnings;
    row.warnings.insert(row.warnings.end(), wd.warnings.begin(), wd.warnings.end());
  } catch (const InputError& e) {
    fail(e.what(), false);
  } catch (const std::exception& e) {
    fail(path.string() + ": internal error: " + e.what(), true);
  }
  if (!row.step && !row.ok()) {
    // The checkpoint did not open: its name may still place it on the step axis.
    if (auto s = step_from_name(path)) {
      row.step = s;
      row.step_source = "name";
    }
  }
  if (!row.step) step_from_folder(path, row);
  return row;
}

}  // namespace aquin::trajectory
