// Aligning the features of two SAEs by their decoder directions (`aquin sae align`): the cosine
// similarity of every pair of unit-normalised W_dec rows, a one-to-one matching that maximises the
// total cosine, and each feature's best partner regardless of the others.
#pragma once

#include <ATen/core/Tensor.h>

#include <boost/config.hpp>
#include <cstdint>
#include <string>
#include <vector>

namespace aquin {

struct AlignOptions {
  /// Exact (dense) assignment while max(d_sae_a, d_sae_b) <= this; the similarity matrix is held in
  /// fp32 (256 MB at 8192²). Above it, the sparse candidate path.
  int64_t dense_limit = 8192;
  /// Sparse path: each row keeps its `candidates` most similar columns, and each column its
  /// `candidates` most similar rows (the union is the graph).
  int64_t candidates = 32;
  /// Sparse path: the cosine at which a feature may stay out of the candidate matching (it is then
  /// matched exactly among the features left over). At 0, a search for a partner stops once every
  /// path left would cost more than a zero-cosine match, which keeps the searches short; the bound
  /// and gap reported hold whatever this is.
  double unmatched_cosine = 0.0;
  /// Rows of A (or B) per block of the similarity matmul on the sparse path.
  int64_t block_rows = 1024;
};

/// The matching of A's features (rows of A's W_dec) to B's.
struct AlignResult {
  std::string method;  ///< "exact" or "sparse-candidates"
  int64_t n_a = 0, n_b = 0;
  int64_t n_matched = 0;  ///< min(n_a, n_b): every feature of the smaller SAE is matched
  std::vector<int64_t> match_a;     ///< [n_a] B feature matched to each A feature, -1 when none
  std::vector<int64_t> match_b;     ///< [n_b] A feature matched to each B feature, -1 when none
  std::vector<float> matched_cos;   ///< [n_a] cosine to the partner (NaN when none)
  std::vector<float> best_a;        ///< [n_a] max cosine of each A feature to any B feature
  std::vector<int64_t> best_a_idx;  ///< [n_a] which B feature
  std::vector<float> best_b;        ///< [n_b] max cosine of each B feature to any A feature
  std::vector<int64_t> best_b_idx;  ///< [n_b] which A feature
  double total = 0;              ///< Σ matched cosines (fp64 sum of fp32 cosines)
  /// An upper bound of the optimal Σ over all one-to-one matchings (the dense optimum). Exact: the
  /// optimum itself. Sparse: the least of Σ row maxima, the n_matched largest column maxima, and a
  /// dual certificate (LP duality on the candidate graph's potentials, with every non-candidate pair
  /// bounded by its row's K-th best cosine).
  double upper_bound_total = 0;
  int64_t candidates = 0;        ///< K on the sparse path (0 for exact)
  int64_t n_edges = 0;           ///< edges of the candidate graph (sparse), n_a·n_b (exact)
  int64_t n_fallback = 0;        ///< sparse: features the candidate graph could not match, matched
                                 ///< exactly among the leftover features afterwards
  double seconds_similarity = 0, seconds_assignment = 0;
};

/// Aligns the decoder directions W_dec_a [n_a, d_in] and W_dec_b [n_b, d_in] (any float dtype;
/// rows are normalised to unit length in fp32; a zero row has cosine 0 with everything).
/// Throws std::invalid_argument when d_in differs or a matrix is not 2-D or not finite.
BOOST_SYMBOL_VISIBLE AlignResult align_decoders(const at::Tensor& W_dec_a, const at::Tensor& W_dec_b,
                                                const AlignOptions& options = {});

}  // namespace aquin
