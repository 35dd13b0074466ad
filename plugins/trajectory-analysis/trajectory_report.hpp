// The trajectory's export (rows, series ready to plot) and terminal view (step table, sparklines).
#pragma once

#include "checkpoint_summary.hpp"

#include <aquin/sdk/result.hpp>

#include <string>
#include <vector>

namespace aquin::trajectory {

/// Orders rows by training step; rows without a step go last, ordered by path (so do ties).
void sort_by_step(std::vector<Row>& rows);

/// An eight-level sparkline (▁▂▃▄▅▆▇█) of `values` scaled to their own min..max; '·' where a value is
/// not finite (a failed checkpoint). A flat series is drawn at mid height (at the bottom when zero).
std::string sparkline(const std::vector<double>& values);

struct ReportSettings {
  std::string base_model;
  bool spectra = true;
  double spectral_tol = 0;
  std::size_t top = 0;
};

/// Fills `r` from rows already sorted: the export fields (rows, series, summary), the headline with
/// the sparkline of total ‖ΔW‖_F, the tables, the warnings (failures first) and the exit code:
/// 1 when a checkpoint failed on its input, 3 when one failed on an internal error, else 0.
void build_report(const std::vector<Row>& rows, const std::vector<std::string>& discovery_warnings,
                  const ReportSettings& settings, Result& r);

}  // namespace aquin::trajectory
