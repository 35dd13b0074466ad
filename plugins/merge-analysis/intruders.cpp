#include "intruders.hpp"

#include <aquin/sdk/linalg.hpp>
#include <aquin/sdk/names.hpp>
#include <aquin/sdk/subspace.hpp>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <map>
#include <optional>
#include <stdexcept>

namespace aquin::merge {

namespace {

// Subspace-iteration settings, measured with the bench's Llama-3.2-1B-shaped weights (14 modules)
// and the fixtures against an 8-pass reference (README, "Intruder dimensions"):
//  - the base: two passes of block Krylov with 8 extra columns. Three passes cost 35% more; what
//    they buy is the last few of the top-32 vectors, which two passes leave mixed with the next ones
//    (best |cos| of a planted intruder 0.15 instead of 0.001 — still far below 0.5, and the error
//    can only raise it, never invent an intruder);
//  - W+ΔW of a LoRA module: Rayleigh–Ritz on the base's top Ritz vectors plus Aᵀ, the directions
//    the update can add, and their Gram products (one pass). It matched the reference to 0.001
//    on the bench; without Aᵀ the planted intruder goes unseen. A merged checkpoint's ΔW can point
//    anywhere, so W+ΔW gets two passes of its own, warm-started from the base's vectors.
// Residuals are exported per matrix (max_residual) and widen the clusters (match_vectors).
constexpr int kPasses = 2;
constexpr int64_t kBaseOversample = 8;
constexpr int64_t kMergedOversample = 5;

// Matrices whose fp32 copy would exceed this are streamed from storage inside every product (an
// embedding), rather than converted once.
constexpr int64_t kResidentBytes = int64_t{256} << 20;

// The tensor under a source name, in HF layout ([out, in]).
at::Tensor load_canonical(const TensorStore& store, const std::string& source, const std::string& family) {
  auto c = canonicalize(family, source);
  return to_hf_layout(store.load(source), c ? c->layout : SourceLayout::HF);
}

// An fp32 copy of `w` in a buffer reused from matrix to matrix: converting into fresh memory costs
// a page fault per 4 KB, which on a 64 MB MLP weight is most of the conversion time.
at::Tensor as_fp32(const at::Tensor& w, at::Tensor& buffer) {
  if (w.scalar_type() == at::kFloat && w.is_contiguous()) return w;
  if (w.numel() * 4 > kResidentBytes) return w;  // dense_operator streams it
  if (!buffer.defined() || buffer.numel() < w.numel()) buffer = at::empty({w.numel()}, at::TensorOptions().dtype(at::kFloat));
  at::Tensor view = buffer.narrow(0, 0, w.numel()).view(w.sizes());
  view.copy_(w);
  return view;
}

// fp32 copies of the base and the fine-tuned weight, reused from matrix to matrix by one thread.
struct Buffers {
  at::Tensor base, merged;
};

// ‖x‖_F as the weight-diff core computes it: fp32 row norms, summed in fp64.
double frobenius(const at::Tensor& x) {
  return std::sqrt(at::linalg_vector_norm(x.reshape({-1, x.size(-1)}), 2, at::IntArrayRef{1}, false, c10::nullopt)
                       .to(at::kDouble)
                       .square()
                       .sum()
                       .item<double>());
}

std::vector<double> to_vector(const at::Tensor& t) {
  at::Tensor c = t.to(at::kDouble).contiguous();
  return std::vector<double>(c.data_ptr<double>(), c.data_ptr<double>() + c.numel());
}

// Both decompositions and the matching, for one matrix. `lora_a` is the module's A ([r, cols]) when
// `merged_op` is W + scale·B·A, undefined for a dense pair.
IntruderResult decompose_and_match(const std::string& param, const MatrixOperator& base_op,
                                   const MatrixOperator& merged_op, const at::Tensor& lora_a, double update_norm,
                                   const Thresholds& t) {
  IntruderResult r;
  r.param = param;
  r.lora = lora_a.defined();
  const int64_t small = std::min(base_op.rows(), base_op.cols());
  r.top_k = std::min(t.intruder_top_k, small);
  r.base_k = std::min(t.intruder_base_k, small);
  SubspaceOptions base_opts;
  base_opts.max_passes = kPasses;
  base_opts.oversample = kBaseOversample;
  const TruncatedSvd bs = top_singular_triplets(base_op, r.base_k, base_opts);
  // W+ΔW starts from what W already has (its top right singular vectors) and, for a LoRA module,
  // from everything ΔW can add (the row space of A).
  SubspaceOptions merged_opts;
  at::Tensor warm = bs.V.narrow(1, 0, std::min(bs.V.size(1), r.top_k + kMergedOversample));
  if (r.lora) {
    merged_opts.start = at::cat({warm, lora_a.t().to(at::kDouble)}, 1);
    merged_opts.oversample = 0;
    merged_opts.max_passes = 1;
  } else {
    merged_opts.start = warm;
    merged_opts.oversample = kMergedOversample;
    merged_opts.max_passes = kPasses;
  }
  const TruncatedSvd ms = top_singular_triplets(merged_op, r.top_k, merged_opts);
  r.exact = bs.exact && ms.exact;
  r.passes = std::max(bs.passes, ms.passes);
  r.base_sigma = to_vector(bs.S);
  r.base_sigma1 = r.base_sigma[0];
  r.update_norm = update_norm;
  const double s1b = bs.S[0].item<double>(), s1m = ms.S[0].item<double>();
  r.max_residual = std::max(s1b > 0 ? bs.residual.max().item<double>() / s1b : 0.0,
                            s1m > 0 ? ms.residual.max().item<double>() / s1m : 0.0);
  r.vectors = match_vectors(bs.U, bs.S, bs.residual, ms.U, ms.S, update_norm, t.intruder_cos);
  std::vector<double> res = to_vector(bs.residual);
  r.clusters = 1;
  for (std::size_t i = 1; i < r.base_sigma.size(); ++i)
    r.clusters += r.base_sigma[i - 1] - r.base_sigma[i] > update_norm + std::max(res[i - 1], res[i]);
  return r;
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Runs work(i, buffers) for every i in [0, n) on the host's threads, each thread taking the next
// matrix as it finishes one, with scratch buffers of its own. Why matrices in parallel rather than
// the operations within one: inside a parallel region ATen and OpenBLAS run single-threaded, so the
// analysis opens one parallel region instead of ~110,000 (on the bench adapter: every small fp64
// step of every decomposition was one), and libgomp's waiting threads, which spin, have nothing to
// wait on until the end. The threads do independent work, so scaling is near-linear (11.2 s of CPU
// on two threads against 11.0 s on one); and where other processes hold the cores the run slows in
// proportion (6-13 s) instead of collapsing into spinning (40-110 s measured per operation).
template <class Work>
void for_each_matrix(int64_t n, Work&& work) {
  std::atomic<int64_t> next{0};
  const int64_t threads = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), n));
  at::parallel_for(0, threads, 1, [&](int64_t, int64_t) {
    Buffers buffers;
    for (int64_t i = next.fetch_add(1); i < n; i = next.fetch_add(1)) work(i, buffers);
  });
}

}  // namespace

