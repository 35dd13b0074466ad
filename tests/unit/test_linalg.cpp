// aquin::spectral_norm, lora_spectral_norm, lora_singular_values, checked against LAPACK's fp64 SVD
// of the very values the functions read (so a bf16 input is compared with the SVD of those bf16
// values, not of the fp32 matrix they were rounded from).
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "aquin/sdk/linalg.hpp"

namespace {

at::Generator seeded(uint64_t seed) { return at::make_generator<at::CPUGeneratorImpl>(seed); }

at::Tensor gaussian(int64_t rows, int64_t cols, uint64_t seed) {
  at::Generator gen = seeded(seed);
  return at::randn({rows, cols}, gen);
}

// U · diag(s) · Vᵀ in fp64 with Haar-like orthonormal U [rows, k], V [cols, k]: a matrix whose
// singular values are exactly (to rounding) the given ones.
at::Tensor with_spectrum(int64_t rows, int64_t cols, const at::Tensor& s, uint64_t seed) {
  at::Generator gen = seeded(seed);
  const int64_t k = s.size(0);
  const auto f64 = at::TensorOptions().dtype(at::kDouble);
  const at::Tensor u = std::get<0>(at::linalg_qr(at::randn({rows, k}, gen, f64)));
  const at::Tensor v = std::get<0>(at::linalg_qr(at::randn({cols, k}, gen, f64)));
  return at::mm(u * s.to(at::kDouble), v.t());
}

// ‖m‖_F in fp64, scaled first so that 1e-200-sized entries do not underflow when squared.
double frobenius_f64(const at::Tensor& m) {
  const at::Tensor d = m.to(at::kDouble);
  const double amax = d.abs().max().item<double>();
  return amax == 0 ? 0.0 : (d / amax).norm().item<double>() * amax;
}

struct Checked {
  aquin::SpectralEstimate est;
  double sigma_exact = 0;
  double rel_err = 0;  // signed: (exact − estimate) / exact, ≥ 0 up to rounding for a Ritz value
};

// Runs spectral_norm and holds it to the exact SVD: error within tolerance, error within the
// reported bound, Frobenius exact, and the estimate never above the truth by more than rounding.
Checked expect_matches_exact(const at::Tensor& m, double rel_tol = 1e-4,
                             const std::string& what = "") {
  SCOPED_TRACE(what);
  Checked c;
  c.est = aquin::spectral_norm(m, rel_tol);
  const at::Tensor sv = aquin::singular_values_exact(m);
  c.sigma_exact = sv[0].item<double>();
  c.rel_err = (c.sigma_exact - c.est.sigma_max) / c.sigma_exact;
  EXPECT_LE(std::fabs(c.rel_err), rel_tol)
      << "estimate " << c.est.sigma_max << " exact " << c.sigma_exact;
  // The bound must be honest. 1e-12 absorbs the reference SVD's own rounding.
  EXPECT_LE(std::fabs(c.rel_err), c.est.rel_error_bound + 1e-12)
      << "bound " << c.est.rel_error_bound << " actual " << c.rel_err;
  EXPECT_LE(c.est.rel_error_bound, rel_tol);
  EXPECT_GE(c.rel_err, -1e-12) << "a Ritz value cannot exceed sigma_max";
  const double frob = frobenius_f64(m);
  EXPECT_NEAR(c.est.frobenius, frob, 1e-6 * frob);
  return c;
}

// ---------------------------------------------------------------------------------------------
// Dense path

TEST(SpectralNorm, GaussianShapes) {
  struct Shape {
    int64_t rows, cols;
  };
  // Gaussian matrices have a flat Marchenko–Pastur top (neighbouring singular values ~1e-3 apart),
  // what a full fine-tune delta looks like. 3000×64 takes the exact path, 3000×65 the iterative
  // one.
  const std::vector<Shape> shapes = {{512, 2048},  {2048, 512}, {3000, 64}, {3000, 65},
                                     {1000, 1000}, {130, 4000}, {300, 200}};
  uint64_t seed = 1;
  for (const Shape& s : shapes) {
    const at::Tensor m = gaussian(s.rows, s.cols, seed++);
    const Checked c =
        expect_matches_exact(m, 1e-4, std::to_string(s.rows) + "x" + std::to_string(s.cols));
    if (std::min(s.rows, s.cols) <= 64)
      EXPECT_EQ(c.est.iterations, 0);
    else
      EXPECT_GT(c.est.iterations, 0);
  }
}

TEST(SpectralNorm, LooserToleranceStillHonest) {
  const at::Tensor m = gaussian(800, 2400, 11);
  const Checked loose = expect_matches_exact(m, 1e-3, "tol 1e-3");
  const Checked tight = expect_matches_exact(m, 1e-6, "tol 1e-6 (fp64 products)");
  EXPECT_LE(loose.est.iterations, tight.est.iterations);
}

TEST(SpectralNorm, NearlyDegenerateTop) {
  // Eight top singular values 1e-5 apart, then a bulk: the worst case for resolving σ₁ on its own,
  // the case the cluster bound exists for.
  std::vector<double> s;
  for (int i = 0; i < 8; ++i) s.push_back(1.0 - 1e-5 * i);
  for (int i = 0; i < 300; ++i) s.push_back(0.9 * std::exp(-i / 80.0));
  const at::Tensor spec = at::tensor(s, at::TensorOptions().dtype(at::kDouble));
  const at::Tensor m = with_spectrum(900, 700, spec, 21).to(at::kFloat);
  expect_matches_exact(m, 1e-4, "cluster of 8");
}

TEST(SpectralNorm, MarchenkoPasturBulkWithFlatEdge) {
  // The MP density for aspect ratio 1/4 sampled by quantiles: exactly the Gaussian spectrum shape,
  // but with the edge fixed so the test does not depend on a random draw.
  const int64_t n = 600;
  const double ratio = 0.25;
  const double lo = std::pow(1 - std::sqrt(ratio), 2);
  const double hi = std::pow(1 + std::sqrt(ratio), 2);
  std::vector<double> s;
  for (int64_t i = 0; i < n; ++i) {
    // Inverse CDF by bisection would be exact; a square-root edge (density ~ sqrt(hi − λ)) is what
    // matters for convergence, and this quantile map reproduces it.
    const double q = (i + 0.5) / static_cast<double>(n);
    const double lambda = hi - (hi - lo) * std::pow(q, 2.0 / 3.0);
    s.push_back(std::sqrt(lambda));
  }
  const at::Tensor spec = at::tensor(s, at::TensorOptions().dtype(at::kDouble));
  const at::Tensor m = with_spectrum(n, 4 * n, spec, 22).to(at::kFloat);
  expect_matches_exact(m, 1e-4, "MP quantiles");
}

TEST(SpectralNorm, LowRankPlusNoise) {
  const int64_t rows = 700, cols = 1800;
  const double noise = 1e-3;
  const double edge = noise * (std::sqrt(double(rows)) + std::sqrt(double(cols)));
  const at::Tensor spec =
      at::tensor(std::vector<double>{10, 8, 6, 4, 2}, at::TensorOptions().dtype(at::kDouble)) *
      edge;
  const at::Tensor m =
      (with_spectrum(rows, cols, spec, 31) + gaussian(rows, cols, 32).to(at::kDouble) * noise)
          .to(at::kFloat);
  expect_matches_exact(m, 1e-4, "rank 5 + noise");
  // A signal barely above the bulk is harder: its top is only 10% above the noise edge.
  const at::Tensor weak = (with_spectrum(rows, cols, spec / 10 * 1.1, 33) +
                           gaussian(rows, cols, 34).to(at::kDouble) * noise)
                              .to(at::kFloat);
  expect_matches_exact(weak, 1e-4, "weak signal + noise");
}

TEST(SpectralNorm, RankOne) {
  at::Generator gen = seeded(41);
  const at::Tensor u = at::randn({900}, gen, at::TensorOptions().dtype(at::kDouble));
  const at::Tensor v = at::randn({300}, gen, at::TensorOptions().dtype(at::kDouble));
  const at::Tensor m = at::outer(u, v);
  const Checked c = expect_matches_exact(m, 1e-4, "rank 1");
  const double exact = u.norm().item<double>() * v.norm().item<double>();
  EXPECT_NEAR(c.est.sigma_max, exact, 1e-9 * exact);
  // Stable rank of a rank-1 matrix is exactly 1.
  EXPECT_NEAR(c.est.frobenius * c.est.frobenius / (c.est.sigma_max * c.est.sigma_max), 1.0, 1e-8);
}

TEST(SpectralNorm, KnownSpectrum) {
  const at::Tensor spec = at::linspace(3.0, 0.01, 150, at::TensorOptions().dtype(at::kDouble));
  const at::Tensor m = with_spectrum(1200, 500, spec, 51);
  const Checked c = expect_matches_exact(m, 1e-4, "linear spectrum");
  EXPECT_NEAR(c.est.sigma_max, 3.0, 3e-4);
  EXPECT_NEAR(c.est.frobenius, spec.norm().item<double>(), 1e-9 * spec.norm().item<double>());
}

TEST(SpectralNorm, ZeroAndEmpty) {
  for (const at::Tensor& m :
       {at::zeros({300, 500}), at::zeros({0, 7}), at::zeros({20, 3}, at::kBFloat16)}) {
    const aquin::SpectralEstimate e = aquin::spectral_norm(m);
    EXPECT_EQ(e.sigma_max, 0.0);
    EXPECT_EQ(e.frobenius, 0.0);
    EXPECT_EQ(e.rel_error_bound, 0.0);
    EXPECT_EQ(e.iterations, 0);
  }
}

TEST(SpectralNorm, HalfPrecisionInputs) {
  const at::Tensor base = gaussian(700, 1500, 61) * 0.02;
  for (const auto dt : {at::kBFloat16, at::kHalf}) {
    const at::Tensor m = base.to(dt);
    expect_matches_exact(m, 1e-4, c10::toString(dt));
  }
  // Tiny half-precision deltas (bf16 rounding noise sized) must not underflow the products.
  expect_matches_exact((gaussian(400, 900, 62) * 1e-6).to(at::kBFloat16), 1e-4, "tiny bf16");
}

TEST(SpectralNorm, ExtremeScales) {
  const at::Tensor base = gaussian(300, 700, 71).to(at::kDouble);
  const Checked ref = expect_matches_exact(base, 1e-4, "unit");
  for (const double f : {1e-30, 1e30, 1e-200, 1e200}) {
    const at::Tensor m = base * f;
    const Checked c = expect_matches_exact(m, 1e-4, "scale " + std::to_string(f));
    EXPECT_NEAR(c.est.sigma_max / f, ref.est.sigma_max, 1e-9 * ref.est.sigma_max);
  }
  // fp32 near both ends of its range: products of raw entries would overflow or underflow.
  const at::Tensor base32 = gaussian(300, 700, 72);
  const Checked ref32 = expect_matches_exact(base32, 1e-4, "fp32 unit");
  for (const float f : {1e-35f, 1e35f}) {
    const at::Tensor m = base32 * f;
    const Checked c = expect_matches_exact(m, 1e-4, "fp32 scale " + std::to_string(f));
    EXPECT_NEAR(c.est.sigma_max / f, ref32.est.sigma_max, 1e-4 * ref32.est.sigma_max);
  }
}

TEST(SpectralNorm, TransposeAndViews) {
  const at::Tensor m = gaussian(600, 1700, 81);
  const aquin::SpectralEstimate a = aquin::spectral_norm(m);
  const aquin::SpectralEstimate b = aquin::spectral_norm(m.t());
  const aquin::SpectralEstimate c = aquin::spectral_norm(m.t().contiguous());
  // m and mᵀ have one Gram operator (the 600-side one) and so one iteration.
  EXPECT_EQ(a.sigma_max, b.sigma_max);
  EXPECT_NEAR(a.sigma_max, c.sigma_max, 2e-4 * a.sigma_max);
  // A strided view (every other column) is read as it is, without a copy of the caller's tensor.
  expect_matches_exact(m.slice(1, 0, 1700, 2), 1e-4, "strided view");
}

TEST(SpectralNorm, Deterministic) {
  const at::Tensor m = gaussian(500, 900, 91);
  const aquin::SpectralEstimate a = aquin::spectral_norm(m);
  const aquin::SpectralEstimate b = aquin::spectral_norm(m);
  EXPECT_EQ(a.sigma_max, b.sigma_max);
  EXPECT_EQ(a.rel_error_bound, b.rel_error_bound);
  EXPECT_EQ(a.iterations, b.iterations);
}

TEST(SpectralNorm, IterationCapReportsHonestBound) {
  const at::Tensor m = gaussian(1000, 3000, 101);
  const aquin::SpectralEstimate e = aquin::spectral_norm(m, 1e-4, 2);
  const double exact = aquin::singular_values_exact(m)[0].item<double>();
  EXPECT_EQ(e.iterations, 2);
  EXPECT_GT(e.rel_error_bound, 1e-4);  // two iterations cannot certify a flat top
  EXPECT_LE((exact - e.sigma_max) / exact, e.rel_error_bound);
  EXPECT_GE((exact - e.sigma_max) / exact, -1e-12);
}

TEST(SpectralNorm, StableRank) {
  // Stable rank = ‖·‖_F² / σ₁²: its relative error is about twice σ₁'s, so ask for half the target.
  for (uint64_t seed : {111, 112}) {
    const at::Tensor m = gaussian(900, 2500, seed);
    const aquin::SpectralEstimate e = aquin::spectral_norm(m, 5e-5);
    const at::Tensor sv = aquin::singular_values_exact(m);
    const double exact = (sv * sv).sum().item<double>() / std::pow(sv[0].item<double>(), 2);
    const double est = e.frobenius * e.frobenius / (e.sigma_max * e.sigma_max);
    EXPECT_NEAR(est, exact, 1e-4 * exact);
    // And at the default tolerance it is within twice the reported bound.
    const aquin::SpectralEstimate d = aquin::spectral_norm(m);
    const double est_d = d.frobenius * d.frobenius / (d.sigma_max * d.sigma_max);
    EXPECT_LE(std::fabs(est_d - exact) / exact,
              2.0 * d.rel_error_bound * (1 + d.rel_error_bound) + 1e-12);
  }
}

TEST(SpectralNorm, RejectsBadInput) {
  EXPECT_THROW(aquin::spectral_norm(at::ones({5})), std::invalid_argument);
  EXPECT_THROW(aquin::spectral_norm(at::ones({2, 3, 4})), std::invalid_argument);
  EXPECT_THROW(aquin::spectral_norm(at::ones({5, 5}, at::kInt)), std::invalid_argument);
  EXPECT_THROW(aquin::spectral_norm(at::ones({5, 5}), 0.0), std::invalid_argument);
  EXPECT_THROW(aquin::spectral_norm(at::ones({5, 5}), 1e-4, 0), std::invalid_argument);
  for (const double bad :
       {std::numeric_limits<double>::quiet_NaN(), std::numeric_limits<double>::infinity(),
        -std::numeric_limits<double>::infinity()}) {
    for (const auto dt : {at::kFloat, at::kBFloat16, at::kDouble}) {
      at::Tensor m = at::ones({100, 200}, dt);
      m[37][101] = bad;
      EXPECT_THROW(aquin::spectral_norm(m), std::domain_error) << bad << " " << c10::toString(dt);
    }
  }
  at::Tensor m = at::ones({10, 10});
  m[3][3] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_THROW(aquin::singular_values_exact(m), std::domain_error);
}

TEST(SingularValuesExact, MatchesConstruction) {
  const at::Tensor spec = at::linspace(2.0, 0.5, 40, at::TensorOptions().dtype(at::kDouble));
  const at::Tensor sv = aquin::singular_values_exact(with_spectrum(90, 60, spec, 121));
  ASSERT_EQ(sv.size(0), 60);
  EXPECT_EQ(sv.scalar_type(), at::kDouble);
  EXPECT_TRUE(at::allclose(sv.narrow(0, 0, 40), spec, 0, 1e-12));
  EXPECT_LT(sv.narrow(0, 40, 20).abs().max().item<double>(), 1e-12);
}

// ---------------------------------------------------------------------------------------------
// LoRA path: ΔW = scale · B @ A, compared with the materialised delta

struct LoraCase {
  int64_t out, in, r;
  double scale;
};

TEST(LoraSpectralNorm, MatchesMaterialisedDelta) {
  std::vector<LoraCase> cases;
  for (const int64_t r : {1, 4, 16}) {
    cases.push_back({512, 768, r, 16.0 / r});             // lora_alpha / r
    cases.push_back({768, 512, r, 16.0 / std::sqrt(r)});  // rsLoRA: lora_alpha / sqrt(r)
  }
  uint64_t seed = 200;
  for (const LoraCase& lc : cases) {
    SCOPED_TRACE("r=" + std::to_string(lc.r) + " scale=" + std::to_string(lc.scale));
    at::Generator gen = seeded(seed++);
    const at::Tensor B = at::randn({lc.out, lc.r}, gen) * 0.01;
    const at::Tensor A = at::randn({lc.r, lc.in}, gen) * 0.01;
    const at::Tensor delta = at::mm(B.to(at::kDouble), A.to(at::kDouble)) * lc.scale;
    const at::Tensor sv_ref = aquin::singular_values_exact(delta);
    const double s1 = sv_ref[0].item<double>();
    const double frob = delta.norm().item<double>();

    const aquin::SpectralEstimate e = aquin::lora_spectral_norm(B, A, lc.scale);
    EXPECT_NEAR(e.sigma_max, s1, 1e-5 * s1);
    EXPECT_NEAR(e.frobenius, frob, 1e-5 * frob);
    EXPECT_EQ(e.iterations, 0);
    EXPECT_LT(e.rel_error_bound, 1e-9);
    const double sr_exact = frob * frob / (s1 * s1);
    EXPECT_NEAR(e.frobenius * e.frobenius / (e.sigma_max * e.sigma_max), sr_exact, 1e-4 * sr_exact);

    // All r singular values, descending, equal to the leading r of the materialised delta.
    const at::Tensor sv = aquin::lora_singular_values(B, A, lc.scale);
    ASSERT_EQ(sv.dim(), 1);
    ASSERT_EQ(sv.size(0), lc.r);
    EXPECT_EQ(sv.scalar_type(), at::kDouble);
    EXPECT_TRUE(at::allclose(sv, sv_ref.narrow(0, 0, lc.r), 0, 1e-9 * s1));
    if (lc.r > 1) {
      EXPECT_TRUE((sv.narrow(0, 0, lc.r - 1) >= sv.narrow(0, 1, lc.r - 1)).all().item<bool>());
    }
    // Materialised through the dense path too: the two answers agree.
    const aquin::SpectralEstimate d = aquin::spectral_norm(delta.to(at::kFloat));
    EXPECT_NEAR(d.sigma_max, e.sigma_max, 1e-4 * e.sigma_max);
  }
}

TEST(LoraSpectralNorm, HalfPrecisionFactorsAndNegativeScale) {
  at::Generator gen = seeded(300);
  const at::Tensor B = (at::randn({640, 8}, gen) * 0.02).to(at::kBFloat16);
  const at::Tensor A = (at::randn({8, 320}, gen) * 0.02).to(at::kHalf);
  const double scale = -2.0;
  const at::Tensor delta = at::mm(B.to(at::kDouble), A.to(at::kDouble)) * scale;
  const double s1 = aquin::singular_values_exact(delta)[0].item<double>();
  const aquin::SpectralEstimate e = aquin::lora_spectral_norm(B, A, scale);
  EXPECT_NEAR(e.sigma_max, s1, 1e-9 * s1);
  EXPECT_NEAR(e.frobenius, delta.norm().item<double>(), 1e-9 * e.frobenius);
}

TEST(LoraSpectralNorm, RankAboveSmallSideAndZeroB) {
  at::Generator gen = seeded(301);
  // r = 80 > in = 50: the last 30 singular values of the [64, 50] delta are exactly zero.
  const at::Tensor B = at::randn({64, 80}, gen);
  const at::Tensor A = at::randn({80, 50}, gen);
  const at::Tensor sv = aquin::lora_singular_values(B, A, 0.5);
  ASSERT_EQ(sv.size(0), 80);
  const at::Tensor ref =
      aquin::singular_values_exact(at::mm(B.to(at::kDouble), A.to(at::kDouble)) * 0.5);
  EXPECT_TRUE(at::allclose(sv.narrow(0, 0, 50), ref, 0, 1e-9 * ref[0].item<double>()));
  EXPECT_EQ(sv.narrow(0, 50, 30).abs().max().item<double>(), 0.0);

  // PEFT initialises B to zero: a freshly created adapter is a zero delta.
  const aquin::SpectralEstimate z =
      aquin::lora_spectral_norm(at::zeros({128, 8}), at::randn({8, 96}, gen), 2.0);
  EXPECT_EQ(z.sigma_max, 0.0);
  EXPECT_EQ(z.frobenius, 0.0);
}

TEST(LoraSpectralNorm, RejectsBadInput) {
  EXPECT_THROW(aquin::lora_spectral_norm(at::ones({10, 4}), at::ones({5, 10}), 1.0),
               std::invalid_argument);
  EXPECT_THROW(aquin::lora_singular_values(at::ones({10}), at::ones({1, 10}), 1.0),
               std::invalid_argument);
  EXPECT_THROW(aquin::lora_spectral_norm(at::ones({10, 4}, at::kLong), at::ones({4, 10}), 1.0),
               std::invalid_argument);
  EXPECT_THROW(aquin::lora_spectral_norm(at::ones({10, 4}), at::ones({4, 10}),
                                         std::numeric_limits<double>::infinity()),
               std::domain_error);
  at::Tensor A = at::ones({4, 10});
  A[2][2] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_THROW(aquin::lora_spectral_norm(at::ones({10, 4}), A, 1.0), std::domain_error);
}

}  // namespace
