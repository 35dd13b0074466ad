// One row of a trajectory: a checkpoint compared with the base, boiled down to what is plotted
// over steps. The full WeightDiff is dropped as soon as the row is made, so memory does not grow
// with the number of checkpoints.
#pragma once

#include <aquin/sdk/tensor_store.hpp>
#include <aquin/sdk/weight_diff.hpp>

#include <cstdint>
#include <filesystem>
#include <limits>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace aquin::trajectory {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

/// A matrix that moved most in one checkpoint.
struct MovedMatrix {
  std::string param;
  double delta_norm = kNaN, relative = kNaN, stable_rank = kNaN;
};

/// ‖ΔW‖² and ‖W_base‖² summed over the compared tensors of one layer.
struct LayerSums {
  double delta_sq = 0, base_sq = 0;
  std::map<std::string, double> kind_delta_sq;
};

struct Row {
  std::filesystem::path path;
  std::string label;
  std::string format;                ///< "" when the checkpoint could not be opened
  std::optional<int64_t> step;
  std::string step_source;           ///< "pt", "trainer_state", "name", or "" without a step
  std::string error;                 ///< one line; empty when the row is complete
  bool internal_error = false;       ///< the error was not about the input (a bug): exit 3
  double total_delta_norm = kNaN, total_base_norm = kNaN, relative = kNaN;
  std::string relative_scope;        ///< "all compared tensors" or, for adapters, "adapted matrices"
  int compared = 0, changed = 0, below_noise_floor = 0;
  double stable_rank_min = kNaN, stable_rank_median = kNaN, stable_rank_max = kNaN;
  std::map<int, LayerSums> layers;
  std::map<std::string, double> kind_delta_sq;  ///< over every compared tensor, in and out of the blocks
  std::vector<MovedMatrix> most_moved;          ///< by relative change, largest first
  std::vector<std::string> warnings;            ///< the checkpoint's and the comparison's
  bool ok() const { return error.empty(); }
};

/// Opens `path`, compares it with `base` and summarises. Never throws: an InputError (unreadable
/// file, shape mismatch, NaN/Inf weights) becomes the row's `error`, and so, flagged internal,
/// does any other exception, so that the rows already made are not lost. A row that failed still
/// carries a step when the checkpoint opened or its name holds a number. A weights file with no step
/// of its own (`checkpoint-500/model.safetensors`) takes its folder's, in the same order:
/// trainer_state.json, then the folder's name.
Row analyse_checkpoint(const std::filesystem::path& path, const std::string& label, const TensorStore& base,
                       const std::string& family, const WeightDiffOptions& opts, std::size_t top);

}  // namespace aquin::trajectory