int IntruderResult::intruders() const {
  return static_cast<int>(std::count_if(vectors.begin(), vectors.end(), [](const VectorMatch& v) { return v.intruder; }));
}

std::vector<VectorMatch> match_vectors(const at::Tensor& base_u, const at::Tensor& base_s, const at::Tensor& base_res,
                                       const at::Tensor& merged_u, const at::Tensor& merged_s, double update_norm,
                                       double cos_threshold) {
  const at::Tensor proj = at::mm(merged_u.to(at::kDouble).t(), base_u.to(at::kDouble));  // [k, k']: cos(y_j, x_i)
  const at::Tensor sq = proj.square();
  const std::vector<double> bs = to_vector(base_s), res = to_vector(base_res);
  std::vector<int64_t> starts = {0};
  for (std::size_t i = 1; i < bs.size(); ++i)
    if (bs[i - 1] - bs[i] > update_norm + std::max(res[i - 1], res[i])) starts.push_back(static_cast<int64_t>(i));
  starts.push_back(static_cast<int64_t>(bs.size()));
  at::Tensor best = at::zeros({proj.size(0)}, at::TensorOptions().dtype(at::kDouble));
  for (std::size_t c = 0; c + 1 < starts.size(); ++c)
    best = at::maximum(best, sq.narrow(1, starts[c], starts[c + 1] - starts[c]).sum(1).sqrt());
  at::Tensor plain, arg;
  std::tie(plain, arg) = proj.abs().max(1);
  const at::Tensor overlap = sq.sum(1).sqrt();
  const std::vector<double> ms = to_vector(merged_s), b = to_vector(best), p = to_vector(plain), o = to_vector(overlap);
  std::vector<VectorMatch> out;
  for (int64_t j = 0; j < proj.size(0); ++j) {
    VectorMatch v;
    v.index = j;
    v.sigma = ms[j];
    v.best_cos = std::min(1.0, b[j]);
    v.plain_cos = p[j];
    v.best_match = arg[j].item<int64_t>();
    v.overlap = std::min(1.0, o[j]);
    v.intruder = v.best_cos < cos_threshold;
    out.push_back(v);
  }
  return out;
}

