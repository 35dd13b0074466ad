// Linear assignment: exact rectangular solver (shortest augmenting paths, Crouse 2016, the
// algorithm of scipy.optimize.linear_sum_assignment) and the same algorithm on a sparse graph.
#pragma once

#include <boost/config.hpp>
#include <cstdint>
#include <vector>

namespace aquin {

/// A solved assignment. With n_rows <= n_cols every row is assigned; with n_rows > n_cols every
/// column is, and the rows left over have col_for_row == -1 (as scipy leaves them out).
struct Assignment {
  std::vector<int64_t> col_for_row;  ///< [n_rows], -1 for an unassigned row
  std::vector<int64_t> row_for_col;  ///< [n_cols], -1 for an unassigned column
  double total = 0;                  ///< sum of the matrix entries over the assigned pairs (fp64)
  int64_t n_assigned = 0;
  /// Dual column potentials in the problem's own sense, one per column: with maximize, y_j >= 0 and
  /// x_i + y_j >= value(i, j) on every edge for the row potentials found; with minimize the signs flip.
  /// Only filled by sparse_linear_assignment (the aligner turns them into a certified bound).
  std::vector<double> col_potential;
};

/// Exact optimum of the rectangular assignment problem on a dense row-major matrix
/// `values` [n_rows, n_cols]: min (or max) of the sum over min(n_rows, n_cols) pairs, each row and
/// column used at most once, every row of the smaller side used. O(n_small² · n_large) time in the
/// worst case, O(n_rows + n_cols) extra memory (plus one transposed copy when n_rows > n_cols).
/// Ties: any optimal assignment may be returned (totals are what is unique).
/// Throws std::invalid_argument naming the first NaN or ±Inf entry (none is allowed).
BOOST_SYMBOL_VISIBLE Assignment linear_sum_assignment(const float* values, int64_t n_rows, int64_t n_cols,
                                                      bool maximize = false);
BOOST_SYMBOL_VISIBLE Assignment linear_sum_assignment(const double* values, int64_t n_rows, int64_t n_cols,
                                                      bool maximize = false);

/// A sparse bipartite graph in CSR form: row i's edges are cols[row_ptr[i] .. row_ptr[i+1]) with
/// `values` at the same positions. Duplicate (row, col) edges are not allowed.
struct SparseGraph {
  int64_t n_rows = 0, n_cols = 0;
  std::vector<int64_t> row_ptr;  ///< [n_rows + 1]
  std::vector<int64_t> cols;
  std::vector<float> values;
};

/// Optimal assignment on a sparse graph where a row may also stay unmatched at `unmatched_value`
/// (a private dummy column per row, so the problem is always feasible): with maximize, the max of
/// Σ matched values + unmatched_value · #unmatched. Set unmatched_value below every edge value to
/// match as many rows as the graph allows first. Needs n_rows <= n_cols when every row should be
/// matchable. Unmatched rows have col_for_row == -1; `total` sums the matched edges only.
/// Fills col_potential (see Assignment). Dijkstra with a binary heap per augmentation.
/// Throws std::invalid_argument on NaN/Inf values, bad indices or duplicate edges.
BOOST_SYMBOL_VISIBLE Assignment sparse_linear_assignment(const SparseGraph& g, bool maximize, double unmatched_value);

}  // namespace aquin
