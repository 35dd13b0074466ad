// Randomized top-k SVD (subspace.hpp) against dense fp64 SVDs of the same small matrices.
#include <aquin/sdk/subspace.hpp>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <stdexcept>

using namespace aquin;

namespace {

const at::TensorOptions kF64 = at::TensorOptions().dtype(at::kDouble);

// rows × cols matrix with singular values `s` (fp64) and random orthonormal singular vectors.
at::Tensor with_spectrum(int64_t rows, int64_t cols, const at::Tensor& s, uint64_t seed) {
  at::manual_seed(seed);
  const int64_t p = s.size(0);
  at::Tensor u = std::get<0>(at::linalg_qr(at::randn({rows, p}, kF64)));
  at::Tensor v = std::get<0>(at::linalg_qr(at::randn({cols, p}, kF64)));
  return at::mm(u * s, v.t());
}

// σ_i = 0.9^i over the whole spectrum (a trained weight's decay, compressed).
at::Tensor decaying(int64_t p) { return at::pow(0.9, at::arange(p, kF64)); }

// |cos| between matching columns of two bases.
at::Tensor column_cosines(const at::Tensor& a, const at::Tensor& b) {
  return (a * b).sum(0).abs() / (at::linalg_vector_norm(a, 2, at::IntArrayRef{0}, false, c10::nullopt) *
                                 at::linalg_vector_norm(b, 2, at::IntArrayRef{0}, false, c10::nullopt));
}

void expect_matches_exact(const TruncatedSvd& got, const TruncatedSvd& ref, double sigma_tol, double cos_tol) {
  ASSERT_EQ(got.S.size(0), ref.S.size(0));
  const double s1 = ref.S[0].item<double>();
  for (int64_t j = 0; j < ref.S.size(0); ++j) {
    const double gs = got.S[j].item<double>(), rs = ref.S[j].item<double>();
    EXPECT_NEAR(gs, rs, sigma_tol * s1) << "sigma " << j;
    // The residual is a valid bound (some singular value within it), up to fp32 product rounding.
    EXPECT_LE(std::abs(gs - rs), got.residual[j].item<double>() + 1e-5 * s1) << "residual bound " << j;
  }
  const at::Tensor cu = column_cosines(got.U, ref.U), cv = column_cosines(got.V, ref.V);
  EXPECT_GT(cu.min().item<double>(), 1 - cos_tol) << cu;
  EXPECT_GT(cv.min().item<double>(), 1 - cos_tol) << cv;
  // Orthonormal columns.
  const int64_t k = got.U.size(1);
  EXPECT_LT((at::mm(got.U.t(), got.U) - at::eye(k, kF64)).abs().max().item<double>(), 1e-6);
  EXPECT_LT((at::mm(got.V.t(), got.V) - at::eye(k, kF64)).abs().max().item<double>(), 1e-6);
}

}  // namespace

TEST(Subspace, DenseMatchesExactSvdOnDecayingSpectrum) {
  for (auto [rows, cols] : {std::pair<int64_t, int64_t>{300, 200}, {160, 400}}) {
    at::Tensor m = with_spectrum(rows, cols, decaying(std::min(rows, cols)), 7);
    const TruncatedSvd ref = truncated_svd_exact(m, 10);
    SubspaceOptions o;
    o.max_passes = 6;
    const TruncatedSvd got = top_singular_triplets(*dense_operator(m), 10, o);
    EXPECT_FALSE(got.exact);
    EXPECT_EQ(got.passes, 6);
    SCOPED_TRACE(std::to_string(rows) + "x" + std::to_string(cols));
    expect_matches_exact(got, ref, 1e-5, 1e-4);
  }
}