std::vector<IntruderResult> analyze_lora_intruders(const TensorStore& base, const Checkpoint& ck, const std::string& family,
                                                   const Thresholds& t, BaseNormCache& norms) {
  if (norms.origin != base.origin()) {
    norms.norms.clear();
    norms.origin = base.origin();
  }
  // The base's weights by canonical name, first one wins (as in compute_weight_diff).
  std::map<std::string, const TensorInfo*> by_param;
  for (const auto& ti : base.tensors())
    if (auto c = canonicalize(family, ti.name)) by_param.emplace(c->param, &ti);
  struct Job {
    const LoraModule* mod;
    const TensorInfo* info;
    std::string param;
  };
  std::vector<Job> jobs;
  for (const auto& mod : ck.lora) {
    std::string module = mod.target;
    const std::string peft = "base_model.model.";
    if (module.compare(0, peft.size(), peft) == 0) module = module.substr(peft.size());
    const auto meta = canonicalize(family, module + ".weight");
    const auto it = meta ? by_param.find(meta->param) : by_param.end();
    if (it == by_param.end() || !is_floating(it->second->dtype)) continue;  // reported by the weight diff
    jobs.push_back({&mod, it->second, meta->param});
  }
  std::vector<std::optional<IntruderResult>> results(jobs.size());
  std::vector<double> base_norm(jobs.size(), IntruderResult::kNaN);
  for_each_matrix(static_cast<int64_t>(jobs.size()), [&](int64_t i, Buffers& buffers) {
    const auto t0 = std::chrono::steady_clock::now();
    const Job& job = jobs[static_cast<std::size_t>(i)];
    const LoraModule& mod = *job.mod;
    const at::Tensor a_stored = ck.tensors->load(mod.a_name), b_stored = ck.tensors->load(mod.b_name);
    // An embedding's HF-layout update is (B·A)ᵀ = Aᵀ·Bᵀ: the same operator with the factors swapped.
    const at::Tensor B = mod.embedding ? a_stored.t() : b_stored;
    const at::Tensor A = mod.embedding ? b_stored.t() : a_stored;
    const at::Tensor w = load_canonical(base, job.info->name, family);
    if (w.dim() != 2 || w.size(0) != B.size(0) || w.size(1) != A.size(1)) return;
    const at::Tensor w32 = as_fp32(w, buffers.base);
    const double norm = frobenius(w32);
    if (!std::isfinite(norm)) return;  // NaN/Inf in the base: the weight diff counts and reports them
    base_norm[static_cast<std::size_t>(i)] = norm;
    double update_norm = 0;
    try {
      update_norm = lora_spectral_norm(B, A, mod.scale).sigma_max;
    } catch (const std::domain_error&) {
      return;  // NaN/Inf in the factors: a fail reason from the weight diff
    }
    if (!(update_norm > 0)) return;  // ΔW = 0: nothing merges, nothing to match
    auto base_op = dense_operator(w32, kResidentBytes);
    auto merged_op = lora_merged_operator(base_op, B, A, mod.scale);
    IntruderResult r = decompose_and_match(job.param, *base_op, *merged_op, A, update_norm, t);
    release_mapped_pages(w);
    r.seconds = seconds_since(t0);
    results[static_cast<std::size_t>(i)] = std::move(r);
  });
  std::vector<IntruderResult> out;
  for (std::size_t i = 0; i < jobs.size(); ++i) {
    if (std::isfinite(base_norm[i])) norms.norms.emplace(jobs[i].info->name, base_norm[i]);
    if (results[i]) out.push_back(std::move(*results[i]));
  }
  return out;
}

std::vector<IntruderResult> analyze_dense_intruders(const TensorStore& base, const Checkpoint& ck, const WeightDiff& wd,
                                                    const std::string& family, const Thresholds& t) {
  std::vector<const MatrixDiff*> jobs;
  for (const auto& m : wd.matrices)
    if (!m.lora && m.status == "ok" && m.shape.size() == 2 && std::isfinite(m.delta_norm) && m.delta_norm > 0 &&
        !m.below_noise_floor && std::min(m.shape[0], m.shape[1]) >= 2)
      jobs.push_back(&m);
  std::vector<IntruderResult> out(jobs.size());
  for_each_matrix(static_cast<int64_t>(jobs.size()), [&](int64_t i, Buffers& buffers) {
    const auto t0 = std::chrono::steady_clock::now();
    const MatrixDiff& m = *jobs[static_cast<std::size_t>(i)];
    const at::Tensor w = load_canonical(base, m.base_source_name, family);
    const at::Tensor w_ft = load_canonical(*ck.tensors, m.source_name, family);
    auto base_op = dense_operator(as_fp32(w, buffers.base), kResidentBytes);
    auto merged_op = dense_operator(as_fp32(w_ft, buffers.merged), kResidentBytes);
    // The weight diff certified ‖ΔW‖₂ to its spectral tolerance; without a spectrum, ‖ΔW‖_F bounds it.
    const double update_norm = std::isfinite(m.spectral_norm) ? m.spectral_norm : m.delta_norm;
    IntruderResult r = decompose_and_match(m.param, *base_op, *merged_op, at::Tensor(), update_norm, t);
    // Keep the process's resident set to the matrices being worked on, as the weight-diff core does.
    release_mapped_pages(w);
    release_mapped_pages(w_ft);
    r.seconds = seconds_since(t0);
    out[static_cast<std::size_t>(i)] = std::move(r);
  });
  return out;
}

}  // namespace aquin::merge
