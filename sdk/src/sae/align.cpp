// Feature alignment of two SAEs by decoder direction (sae_align.hpp).
//
// Up to AlignOptions::dense_limit features a side, the whole fp32 cosine matrix is formed and the
// assignment is exact. Above it, an n² matrix no longer fits comfortably (16384² fp32 is 1 GB), so
// the matrix is formed block by block and only each row's and each column's K best cosines are
// kept; the assignment is solved exactly on that candidate graph (a row may stay unmatched), the
// rows it leaves are matched exactly among the columns left, and an upper bound of the dense
// optimum is certified from the dual potentials, so the gap reported is honest.
#include <aquin/sdk/linear_assignment.hpp>
#include <aquin/sdk/sae_align.hpp>

#include <ATen/ATen.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <functional>
#include <stdexcept>

namespace aquin {

namespace {

double since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// The matching of the rows of R to the rows of C, n_r <= n_c, both unit-normalised fp32.
struct RowMatch {
  std::string method;
  std::vector<int64_t> col_for_row, row_for_col;
  std::vector<float> matched;  // per row
  std::vector<float> row_max, col_max;
  std::vector<int64_t> row_arg, col_arg;
  double total = 0, upper = 0;
  int64_t candidates = 0, edges = 0, fallback = 0;
  double t_sim = 0, t_lap = 0;
};

template <typename T>
std::vector<T> to_vector(const at::Tensor& t) {
  at::Tensor c = t.contiguous();
  return std::vector<T>(c.data_ptr<T>(), c.data_ptr<T>() + c.numel());
}

RowMatch match_dense(const at::Tensor& R, const at::Tensor& C) {
  RowMatch m;
  m.method = "exact";
  const int64_t nr = R.size(0), nc = C.size(0);
  auto t0 = std::chrono::steady_clock::now();
  at::Tensor S = at::mm(R, C.t()).contiguous();
  auto rmax = S.max(1);
  auto cmax = S.max(0);
  m.row_max = to_vector<float>(std::get<0>(rmax));
  m.row_arg = to_vector<int64_t>(std::get<1>(rmax));
  m.col_max = to_vector<float>(std::get<0>(cmax));
  m.col_arg = to_vector<int64_t>(std::get<1>(cmax));
  m.t_sim = since(t0);
  t0 = std::chrono::steady_clock::now();
  const float* s = S.data_ptr<float>();
  Assignment a = linear_sum_assignment(s, nr, nc, true);
  m.t_lap = since(t0);
  m.col_for_row = std::move(a.col_for_row);
  m.row_for_col = std::move(a.row_for_col);
  m.matched.resize(static_cast<std::size_t>(nr));
  for (int64_t i = 0; i < nr; ++i) m.matched[static_cast<std::size_t>(i)] = s[i * nc + m.col_for_row[static_cast<std::size_t>(i)]];
  m.total = a.total;
  m.upper = a.total;
  m.edges = nr * nc;
  return m;
}

RowMatch match_rows(const at::Tensor& R, const at::Tensor& C, const AlignOptions& o);

RowMatch match_sparse(const at::Tensor& R, const at::Tensor& C, const AlignOptions& o) {
  RowMatch m;
  m.method = "sparse-candidates";
  const int64_t nr = R.size(0), nc = C.size(0);
  const int64_t K = std::min<int64_t>(std::max<int64_t>(o.candidates, 1), nc);
  const int64_t Kc = std::min<int64_t>(std::max<int64_t>(o.candidates, 1), nr);
  m.candidates = K;
  auto t0 = std::chrono::steady_clock::now();
  at::Tensor row_v = at::empty({nr, K}, at::kFloat), row_i = at::empty({nr, K}, at::kLong);
  at::Tensor col_v = at::full({Kc, nc}, -std::numeric_limits<float>::infinity(), at::kFloat);
  at::Tensor col_i = at::zeros({Kc, nc}, at::kLong);
  const at::Tensor Ct = C.t();
  const int64_t block = std::max<int64_t>(o.block_rows, 1);
  for (int64_t r0 = 0; r0 < nr; r0 += block) {
    const int64_t r1 = std::min(nr, r0 + block);
    at::Tensor Sb = at::mm(R.slice(0, r0, r1), Ct);
    auto rt = Sb.topk(K, 1, true, true);
    row_v.slice(0, r0, r1).copy_(std::get<0>(rt));
    row_i.slice(0, r0, r1).copy_(std::get<1>(rt));
    auto ct = Sb.topk(std::min(Kc, r1 - r0), 0, true, true);
    at::Tensor vals = at::cat({col_v, std::get<0>(ct)}, 0);
    at::Tensor idx = at::cat({col_i, std::get<1>(ct) + r0}, 0);
    auto best = vals.topk(Kc, 0, true, true);
    col_v = std::get<0>(best).contiguous();
    col_i = idx.gather(0, std::get<1>(best)).contiguous();
  }
  m.row_max = to_vector<float>(row_v.select(1, 0));
  m.row_arg = to_vector<int64_t>(row_i.select(1, 0));
  m.col_max = to_vector<float>(col_v.select(0, 0));
  m.col_arg = to_vector<int64_t>(col_i.select(0, 0));
  m.t_sim = since(t0);

  t0 = std::chrono::steady_clock::now();
  // The candidate graph: row top-K ∪ column top-K, deduplicated, in CSR form.
  std::vector<std::vector<std::pair<int64_t, float>>> adj(static_cast<std::size_t>(nr));
  {
    const float* rv = row_v.data_ptr<float>();
    const int64_t* ri = row_i.data_ptr<int64_t>();
    for (int64_t i = 0; i < nr; ++i)
      for (int64_t k = 0; k < K; ++k) adj[static_cast<std::size_t>(i)].emplace_back(ri[i * K + k], rv[i * K + k]);
    const float* cv = col_v.data_ptr<float>();
    const int64_t* ci = col_i.data_ptr<int64_t>();
    for (int64_t k = 0; k < Kc; ++k)
      for (int64_t j = 0; j < nc; ++j) adj[static_cast<std::size_t>(ci[k * nc + j])].emplace_back(j, cv[k * nc + j]);
  }
  SparseGraph g;
  g.n_rows = nr;
  g.n_cols = nc;
  g.row_ptr.reserve(static_cast<std::size_t>(nr + 1));
  g.row_ptr.push_back(0);
  for (auto& a : adj) {
    std::sort(a.begin(), a.end(), [](const auto& x, const auto& y) { return x.first < y.first; });
    a.erase(std::unique(a.begin(), a.end(), [](const auto& x, const auto& y) { return x.first == y.first; }), a.end());
    for (const auto& [j, v] : a) {
      g.cols.push_back(j);
      g.values.push_back(v);
    }
    g.row_ptr.push_back(static_cast<int64_t>(g.cols.size()));
    std::vector<std::pair<int64_t, float>>().swap(a);
  }
  m.edges = static_cast<int64_t>(g.cols.size());
  Assignment a = sparse_linear_assignment(g, true, o.unmatched_cosine);
  m.col_for_row = a.col_for_row;
  m.row_for_col = a.row_for_col;
  m.matched.assign(static_cast<std::size_t>(nr), std::numeric_limits<float>::quiet_NaN());
  for (int64_t i = 0; i < nr; ++i) {
    const int64_t j = m.col_for_row[static_cast<std::size_t>(i)];
    if (j < 0) continue;
    for (int64_t e = g.row_ptr[static_cast<std::size_t>(i)]; e < g.row_ptr[static_cast<std::size_t>(i + 1)]; ++e)
      if (g.cols[static_cast<std::size_t>(e)] == j) m.matched[static_cast<std::size_t>(i)] = g.values[static_cast<std::size_t>(e)];
  }
  m.total = a.total;

  // Upper bound of the dense optimum by LP duality: with y_j >= 0 and x_i + y_j >= S_ij for every
  // pair, Σ_i S_iσ(i) <= Σx + Σy for any matching σ of all rows. Pairs off the graph have
  // S_ij <= t_i (row i's K-th best), so x_i = max(t_i, max over i's edges of S_ij - y_j) is feasible.
  double dual = 0;
  std::vector<double> y(static_cast<std::size_t>(nc));
  for (int64_t j = 0; j < nc; ++j) {
    y[static_cast<std::size_t>(j)] = std::max(0.0, a.col_potential[static_cast<std::size_t>(j)]);
    dual += y[static_cast<std::size_t>(j)];
  }
  {
    const float* rv = row_v.data_ptr<float>();
    for (int64_t i = 0; i < nr; ++i) {
      double x = K < nc ? static_cast<double>(rv[i * K + K - 1]) : -std::numeric_limits<double>::infinity();
      for (int64_t e = g.row_ptr[static_cast<std::size_t>(i)]; e < g.row_ptr[static_cast<std::size_t>(i + 1)]; ++e)
        x = std::max(x, static_cast<double>(g.values[static_cast<std::size_t>(e)]) -
                            y[static_cast<std::size_t>(g.cols[static_cast<std::size_t>(e)])]);
      dual += x;
    }
  }
  double row_bound = 0;
  for (float v : m.row_max) row_bound += v;
  std::vector<float> cm = m.col_max;
  std::partial_sort(cm.begin(), cm.begin() + nr, cm.end(), std::greater<float>());
  double col_bound = 0;
  for (int64_t i = 0; i < nr; ++i) col_bound += cm[static_cast<std::size_t>(i)];
  m.upper = std::min({dual, row_bound, col_bound});

  // Rows the graph could not match: matched exactly among the columns still free.
  std::vector<int64_t> left_rows, free_cols;
  for (int64_t i = 0; i < nr; ++i)
    if (m.col_for_row[static_cast<std::size_t>(i)] < 0) left_rows.push_back(i);
  if (!left_rows.empty()) {
    for (int64_t j = 0; j < nc; ++j)
      if (m.row_for_col[static_cast<std::size_t>(j)] < 0) free_cols.push_back(j);
    at::Tensor li = at::tensor(left_rows, at::kLong), fj = at::tensor(free_cols, at::kLong);
    RowMatch sub = match_rows(R.index_select(0, li), C.index_select(0, fj), o);
    for (std::size_t k = 0; k < left_rows.size(); ++k) {
      const int64_t i = left_rows[k], j = free_cols[static_cast<std::size_t>(sub.col_for_row[k])];
      m.col_for_row[static_cast<std::size_t>(i)] = j;
      m.row_for_col[static_cast<std::size_t>(j)] = i;
      m.matched[static_cast<std::size_t>(i)] = sub.matched[k];
    }
    m.total += sub.total;
    m.fallback = static_cast<int64_t>(left_rows.size()) + sub.fallback;
  }
  // Only rounding can put the certified bound below a feasible total (fp32 cosines, fp64 sums).
  if (m.upper < m.total) m.upper = m.total;
  m.t_lap = since(t0);
  return m;
}

RowMatch match_rows(const at::Tensor& R, const at::Tensor& C, const AlignOptions& o) {
  if (std::max(R.size(0), C.size(0)) <= o.dense_limit) return match_dense(R, C);
  return match_sparse(R, C, o);
}

at::Tensor unit_rows(const at::Tensor& W, const char* name) {
  if (W.dim() != 2) throw std::invalid_argument(std::string(name) + " must be 2-D [d_sae, d_in]");
  at::Tensor w = W.to(at::kFloat).contiguous();
  if (!at::isfinite(w).all().item<bool>()) throw std::invalid_argument(std::string(name) + " has NaN or Inf entries");
  at::Tensor n = w.norm(2, {1}, true);
  // A zero row stays zero: cosine 0 with everything.
  return (w / at::where(n > 0, n, at::ones_like(n))).contiguous();
}

}  // namespace

AlignResult align_decoders(const at::Tensor& W_dec_a, const at::Tensor& W_dec_b, const AlignOptions& options) {
  at::Tensor A = unit_rows(W_dec_a, "W_dec of SAE A");
  at::Tensor B = unit_rows(W_dec_b, "W_dec of SAE B");
  if (A.size(1) != B.size(1))
    throw std::invalid_argument("d_in differs: " + std::to_string(A.size(1)) + " vs " + std::to_string(B.size(1)));
  AlignResult r;
  r.n_a = A.size(0);
  r.n_b = B.size(0);
  r.n_matched = std::min(r.n_a, r.n_b);
  if (r.n_a == 0 || r.n_b == 0) throw std::invalid_argument("an SAE with no features cannot be aligned");
  const bool a_rows = r.n_a <= r.n_b;
  RowMatch m = a_rows ? match_rows(A, B, options) : match_rows(B, A, options);
  r.method = m.method;
  r.total = m.total;
  r.upper_bound_total = m.upper;
  r.candidates = m.candidates;
  r.n_edges = m.edges;
  r.n_fallback = m.fallback;
  r.seconds_similarity = m.t_sim;
  r.seconds_assignment = m.t_lap;
  if (a_rows) {
    r.match_a = std::move(m.col_for_row);
    r.match_b = std::move(m.row_for_col);
    r.matched_cos = std::move(m.matched);
    r.best_a = std::move(m.row_max);
    r.best_a_idx = std::move(m.row_arg);
    r.best_b = std::move(m.col_max);
    r.best_b_idx = std::move(m.col_arg);
  } else {
    r.match_a = std::move(m.row_for_col);
    r.match_b = std::move(m.col_for_row);
    r.matched_cos.assign(static_cast<std::size_t>(r.n_a), std::numeric_limits<float>::quiet_NaN());
    for (int64_t b = 0; b < r.n_b; ++b) r.matched_cos[static_cast<std::size_t>(r.match_b[static_cast<std::size_t>(b)])] = m.matched[static_cast<std::size_t>(b)];
    r.best_a = std::move(m.col_max);
    r.best_a_idx = std::move(m.col_arg);
    r.best_b = std::move(m.row_max);
    r.best_b_idx = std::move(m.row_arg);
  }
  return r;
}

}  // namespace aquin