TEST(Subspace, LowPrecisionAndTransposedInputs) {
  at::Tensor m = with_spectrum(256, 192, decaying(192), 11);
  const TruncatedSvd ref = truncated_svd_exact(m.to(at::kBFloat16), 8);
  SubspaceOptions o;
  o.max_passes = 6;
  // bf16 storage is converted once; the reference decomposes the same rounded values.
  expect_matches_exact(top_singular_triplets(*dense_operator(m.to(at::kBFloat16)), 8, o), ref, 1e-5, 1e-4);
  // A transposed fp32 view is used in place: the triplets swap sides.
  at::Tensor mt = m.to(at::kFloat).t().contiguous().t();
  ASSERT_FALSE(mt.is_contiguous());
  const TruncatedSvd ref32 = truncated_svd_exact(mt, 8);
  expect_matches_exact(top_singular_triplets(*dense_operator(mt), 8, o), ref32, 1e-5, 1e-4);
}

TEST(Subspace, StreamingPathMatchesResidentPath) {
  at::Tensor m = with_spectrum(400, 150, decaying(150), 3).to(at::kHalf);
  SubspaceOptions o;
  o.max_passes = 5;
  const TruncatedSvd resident = top_singular_triplets(*dense_operator(m), 6, o);
  const TruncatedSvd streamed = top_singular_triplets(*dense_operator(m, /*max_resident_bytes=*/0), 6, o);
  EXPECT_LT((resident.S - streamed.S).abs().max().item<double>(), 1e-5);
  EXPECT_GT(column_cosines(resident.U, streamed.U).min().item<double>(), 1 - 1e-6);
  expect_matches_exact(streamed, truncated_svd_exact(m, 6), 1e-5, 1e-4);
}

TEST(Subspace, LoraMergedOperatorNeverFormsTheUpdate) {
  const int64_t out = 192, in = 160, r = 8;
  at::Tensor w = with_spectrum(out, in, decaying(in), 5);
  at::manual_seed(9);
  at::Tensor B = at::randn({out, r}, kF64) * 0.05;
  at::Tensor A = at::randn({r, in}, kF64) / std::sqrt(static_cast<double>(in));
  const double scale = 2.0;
  const at::Tensor merged = w + scale * at::mm(B, A);
  auto op = lora_merged_operator(dense_operator(w), B, A, scale);
  EXPECT_EQ(op->rows(), out);
  EXPECT_EQ(op->cols(), in);
  // Products agree with the formed merged matrix.
  at::Tensor x = at::randn({in, 5}, kF64);
  at::Tensor y = at::randn({out, 5}, kF64);
  const auto close = [](const at::Tensor& a, const at::Tensor& b) {
    return (a.to(at::kDouble) - b).abs().max().item<double>() / b.abs().max().item<double>();
  };
  EXPECT_LT(close(op->apply(x.to(at::kFloat)), at::mm(merged, x)), 1e-5);
  EXPECT_LT(close(op->apply_t(y.to(at::kFloat)), at::mm(merged.t(), y)), 1e-5);
  const GramProduct g = op->apply_gram(x.to(at::kFloat));
  EXPECT_LT(close(g.mx, at::mm(merged, x)), 1e-5);
  EXPECT_LT(close(g.gram, at::mm(merged.t(), at::mm(merged, x))), 1e-5);

  SubspaceOptions o;
  o.max_passes = 6;
  expect_matches_exact(top_singular_triplets(*op, 10, o), truncated_svd_exact(merged, 10), 1e-5, 1e-4);
}

