// Randomized top-k SVD. The contract is in subspace.hpp; this file says why it is built so.
//
// Why subspace iteration on MᵀM rather than alternating M and Mᵀ: one Gram pass reads M once and
// applies it twice (M·X, then Mᵀ·(M·X)), so a power iteration costs one sweep over a weight matrix
// instead of two, and the last pass hands back M·Z (the Ritz problem) and MᵀM·Z (the residuals)
// together. Squaring the spectrum is harmless here: only the leading triplets are wanted, and
// every small problem is solved in fp64 from the products.
//
// Why not the block Lanczos of linalg.cpp: that method certifies σ₁ to 1e-4 and needs tens of
// iterations to do it; intruder detection needs the top ~10–40 singular *vectors* of many
// matrices to the accuracy of a cosine test, and a few passes of subspace iteration with
// oversampling give that on the decaying spectra of trained weights at a fixed, predictable cost.
// Rayleigh–Ritz then uses every block computed, not only the last (block Krylov): their products
// are at hand anyway, and the larger space can only be more accurate. A warm start (`start`) lets a
// second, related matrix (W + ΔW after W) begin where the first ended.
#include "aquin/sdk/subspace.hpp"

#include "matrix_checks.hpp"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

namespace aquin {
namespace {

const at::TensorOptions kF32 = at::TensorOptions().dtype(at::kFloat);
const at::TensorOptions kF64 = at::TensorOptions().dtype(at::kDouble);

// Row chunks of a Gram pass: a few MB of fp32, so a chunk stays in cache between its two GEMMs, and
// few enough chunks that the per-GEMM threading overhead stays small.
constexpr int64_t kChunkBytes = int64_t{8} << 20;

using detail::check_matrix;

void check_finite(const at::Tensor& t, const char* fn, const char* what) {
  if (t.numel() > 0 && !at::isfinite(t).all().item<bool>())
    throw std::domain_error(std::string(fn) + ": " + what + " contains NaN or Inf");
}

// BLAS takes an fp32 matrix as it is when it is contiguous or a transposed contiguous one (the
// TransformerLens layouts arrive as transposed views); anything else needs a copy.
bool gemm_ready(const at::Tensor& m) {
  return m.scalar_type() == at::kFloat && (m.is_contiguous() || m.t().is_contiguous());
}

class DenseOperator final : public MatrixOperator {
 public:
  DenseOperator(const at::Tensor& m, int64_t max_resident_bytes) : src_(m) {
    const int64_t bytes = m.numel() * static_cast<int64_t>(sizeof(float));
    rows_per_chunk_ = std::max<int64_t>(1, kChunkBytes / (4 * std::max<int64_t>(1, m.size(1))));
    if (gemm_ready(m)) {
      resident_ = m;
    } else if (bytes <= max_resident_bytes) {
      resident_ = m.to(at::kFloat).contiguous();
    } else {
      scratch_ = at::empty({std::min(rows_per_chunk_, m.size(0)), m.size(1)}, kF32);
    }
  }

  int64_t rows() const override { return src_.size(0); }
  int64_t cols() const override { return src_.size(1); }

  at::Tensor apply(const at::Tensor& x) const override {
    if (resident_.defined()) return at::mm(resident_, x);
    at::Tensor out = at::empty({rows(), x.size(1)}, kF32);
    for (int64_t r0 = 0; r0 < rows(); r0 += rows_per_chunk_) {
      const int64_t n = std::min(rows_per_chunk_, rows() - r0);
      at::Tensor dst = out.narrow(0, r0, n);
      at::mm_out(dst, chunk(r0, n), x);
    }
    return out;
  }

  at::Tensor apply_t(const at::Tensor& y) const override {
    if (resident_.defined()) return at::mm(resident_.t(), y);
    at::Tensor out = at::zeros({cols(), y.size(1)}, kF32);
    for (int64_t r0 = 0; r0 < rows(); r0 += rows_per_chunk_) {
      const int64_t n = std::min(rows_per_chunk_, rows() - r0);
      out.addmm_(chunk(r0, n).t(), y.narrow(0, r0, n));
    }
    return out;
  }

