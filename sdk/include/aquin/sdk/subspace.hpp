// Leading singular triplets (σ, u, v) of large matrices without a full SVD: randomized subspace
// iteration on the Gram operator MᵀM, with fp32 products against the big matrix and every small
// problem (orthonormalisation, Rayleigh–Ritz, residuals) in fp64.
//
// A matrix is seen only through a MatrixOperator, so a LoRA-merged weight W + scale·B·A can be
// analysed without forming the update or the merged matrix: its products are W·X + scale·B·(A·X).
//
// Conventions (as in linalg.hpp): inputs may be any floating dtype (F64, F32, F16, BF16), CPU; they
// are read, never written; results are deterministic (a fixed-seed generator owned by the call).
#pragma once

#include <ATen/core/Tensor.h>

#include <boost/config.hpp>
#include <cstdint>
#include <memory>

namespace aquin {

/// M·X (+ Y) and Mᵀ·(M·X + Y) from one pass over M.
struct GramProduct {
  at::Tensor mx;    ///< M·X + Y, fp32 [rows, b]
  at::Tensor gram;  ///< Mᵀ·(M·X + Y), fp32 [cols, b]
};

/// A real matrix M of shape [rows, cols] known only through products with blocks of vectors.
/// Blocks are fp32 and 2-D; implementations return fresh fp32 tensors the caller owns.
/// Calls on one operator must not run concurrently (implementations may reuse scratch buffers).
class BOOST_SYMBOL_VISIBLE MatrixOperator {
 public:
  virtual ~MatrixOperator() = default;
  virtual int64_t rows() const = 0;
  virtual int64_t cols() const = 0;
  /// M·X for X fp32 [cols, b]; returns fp32 [rows, b].
  virtual at::Tensor apply(const at::Tensor& x) const = 0;
  /// Mᵀ·Y for Y fp32 [rows, b]; returns fp32 [cols, b].
  virtual at::Tensor apply_t(const at::Tensor& y) const = 0;
  /// M·X + Y and Mᵀ·(M·X + Y), Y an optional fp32 [rows, b] shift (undefined: none). The default
  /// calls apply then apply_t; implementations that stream M from memory override it to read M once.
  /// The shift lets an operator built on M reuse that single pass: (M + B·A)ᵀ(M + B·A)·X is
  /// Mᵀ·(M·X + B·A·X) + Aᵀ·Bᵀ·(M·X + B·A·X).
  virtual GramProduct apply_gram(const at::Tensor& x, const at::Tensor& shift = at::Tensor()) const;
};

/// An operator over a 2-D floating tensor `m` (HF layout [out, in] for weights), which it keeps a
/// reference to (a memory-mapped tensor stays mapped while the operator lives). An fp32 tensor that
/// is contiguous (or a transposed contiguous one) is used in place. Any other is converted to an
/// fp32 copy once when that copy takes at most `max_resident_bytes`; a larger one (a 128256 × 2048
/// embedding) is converted a few MB of rows at a time inside every product, so no full-size copy
/// is made. Throws std::invalid_argument when `m` is not 2-D floating.
BOOST_SYMBOL_VISIBLE std::shared_ptr<const MatrixOperator> dense_operator(const at::Tensor& m,
                                                                          int64_t max_resident_bytes = int64_t{1} << 30);

/// The merged weight W + scale·B·A of a LoRA module, as an operator over `base` (which is W, kept
/// alive by the returned operator). `B` is [rows, r], `A` is [r, cols], any floating dtype; they are
/// copied to fp32 once. Products cost those of W plus O((rows + cols)·r·b), and a Gram product is
/// still one pass over W; the update B·A and the merged matrix are never formed.
/// Throws std::invalid_argument on shapes that do not chain or non-floating inputs, and
/// std::domain_error when B, A or scale hold NaN/Inf.
BOOST_SYMBOL_VISIBLE std::shared_ptr<const MatrixOperator> lora_merged_operator(
    std::shared_ptr<const MatrixOperator> base, const at::Tensor& B, const at::Tensor& A, double scale);

struct SubspaceOptions {
  /// Columns carried beyond k. More columns make the k-th triplet converge faster (the rate per
  /// pass is (σ_{k+p+1} / σ_k)²) at a proportional cost per pass.
  int64_t oversample = 10;
  /// Passes over M (each one Gram product M·X, Mᵀ·M·X). After i passes the Ritz basis spans
  /// Ω, MᵀM·Ω, …, (MᵀM)^(i-1)·Ω (block Krylov, `krylov`) or only the last of these (plain subspace
  /// iteration: i = 3 is two power iterations in Halko–Martinsson–Tropp terms).
  int max_passes = 4;
  /// Stop early once every returned triplet has residual ‖Mᵀu − σv‖ ≤ tol · σ₁ (0: run all passes).
  double tol = 0.0;
  /// Seed of the Gaussian start block; the same seed gives the same result for the same matrix.
  uint64_t seed = 0x73756273'70616365ULL;
  /// Rayleigh–Ritz on the span of every block computed (block Krylov: Ω, MᵀM·Ω, (MᵀM)²·Ω, …, each
  /// orthogonalised against the ones before) instead of the last block only (plain subspace
  /// iteration). The products are the same; the projected problem grows to passes × block columns,
  /// and the triplets are at least as accurate (the Krylov space contains the last block).
  bool krylov = true;
  /// Optional [cols, s] (any floating dtype): directions put in the first block. They count towards
  /// its k + oversample columns, Gaussian ones filling the rest, but never fewer than `oversample`
  /// Gaussian columns. A warm start: for W + scale·B·A, W's top right singular vectors and Aᵀ
  /// (the directions the update can add) hold W+ΔW's top right singular vectors to first order,
  /// so one pass from them finds what several from a random block would.
  at::Tensor start;
};

/// The k leading singular triplets of M, with a posteriori accuracy figures.
struct TruncatedSvd {
  at::Tensor S;         ///< fp64 [k], descending, ≥ 0
  at::Tensor U;         ///< fp64 [rows, k], orthonormal columns: left singular vectors
  at::Tensor V;         ///< fp64 [cols, k], orthonormal columns: right singular vectors
  /// fp64 [k]: ‖Mᵀ·u_j − σ_j·v_j‖ (M·v_j = σ_j·u_j holds by construction). Some singular value of M
  /// lies within residual_j of S_j, and the angle between u_j and the true singular vector is at
  /// most about residual_j / gap_j, gap_j being the distance from S_j to the other singular values
  /// (Wedin). Exact paths report 0.
  at::Tensor residual;
  int passes = 0;       ///< passes over M spent; 0 when the exact path answered
  bool exact = false;   ///< answered by a dense fp64 SVD
};

/// The k leading singular triplets of `op`, by randomized subspace iteration on MᵀM (Halko,
/// Martinsson & Tropp 2011, Alg. 4.4 applied from the right): Z₀ = orth([start, Ω]),
/// Zᵢ = orth(MᵀM·Zᵢ₋₁) (orthogonalised against Z₀ … Zᵢ₋₁ as well with `krylov`), and Rayleigh–Ritz
/// on the basis K (every block with `krylov`, else the last): the eigenpairs (μ, ỹ) of the small
/// (M·K)ᵀ(M·K) give σ = √μ, v = K·ỹ and u = M·K·ỹ / σ (made orthonormal by a QR of the k columns). The
/// Gram products of the passes yield the residuals at no extra cost. Products are fp32 GEMMs;
/// orthonormalisation (Householder QR), the projected eigenproblem and the residuals are fp64.
///
/// When the first block would have min(rows, cols) columns the matrix is small enough to form: it
/// is built from products with the identity and decomposed by a dense fp64 SVD (exact, residual 0).
/// Requires 1 ≤ k ≤ min(rows, cols). Throws std::invalid_argument on a bad k or options, and
/// std::domain_error when the products are not finite (NaN or Inf in M).
BOOST_SYMBOL_VISIBLE TruncatedSvd top_singular_triplets(const MatrixOperator& op, int64_t k,
                                                        const SubspaceOptions& opts = {});

/// The k leading singular triplets of a 2-D floating tensor from a dense fp64 SVD (LAPACK), with
/// residuals 0 and exact = true: the reference the randomized path is tested against. O(rows · cols ·
/// min(rows, cols)); for small matrices and tests. Throws std::invalid_argument (not 2-D floating,
/// bad k) and std::domain_error (NaN/Inf).
BOOST_SYMBOL_VISIBLE TruncatedSvd truncated_svd_exact(const at::Tensor& m, int64_t k);

}  // namespace aquin
