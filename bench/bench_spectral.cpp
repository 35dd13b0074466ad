// bench_spectral: aquin::spectral_norm and aquin::lora_spectral_norm against at::linalg_svdvals.
//
// Every reference is measured in the same run, on the same data, with the same thread count, so the
// printed ratio means something on any machine. Target: spectral_norm ≥ 10× faster than svdvals
// with relative error ≤ 1e-3.
//
//   bench_spectral [--reps N] [--threads N] [--large]
//     --reps N   timed repetitions of each aquin call (median reported; default 3)
//     --threads N  intra-op threads for both sides (default: hardware_concurrency)
//     --large    also time a 128256×2048 embedding-sized delta (no svdvals reference: it would take
//                many minutes) to show the cost of a vocabulary-sized matrix
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "aquin/sdk/linalg.hpp"

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// Median wall time of `reps` runs of f (after one untimed warm-up when reps > 1, so page faults
// of first-touch allocations are not billed to the method).
double median_time(int reps, const std::function<void()>& f) {
  if (reps > 1) f();
  std::vector<double> t;
  for (int i = 0; i < reps; ++i) {
    const auto t0 = Clock::now();
    f();
    t.push_back(seconds_since(t0));
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

// Which BLAS this process really mapped: the alternatives system can point libblas.so.3 anywhere.
std::string mapped_blas() {
  std::ifstream maps("/proc/self/maps");
  std::string line;
  std::string found;
  while (std::getline(maps, line)) {
    const auto pos = line.find('/');
    if (pos == std::string::npos) continue;
    const std::string path = line.substr(pos);
    if ((path.find("blas") != std::string::npos || path.find("lapack") != std::string::npos) &&
        found.find(path) == std::string::npos)
      found += (found.empty() ? "" : ", ") + path;
  }
  return found.empty() ? "(none found)" : found;
}

struct Reference {
  double sigma = 0;
  double seconds = 0;
};

Reference svdvals_reference(const at::Tensor& m) {
  Reference r;
  const auto t0 = Clock::now();
  const at::Tensor s = at::linalg_svdvals(m);
  r.seconds = seconds_since(t0);
  r.sigma = s[0].item<double>();
  return r;
}

void report_dense(const char* name, const at::Tensor& m, int reps) {
  std::printf("\n%s: %lld x %lld %s\n", name, static_cast<long long>(m.size(0)),
              static_cast<long long>(m.size(1)), c10::toString(m.scalar_type()));
  const Reference ref = svdvals_reference(m);
  // svdvals in fp32 carries its own ~1e-7 error, which is larger than what spectral_norm achieves
  // at tight tolerances; an fp64 SVD (untimed) separates the two.
  const double exact = at::linalg_svdvals(m.to(at::kDouble))[0].item<double>();
  std::printf("  %-28s %9.3f s   sigma_max %.9g (fp64 SVD: %.12g)\n", "at::linalg_svdvals",
              ref.seconds, ref.sigma, exact);
  for (const double tol : {1e-4, 1e-3}) {
    aquin::SpectralEstimate est;
    const double t = median_time(reps, [&] { est = aquin::spectral_norm(m, tol); });
    const double err = std::fabs(est.sigma_max - ref.sigma) / ref.sigma;
    const double err64 = std::fabs(est.sigma_max - exact) / exact;
    char label[64];
    std::snprintf(label, sizeof label, "spectral_norm(tol=%.0e)", tol);
    std::printf(
        "  %-28s %9.3f s   speedup %5.1fx   rel err %.2e (vs fp64 %.2e)   bound %.2e   iters %d\n",
        label, t, ref.seconds / t, err, err64, est.rel_error_bound, est.iterations);
  }
}

void report_lora(int reps) {
  const int64_t out = 8192, in = 2048, r = 16;
  const double scale = 32.0 / r;  // lora_alpha = 32
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(7);
  const at::Tensor B = at::randn({out, r}, gen) * 0.02;
  const at::Tensor A = at::randn({r, in}, gen) * 0.02;
  std::printf("\nLoRA: B %lld x %lld, A %lld x %lld, scale %.3g (delta %lld x %lld)\n",
              static_cast<long long>(out), static_cast<long long>(r), static_cast<long long>(r),
              static_cast<long long>(in), scale, static_cast<long long>(out),
              static_cast<long long>(in));
  Reference ref;
  at::Tensor sv_ref;
  ref.seconds = median_time(1, [&] {
    const at::Tensor delta = at::mm(B, A) * scale;
    sv_ref = at::linalg_svdvals(delta);
  });
  ref.sigma = sv_ref[0].item<double>();
  const double frob_ref = sv_ref.to(at::kDouble).norm().item<double>();
  std::printf("  %-28s %9.3f s   sigma_max %.9g\n", "materialise + svdvals", ref.seconds,
              ref.sigma);
  aquin::SpectralEstimate est;
  const double t =
      median_time(std::max(reps, 5), [&] { est = aquin::lora_spectral_norm(B, A, scale); });
  std::printf("  %-28s %9.6f s   speedup %6.0fx   rel err %.2e   frob rel err %.2e\n",
              "lora_spectral_norm", t, ref.seconds / t,
              std::fabs(est.sigma_max - ref.sigma) / ref.sigma,
              std::fabs(est.frobenius - frob_ref) / frob_ref);
}

}  // namespace

int main(int argc, char** argv) {
  int reps = 3;
  int threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  bool large = false;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--reps") && i + 1 < argc) {
      reps = std::max(1, std::atoi(argv[++i]));
    } else if (!std::strcmp(argv[i], "--threads") && i + 1 < argc) {
      threads = std::max(1, std::atoi(argv[++i]));
    } else if (!std::strcmp(argv[i], "--large")) {
      large = true;
    } else {
      std::fprintf(stderr, "usage: %s [--reps N] [--threads N] [--large]\n", argv[0]);
      return 2;
    }
  }
  // libtorch starts with one intra-op thread here; use the machine.
  at::set_num_threads(threads);
  std::printf("threads: %d (hardware_concurrency %u)\nBLAS/LAPACK mapped: %s\n",
              at::get_num_threads(), std::thread::hardware_concurrency(), mapped_blas().c_str());

  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(1234);
  const int64_t rows = 2048, cols = 8192;

  // Pure noise: the Marchenko–Pastur edge, top singular values ~1e-3 apart (the hard case).
  const at::Tensor gauss = at::randn({rows, cols}, gen);
  report_dense("Gaussian (flat Marchenko-Pastur top)", gauss, reps);

  // What a full fine-tune delta looks like: a low-rank signal a little above a noise bulk. The
  // signal values (2.0× down to 1.1× the bulk edge) make the top close to, but not inside, the
  // bulk.
  {
    const int64_t k = 16;
    const double noise = 1e-3;
    const double edge = noise * (std::sqrt(double(rows)) + std::sqrt(double(cols)));
    const at::Tensor u = std::get<0>(at::linalg_qr(at::randn({rows, k}, gen)));
    const at::Tensor v = std::get<0>(at::linalg_qr(at::randn({cols, k}, gen)));
    const at::Tensor s = at::linspace(2.0 * edge, 1.1 * edge, k);
    const at::Tensor delta = at::mm(u * s, v.t()) + at::randn({rows, cols}, gen) * noise;
    report_dense("Fine-tune-like delta (rank-16 signal + noise)", delta, reps);
  }

  report_lora(reps);

  if (large) {
    const at::Tensor emb = at::randn({128256, 2048}, gen) * 1e-3;
    std::printf("\nEmbedding-sized delta: 128256 x 2048 float (no svdvals reference)\n");
    for (const double tol : {1e-4, 1e-3}) {
      aquin::SpectralEstimate est;
      const double t = median_time(1, [&] { est = aquin::spectral_norm(emb, tol); });
      std::printf(
          "  spectral_norm(tol=%.0e)      %9.3f s   sigma_max %.9g   bound %.2e   iters %d\n", tol,
          t, est.sigma_max, est.rel_error_bound, est.iterations);
    }
  }
  return 0;
}
