// `aquin weight-diff`: per-layer, per-matrix ‖ΔW‖ and stable rank of a fine-tune's change.
#include <aquin/sdk/checkpoint.hpp>
#include <aquin/sdk/json.hpp>
#include <aquin/sdk/plugin.hpp>
#include <aquin/sdk/weight_diff.hpp>
#include <aquin/sdk/weight_diff_report.hpp>

#include <spdlog/spdlog.h>

#include <chrono>

namespace {

using namespace aquin;

// A checkpoint with tensors of the wrong shape (another base model?) or NaN/Inf values has no
// meaningful norms: by default that is an input error naming the first offenders.
void refuse_broken(const WeightDiff& wd, const Checkpoint& ck) {
  const std::string broken = broken_tensors_message(wd);
  if (!broken.empty()) throw InputError(ck.path.string(), broken + "; --keep-going lists them in the export instead");
}

class WeightDiffAnalyzer {
 public:
  CommandSpec spec() const {
    CommandSpec s;
    s.tool = "run_weight_diff";
    s.description =
        "Compare a fine-tuned checkpoint (merged .pt, Hugging Face folder, safetensors file or LoRA adapter) "
        "with the session's base model: per layer and matrix, ‖W‖_F, ‖ΔW‖_F, relative change, stable rank "
        "of ΔW and max |Δ|.";
    s.options = {
        required_option("checkpoint", OptionType::Path, "PATH",
                        "fine-tuned checkpoint: .pt {step, state_dict}, HF save_pretrained folder, .safetensors, or "
                        "PEFT adapter folder"),
        make_option("spectral-tol", OptionType::Float, "REL",
                    "relative tolerance of the iterative spectral norm (certified bound)", "1e-3"),
        flag_option("keep-going",
                    "list shape mismatches and NaN/Inf tensors in the result instead of failing (exit 1) on them"),
    };
    return s;
  }

  Result run(const RunContext& ctx, const Args& args) {
    const std::string path = args.str("checkpoint");
    Checkpoint ck = open_checkpoint(path);
    auto base = open_model_weights(ctx.base.path);
    WeightDiffOptions opts;
    opts.spectral_rel_tol = args.number("spectral-tol");
    if (!(opts.spectral_rel_tol > 0 && opts.spectral_rel_tol < 1))
      throw UsageError("option --spectral-tol: expected a number in (0, 1)");
    auto last = std::chrono::steady_clock::now();
    opts.progress = [&last](std::size_t done, std::size_t total, const std::string& p) {
      auto now = std::chrono::steady_clock::now();
      spdlog::debug("weight-diff {}/{} {} ({:.2f} s)", done, total, p, std::chrono::duration<double>(now - last).count());
      last = now;
    };
    WeightDiff wd = compute_weight_diff(*base, ck, ctx.base.family, opts);
    if (!args.flag("keep-going")) refuse_broken(wd, ck);

    Result r;
    r.card = "weightDiff";
    auto& a = r.doc.GetAllocator();
    json::put(r.doc, "checkpoint", checkpoint_json(ck, a), a);
    json::put(r.doc, "summary", summary_json(wd, ck, a), a);
    json::put(r.doc, "spectral_tol", json::num(opts.spectral_rel_tol), a);
    json::put(r.doc, "layers", layers_json(wd, a), a);
    rapidjson::Value mats(rapidjson::kArrayType);
    for (const auto& m : wd.matrices) mats.PushBack(matrix_json(m, a), a);
    json::put(r.doc, "matrices", std::move(mats), a);
    r.warnings = ck.warnings;
    r.warnings.insert(r.warnings.end(), wd.warnings.begin(), wd.warnings.end());

    const auto& s = r.doc["summary"];
    std::string step = ck.step ? " step " + std::to_string(*ck.step) : "";
    r.headline.push_back("checkpoint " + ck.path.string() + " (" + ck.format + step + ") vs base " + ctx.base.model);
    r.headline.push_back(std::to_string(s["compared"].GetInt()) + " tensors compared, " +
                         std::to_string(s["changed"].GetInt()) + " changed; total ‖ΔW‖_F " +
                         fmt_num(wd.total_delta_norm) + " (" +
                         fmt_num(100.0 * (wd.total_base_norm > 0 ? wd.total_delta_norm / wd.total_base_norm : 0)) +
                         "% of ‖W‖_F over " + s["relative_scope"].GetString() + ")");
    if (s["below_noise_floor"].GetInt() > 0)
      r.headline.push_back(std::to_string(s["below_noise_floor"].GetInt()) +
                           " change(s) at or below the half-precision rounding-noise floor");
    r.tables = weight_diff_tables(wd, ck);
    return r;
  }
};

}  // namespace

AQUIN_ANALYZER_PLUGIN(WeightDiffAnalyzer, "weight-diff", "0.1.0",
                      "per-matrix ‖ΔW‖, relative change and stable rank of a fine-tune")
