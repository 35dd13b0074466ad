// Spectral norms of weight deltas. The contract is in linalg.hpp; this file says why it is built
// the way it is.
//
// The dense path is a thick-restarted block Lanczos iteration on the Gram operator of the smaller
// side. Why not plain subspace (power) iteration: a full fine-tune delta looks like a Gaussian
// matrix (Marchenko–Pastur spectrum) whose top singular values differ by ~1e-3 relative, and power
// iteration converges like (σ₂/σ₁)^k while Krylov methods converge like exp(-k·sqrt(gap)); at a
// 1e-4 target that is hundreds of iterations against tens. Why blocks: a GEMM with 16 columns costs
// about what a GEMV costs on a memory-bound 64 MB matrix, and 16 Gaussian start vectors make a
// missed top direction astronomically unlikely.
#include "aquin/sdk/linalg.hpp"

#include "matrix_checks.hpp"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>
#include <tuple>

namespace aquin {
namespace {

// Up to this short side an fp64 SVD costs less than setting up the iteration and is exact.
constexpr int64_t kExactMaxSide = 64;
// Block width: wide enough that the GEMMs run near the memory-bandwidth limit and that the leading
// cluster of a flat spectrum is resolved as a block, narrow enough that the basis stays small.
constexpr int64_t kBlock = 16;
// Basis columns held before a thick restart. Bounds the fp64 workspace (2 · N · 160 doubles) and
// the cost of the K×K eigenproblem solved after every iteration; on flat spectra a cap anywhere in
// 128–256 certified in the same number of iterations, the smaller ones with a quarter of the
// eigensolver time.
constexpr int64_t kBasisCap = 160;
// Ritz vectors kept across a restart (Krylov–Schur style): enough that the converging cluster and
// the directions just below it survive, so a restart costs little convergence.
constexpr int64_t kKeepOnRestart = 96;
// Leading Ritz pairs examined for the cluster bound; the (p+1)-th pair supplies the gap.
constexpr int64_t kClusterMax = 24;
// Fixed seed: the same tensor always gives the same estimate.
constexpr uint64_t kSeed = 0x61717569'6e5eed01ULL;
// Below this requested tolerance fp32 products cannot produce residuals small enough to certify.
constexpr double kFp64ProductTol = 1e-5;
// Column vanishing threshold during orthogonalisation (relative to its norm before projection).
constexpr double kRankTol = 1e-10;
// Failure probability of the convergence-free bound reported when the iteration stops uncertified.
constexpr double kPowerBoundFailure = 1e-10;
// Row chunks for converting (fp16/bf16 → fp32, anything → fp64) on the fly: a few MB, cache-sized.
constexpr int64_t kChunkBytes = int64_t{8} << 20;
// Row slabs of a resident row-major matrix multiplied twice in a row: small enough to stay in the
// last-level cache between the two products, large enough that each GEMM call is efficient.
constexpr int64_t kSlabBytes = int64_t{4} << 20;
// A compute-dtype copy of the whole matrix is made when it is at most this big; past it the matrix
// is converted chunk by chunk on every product (slower, but no extra full-size copy).
constexpr int64_t kMaxCopyBytes = int64_t{1} << 30;

const at::TensorOptions kF64 = at::TensorOptions().dtype(at::kDouble);
constexpr double kPi = 3.14159265358979323846;

using detail::check_matrix;

// max |t|, read in row chunks in the storage dtype (fp16 chunks go through fp32: ATen 1.13 has no
// fp16 min/max kernel), so no full-size temporary is made; NaN or Inf anywhere throws.
double max_abs_checked(const at::Tensor& t0, const char* fn, const char* arg) {
  if (t0.numel() == 0) return 0.0;
  // Slice along the caller's memory order (max|·| does not care about orientation).
  const at::Tensor t = t0.stride(0) < t0.stride(1) ? t0.t() : t0;
  const int64_t rows = t.size(0);
  const int64_t step = std::max<int64_t>(1, kChunkBytes / 4 / std::max<int64_t>(1, t.size(1)));
  double a = 0.0;
  for (int64_t r0 = 0; r0 < rows; r0 += step) {
    at::Tensor c = t.narrow(0, r0, std::min(step, rows - r0));
    if (c.scalar_type() == at::kHalf) c = c.to(at::kFloat);
    at::Tensor lo, hi;
    std::tie(lo, hi) = at::aminmax(c);
    // aminmax propagates NaN, and an Inf is its own extreme: one finiteness test covers both.
    const double l = lo.item<double>();
    const double h = hi.item<double>();
    if (!std::isfinite(l) || !std::isfinite(h))
      throw std::domain_error(std::string(fn) + ": " + arg + " contains NaN or Inf");
    a = std::max({a, std::fabs(l), std::fabs(h)});
  }
  return a;
}

// The Gram operator G = Lᵀ L / s² of a tall view L ([long, short]), applied to fp64 blocks; results
// are in scaled units (σ = s · sqrt(λ)). With s = max|entry|, G's entries are O(long side) at most,
// so fp32 products neither overflow nor underflow whatever the magnitude of the delta.
class GramOperator {
 public:
  // `fp64_only`: only apply_fp64 will be called, so no compute-dtype copy is prepared.
  GramOperator(at::Tensor tall, double s, at::ScalarType compute, bool fp64_only = false)
      : tall_(std::move(tall)), s_(s), inv_s_(1.0 / s), compute_(compute) {
    rows_per_chunk_ = std::max<int64_t>(1, kChunkBytes / (8 * std::max<int64_t>(1, dim())));
    rows_per_slab_ = std::max<int64_t>(
        64, kSlabBytes /
                (static_cast<int64_t>(c10::elementSize(compute_)) * std::max<int64_t>(1, dim())));
    // For ordinary magnitudes the scale is applied to the thin blocks (cheap). Past these limits
    // 1/s itself, or entries converted to fp32, would leave the fp32 range, so the entries are
    // divided by s (in fp64) before they are converted.
    prescale_ = !(s >= 1e-30 && s <= 1e30);
    const int64_t bytes = tall_.numel() * static_cast<int64_t>(c10::elementSize(compute_));
    // GEMM reads a matrix in place when one of its strides is 1 (row- or column-major with any
    // leading dimension); any other view would be copied inside every product.
    const bool blas_layout = tall_.stride(0) == 1 || tall_.stride(1) == 1;
    if (fp64_only) {
      // apply_fp64 converts slice by slice and needs nothing prepared
    } else if (tall_.scalar_type() == compute_ && !prescale_ && blas_layout) {
      resident_ = tall_;  // used in place, no copy of the caller's matrix
    } else if (bytes <= kMaxCopyBytes) {
      // A copy in the compute dtype laid out like the caller's matrix (a transposed view stays a
      // transposed view of a row-major copy), converted in slices so that the fp64 temporaries
      // of prescaling stay small.
      const bool transposed = tall_.stride(0) < tall_.stride(1);
      const at::Tensor src = transposed ? tall_.t() : tall_;
      at::Tensor copy = at::empty(src.sizes(), at::TensorOptions().dtype(compute_));
      const int64_t step =
          std::max<int64_t>(1, kChunkBytes / (8 * std::max<int64_t>(1, src.size(1))));
      for (int64_t r0 = 0; r0 < src.size(0); r0 += step) {
        const int64_t n = std::min(step, src.size(0) - r0);
        const at::Tensor part = src.narrow(0, r0, n);
        copy.narrow(0, r0, n).copy_(prescale_ ? at::div(part.to(at::kDouble), s_) : part);
      }
      resident_ = transposed ? copy.t() : copy;
    }
  }

