// Shortest augmenting path assignment (Crouse, "On implementing 2D rectangular assignment
// algorithms", IEEE TAES 2016), the algorithm behind scipy.optimize.linear_sum_assignment: one
// Dijkstra search per row over reduced costs c_ij - u_i - v_j, which stay >= 0, so every partial
// assignment is optimal for the rows it covers and the last one is optimal for all.
//
// Costs are read in their storage type (fp32 matrices stay fp32: an 8192² similarity matrix is
// 256 MB rather than 512 MB) and every potential, path length and total is fp64.
#include <aquin/sdk/linear_assignment.hpp>

#include <cmath>
#include <algorithm>
#include <limits>
#include <stdexcept>
#include <string>
#include <utility>

namespace aquin {

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

template <typename T>
void check_finite(const T* values, int64_t n_rows, int64_t n_cols) {
  for (int64_t i = 0; i < n_rows; ++i)
    for (int64_t j = 0; j < n_cols; ++j) {
      const T x = values[i * n_cols + j];
      if (!std::isfinite(x))
        throw std::invalid_argument("linear_sum_assignment: entry (" + std::to_string(i) + ", " + std::to_string(j) +
                                    ") is " + (std::isnan(x) ? "NaN" : x > 0 ? "+Inf" : "-Inf") +
                                    "; every entry must be finite");
    }
}

template <typename T>
Assignment solve_dense(const T* values, int64_t n_rows, int64_t n_cols, bool maximize) {
  if (n_rows < 0 || n_cols < 0) throw std::invalid_argument("linear_sum_assignment: negative dimension");
  check_finite(values, n_rows, n_cols);
  Assignment out;
  out.col_for_row.assign(static_cast<std::size_t>(n_rows), -1);
  out.row_for_col.assign(static_cast<std::size_t>(n_cols), -1);
  if (n_rows == 0 || n_cols == 0) return out;

  // The algorithm needs rows <= columns; a taller matrix is solved transposed.
  const bool transposed = n_rows > n_cols;
  std::vector<T> copy;
  const T* c = values;
  int64_t R = n_rows, C = n_cols;
  if (transposed) {
    copy.resize(static_cast<std::size_t>(n_rows * n_cols));
    for (int64_t i = 0; i < n_rows; ++i)
      for (int64_t j = 0; j < n_cols; ++j) copy[static_cast<std::size_t>(j * n_rows + i)] = values[i * n_cols + j];
    c = copy.data();
    R = n_cols;
    C = n_rows;
  }
  const double sign = maximize ? -1.0 : 1.0;  // negation is exact: maximising c is minimising -c

  std::vector<double> u(static_cast<std::size_t>(R), 0.0), v(static_cast<std::size_t>(C), 0.0);
  std::vector<double> spc(static_cast<std::size_t>(C), kInf);
  std::vector<int64_t> path(static_cast<std::size_t>(C), -1), col4row(static_cast<std::size_t>(R), -1),
      row4col(static_cast<std::size_t>(C), -1), remaining(static_cast<std::size_t>(C));
  std::vector<int64_t> sr_list, sc_list;
  sr_list.reserve(static_cast<std::size_t>(R));
  sc_list.reserve(static_cast<std::size_t>(C));

  // A square problem's column potentials are free in the dual, so each may start at its column's
  // least cost (reduced costs stay >= 0): many rows then find a free zero-cost column at once. A
  // rectangular problem needs v <= 0 on the columns left over, so it starts from zero.
  if (R == C) {
    for (int64_t j = 0; j < C; ++j) v[static_cast<std::size_t>(j)] = kInf;
    for (int64_t r = 0; r < R; ++r) {
      const T* row = c + r * C;
      for (int64_t j = 0; j < C; ++j)
        v[static_cast<std::size_t>(j)] = std::min(v[static_cast<std::size_t>(j)], sign * static_cast<double>(row[j]));
    }
  }

  for (int64_t cur = 0; cur < R; ++cur) {
    double min_val = 0;
    int64_t i = cur;
    int64_t num_remaining = C;
    for (int64_t it = 0; it < C; ++it) remaining[static_cast<std::size_t>(it)] = C - it - 1;
    std::fill(spc.begin(), spc.end(), kInf);
    int64_t sink = -1;
    while (sink == -1) {
      int64_t index = -1;
      double lowest = kInf;
      sr_list.push_back(i);
      const T* row = c + i * C;
      const double ui = u[static_cast<std::size_t>(i)];
      for (int64_t it = 0; it < num_remaining; ++it) {
        const int64_t j = remaining[static_cast<std::size_t>(it)];
        const double r = min_val + sign * static_cast<double>(row[j]) - ui - v[static_cast<std::size_t>(j)];
        double& s = spc[static_cast<std::size_t>(j)];
        if (r < s) {
          path[static_cast<std::size_t>(j)] = i;
          s = r;
        }
        // Ties go to a free column: the path ends sooner (scipy does the same).
        if (s < lowest || (s == lowest && row4col[static_cast<std::size_t>(j)] == -1)) {
          lowest = s;
          index = it;
        }
      }
      min_val = lowest;
      if (index < 0 || min_val == kInf) throw std::logic_error("linear_sum_assignment: infeasible (internal error)");
      const int64_t j = remaining[static_cast<std::size_t>(index)];
      if (row4col[static_cast<std::size_t>(j)] == -1) sink = j;
      else i = row4col[static_cast<std::size_t>(j)];
      sc_list.push_back(j);
      remaining[static_cast<std::size_t>(index)] = remaining[static_cast<std::size_t>(--num_remaining)];
    }
    u[static_cast<std::size_t>(cur)] += min_val;
    for (int64_t r : sr_list)
      if (r != cur) u[static_cast<std::size_t>(r)] += min_val - spc[static_cast<std::size_t>(col4row[static_cast<std::size_t>(r)])];
    for (int64_t j : sc_list) v[static_cast<std::size_t>(j)] -= min_val - spc[static_cast<std::size_t>(j)];
    sr_list.clear();
    sc_list.clear();
    for (int64_t j = sink;;) {
      const int64_t r = path[static_cast<std::size_t>(j)];
      row4col[static_cast<std::size_t>(j)] = r;
      std::swap(col4row[static_cast<std::size_t>(r)], j);
      if (r == cur) break;
    }
  }

  for (int64_t r = 0; r < R; ++r) {
    const int64_t j = col4row[static_cast<std::size_t>(r)];
    const int64_t row = transposed ? j : r, col = transposed ? r : j;
    out.col_for_row[static_cast<std::size_t>(row)] = col;
    out.row_for_col[static_cast<std::size_t>(col)] = row;
    out.total += static_cast<double>(values[row * n_cols + col]);
  }
  out.n_assigned = R;
  return out;
}

}  // namespace

