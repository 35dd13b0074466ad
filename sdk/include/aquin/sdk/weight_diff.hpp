// The weight-diff core: compares a base model's tensors with a checkpoint's, one tensor pair at a
// time, in canonical names. Used by weight-diff, merge-analysis and trajectory-analysis.
#pragma once

#include <aquin/sdk/checkpoint.hpp>
#include <aquin/sdk/names.hpp>
#include <aquin/sdk/tensor_store.hpp>

#include <boost/config.hpp>
#include <functional>
#include <limits>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace aquin {

/// The comparison of one canonical tensor. Norms are Frobenius, computed in fp32 with fp64
/// accumulation whatever the storage dtype; NaN where a figure does not apply.
struct MatrixDiff {
  static constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
  std::string param;        ///< canonical name
  std::string source_name;  ///< the checkpoint's key (the LoRA module for adapters)
  std::string base_source_name;
  std::optional<int> layer;
  ParamKind kind = ParamKind::Other;
  std::vector<int64_t> shape;  ///< canonical (HF layout) shape
  /// "ok", "missing_in_checkpoint", "missing_in_base", "shape_mismatch" or "non_finite"
  std::string status = "ok";
  std::string detail;  ///< for a status other than ok: what exactly
  std::string base_dtype, checkpoint_dtype;
  double base_norm = kNaN;       ///< ‖W_base‖_F
  double delta_norm = kNaN;      ///< ‖ΔW‖_F
  double relative = kNaN;        ///< ‖ΔW‖_F / ‖W_base‖_F
  double spectral_norm = kNaN;   ///< ‖ΔW‖_2 (2-D only)
  double spectral_rel_error = kNaN;  ///< certified bound on the relative error of spectral_norm
  double stable_rank = kNaN;     ///< ‖ΔW‖_F² / ‖ΔW‖_2² (2-D, ΔW ≠ 0)
  double max_abs_delta = kNaN;   ///< max |ΔW_ij|
  double noise_floor = kNaN;     ///< expected ‖rounding noise‖_F of a half-precision checkpoint
  bool below_noise_floor = false;
  int64_t non_finite = 0;        ///< NaN/Inf elements found (base + checkpoint)
  bool lora = false;
  int64_t lora_rank = 0;
  double lora_scale = kNaN;
};

/// ‖W_base‖_F by the base store's own tensor names, kept by a caller that compares several
/// checkpoints with one base (trajectory-analysis), so that each base norm is computed once.
/// compute_weight_diff fills it on first use and reads it afterwards; only finite norms are kept
/// (a base tensor with NaN/Inf is re-examined and reported every time). One cache serves one base
/// store: `origin` records which, and a cache met with another store is cleared before use.
struct BaseNormCache {
  std::string origin;                   ///< TensorStore::origin() of the base the norms belong to
  std::map<std::string, double> norms;  ///< base tensor name -> ‖W_base‖_F
};

struct WeightDiffOptions {
  double spectral_rel_tol = 1e-4;  ///< tolerance of the iterative spectral norm
  bool spectra = true;             ///< compute spectral norms and stable ranks
  /// Compute max |ΔW_ij| of LoRA modules, which forms B@A a block of rows at a time: the one
  /// O(out·in) step of an adapter's comparison. Off, their max_abs_delta stays NaN.
  bool lora_max_abs = true;
  /// Called after each tensor with (done, total, param); may be empty.
  std::function<void(std::size_t, std::size_t, const std::string&)> progress;
  /// Optional, owned by the caller: see BaseNormCache. Null: every base norm is computed.
  BaseNormCache* base_norms = nullptr;
};

struct WeightDiff {
  std::vector<MatrixDiff> matrices;  ///< base order, then checkpoint-only tensors
  std::vector<std::string> warnings;
  double total_base_norm = 0.0;   ///< over compared tensors
  double total_delta_norm = 0.0;  ///< over compared tensors
};

/// Compares `ckpt` with `base` for a model of `family` ("llama" or "bert").
/// Merged checkpoints: every tensor on either side is listed (missing ones with their status).
/// LoRA adapters: ΔW = scale·B@A for each adapted module, spectra from the r×r problem.
/// Throws InputError for unreadable tensors; shape mismatches and NaN/Inf are reported, not thrown.
BOOST_SYMBOL_VISIBLE WeightDiff compute_weight_diff(const TensorStore& base, const Checkpoint& ckpt,
                                                    const std::string& family, const WeightDiffOptions& opts = {});

/// "" when every tensor was compared; else one line naming the first tensor of another shape
/// (another base model?) or with NaN/Inf values, and how many more there are. Such a checkpoint has
/// no meaningful norms: commands that refuse it put this line in their InputError.
BOOST_SYMBOL_VISIBLE std::string broken_tensors_message(const WeightDiff& wd);

/// Expected Frobenius norm of the error made by rounding `values` to `dtype` (BF16 or F16):
/// sqrt(Σ ulp(v)² / 12). Zero for other dtypes.
BOOST_SYMBOL_VISIBLE double rounding_noise_floor(const at::Tensor& values, DType dtype);

}  // namespace aquin
