// Intruder dimensions (Shuttleworth et al., "LoRA vs Full Fine-tuning: An Illusion of Equivalence",
// arXiv 2410.21228): top singular vectors of the fine-tuned W+ΔW that match none of the base W's
// top singular vectors. They are computed with the randomized top-k SVD of aquin/sdk/subspace.hpp;
// for a LoRA module W+ΔW is an operator (W·X + scale·B·(A·X)) and ΔW is never formed.
#pragma once

#include "thresholds.hpp"

#include <aquin/sdk/checkpoint.hpp>
#include <aquin/sdk/weight_diff.hpp>

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

namespace aquin::merge {

/// One of the top singular vectors y_j of W+ΔW, matched against the base's top-k' vectors x_i.
struct VectorMatch {
  int64_t index = 0;     ///< j, 0-based rank in W+ΔW
  double sigma = 0;      ///< σ_j(W+ΔW)
  /// The signal: the best match of y_j with a base direction, max over clusters C of ‖X_Cᵀ y_j‖.
  /// Base vectors whose singular values are closer than the cluster tolerance form one cluster:
  /// a perturbation of that size may rotate them into each other (Wedin), so they are matched as
  /// one subspace. With singleton clusters this is the paper's max_i |cos(y_j, x_i)|.
  double best_cos = 0;
  double plain_cos = 0;     ///< max_i |cos(y_j, x_i)| over single vectors (PEFT's intruders.py figure)
  int64_t best_match = 0;   ///< the i attaining plain_cos
  double overlap = 0;       ///< ‖X_k'ᵀ y_j‖: how much of y_j the base's whole top-k' subspace holds
  bool intruder = false;    ///< best_cos < the threshold
};

/// Matches the top singular vectors of W+ΔW (`merged_u` [rows, k], σ in `merged_s`) with the base's
/// (`base_u` [rows, k'], σ in `base_s`, descending, each known to within `base_res`, the Ritz
/// residuals). Consecutive base vectors i, i+1 share a cluster when σ_i − σ_{i+1} is at most
/// ‖ΔW‖₂ (`update_norm`) plus the larger of their residuals: closer than that, neither the update nor
/// the computation tells them apart (single linkage, so clusters are runs of the spectrum).
std::vector<VectorMatch> match_vectors(const at::Tensor& base_u, const at::Tensor& base_s, const at::Tensor& base_res,
                                       const at::Tensor& merged_u, const at::Tensor& merged_s, double update_norm,
                                       double cos_threshold);

/// The intruder analysis of one matrix.
struct IntruderResult {
  static constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
  std::string param;
  bool lora = false;
  bool exact = false;           ///< small matrix: dense fp64 SVDs
  int64_t top_k = 0, base_k = 0;  ///< after clamping to the matrix's smaller side
  int passes = 0;               ///< subspace-iteration passes per decomposition (0 when exact)
  double base_sigma1 = kNaN;    ///< σ₁(W)
  double update_norm = kNaN;    ///< ‖ΔW‖₂, the base of the cluster tolerance
  int clusters = 0;             ///< clusters the base's top-k' vectors formed
  double max_residual = kNaN;   ///< largest residual ‖Mᵀu − σv‖ / σ₁(M) of either decomposition
  std::vector<double> base_sigma;  ///< σ_1..σ_k' of W
  std::vector<VectorMatch> vectors;
  double seconds = 0;
  int intruders() const;
};

/// LoRA modules, analysed straight from the adapter (before the weight diff): W+ΔW is the merged
/// operator over the base weight. Each base weight is converted to fp32 here anyway, so its
/// ‖W‖_F (fp32 with fp64 accumulation, as the weight-diff core computes it) goes into `norms` and the
/// weight diff need not read the base again. Modules the weight diff will report as broken (no base
/// weight, a shape mismatch, NaN/Inf) or with ΔW = 0 are skipped here.
std::vector<IntruderResult> analyze_lora_intruders(const TensorStore& base, const Checkpoint& ck, const std::string& family,
                                                   const Thresholds& t, BaseNormCache& norms);

/// Dense pairs (a merged checkpoint, or the full tensors an adapter saves): every changed 2-D matrix
/// of `wd` with status ok, above its rounding-noise floor, not a LoRA module.
std::vector<IntruderResult> analyze_dense_intruders(const TensorStore& base, const Checkpoint& ck, const WeightDiff& wd,
                                                    const std::string& family, const Thresholds& t);

}  // namespace aquin::merge