  int64_t dim() const { return tall_.size(1); }

  // G·z in the compute dtype; z is fp64 [dim, c], the result fp64 [dim, c].
  at::Tensor apply(const at::Tensor& z) const {
    const double zscale = prescale_ ? 1.0 : inv_s_;
    const at::Tensor zc = (z * zscale).to(compute_);
    at::Tensor w;
    if (resident_.defined() && resident_.stride(1) == 1) {
      // Row-major tall matrix: take each slab's two products back to back, so the second reads the
      // slab from cache instead of memory (one pass over the matrix per iteration, not two).
      w = at::zeros({dim(), z.size(1)}, zc.options());
      for (int64_t r0 = 0; r0 < resident_.size(0); r0 += rows_per_slab_) {
        const at::Tensor c =
            resident_.narrow(0, r0, std::min(rows_per_slab_, resident_.size(0) - r0));
        w.addmm_(c.t(), at::mm(c, zc));
      }
    } else if (resident_.defined()) {
      // A transposed view (wide input): its row slabs are strided column blocks of the caller's
      // matrix, which pack slowly, so the two products run over the whole matrix.
      w = at::mm(resident_.t(), at::mm(resident_, zc));
    } else {
      w = at::zeros({dim(), z.size(1)}, zc.options());
      for (int64_t r0 = 0; r0 < tall_.size(0); r0 += rows_per_chunk_) {
        const at::Tensor c = rows(r0, std::min(rows_per_chunk_, tall_.size(0) - r0), compute_);
        w.addmm_(c.t(), at::mm(c, zc));
      }
    }
    return w.to(at::kDouble).mul_(zscale);
  }

