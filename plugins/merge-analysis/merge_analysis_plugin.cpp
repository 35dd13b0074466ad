// `aquin merge-analysis`: a pre-merge gate. Compares a LoRA adapter (or a merged checkpoint) with the
// base and returns pass / warn / fail with every reason behind it; a fail exits with code 2.
#include "behavioral.hpp"
#include "intruders.hpp"
#include "report.hpp"
#include "signals.hpp"
#include "thresholds.hpp"

#include <aquin/sdk/checkpoint.hpp>
#include <aquin/sdk/errors.hpp>
#include <aquin/sdk/plugin.hpp>
#include <aquin/sdk/prompts.hpp>
#include <aquin/sdk/tokenizer.hpp>
#include <aquin/sdk/weight_diff.hpp>

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <iterator>
#include <memory>

namespace {

using namespace aquin;
using namespace aquin::merge;

// Said when behavioural scores are asked for on a model they do not apply to, so that no reader
// mistakes the verdict for more than it is.
constexpr const char* kEmbeddingWeightOnly =
    "behavioural scores compare next-token predictions and apply to LLMs; an embedding model gets a weight-only "
    "verdict (residual-drift compares its pooled representations)";

class Stopwatch {
 public:
  double lap() {
    const auto now = std::chrono::steady_clock::now();
    const double s = std::chrono::duration<double>(now - last_).count();
    last_ = now;
    return s;
  }

 private:
  std::chrono::steady_clock::time_point last_ = std::chrono::steady_clock::now();
};

class MergeAnalyzer {
 public:
  CommandSpec spec() const {
    CommandSpec s;
    s.tool = "run_merge_analysis";
    s.description =
        "Pre-merge gate for a LoRA adapter or a merged checkpoint against the session's base model: returns "
        "mergeVerdict pass, warn or fail with every reason (NaN/Inf, missing or extra keys, shape mismatches, "
        "intruder dimensions, relative-change outliers among a weight's peers, elevated or collapsed stable rank "
        "of ΔW), each with its value and the threshold it crossed. With prompts (LLMs), base and fine-tune also run on "
        "them: next-token KL divergence, top-1 agreement and greedy continuations, with thresholds that feed the "
        "verdict. Exit code 2 on fail.";
    s.options = {
        required_option("checkpoint", OptionType::Path, "PATH",
                        "LoRA adapter folder or merged checkpoint: .pt {step, state_dict}, HF save_pretrained folder, "
                        ".safetensors"),
        make_option("prompts", OptionType::Path, "FILE",
                    "probe prompts (JSON array or JSONL of strings or {instruction, response} rows) for behavioural "
                    "scores: prompts the fine-tune should leave alone. LLMs only; an embedding model's verdict stays "
                    "weight-only and says so"),
        flag_option("no-behavioral", "ask for a weight-only verdict (no behavioural scores, no warning about them)"),
        make_option("new-tokens", OptionType::Int, "N",
                    "tokens of greedy continuation generated per probe prompt by each model", "8"),
        make_option("batch-size", OptionType::Int, "N", "probe prompts per forward pass", "8"),
        make_option("thresholds", OptionType::Path, "FILE",
                    "JSON object of thresholds, e.g. {\"outlier_z\": 5}; flags given as well take precedence"),
    };
    for (auto& o : threshold_options()) s.options.push_back(std::move(o));
    return s;
  }