  GramProduct apply_gram(const at::Tensor& x, const at::Tensor& shift) const override {
    GramProduct g;
    if (resident_.defined() && !resident_.is_contiguous()) {
      // A transposed view: its row chunks would be strided, so two whole-matrix GEMMs it is.
      g.mx = at::mm(resident_, x);
      if (shift.defined()) g.mx.add_(shift);
      g.gram = at::mm(resident_.t(), g.mx);
      return g;
    }
    // Row chunk by row chunk, each chunk serving both products while it is in cache: the thin
    // blocks used here make these GEMMs memory-bound, so reading M once per pass is what counts.
    g.mx = at::empty({rows(), x.size(1)}, kF32);
    g.gram = at::zeros({cols(), x.size(1)}, kF32);
    for (int64_t r0 = 0; r0 < rows(); r0 += rows_per_chunk_) {
      const int64_t n = std::min(rows_per_chunk_, rows() - r0);
      const at::Tensor c = resident_.defined() ? resident_.narrow(0, r0, n) : chunk(r0, n);
      at::Tensor p = g.mx.narrow(0, r0, n);
      if (shift.defined()) {
        p.copy_(shift.narrow(0, r0, n));
        p.addmm_(c, x);
      } else {
        at::mm_out(p, c, x);
      }
      g.gram.addmm_(c.t(), p);
    }
    return g;
  }

 private:
  // Rows [r0, r0 + n) in fp32, in the reused scratch buffer (valid until the next call).
  at::Tensor chunk(int64_t r0, int64_t n) const {
    at::Tensor dst = scratch_.narrow(0, 0, n);
    dst.copy_(src_.narrow(0, r0, n));
    return dst;
  }

  at::Tensor src_;
  at::Tensor resident_;
  int64_t rows_per_chunk_ = 0;
  mutable at::Tensor scratch_;
};

class LoraMergedOperator final : public MatrixOperator {
 public:
  LoraMergedOperator(std::shared_ptr<const MatrixOperator> base, at::Tensor B, at::Tensor A, double scale)
      : base_(std::move(base)), B_(std::move(B)), A_(std::move(A)), s_(scale) {}

  int64_t rows() const override { return base_->rows(); }
  int64_t cols() const override { return base_->cols(); }

  at::Tensor apply(const at::Tensor& x) const override {
    return base_->apply(x).addmm_(B_, at::mm(A_, x), 1.0, s_);
  }

  at::Tensor apply_t(const at::Tensor& y) const override {
    return base_->apply_t(y).addmm_(A_.t(), at::mm(B_.t(), y), 1.0, s_);
  }

  // With M'x = W·x + s·B·(A·x): (W + sBA)ᵀ·M'x = Wᵀ·M'x + s·Aᵀ·(Bᵀ·M'x). W's own Gram pass takes
  // s·B·(A·x) as its shift, so the pair costs one pass over W plus products with the thin factors.
  GramProduct apply_gram(const at::Tensor& x, const at::Tensor& shift) const override {
    at::Tensor bax = at::mm(B_, at::mm(A_, x)).mul_(s_);
    if (shift.defined()) bax.add_(shift);
    GramProduct g = base_->apply_gram(x, bax);
    g.gram.addmm_(A_.t(), at::mm(B_.t(), g.mx), 1.0, s_);
    return g;
  }

