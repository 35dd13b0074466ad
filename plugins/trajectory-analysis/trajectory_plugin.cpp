// `aquin trajectory-analysis`: how far the weights moved at each checkpoint of a training run,
// ordered by step, with per-layer and per-kind series ready to plot.
#include "checkpoint_discovery.hpp"
#include "checkpoint_summary.hpp"
#include "trajectory_report.hpp"

#include <aquin/sdk/checkpoint.hpp>
#include <aquin/sdk/errors.hpp>
#include <aquin/sdk/plugin.hpp>
#include <aquin/sdk/weight_diff.hpp>

#include <spdlog/spdlog.h>

#include <malloc.h>

#include <chrono>

namespace {

using namespace aquin;
using namespace aquin::trajectory;

class TrajectoryAnalyzer {
 public:
  CommandSpec spec() const {
    CommandSpec s;
    s.tool = "run_trajectory_analysis";
    s.description =
        "Compare every checkpoint of a training run with the session's base model and order them by training "
        "step: total ‖ΔW‖_F, relative change, per-layer ‖ΔW‖_F, stable-rank summary and the matrices that moved "
        "most, with per-layer and per-kind series ready to plot. Give --checkpoints or --dir. A checkpoint that "
        "cannot be read becomes a row with its error; the others still complete (exit 1).";
    s.options = {
        make_option("checkpoints", OptionType::StringList, "GLOB",
                    "checkpoint files or folders matching a shell-style pattern (* ? [...] and ** across folders; "
                    "quote it), or several patterns or paths"),
        make_option("dir", OptionType::Path, "DIR",
                    "folder scanned recursively for *.pt files, HF checkpoint folders (checkpoint-500/) and PEFT "
                    "adapter folders"),
        make_option("spectral-tol", OptionType::Float, "REL",
                    "relative tolerance of the iterative spectral norm behind each stable rank (certified bound)", "1e-3"),
        flag_option("no-spectra", "skip spectral norms of full checkpoints (no stable ranks; LoRA adapters keep theirs)"),
        make_option("top", OptionType::Int, "N",
                    "matrices listed per checkpoint as the ones that moved most (by relative change)", "5"),
    };
    return s;
  }

  Result run(const RunContext& ctx, const Args& args) {
    const bool by_pattern = args.has("checkpoints"), by_dir = args.has("dir");
    if (by_pattern == by_dir)
      throw UsageError(by_pattern ? "give either --checkpoints or --dir, not both"
                                  : "give the checkpoints to compare: --checkpoints GLOB or --dir DIR");
    if (by_pattern && args.list("checkpoints").empty()) throw UsageError("--checkpoints: give at least one pattern or path");
    WeightDiffOptions opts;
    opts.spectra = !args.flag("no-spectra");
    opts.spectral_rel_tol = args.number("spectral-tol");
    if (!(opts.spectral_rel_tol > 0 && opts.spectral_rel_tol < 1))
      throw UsageError("option --spectral-tol: expected a number in (0, 1)");
    const int64_t top = args.integer("top");
    if (top < 0 || top > 1000) throw UsageError("option --top: expected an integer in [0, 1000]");

    Discovery found = by_dir ? discover_in_dir(args.str("dir")) : discover_from_patterns(args.list("checkpoints"));
    if (found.checkpoints.empty()) {
      if (by_dir) throw InputError(args.str("dir"), "no *.pt files, checkpoint folders or adapter folders found");
      std::string patterns;
      for (const auto& p : args.list("checkpoints")) patterns += (patterns.empty() ? "'" : " '") + p + "'";
      throw InputError("--checkpoints " + patterns, "no checkpoint matches");
    }

    // One base store and one norm cache for the whole run: ‖W_base‖ is computed once, not per checkpoint.
    auto base = open_model_weights(ctx.base.path);
    BaseNormCache base_norms;
    opts.base_norms = &base_norms;
    std::vector<Row> rows;
    rows.reserve(found.checkpoints.size());
    for (std::size_t i = 0; i < found.checkpoints.size(); ++i) {
      const auto t0 = std::chrono::steady_clock::now();
      const Found& f = found.checkpoints[i];
      rows.push_back(analyse_checkpoint(f.path, f.label, *base, ctx.base.family, opts, static_cast<std::size_t>(top)));
      // Hand the checkpoint's freed temporaries (fp32 deltas, chunks) back to the system. glibc raises
      // its mmap threshold after the first large free and then serves such buffers from heap arenas
      // it does not shrink, so without this peak RSS grew by ~40 MB per checkpoint of a 16M-parameter
      // model (bench_trajectory: 918 MB for 20 checkpoints vs 401 MB for 5); with it, it stays flat.
      malloc_trim(0);
      spdlog::info("trajectory-analysis {}/{} {}: {} ({:.2f} s)", i + 1, found.checkpoints.size(), f.label,
                   rows.back().ok() ? "done" : rows.back().error,
                   std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    sort_by_step(rows);

    ReportSettings settings;
    settings.base_model = ctx.base.model;
    settings.spectra = opts.spectra;
    settings.spectral_tol = opts.spectral_rel_tol;
    settings.top = static_cast<std::size_t>(top);
    Result r;
    build_report(rows, found.warnings, settings, r);
    return r;
  }
};

}  // namespace

AQUIN_ANALYZER_PLUGIN(TrajectoryAnalyzer, "trajectory-analysis", "0.1.0",
                      "‖ΔW‖ and stable rank of every checkpoint of a run, by training step")