  Result run(const RunContext& ctx, const Args& args) {
    Stopwatch total, lap;
    Analysis an;
    an.thresholds = resolve_thresholds(args);  // before any heavy work: a bad file fails fast
    const Thresholds& t = an.thresholds.values;
    an.prompts = args.opt_str("prompts").value_or("");
    an.behavioral_requested = !an.prompts.empty() && !args.flag("no-behavioral");
    if (an.behavioral_requested && !std::filesystem::exists(an.prompts))
      throw InputError(an.prompts, "no such file (--prompts)");
    const bool run_probes = an.behavioral_requested && ctx.base.kind == "llm";
    const int64_t new_tokens = args.integer("new-tokens"), batch = args.integer("batch-size");
    if (new_tokens < 1 || new_tokens > 256) throw UsageError("option --new-tokens: expected an integer in [1, 256]");
    if (batch < 1) throw UsageError("option --batch-size: expected a positive integer");
    // Read before any heavy work, so that a malformed file or a missing tokenizer fails fast.
    const std::vector<std::string> probes = run_probes ? read_prompts(an.prompts) : std::vector<std::string>{};
    const std::unique_ptr<Tokenizer> tok = run_probes ? Tokenizer::from_folder(ctx.base.path) : nullptr;

    Checkpoint ck = open_checkpoint(args.str("checkpoint"));
    auto base = open_model_weights(ctx.base.path);
    an.timings.emplace_back("open", lap.lap());
    // An adapter's modules are analysed first, straight from its factors: that pass converts each
    // base weight anyway, and hands its norm to the weight diff, which then need not read the base.
    BaseNormCache base_norms;
    if (ck.is_lora) an.intruders = analyze_lora_intruders(*base, ck, ctx.base.family, t, base_norms);
    double intruder_seconds = lap.lap();
    WeightDiffOptions opts;
    opts.base_norms = &base_norms;
    // max |ΔW_ij| plays no part in a verdict, and for an adapter it is the one step of the weight diff
    // that forms B@A (O(out·in) per module); left out, it is null in the export.
    opts.lora_max_abs = false;
    opts.progress = [](std::size_t done, std::size_t n, const std::string& p) {
      spdlog::debug("merge-analysis: weight diff {}/{} {}", done, n, p);
    };
    const WeightDiff wd = compute_weight_diff(*base, ck, ctx.base.family, opts);
    an.timings.emplace_back("weight_diff", lap.lap());

    auto record = [&](const std::string& name, SignalResult res) {
      an.timings.emplace_back(name, lap.lap());
      an.reasons.insert(an.reasons.end(), res.reasons.begin(), res.reasons.end());
      an.signals.emplace_back(name, std::move(res));
    };
    record("integrity", integrity_reasons(wd));
    record("stable_rank", stable_rank_reasons(wd, t, an.scores));
    record("rank_collapse", collapse_reasons(wd, t));
    record("relative_change_outlier", outlier_reasons(wd, t, an.scores));
    auto dense = analyze_dense_intruders(*base, ck, wd, ctx.base.family, t);
    an.intruders.insert(an.intruders.end(), std::make_move_iterator(dense.begin()), std::make_move_iterator(dense.end()));
    intruder_seconds += lap.lap();
    auto res = intruder_reasons(an.intruders, t);
    an.timings.emplace_back("intruders", intruder_seconds);
    an.reasons.insert(an.reasons.end(), res.reasons.begin(), res.reasons.end());
    an.signals.emplace_back("intruders", std::move(res));
    if (run_probes) {
      an.behavior = run_behavior(ctx, ck, *tok, an.prompts, probes, static_cast<int>(new_tokens), static_cast<std::size_t>(batch));
      record("behavior", behavior_reasons(*an.behavior, t));
    }
    std::stable_sort(an.reasons.begin(), an.reasons.end(),
                     [](const Reason& a, const Reason& b) { return a.severity == "fail" && b.severity != "fail"; });
    an.verdict = verdict(an.reasons);
    an.timings.emplace_back("total", total.lap());

    Result r;
    r.card = "mergeAnalysis";
    r.warnings = ck.warnings;
    r.warnings.insert(r.warnings.end(), wd.warnings.begin(), wd.warnings.end());
    if (an.behavioral_requested && !run_probes) r.warnings.emplace_back(kEmbeddingWeightOnly);
    if (an.behavior && an.behavior->truncated > 0)
      r.warnings.push_back(std::to_string(an.behavior->truncated) +
                           " probe prompt(s) truncated to leave room for the continuation in the model's positions");
    fill_export(r, an, ck, wd);
    fill_terminal(r, an, ck, wd, ctx.base.model);
    r.exit_code = an.verdict == "fail" ? 2 : 0;
    return r;
  }
};

}  // namespace

AQUIN_ANALYZER_PLUGIN(MergeAnalyzer, "merge-analysis", "0.1.0",
                      "pre-merge gate: pass / warn / fail with the reasons (exit 2 on fail)")