Assignment linear_sum_assignment(const float* values, int64_t n_rows, int64_t n_cols, bool maximize) {
  return solve_dense(values, n_rows, n_cols, maximize);
}

Assignment linear_sum_assignment(const double* values, int64_t n_rows, int64_t n_cols, bool maximize) {
  return solve_dense(values, n_rows, n_cols, maximize);
}

Assignment sparse_linear_assignment(const SparseGraph& g, bool maximize, double unmatched_value) {
  const int64_t R = g.n_rows, C = g.n_cols;
  if (R < 0 || C < 0) throw std::invalid_argument("sparse_linear_assignment: negative dimension");
  if (static_cast<int64_t>(g.row_ptr.size()) != R + 1 || g.row_ptr.front() != 0 ||
      g.row_ptr.back() != static_cast<int64_t>(g.cols.size()) || g.cols.size() != g.values.size())
    throw std::invalid_argument("sparse_linear_assignment: row_ptr, cols and values do not describe a CSR graph");
  if (!std::isfinite(unmatched_value))
    throw std::invalid_argument("sparse_linear_assignment: unmatched_value must be finite");
  {
    std::vector<int64_t> seen(static_cast<std::size_t>(C), -1);
    for (int64_t i = 0; i < R; ++i) {
      if (g.row_ptr[static_cast<std::size_t>(i + 1)] < g.row_ptr[static_cast<std::size_t>(i)])
        throw std::invalid_argument("sparse_linear_assignment: row_ptr decreases at row " + std::to_string(i));
      for (int64_t e = g.row_ptr[static_cast<std::size_t>(i)]; e < g.row_ptr[static_cast<std::size_t>(i + 1)]; ++e) {
        const int64_t j = g.cols[static_cast<std::size_t>(e)];
        if (j < 0 || j >= C)
          throw std::invalid_argument("sparse_linear_assignment: column " + std::to_string(j) + " out of range");
        if (seen[static_cast<std::size_t>(j)] == i)
          throw std::invalid_argument("sparse_linear_assignment: duplicate edge (" + std::to_string(i) + ", " +
                                      std::to_string(j) + ")");
        seen[static_cast<std::size_t>(j)] = i;
        if (!std::isfinite(g.values[static_cast<std::size_t>(e)]))
          throw std::invalid_argument("sparse_linear_assignment: edge (" + std::to_string(i) + ", " + std::to_string(j) +
                                      ") is not finite");
      }
    }
  }
  const double sign = maximize ? -1.0 : 1.0;
  const double dummy_cost = sign * unmatched_value;
  // Columns C + i are the private "unmatched" columns of row i.
  const int64_t CT = C + R;
  std::vector<double> u(static_cast<std::size_t>(R), 0.0), v(static_cast<std::size_t>(CT), 0.0),
      spc(static_cast<std::size_t>(CT), kInf);
  std::vector<int64_t> path(static_cast<std::size_t>(CT), -1), col4row(static_cast<std::size_t>(R), -1),
      row4col(static_cast<std::size_t>(CT), -1);
  std::vector<char> scanned(static_cast<std::size_t>(CT), 0);
  std::vector<int64_t> touched, sc_list, sr_list;
  using Entry = std::pair<double, int64_t>;
  std::vector<Entry> heap;  // a min-heap by path length, kept with std::push_heap / pop_heap
  const auto later = [](const Entry& a, const Entry& b) { return a > b; };

  for (int64_t cur = 0; cur < R; ++cur) {
    double min_val = 0;
    int64_t i = cur, sink = -1;
    auto relax = [&](int64_t j, double cost, int64_t from) {
      if (scanned[static_cast<std::size_t>(j)]) return;
      const double r = min_val + cost - u[static_cast<std::size_t>(from)] - v[static_cast<std::size_t>(j)];
      double& s = spc[static_cast<std::size_t>(j)];
      if (r < s) {
        if (s == kInf) touched.push_back(j);
        s = r;
        path[static_cast<std::size_t>(j)] = from;
        heap.emplace_back(r, j);
        std::push_heap(heap.begin(), heap.end(), later);
      }
    };
    while (sink == -1) {
      sr_list.push_back(i);
      for (int64_t e = g.row_ptr[static_cast<std::size_t>(i)]; e < g.row_ptr[static_cast<std::size_t>(i + 1)]; ++e)
        relax(g.cols[static_cast<std::size_t>(e)], sign * static_cast<double>(g.values[static_cast<std::size_t>(e)]), i);
      relax(C + i, dummy_cost, i);
      int64_t j = -1;
      while (!heap.empty()) {
        std::pop_heap(heap.begin(), heap.end(), later);
        const Entry top = heap.back();
        heap.pop_back();
        if (scanned[static_cast<std::size_t>(top.second)] || top.first != spc[static_cast<std::size_t>(top.second)]) continue;
        j = top.second;
        break;
      }
      // Row cur's own unmatched column is always reachable, so the search cannot run dry.
      if (j < 0) throw std::logic_error("sparse_linear_assignment: infeasible (internal error)");
      min_val = spc[static_cast<std::size_t>(j)];
      scanned[static_cast<std::size_t>(j)] = 1;
      sc_list.push_back(j);
      if (row4col[static_cast<std::size_t>(j)] == -1) sink = j;
      else i = row4col[static_cast<std::size_t>(j)];
    }
    u[static_cast<std::size_t>(cur)] += min_val;
    for (int64_t r : sr_list)
      if (r != cur) u[static_cast<std::size_t>(r)] += min_val - spc[static_cast<std::size_t>(col4row[static_cast<std::size_t>(r)])];
    for (int64_t j : sc_list) v[static_cast<std::size_t>(j)] -= min_val - spc[static_cast<std::size_t>(j)];
    for (int64_t j = sink;;) {
      const int64_t r = path[static_cast<std::size_t>(j)];
      row4col[static_cast<std::size_t>(j)] = r;
      std::swap(col4row[static_cast<std::size_t>(r)], j);
      if (r == cur) break;
    }
    for (int64_t j : touched) {
      spc[static_cast<std::size_t>(j)] = kInf;
      scanned[static_cast<std::size_t>(j)] = 0;
    }
    touched.clear();
    sc_list.clear();
    sr_list.clear();
    heap.clear();
  }

  Assignment out;
  out.col_for_row.assign(static_cast<std::size_t>(R), -1);
  out.row_for_col.assign(static_cast<std::size_t>(C), -1);
  // Edge values of the matched pairs, looked up in the graph.
  for (int64_t r = 0; r < R; ++r) {
    const int64_t j = col4row[static_cast<std::size_t>(r)];
    if (j < 0 || j >= C) continue;
    out.col_for_row[static_cast<std::size_t>(r)] = j;
    out.row_for_col[static_cast<std::size_t>(j)] = r;
    ++out.n_assigned;
    for (int64_t e = g.row_ptr[static_cast<std::size_t>(r)]; e < g.row_ptr[static_cast<std::size_t>(r + 1)]; ++e)
      if (g.cols[static_cast<std::size_t>(e)] == j) {
        out.total += static_cast<double>(g.values[static_cast<std::size_t>(e)]);
        break;
      }
  }
  out.col_potential.resize(static_cast<std::size_t>(C));
  for (int64_t j = 0; j < C; ++j) out.col_potential[static_cast<std::size_t>(j)] = sign * v[static_cast<std::size_t>(j)];
  return out;
}

}  // namespace aquin