  // G·z with fp64 products throughout, and Σ (entry/s)² of the whole matrix added to *sumsq: the
  // verification pass reads every entry anyway, so the Frobenius norm comes with it.
  at::Tensor apply_fp64(const at::Tensor& z, double* sumsq) const {
    // Entries of an fp32/fp16/bf16 input can neither overflow nor underflow fp64 products (nor
    // their squares), and neither can fp64 entries within 1e±100, so s is applied to the thin
    // blocks; only an fp64 input beyond that is divided entrywise.
    const bool divide = tall_.scalar_type() == at::kDouble && !(s_ >= 1e-100 && s_ <= 1e100);
    const double zscale = divide ? 1.0 : inv_s_;
    const at::Tensor zs = z * zscale;
    at::Tensor w = at::zeros({dim(), z.size(1)}, kF64);
    double acc = 0.0;
    for (int64_t r0 = 0; r0 < tall_.size(0); r0 += rows_per_chunk_) {
      const int64_t n = std::min(rows_per_chunk_, tall_.size(0) - r0);
      // Without division an fp64 block may alias the caller's storage; it is only read.
      const at::Tensor c = divide ? scaled_f64(r0, n) : block(r0, n, at::kDouble);
      // Squares summed over c's own memory order, where flattening is a view rather than a copy.
      const at::Tensor dense = c.is_contiguous() ? c : c.t();
      const at::Tensor flat = dense.reshape({-1});
      acc += at::dot(flat, flat).item<double>();
      w.addmm_(c.t(), at::mm(c, zs));
    }
    *sumsq += divide ? acc : acc * inv_s_ * inv_s_;
    return w.mul_(zscale);
  }

 private:
  // Rows [r0, r0 + n) of L. When L is a transposed view (a wide input), these rows are a column
  // block of the caller's row-major matrix: converting that block in its own orientation and
  // transposing the view back turns the copy into contiguous runs instead of a strided gather.
  at::Tensor block(int64_t r0, int64_t n, at::ScalarType dt) const {
    const at::Tensor b = tall_.narrow(0, r0, n);
    if (b.stride(0) < b.stride(1)) return b.t().to(dt).t();
    return b.to(dt);
  }

  // Rows [r0, r0 + n) of L / s in fp64, never aliasing the caller's tensor (for an fp64 input
  // .to() returns the caller's own storage, so the division must not be in place).
  at::Tensor scaled_f64(int64_t r0, int64_t n) const {
    if (tall_.scalar_type() == at::kDouble) return at::div(tall_.narrow(0, r0, n), s_);
    return block(r0, n, at::kDouble).div_(s_);
  }

  // Rows [r0, r0 + n) of L in dtype dt, divided by s when prescale_.
  at::Tensor rows(int64_t r0, int64_t n, at::ScalarType dt) const {
    if (prescale_) return scaled_f64(r0, n).to(dt);
    return block(r0, n, dt);
  }

