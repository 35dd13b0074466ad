// Spectral numerics for weight deltas: ‖ΔW‖_2, ‖ΔW‖_F and stable rank (‖ΔW‖_F² / ‖ΔW‖_2²),
// for dense deltas and for LoRA deltas ΔW = scale · B @ A.
//
// Conventions shared by every function here:
//  - Inputs may be any floating dtype (F64, F32, F16, BF16), contiguous or not, CPU. Whatever the
//    storage dtype, arithmetic is fp32 with fp64 wherever precision is decided (bases, projected
//    problems, norms, the final check), or fp64 throughout.
//  - Inputs are read, never written, never kept: nothing returned aliases them.
//  - A tensor that is not 2-D or not floating throws std::invalid_argument; one holding NaN or
//    Inf throws std::domain_error (callers are expected to report non-finite deltas themselves
//    before asking for a spectrum, so reaching that is a caller bug, not a data condition).
//  - Results are deterministic: any randomness comes from a fixed-seed generator owned by the call,
//    so the same tensor gives the same answer (bit for bit on the same thread count and BLAS).
#pragma once

#include <ATen/core/Tensor.h>

#include <boost/config.hpp>

namespace aquin {

/// The largest singular value of a matrix with a bound on its error, plus its Frobenius norm.
struct SpectralEstimate {
  /// Estimate of σ_max = ‖m‖_2. For the iterative path it is a Ritz value, so it never exceeds the
  /// true σ_max by more than fp64 rounding: the error is one-sided, the estimate is low.
  double sigma_max = 0.0;
  /// ‖m‖_F, accumulated in fp64 over the exact stored values.
  double frobenius = 0.0;
  /// Bound on the relative error of sigma_max: the true σ_max lies in
  /// [sigma_max, sigma_max · (1 + rel_error_bound)]. It comes from Ritz residuals measured with
  /// fp64 products (see spectral_norm for the one assumption it rests on). Exact paths report a
  /// rounding bound (1e-9 or less). 0 for the zero matrix.
  double rel_error_bound = 0.0;
  /// Block Krylov iterations spent (one iteration = one product of the Gram operator with a block
  /// of vectors); 0 when an exact decomposition answered.
  int iterations = 0;
};

/// σ_max and ‖m‖_F of a 2-D floating tensor `m` (shape [rows, cols]).
///
/// Small problems (min(rows, cols) ≤ 64) are answered exactly: the fp64 Gram matrix of the short
/// side (at most 64×64) is formed in one pass and its top eigenvalue is σ_max². Larger ones use a
/// thick-restarted block Lanczos method (16 Gaussian start vectors from a fixed seed, full
/// reorthogonalisation, Rayleigh–Ritz in fp64, at most 160 basis vectors) on the Gram operator of
/// the smaller side, applied as two fp32 GEMMs per iteration (m·Z, then mᵀ·(m·Z)) and never formed:
/// a 128256×2048 embedding delta costs two skinny GEMMs per iteration and 2 · 2048 · 160 doubles of
/// workspace. An fp32 input is used in place; other dtypes get one fp32 copy (converted slice by
/// slice on every product instead when that copy would exceed 1 GiB).
///
/// Stopping rule: after every iteration the leading Ritz pairs give a residual bound on the error
/// of the top eigenvalue of the Gram operator: the smaller of the first-order bound ‖r₁‖ and a
/// second-order bound for the cluster of the p leading Ritz values (the largest eigenvalue of the
/// Ritz values bordered by their residual coupling and by an estimate of the rest of the spectrum
/// built from the (p+1)-th Ritz value, its residual and a Davis–Kahan term). Once that bound is
/// below `rel_tol`, the leading Ritz vectors are re-checked with fp64 products over the exact
/// stored values: Rayleigh–Ritz is redone on them and the bound recomputed, so neither the reported
/// value nor the bound owes anything to fp32 rounding. If the check misses `rel_tol` the iteration
/// resumes with a tighter internal target.
///
/// What the bound assumes: like every a-posteriori bound for an extreme eigenvalue, it presumes
/// that the eigenvalue a converged Ritz value has found is the one of the same rank, i.e. that the
/// Krylov space has not entirely missed a larger singular direction. From a 16-column Gaussian
/// start that needs all 16 start vectors to be nearly orthogonal to it at once: probability zero in
/// exact arithmetic and not expected in practice, but not certifiable from inside the iteration.
/// When `max_iter` stops the iteration before the residual bound reaches `rel_tol`, a residual
/// bound is not trustworthy, so the reported bound is the larger of it and a convergence-free bound
/// that holds with probability ≥ 1 − 1e-10 over the random start (from the Krylov space's power
/// iterates); it is loose (tens of percent or more) but honest.
///
/// The relative error of the stable rank ‖m‖_F² / σ_max² is about twice that of σ_max; ask for half
/// the tolerance wanted on the stable rank.
///
/// `rel_tol` below 1e-5 switches the products to fp64 (fp32 cannot make residuals that small).
/// `max_iter` caps the block iterations (a flat 2048×8192 Gaussian spectrum, the hardest common
/// case, certifies 1e-4 in about 18); check `rel_error_bound` when it may have been reached.
/// The zero matrix (or an empty one) gives sigma_max = frobenius = 0, bound 0; its stable rank is
/// undefined and is the caller's to report.
/// Throws std::invalid_argument (not 2-D, not floating, rel_tol ≤ 0 or max_iter < 1) and
/// std::domain_error (NaN or Inf anywhere in `m`).
BOOST_SYMBOL_VISIBLE SpectralEstimate spectral_norm(const at::Tensor& m, double rel_tol = 1e-4,
                                                    int max_iter = 300);

/// All singular values of ΔW = scale · B @ A, in fp64, descending, shape [r] (r = B.size(1)).
///
/// `B` is [out, r] and `A` is [r, in], any floating dtypes. Exact, from the r×r problem: with
/// reduced QRs B = Q_B R_B and Aᵀ = Q_A R_A (fp64), ΔW = scale · Q_B (R_B R_Aᵀ) Q_Aᵀ, so the
/// singular values of ΔW are |scale| times those of the r×r matrix R_B R_Aᵀ. ΔW ([out, in]) is
/// never formed. When r exceeds out or in, the trailing values (which are exactly zero) are
/// zero-filled. Throws std::invalid_argument on shapes that do not chain (B.size(1) != A.size(0))
/// or non-floating inputs, std::domain_error on NaN/Inf in B, A or scale.
BOOST_SYMBOL_VISIBLE at::Tensor lora_singular_values(const at::Tensor& B, const at::Tensor& A,
                                                     double scale);

/// σ_max and ‖·‖_F of ΔW = scale · B @ A, exactly, from the same r×r core as lora_singular_values:
/// σ_max = |scale| · σ_max(R_B R_Aᵀ) and ‖ΔW‖_F = |scale| · ‖R_B R_Aᵀ‖_F. `iterations` is 0 and
/// `rel_error_bound` is a rounding bound (tiny unless B @ A nearly cancels). Same requirements and
/// exceptions as lora_singular_values.
BOOST_SYMBOL_VISIBLE SpectralEstimate lora_spectral_norm(const at::Tensor& B, const at::Tensor& A,
                                                         double scale);

/// Every singular value of a 2-D floating tensor, in fp64, descending, shape [min(rows, cols)]:
/// LAPACK's SVD on an fp64 copy. O(rows · cols · min(rows, cols)): a reference for tests and small
/// matrices, not for whole checkpoints. Throws std::invalid_argument on a non-2-D or non-floating
/// input; NaN/Inf inputs throw std::domain_error.
BOOST_SYMBOL_VISIBLE at::Tensor singular_values_exact(const at::Tensor& m);

}  // namespace aquin
