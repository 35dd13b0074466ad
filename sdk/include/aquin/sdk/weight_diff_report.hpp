// Export and terminal rendering of a WeightDiff, shared by every command that shows one
// (weight-diff, merge-analysis, trajectory-analysis).
#pragma once

#include <aquin/sdk/checkpoint.hpp>
#include <aquin/sdk/result.hpp>
#include <aquin/sdk/weight_diff.hpp>

#include <boost/config.hpp>
#include <rapidjson/document.h>

namespace aquin {

/// {"path", "format", "step", "step_source", "lora": {...} when an adapter}.
BOOST_SYMBOL_VISIBLE rapidjson::Value checkpoint_json(const Checkpoint& ck, rapidjson::Document::AllocatorType& a);

/// One export object per matrix (the fields of the weightDiff contract and a few more).
BOOST_SYMBOL_VISIBLE rapidjson::Value matrix_json(const MatrixDiff& m, rapidjson::Document::AllocatorType& a);

/// Per-layer aggregates: [{"layer", "delta_norm", "base_norm", "relative", "by_kind": {...}}].
BOOST_SYMBOL_VISIBLE rapidjson::Value layers_json(const WeightDiff& wd, rapidjson::Document::AllocatorType& a);

/// The summary object: totals, counts by status, largest changes.
BOOST_SYMBOL_VISIBLE rapidjson::Value summary_json(const WeightDiff& wd, const Checkpoint& ck,
                                                   rapidjson::Document::AllocatorType& a);

/// Terminal tables: per-layer grid, tensors outside the blocks, most changed.
BOOST_SYMBOL_VISIBLE std::vector<Table> weight_diff_tables(const WeightDiff& wd, const Checkpoint& ck);

}  // namespace aquin