  at::Tensor tall_;
  at::Tensor resident_;
  double s_;
  double inv_s_;
  at::ScalarType compute_;
  bool prescale_ = false;
  int64_t rows_per_chunk_ = 1;
  int64_t rows_per_slab_ = 64;
};

// Orthonormal columns spanning W's part orthogonal to Q (orthonormal, possibly 0 columns).
// Classical Gram–Schmidt twice against Q ("twice is enough"), then Householder QR within the block.
// A column that (nearly) vanishes under projection — the Krylov space is exhausted or the matrix
// has low rank — is replaced by a fresh Gaussian column: Rayleigh–Ritz is valid on any orthonormal
// basis, and the added direction can only help.
at::Tensor orthonormalize_against(const at::Tensor& Q, const at::Tensor& W0, at::Generator& gen) {
  // Projected and patched in place below; the caller's block stays intact.
  at::Tensor W = W0.clone();
  const int64_t n = W.size(0);
  const int64_t c = W.size(1);
  auto project = [&Q](at::Tensor& x) {
    if (Q.size(1) > 0) x.sub_(at::mm(Q, at::mm(Q.t(), x)));
  };
  for (int attempt = 0; attempt < 16; ++attempt) {
    const at::Tensor norms0 = at::linalg_vector_norm(W, 2, at::IntArrayRef{0}, false, c10::nullopt);
    project(W);
    project(W);
    at::Tensor q, r;
    std::tie(q, r) = at::linalg_qr(W, "reduced");
    const at::Tensor kept = r.diagonal().abs() / norms0;  // share of each column that is new
    const at::Tensor vanished = at::logical_not(kept > kRankTol);  // a zero column gives NaN here
    if (!vanished.any().item<bool>()) {
      // Dividing by a small R_jj amplifies the ε-sized components along Q that projection leaves;
      // past a 1e4 amplification one more pass restores orthogonality.
      if (kept.min().item<double>() < 1e-4) {
        project(q);
        q = std::get<0>(at::linalg_qr(q, "reduced"));
      }
      return q;
    }
    const auto v = vanished.accessor<bool, 1>();
    for (int64_t j = 0; j < c; ++j)
      if (v[j]) W.select(1, j).copy_(at::randn({n}, gen, kF64));
  }
  throw std::logic_error("spectral_norm: could not extend the Krylov basis");
}

// Rayleigh–Ritz on an orthonormal basis: Ritz values (descending), their vectors in basis
// coordinates, and a bound on λ_max(G) − μ₁ from the residuals of the leading Ritz pairs.
struct Ritz {
  at::Tensor mu;  // [K] descending
  at::Tensor y;   // [K, K], column j belongs to mu[j]
  double lambda_err = std::numeric_limits<double>::infinity();
  int64_t pairs_used = 1;  // leading pairs the bound needed
};

// Bound on λ₁ − μ₁ from R = [r₁ … r_P], the residuals G v_i − μ_i v_i of the leading Ritz pairs
// (μ descending), all in the Gram operator's units.
//
//  - First order: some eigenvalue lies within ‖r₁‖ of μ₁.
//  - Second order, for each cluster size p < P: in the basis [V_p, V_p⊥], G = [[Θ_p, Eᵀ], [E, N_p]]
//    with ‖E·x‖ = ‖R_p·x‖. If γ ≥ λ_max(N_p) then G ⪯ [[Θ_p, Eᵀ], [E, γI]], so λ₁ is at most the
//    largest eigenvalue of the 2p×2p bordered matrix [[Θ_p, S_pᵀ], [S_p, γI]], where R_p = W·S_p
//    (QR). This uses the actual coupling of each Ritz vector rather than a worst case over the
//    block, and resolving a cluster as a whole is what makes a flat Marchenko–Pastur top
//    certifiable sooner than σ₁'s own vector converges.
//    γ: every w ⊥ V_p has at most sin²θ of its weight on the top-p eigenvectors X_p, so
//    wᵀGw ≤ λ_{p+1} + sin²θ · (λ₁ − λ_{p+1}), and by Davis–Kahan sin θ ≤ ‖R_p‖ / δ with δ the
//    gap between μ_p and λ_{p+1}. With λ_{p+1} ∈ [μ_{p+1}, μ_{p+1} + ‖r_{p+1}‖] and
//    λ₁ ≤ μ₁ + ‖r₁‖ this gives
//      γ = μ_{p+1} + ‖r_{p+1}‖ + (‖R_p‖/δ)² · (μ₁ + ‖r₁‖ − μ_{p+1}),
//      δ = μ_p − μ_{p+1} − ‖r_{p+1}‖ > 0.
// Both rest on the assumption stated in linalg.hpp: the eigenvalue found within a Ritz value's
// residual interval is the one of the same rank (nothing larger went unseen by the Krylov space).
// *pairs_used receives how many leading pairs the winning bound looked at.
double residual_bound(const at::Tensor& mu, const at::Tensor& r, int64_t* pairs_used) {
  const int64_t p1 = r.size(1);
  const at::Tensor gram = at::mm(r.t(), r);
  const auto ga = gram.accessor<double, 2>();
  const auto ma = mu.accessor<double, 1>();
  // r = W · sfac with W orthonormal and sfac upper triangular.
  const at::Tensor sfac = std::get<1>(at::linalg_qr(r, "r"));
  const double r1 = std::sqrt(std::max(0.0, ga[0][0]));
  double best = r1;
  *pairs_used = 1;
  for (int64_t p = 1; p < p1; ++p) {
    const double rnext = std::sqrt(std::max(0.0, ga[p][p]));
    const double delta = ma[p - 1] - ma[p] - rnext;
    if (delta <= 0) continue;
    const double rp2 = std::max(
        0.0, at::linalg_eigvalsh(gram.narrow(0, 0, p).narrow(1, 0, p)).max().item<double>());
    const double sin2 = std::min(1.0, rp2 / (delta * delta));
    const double gamma = ma[p] + rnext + sin2 * (ma[0] + r1 - ma[p]);
    at::Tensor bordered = at::zeros({2 * p, 2 * p}, kF64);
    bordered.narrow(0, 0, p).narrow(1, 0, p).diagonal().copy_(mu.narrow(0, 0, p));
    bordered.narrow(0, p, p).narrow(1, p, p).diagonal().fill_(gamma);
    // Column j of R_p only touches W's first j+1 columns, hence the leading p×p block of sfac.
    const at::Tensor sp = sfac.narrow(0, 0, p).narrow(1, 0, p);
    bordered.narrow(0, p, p).narrow(1, 0, p).copy_(sp);
    bordered.narrow(0, 0, p).narrow(1, p, p).copy_(sp.t());
    const double bound = at::linalg_eigvalsh(bordered).max().item<double>() - ma[0];
    if (bound < best) {
      best = bound;
      *pairs_used = p + 1;
    }
  }
  return std::max(0.0, best);
}

// `target` (relative, on σ) only saves work: the cluster bound is skipped when even its best case
// cannot reach it. Its bordered matrix contains [[μ₁, ‖r₁‖], [‖r₁‖, γ]] as a principal submatrix,
// so it never beats μ₁ + ‖r₁‖²/(μ₁ + ‖r₁‖), i.e. 2ρ²/(1 + 2ρ) on σ with ρ = ‖r₁‖/(2μ₁).
Ritz rayleigh_ritz(const at::Tensor& q, const at::Tensor& gq, const at::Tensor& t, double target) {
  at::Tensor ev, evec;
  std::tie(ev, evec) = at::linalg_eigh(t);
  Ritz out;
  out.mu = ev.flip(0).contiguous();
  out.y = evec.flip(1).contiguous();
  const double mu1 = out.mu[0].item<double>();
  const at::Tensor y1 = out.y.narrow(1, 0, 1);
  const double r1 = (at::mm(gq, y1) - at::mm(q, y1) * mu1).norm().item<double>();
  const double rho = mu1 > 0 ? r1 / (2.0 * mu1) : std::numeric_limits<double>::infinity();
  out.lambda_err = r1;
  out.pairs_used = 1;
  if (!(2.0 * rho * rho / (1.0 + 2.0 * rho) <= target)) return out;
  const int64_t p1 = std::min<int64_t>(out.mu.size(0), kClusterMax + 1);
  if (p1 < 2) return out;
  const at::Tensor yp = out.y.narrow(1, 0, p1);
  const at::Tensor mup = out.mu.narrow(0, 0, p1);
  const at::Tensor r = at::mm(gq, yp) - at::mm(q, yp) * mup;
  out.lambda_err = std::min(r1, residual_bound(mup.contiguous(), r, &out.pairs_used));
  return out;
}

struct Checked {
  double mu1 = 0;        // top Ritz value of G (scaled units), fp64 products
  double rel_bound = 0;  // bound on the relative error of sqrt(mu1)
  double sumsq = 0;      // Σ (entry/s)²
};

// Redo Rayleigh–Ritz on the leading Ritz vectors with fp64 products: the reported value and bound
// then owe nothing to fp32 rounding in the iteration, and the same pass yields the Frobenius norm.
Checked check_fp64(const GramOperator& op, const at::Tensor& v0, int64_t rows, int64_t cols) {
  const at::Tensor v = std::get<0>(at::linalg_qr(v0, "reduced"));
  Checked out;
  const at::Tensor gv = op.apply_fp64(v, &out.sumsq);
  at::Tensor t = at::mm(v.t(), gv);
  t = (t + t.t()) * 0.5;
  const Ritz rr = rayleigh_ritz(v, gv, t, std::numeric_limits<double>::infinity());
  out.mu1 = rr.mu[0].item<double>();
  // fp64 rounding in the products themselves, generously: each entry of G·v is a sum over the
  // long side, each Ritz value a sum over the short side.
  const double floor = 64.0 * DBL_EPSILON * std::sqrt(static_cast<double>(rows + cols));
  out.rel_bound = out.mu1 > 0 ? rr.lambda_err / (2.0 * out.mu1) + floor
                              : std::numeric_limits<double>::infinity();
  return out;
}

// A bound on σ₁'s relative error that needs no convergence, only the Gaussian start, for a
// Krylov space that contains G^d x for each of the b Gaussian start columns x. It backs the report
// when max_iter stops the iteration before the residual bound is small, because a large residual
// bound is not trustworthy (it locates *an* eigenvalue near μ₁, and far from convergence that need
// not be λ₁). Derivation: the Ritz value μ₁ is at least the Rayleigh quotient of G^d x, which by
// log-convexity of the moments xᵀG^j x is at least λ₁ · (x₁²/‖x‖²)^{1/(2d+1)}, x₁ being x's
// component along the top eigenvector. x₁²/‖x‖² ~ Beta(1/2, (N−1)/2) is below t with probability at
// most sqrt(2Nt/π), so all b columns are, with probability at most δ when t = π/(2N) · δ^{2/b}.
// Hence λ₁ ≤ μ₁ · t^{-1/(2d+1)} with probability ≥ 1 − δ (and σ₁ ≤ σ̂ · t^{-1/(4d+2)}).
double power_rel_bound(int64_t n, int64_t b, int depth) {
  const double log_t = std::log(kPi / (2.0 * static_cast<double>(n))) +
                       (2.0 / static_cast<double>(b)) * std::log(kPowerBoundFailure);
  return std::expm1(-log_t / (2.0 * (2.0 * depth + 1.0)));
}

SpectralEstimate krylov_path(const at::Tensor& m, double s, double rel_tol, int max_iter) {
  const int64_t rows = m.size(0);
  const int64_t cols = m.size(1);
  const at::ScalarType compute = rel_tol < kFp64ProductTol ? at::kDouble : at::kFloat;
  const GramOperator op(rows >= cols ? m : m.t(), s, compute);
  const int64_t n = op.dim();
  const int64_t cap = std::min(n, kBasisCap);

  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(kSeed);
  at::Tensor q = at::zeros({n, cap}, kF64);    // orthonormal basis
  at::Tensor gq = at::zeros({n, cap}, kF64);   // G applied to it
  at::Tensor t = at::zeros({cap, cap}, kF64);  // qᵀ G q
  int64_t k = 0;

  const int64_t b = std::min(kBlock, n);
  at::Tensor z = orthonormalize_against(q.narrow(1, 0, 0), at::randn({n, b}, gen, kF64), gen);
  double target = rel_tol;
  // Krylov depth whose powers G^d x are certainly in the space: it grows until the first restart,
  // which keeps the leading Ritz vectors (so μ₁ never drops) but not the powers themselves.
  int power_depth = 0;
  bool restarted = false;
  SpectralEstimate est;
  for (int it = 1;; ++it) {
    const int64_t c = z.size(1);
    const at::Tensor p = op.apply(z);
    q.narrow(1, k, c).copy_(z);
    gq.narrow(1, k, c).copy_(p);
    const at::Tensor tn = at::mm(q.narrow(1, 0, k + c).t(), p);  // [k + c, c]
    t.narrow(0, 0, k + c).narrow(1, k, c).copy_(tn);
    t.narrow(0, k, c).narrow(1, 0, k + c).copy_(tn.t());
    at::Tensor diag = t.narrow(0, k, c).narrow(1, k, c);
    diag.copy_((diag + diag.t()) * 0.5);
    k += c;

    const Ritz rr = rayleigh_ritz(q.narrow(1, 0, k), gq.narrow(1, 0, k),
                                  t.narrow(0, 0, k).narrow(1, 0, k), target);
    const double mu1 = rr.mu[0].item<double>();
    const bool exhausted = k == n;  // the basis spans everything: Ritz values are exact
    const bool last = it >= max_iter;
    if (!restarted) power_depth = it - 1;
    if (exhausted || last || (mu1 > 0 && rr.lambda_err / (2.0 * mu1) <= target)) {
      // The check redoes the products in fp64, which costs about what three fp32 iterations do, so
      // it covers only the pairs the bound used, plus a few for slack.
      const int64_t p1 = std::min<int64_t>(k, std::max<int64_t>(4, rr.pairs_used + 3));
      const Checked ck =
          check_fp64(op, at::mm(q.narrow(1, 0, k), rr.y.narrow(1, 0, p1)), rows, cols);
      const bool certified = ck.rel_bound <= rel_tol || exhausted;
      if (certified || last) {
        est.sigma_max = s * std::sqrt(std::max(0.0, ck.mu1));
        est.frobenius = s * std::sqrt(ck.sumsq);
        // Uncertified: either bound may be the valid one, so report the larger.
        est.rel_error_bound =
            certified ? ck.rel_bound : std::max(ck.rel_bound, power_rel_bound(n, b, power_depth));
        est.iterations = it;
        return est;
      }
      // The fp64 check disagreed with the fp32 estimate (rounding was not negligible after all):
      // aim lower and keep going.
      target = std::min(target, ck.rel_bound) * 0.25;
    }

    // Continue the Krylov sequence from G·z; restart (keep the leading Ritz vectors) if full.
    z = orthonormalize_against(q.narrow(1, 0, k), p.narrow(1, 0, std::min(c, n - k)), gen);
    if (k + z.size(1) > cap) {
      const int64_t keep = std::min<int64_t>(kKeepOnRestart, k);
      const at::Tensor yk = rr.y.narrow(1, 0, keep);
      const at::Tensor qk = at::mm(q.narrow(1, 0, k), yk);
      const at::Tensor gqk = at::mm(gq.narrow(1, 0, k), yk);
      q.narrow(1, 0, keep).copy_(qk);
      gq.narrow(1, 0, keep).copy_(gqk);
      t.zero_();
      t.narrow(0, 0, keep).narrow(1, 0, keep).diagonal().copy_(rr.mu.narrow(0, 0, keep));
      k = keep;
      restarted = true;
    }
  }
}

// Short side ≤ kExactMaxSide: the Gram matrix of that side is at most 64×64, so it is formed
// outright in fp64 (one pass over m, through the same operator as the iterative path) and its
// largest eigenvalue is σ_max². LAPACK's SVD of, say, a 64×100000 matrix takes 20-50 times longer.
SpectralEstimate exact_path(const at::Tensor& m, double s) {
  const int64_t rows = m.size(0);
  const int64_t cols = m.size(1);
  const GramOperator op(rows >= cols ? m : m.t(), s, at::kDouble, /*fp64_only=*/true);
  const int64_t n = op.dim();
  const int64_t len = std::max(rows, cols);
  double sumsq = 0.0;
  at::Tensor g = op.apply_fp64(at::eye(n, kF64), &sumsq);
  g = (g + g.t()) * 0.5;
  const double lambda = at::linalg_eigvalsh(g).max().item<double>();
  SpectralEstimate est;
  est.sigma_max = s * std::sqrt(std::max(0.0, lambda));
  est.frobenius = s * std::sqrt(sumsq);
  // Forming G perturbs it by at most len · ε · ‖m‖_F² (in scaled units, sumsq) in norm, and the
  // symmetric eigensolver adds n · ε · ‖G‖; halved on the way from σ² to σ.
  est.rel_error_bound = lambda > 0 ? (static_cast<double>(len) * DBL_EPSILON * sumsq +
                                      static_cast<double>(n) * DBL_EPSILON * lambda) /
                                         (2.0 * lambda)
                                   : 0.0;
  return est;
}

// R_B · R_Aᵀ for ΔW = B @ A (scale left out), plus the norms needed for a rounding bound.
struct LoraCore {
  at::Tensor core;   // [min(out, r), min(in, r)] fp64
  double ra_rb = 0;  // ‖R_B‖_F · ‖R_A‖_F = ‖B‖_F · ‖A‖_F
  int64_t r = 0;
  int64_t size_sum = 0;
};

LoraCore lora_core(const at::Tensor& B, const at::Tensor& A, double scale, const char* fn) {
  check_matrix(B, fn, "B");
  check_matrix(A, fn, "A");
  if (B.size(1) != A.size(0))
    throw std::invalid_argument(std::string(fn) + ": B is [" + std::to_string(B.size(0)) + ", " +
                                std::to_string(B.size(1)) + "] and A is [" +
                                std::to_string(A.size(0)) + ", " + std::to_string(A.size(1)) +
                                "]: B.size(1) must equal A.size(0)");
  if (!std::isfinite(scale)) throw std::domain_error(std::string(fn) + ": scale is not finite");
  max_abs_checked(B, fn, "B");
  max_abs_checked(A, fn, "A");
  LoraCore out;
  out.r = B.size(1);
  out.size_sum = B.size(0) + A.size(1) + out.r;
  // QR does not need B @ A, and an [out, r] QR is O(out · r²): for r = 16 this is microseconds
  // where the materialised [out, in] delta would be tens of MB and an SVD of seconds.
  const at::Tensor rb = std::get<1>(at::linalg_qr(B.to(at::kDouble), "r"));
  const at::Tensor ra = std::get<1>(at::linalg_qr(A.to(at::kDouble).t(), "r"));
  out.core = at::mm(rb, ra.t());
  out.ra_rb = at::linalg_matrix_norm(rb, "fro").item<double>() *
              at::linalg_matrix_norm(ra, "fro").item<double>();
  return out;
}

}  // namespace

SpectralEstimate spectral_norm(const at::Tensor& m, double rel_tol, int max_iter) {
  static constexpr const char* kFn = "spectral_norm";
  check_matrix(m, kFn, "m");
  if (!(rel_tol > 0)) throw std::invalid_argument("spectral_norm: rel_tol must be > 0");
  if (max_iter < 1) throw std::invalid_argument("spectral_norm: max_iter must be >= 1");
  const double s = max_abs_checked(m, kFn, "m");
  if (s == 0.0) return SpectralEstimate{};  // zero or empty: σ = ‖·‖_F = 0 exactly
  if (std::min(m.size(0), m.size(1)) <= kExactMaxSide) return exact_path(m, s);
  return krylov_path(m, s, rel_tol, max_iter);
}

at::Tensor lora_singular_values(const at::Tensor& B, const at::Tensor& A, double scale) {
  const LoraCore lc = lora_core(B, A, scale, "lora_singular_values");
  at::Tensor sv = at::zeros({lc.r}, kF64);
  if (lc.core.numel() > 0) {
    const at::Tensor s = at::linalg_svdvals(lc.core).mul_(std::fabs(scale));
    sv.narrow(0, 0, s.size(0)).copy_(s);
  }
  return sv;
}

SpectralEstimate lora_spectral_norm(const at::Tensor& B, const at::Tensor& A, double scale) {
  const LoraCore lc = lora_core(B, A, scale, "lora_spectral_norm");
  SpectralEstimate est;
  if (lc.core.numel() == 0) return est;
  est.sigma_max = std::fabs(scale) * at::linalg_svdvals(lc.core)[0].item<double>();
  est.frobenius = std::fabs(scale) * at::linalg_matrix_norm(lc.core, "fro").item<double>();
  // QR and SVD are backward stable with respect to B and A, so the absolute error is a small
  // multiple of ε · ‖B‖ · ‖A‖; relative to σ_max that can be large only when B @ A nearly cancels.
  const double abs_err =
      4.0 * DBL_EPSILON * static_cast<double>(lc.size_sum) * std::fabs(scale) * lc.ra_rb;
  est.rel_error_bound = est.sigma_max > 0 ? abs_err / est.sigma_max : 0.0;
  return est;
}

at::Tensor singular_values_exact(const at::Tensor& m) {
  static constexpr const char* kFn = "singular_values_exact";
  check_matrix(m, kFn, "m");
  max_abs_checked(m, kFn, "m");
  return at::linalg_svdvals(m.to(at::kDouble));
}

}  // namespace aquin
