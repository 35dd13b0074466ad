// `sae align`'s export document and terminal view.
#pragma once

#include <aquin/sdk/result.hpp>
#include <aquin/sdk/sae.hpp>
#include <aquin/sdk/sae_align.hpp>

#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace aquin::sae_align {

/// Everything the report needs, gathered by the plugin.
struct Inputs {
  const Sae* a = nullptr;
  const Sae* b = nullptr;
  const Sae* null_sae = nullptr;       ///< the training-noise baseline C, or null
  const AlignResult* ab = nullptr;
  const AlignResult* ac = nullptr;     ///< A vs C, with null_sae
  int64_t top = 20;                    ///< rows per list (0: every feature)
  std::vector<std::pair<std::string, double>> timings;  ///< stage -> seconds
};

/// Bins of the matched-cosine histogram, over [-1, 1].
constexpr int kHistogramBins = 20;

/// Fills the export fields, headline, tables and warnings of `r` (card saeAlign).
void build_report(const Inputs& in, Result& r);

/// The q-quantile (0..1) of sorted values, linearly interpolated as numpy.percentile does.
double quantile_sorted(const std::vector<double>& sorted, double q);

/// The percentile (0..100) of x within sorted values: the share of values <= x.
double percentile_of(const std::vector<double>& sorted, double x);

}  // namespace aquin::sae_align