TEST(Subspace, GramProductTakesAShiftOnEveryPath) {
  at::Tensor w = with_spectrum(150, 90, decaying(90), 41);
  at::Tensor x = at::randn({90, 3}, kF64), y = at::randn({150, 3}, kF64);
  const at::Tensor want_mx = at::mm(w, x) + y, want_gram = at::mm(w.t(), want_mx);
  const auto close = [](const at::Tensor& a, const at::Tensor& b) {
    return (a.to(at::kDouble) - b).abs().max().item<double>() / b.abs().max().item<double>();
  };
  // Resident fp32 (fused row chunks), a transposed view, streamed bf16 chunks, and the default.
  at::Tensor wt = w.to(at::kFloat).t().contiguous().t();
  for (const auto& op : {dense_operator(w), dense_operator(wt), dense_operator(w, /*max_resident_bytes=*/0)}) {
    const GramProduct g = op->apply_gram(x.to(at::kFloat), y.to(at::kFloat));
    EXPECT_LT(close(g.mx, want_mx), 1e-5);
    EXPECT_LT(close(g.gram, want_gram), 1e-5);
  }
  const at::Tensor wb = w.to(at::kBFloat16).to(at::kDouble);
  const GramProduct gb = dense_operator(w.to(at::kBFloat16), 0)->apply_gram(x.to(at::kFloat), y.to(at::kFloat));
  EXPECT_LT(close(gb.gram, at::mm(wb.t(), at::mm(wb, x) + y)), 1e-5);
}

TEST(Subspace, LowRankOperatorGivesZeroTail) {
  // A rank-3 matrix asked for 6 triplets: the three beyond its rank come out (near) zero.
  at::Tensor s = at::tensor({3.0, 2.0, 1.0}, kF64);
  at::Tensor m = with_spectrum(120, 100, s, 13);
  const TruncatedSvd got = top_singular_triplets(*dense_operator(m), 6);
  for (int j = 0; j < 3; ++j) EXPECT_NEAR(got.S[j].item<double>(), s[j].item<double>(), 1e-5);
  for (int j = 3; j < 6; ++j) EXPECT_LT(got.S[j].item<double>(), 1e-5);
  EXPECT_TRUE(at::isfinite(got.residual).all().item<bool>());
}

TEST(Subspace, SmallOperatorsTakeTheExactPath) {
  at::Tensor m = with_spectrum(40, 24, decaying(24), 17);
  const TruncatedSvd got = top_singular_triplets(*dense_operator(m), 16);  // 16 + 10 >= 24
  EXPECT_TRUE(got.exact);
  EXPECT_EQ(got.passes, 0);
  expect_matches_exact(got, truncated_svd_exact(m, 16), 1e-6, 1e-6);
  // Wide operators too (formed through Mᵀ).
  const TruncatedSvd wide = top_singular_triplets(*dense_operator(m.t()), 4, SubspaceOptions{30, 1, 0.0});
  EXPECT_TRUE(wide.exact);
  expect_matches_exact(wide, truncated_svd_exact(m.t(), 4), 1e-6, 1e-6);
}

TEST(Subspace, ToleranceStopsEarlyAndSeedIsDeterministic) {
  // A steep spectrum converges in a couple of passes.
  at::Tensor m = with_spectrum(300, 300, at::pow(0.5, at::arange(300, kF64)), 19);
  SubspaceOptions o;
  o.max_passes = 8;
  o.tol = 1e-6;
  const TruncatedSvd a = top_singular_triplets(*dense_operator(m), 5, o);
  EXPECT_LT(a.passes, 8);
  EXPECT_LE(a.residual.max().item<double>(), 1e-6 * a.S[0].item<double>());
  const TruncatedSvd b = top_singular_triplets(*dense_operator(m), 5, o);
  EXPECT_TRUE(at::equal(a.S, b.S));
  EXPECT_TRUE(at::equal(a.U, b.U));
  o.seed = 42;
  const TruncatedSvd c = top_singular_triplets(*dense_operator(m), 5, o);
  EXPECT_LT((a.S - c.S).abs().max().item<double>(), 1e-6);
}