 private:
  std::shared_ptr<const MatrixOperator> base_;
  at::Tensor B_, A_;
  double s_;
};

at::Tensor orthonormal_basis(const at::Tensor& x) { return std::get<0>(at::linalg_qr(x, "reduced")); }

// One pass of the iteration: its orthonormal input z and the products P = M·z, G = MᵀM·z (fp64).
struct Block {
  at::Tensor z, p, g;
};

std::vector<at::Tensor> basis_columns(const std::vector<Block>& blocks) {
  std::vector<at::Tensor> zs;
  for (const auto& b : blocks) zs.push_back(b.z);
  return zs;
}

// Orthonormal columns spanning w's part orthogonal to the orthonormal `basis`: classical
// Gram–Schmidt twice ("twice is enough"), Householder QR, and one more projection, since a column
// that (nearly) vanished leaves QR to build it from rounding noise, which need not be orthogonal to
// the basis.
at::Tensor orthonormal_against(const at::Tensor& basis, const at::Tensor& w0) {
  at::Tensor w = w0.clone();
  for (int i = 0; i < 2; ++i) w.sub_(at::mm(basis, at::mm(basis.t(), w)));
  at::Tensor q = orthonormal_basis(w);
  q.sub_(at::mm(basis, at::mm(basis.t(), q)));
  return orthonormal_basis(q);
}

// Rayleigh–Ritz on the span of every block, K = [z₁ … z_j] (orthonormal), from P = M·K = [p₁ … p_j]:
// the eigenpairs (μ, ỹ) of the small PᵀP (passes × block columns square) give σ = √μ, v = K·ỹ and
// u = P·ỹ / σ. This costs a GEMM where a QR of the tall P would cost a LAPACK factorisation per
// pass. PᵀP is formed in fp64 from the stored P, so μ carries only fp64 rounding of σ₁² and a σ_j
// well below σ₁ (a zero tail) is resolved to the fp32 products' own error, not its square root. A
// last QR of the k columns kept makes u orthonormal even where σ_j is (numerically) zero.
TruncatedSvd rayleigh_ritz(const std::vector<Block>& blocks, int64_t k) {
  std::vector<at::Tensor> ps, gs;
  for (const auto& b : blocks) {
    ps.push_back(b.p);
    gs.push_back(b.g);
  }
  const at::Tensor kb = at::cat(basis_columns(blocks), 1), p = at::cat(ps, 1), g = at::cat(gs, 1);
  at::Tensor t = at::mm(p.t(), p);
  t = (t + t.t()) * 0.5;
  at::Tensor mu, y;
  std::tie(mu, y) = at::linalg_eigh(t);
  const at::Tensor yk = y.flip(1).narrow(1, 0, k).contiguous();
  const at::Tensor s = mu.flip(0).narrow(0, 0, k).clamp_min(0).sqrt().contiguous();
  TruncatedSvd out;
  out.S = s;
  out.V = at::mm(kb, yk);
  // u_j = M·v_j / σ_j up to the sign QR may flip; R's diagonal restores it.
  at::Tensor q, r;
  std::tie(q, r) = at::linalg_qr(at::mm(p, yk), "reduced");
  out.U = q * at::where(r.diagonal() < 0, -at::ones_like(s), at::ones_like(s));
  // Mᵀu_j − σ_j v_j = (MᵀM·K·ỹ_j − σ_j²·K·ỹ_j) / σ_j.
  const at::Tensor res = at::mm(g, yk) - out.V * s.square();
  const at::Tensor norms = at::linalg_vector_norm(res, 2, at::IntArrayRef{0}, false, c10::nullopt);
  out.residual = at::where(s > 0, norms / at::where(s > 0, s, at::ones_like(s)), at::zeros_like(s));
  return out;
}

// Forms M (fp64) from products with the identity: for the exact path on small operators.
at::Tensor materialize(const MatrixOperator& op) {
  if (op.cols() <= op.rows()) return op.apply(at::eye(op.cols(), kF32)).to(at::kDouble);
  return op.apply_t(at::eye(op.rows(), kF32)).to(at::kDouble).t().contiguous();
}

TruncatedSvd svd_of_dense(const at::Tensor& md, int64_t k) {
  at::Tensor u, s, vh;
  std::tie(u, s, vh) = at::linalg_svd(md, /*full_matrices=*/false);
  TruncatedSvd out;
  out.S = s.narrow(0, 0, k).contiguous();
  out.U = u.narrow(1, 0, k).contiguous();
  out.V = vh.narrow(0, 0, k).t().contiguous();
  out.residual = at::zeros({k}, kF64);
  out.exact = true;
  return out;
}

}  // namespace

GramProduct MatrixOperator::apply_gram(const at::Tensor& x, const at::Tensor& shift) const {
  GramProduct g;
  g.mx = apply(x);
  if (shift.defined()) g.mx.add_(shift);
  g.gram = apply_t(g.mx);
  return g;
}

std::shared_ptr<const MatrixOperator> dense_operator(const at::Tensor& m, int64_t max_resident_bytes) {
  check_matrix(m, "dense_operator", "m");
  return std::make_shared<DenseOperator>(m, max_resident_bytes);
}

std::shared_ptr<const MatrixOperator> lora_merged_operator(std::shared_ptr<const MatrixOperator> base,
                                                           const at::Tensor& B, const at::Tensor& A, double scale) {
  static constexpr const char* kFn = "lora_merged_operator";
  if (!base) throw std::invalid_argument(std::string(kFn) + ": base operator is null");
  check_matrix(B, kFn, "B");
  check_matrix(A, kFn, "A");
  if (B.size(1) != A.size(0) || B.size(0) != base->rows() || A.size(1) != base->cols())
    throw std::invalid_argument(std::string(kFn) + ": B [" + std::to_string(B.size(0)) + ", " +
                                std::to_string(B.size(1)) + "] @ A [" + std::to_string(A.size(0)) + ", " +
                                std::to_string(A.size(1)) + "] does not match the base [" +
                                std::to_string(base->rows()) + ", " + std::to_string(base->cols()) + "]");
  if (!std::isfinite(scale)) throw std::domain_error(std::string(kFn) + ": scale is not finite");
  at::Tensor b = B.to(at::kFloat).contiguous(), a = A.to(at::kFloat).contiguous();
  check_finite(b, kFn, "B");
  check_finite(a, kFn, "A");
  return std::make_shared<LoraMergedOperator>(std::move(base), std::move(b), std::move(a), scale);
}

TruncatedSvd truncated_svd_exact(const at::Tensor& m, int64_t k) {
  static constexpr const char* kFn = "truncated_svd_exact";
  check_matrix(m, kFn, "m");
  if (k < 1 || k > std::min(m.size(0), m.size(1)))
    throw std::invalid_argument(std::string(kFn) + ": k = " + std::to_string(k) + " is outside [1, min(rows, cols)]");
  at::Tensor md = m.to(at::kDouble);
  check_finite(md, kFn, "m");
  return svd_of_dense(md, k);
}

TruncatedSvd top_singular_triplets(const MatrixOperator& op, int64_t k, const SubspaceOptions& opts) {
  static constexpr const char* kFn = "top_singular_triplets";
  const int64_t m = op.rows(), n = op.cols();
  const int64_t small = std::min(m, n);
  if (k < 1 || k > small)
    throw std::invalid_argument(std::string(kFn) + ": k = " + std::to_string(k) + " is outside [1, " +
                                std::to_string(small) + "]");
  if (opts.oversample < 0 || opts.max_passes < 1 || !(opts.tol >= 0))
    throw std::invalid_argument(std::string(kFn) + ": need oversample >= 0, max_passes >= 1, tol >= 0");
  if (opts.start.defined() && (opts.start.dim() != 2 || opts.start.size(0) != n ||
                               !at::isFloatingType(opts.start.scalar_type()) || !at::isfinite(opts.start).all().item<bool>()))
    throw std::invalid_argument(std::string(kFn) + ": start must be a finite floating [cols, s] = [" + std::to_string(n) +
                                ", s] tensor");
  // Start directions count towards the k + oversample columns, but `oversample` Gaussian ones stay.
  const int64_t extra = opts.start.defined() ? opts.start.size(1) : 0;
  const int64_t gaussian = std::max(opts.oversample, k + opts.oversample - extra);
  const int64_t l = std::min(extra + gaussian, small);
  if (l >= small) {
    at::Tensor md = materialize(op);
    check_finite(md, kFn, "the operator's products");
    return svd_of_dense(md, k);
  }

  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(opts.seed);
  at::Tensor first = at::randn({n, gaussian}, gen, kF64);
  if (extra > 0) first = at::cat({opts.start.to(at::kDouble), first}, 1);
  at::Tensor z = orthonormal_basis(first);
  std::vector<Block> blocks;
  int64_t spanned = 0;
  for (int pass = 1;; ++pass) {
    const GramProduct gp = op.apply_gram(z.to(at::kFloat));
    Block b{z, gp.mx.to(at::kDouble), gp.gram.to(at::kDouble)};
    check_finite(b.p, kFn, "the operator's products");
    check_finite(b.g, kFn, "the operator's products");
    if (!opts.krylov) blocks.clear();
    spanned += z.size(1);
    blocks.push_back(std::move(b));
    // Krylov: the next block can only add what the basis does not span yet.
    const int64_t room = opts.krylov ? n - spanned : n;
    const bool last = pass >= opts.max_passes || room <= 0;
    if (last || opts.tol > 0) {
      TruncatedSvd out = rayleigh_ritz(blocks, k);
      out.passes = pass;
      if (last || out.residual.max().item<double>() <= opts.tol * out.S[0].item<double>()) return out;
    }
    const at::Tensor& g = blocks.back().g;
    if (!opts.krylov) {
      z = orthonormal_basis(g);
      continue;
    }
    const at::Tensor basis = at::cat(basis_columns(blocks), 1);
    z = orthonormal_against(basis, g.narrow(1, 0, std::min(g.size(1), room)));
  }
}

}  // namespace aquin