TEST(Subspace, KrylovBeatsPlainIterationAtEqualPasses) {
  at::Tensor m = with_spectrum(300, 240, at::pow(0.97, at::arange(240, kF64)), 29);  // slow decay
  const TruncatedSvd ref = truncated_svd_exact(m, 8);
  SubspaceOptions o;
  o.max_passes = 3;
  o.krylov = false;
  const TruncatedSvd plain = top_singular_triplets(*dense_operator(m), 8, o);
  o.krylov = true;
  const TruncatedSvd krylov = top_singular_triplets(*dense_operator(m), 8, o);
  const double e_plain = (plain.S - ref.S).abs().max().item<double>();
  const double e_krylov = (krylov.S - ref.S).abs().max().item<double>();
  EXPECT_LT(e_krylov, e_plain);
  EXPECT_LT(krylov.residual.max().item<double>(), plain.residual.max().item<double>());
  // Both residuals remain valid bounds.
  for (const TruncatedSvd* t : {&plain, &krylov})
    for (int64_t j = 0; j < 8; ++j)
      EXPECT_LE(std::abs(t->S[j].item<double>() - ref.S[j].item<double>()), t->residual[j].item<double>() + 1e-6);
}

TEST(Subspace, WarmStartFindsTheLoraDirectionInOnePass) {
  // A new direction planted far below nothing: W has a flat top, the update adds a strong direction
  // along a (right) that a single random block would resolve poorly.
  const int64_t out = 220, in = 200, r = 4;
  at::Tensor w = with_spectrum(out, in, at::pow(0.995, at::arange(in, kF64)), 31);
  at::manual_seed(37);
  at::Tensor B = at::randn({out, r}, kF64) / std::sqrt(static_cast<double>(out)) * 3.0;
  at::Tensor A = at::randn({r, in}, kF64) / std::sqrt(static_cast<double>(in));
  const at::Tensor merged = w + at::mm(B, A);
  const TruncatedSvd ref = truncated_svd_exact(merged, 4);
  auto op = lora_merged_operator(dense_operator(w), B, A, 1.0);
  SubspaceOptions o;
  o.max_passes = 1;
  o.oversample = 0;
  o.start = A.t();
  const TruncatedSvd warm = top_singular_triplets(*op, 4, o);
  EXPECT_EQ(warm.passes, 1);
  // The start block is A's row space plus `oversample` (0) Gaussian columns: width r.
  EXPECT_GT(column_cosines(warm.U, ref.U).min().item<double>(), 0.99);
  // A wrongly shaped start is refused.
  o.start = at::zeros({in + 1, 2}, kF64);
  EXPECT_THROW(top_singular_triplets(*op, 4, o), std::invalid_argument);
}

TEST(Subspace, RejectsBadArgumentsAndNonFiniteInput) {
  at::Tensor m = with_spectrum(100, 80, decaying(80), 23);
  auto op = dense_operator(m);
  EXPECT_THROW(top_singular_triplets(*op, 0), std::invalid_argument);
  EXPECT_THROW(top_singular_triplets(*op, 81), std::invalid_argument);
  EXPECT_THROW(top_singular_triplets(*op, 5, SubspaceOptions{-1, 3, 0.0}), std::invalid_argument);
  EXPECT_THROW(dense_operator(at::zeros({4}, kF64)), std::invalid_argument);
  EXPECT_THROW(dense_operator(at::zeros({4, 4}, at::kLong)), std::invalid_argument);
  at::Tensor bad = m.clone();
  bad[3][7] = NAN;
  EXPECT_THROW(top_singular_triplets(*dense_operator(bad), 5), std::domain_error);
  EXPECT_THROW(truncated_svd_exact(bad, 5), std::domain_error);
  at::Tensor B = at::ones({100, 4}, kF64), A = at::ones({4, 80}, kF64);
  EXPECT_THROW(lora_merged_operator(op, B, A.narrow(1, 0, 79), 1.0), std::invalid_argument);
  EXPECT_THROW(lora_merged_operator(op, B, A, NAN), std::domain_error);
  at::Tensor badB = B.clone();
  badB[0][0] = INFINITY;
  EXPECT_THROW(lora_merged_operator(op, badB, A, 1.0), std::domain_error);
}
