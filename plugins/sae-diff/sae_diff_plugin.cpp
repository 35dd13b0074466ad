// `aquin sae diff`: run the same prompts through the base model and the fine-tune, encode the
// activations at the SAE's hook, and report which sparse features moved (DESIGN.md §8).
#include "sae_diff_report.hpp"

#include <aquin/sdk/checkpoint.hpp>
#include <aquin/sdk/errors.hpp>
#include <aquin/sdk/plugin.hpp>
#include <aquin/sdk/progress.hpp>
#include <aquin/sdk/prompts.hpp>

#include <ATen/Parallel.h>

#include <chrono>
#include <cmath>

namespace {

using namespace aquin;

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

class SaeDiff {
 public:
  CommandSpec spec() const {
    CommandSpec s;
    s.tool = "run_sae_diff";
    s.description =
        "Run the same prompts through the base model and a fine-tune, encode the activations at one layer with a "
        "sparse autoencoder (the session's, or --sae), and report per feature the mean activation on each model, "
        "its change with a standard error and a paired t-test over prompts, how often it fires, the SAE's "
        "reconstruction health on both models, and the prompts and tokens where the most changed features fire.";
    s.options = {
        required_option("checkpoint", OptionType::Path, "PATH",
                        "fine-tuned checkpoint: .pt, HF folder, .safetensors, or PEFT adapter folder"),
        make_option("model", OptionType::String, "SLUG|PATH",
                    "base model (a catalog slug or a folder) instead of the session's"),
        make_option("prompts", OptionType::Path, "FILE",
                    "JSON array or JSONL of strings or {instruction, response} rows (default: a built-in set)"),
        make_option("sae", OptionType::Path, "PATH", "SAE folder instead of the session's (aquin load sae)"),
        make_option("layer", OptionType::Int, "L",
                    "layer of the SAE in a folder of several; must agree with the SAE's hook"),
        choice_option("reduce", {"tokens", "mean", "last"},
                      "LLMs: encode every real token and average per prompt (tokens, default), the token-mean "
                      "residual (mean), or the last real token (last); embedding models always encode the "
                      "mask-weighted mean pool",
                      "tokens"),
        make_option("top", OptionType::Int, "N", "features listed by |delta| (0: every feature)", "20"),
        make_option("threshold", OptionType::Float, "X",
                    "|delta| above which a feature counts as changed (default: measured per run, the 99th "
                    "percentile of split-half noise of the base)"),
        make_option("examples", OptionType::Int, "N", "top prompts shown per listed feature", "3"),
        make_option("batch-size", OptionType::Int, "N", "prompts per forward pass", "8"),
    };
    return s;
  }

  Result run(const RunContext& ctx, const Args& args) {
    if (ctx.models == nullptr) throw std::logic_error("sae diff needs the host's model loader");
    const auto t_all = std::chrono::steady_clock::now();
    const bool embedding = ctx.base.kind == "embedding";
    Result r;
    const int64_t batch = args.integer("batch-size");
    if (batch < 1) throw UsageError("option --batch-size: expected a positive integer");
    const int64_t top = args.integer("top");
    if (top < 0) throw UsageError("option --top: expected 0 (every feature) or a positive integer");
    const int64_t examples = args.integer("examples");
    if (examples < 0) throw UsageError("option --examples: expected 0 or a positive integer");
    std::optional<double> threshold;
    if (args.has("threshold")) {
      threshold = args.number("threshold");
      if (!(*threshold >= 0) || !std::isfinite(*threshold))
        throw UsageError("option --threshold: expected a finite number >= 0");
    }
    SaeReduce reduce = SaeReduce::Tokens;
    const std::string red = args.str("reduce");
    if (embedding) {
      reduce = SaeReduce::Pooled;
      if (red != "tokens")
        r.warnings.push_back("--reduce " + red + " ignored: embedding models encode their mask-weighted mean pool");
    } else {
      reduce = red == "mean" ? SaeReduce::TokenMean : red == "last" ? SaeReduce::LastToken : SaeReduce::Tokens;
    }

    // The SAE: --sae, else the session's. Validated against the model before any forward runs.
    auto t0 = std::chrono::steady_clock::now();
    std::optional<int64_t> layer;
    if (args.has("layer")) layer = args.integer("layer");
    std::string sae_path = args.opt_str("sae").value_or(ctx.sae_path);
    if (sae_path.empty())
      throw UsageError("no SAE: pass --sae PATH, or attach one to the session with `aquin load sae SLUG|PATH`");
    if (!args.has("sae") && !layer && ctx.sae_layer >= 0) layer = ctx.sae_layer;
    // A folder of several SAEs without --layer: the model's usual SAE layer (the catalog's for LLMs,
    // the last encoder layer for embedding models, as the catalog's embedding SAEs are trained).
    if (!layer && Sae::layers_in(sae_path).size() > 1) {
      const int64_t def = embedding ? ctx.base.n_layers - 1 : ctx.base.default_sae_layer;
      if (def >= 0) {
        layer = def;
        r.warnings.push_back("--layer not given: using layer " + std::to_string(def) + ", the default for " +
                             ctx.base.model);
      }
    }
    Sae sae = Sae::load(sae_path, layer);
    const SaeInfo& si = sae.info();
    if (si.d_in != ctx.base.d_model)
      throw InputError(si.path, "the SAE's d_in is " + std::to_string(si.d_in) + " but the base model's d_model is " +
                                    std::to_string(ctx.base.d_model) + " (an SAE of another model?)");
    if (si.layer >= ctx.base.n_layers)
      throw InputError(si.path, "the SAE reads " + si.hook + " but the model has " + std::to_string(ctx.base.n_layers) +
                                    " layers");
    const double t_sae = seconds_since(t0);

    const bool builtin = !args.has("prompts");
    std::vector<std::string> prompts = builtin ? builtin_prompts() : read_prompts(args.str("prompts"));
    auto tok = Tokenizer::from_folder(ctx.base.path);
    const std::size_t max_len = ctx.base.max_positions > 0 ? static_cast<std::size_t>(ctx.base.max_positions) : 0;
    SaePrompts toks = tokenize_for_sae(*tok, prompts, max_len);
    if (toks.truncated > 0)
      r.warnings.push_back(std::to_string(toks.truncated) + " prompt(s) truncated to the model's " +
                           std::to_string(max_len) + " positions");
    const int64_t pad = tok->pad_id().value_or(tok->eos_id().value_or(0));

    Checkpoint ck = open_checkpoint(args.str("checkpoint"));
    r.warnings.insert(r.warnings.end(), ck.warnings.begin(), ck.warnings.end());

    // One model at a time: the base's statistics are kept, then it is freed.
    auto stats_of = [&](const Checkpoint* overlay, const std::string& label) {
      Progress bar(label + " → " + si.hook, static_cast<int64_t>(prompts.size()), "prompts");
      auto model = ctx.models->load(overlay);
      return collect_feature_stats(*model, sae, toks, reduce, pad, static_cast<std::size_t>(batch),
                                   [&](int64_t done, int64_t) { bar.update(done); });
    };
    t0 = std::chrono::steady_clock::now();
    FeatureStats base = stats_of(nullptr, "base");
    const double t_base = seconds_since(t0);
    t0 = std::chrono::steady_clock::now();
    FeatureStats ft = stats_of(&ck, "fine-tune");
    const double t_ft = seconds_since(t0);

    t0 = std::chrono::steady_clock::now();
    sae_diff::Inputs in;
    in.model = ctx.base.model;
    in.checkpoint = ck.path.string();
    in.checkpoint_format = ck.format;
    in.sae = &sae;
    in.reduce = reduce;
    in.prompts = prompts;
    in.tokens = &toks;
    in.tokenizer = tok.get();
    in.base = &base;
    in.ft = &ft;
    in.deltas = diff_features(base, ft);
    if (threshold) {
      in.threshold = *threshold;
      in.threshold_source = "flag";
    } else {
      const double t = split_half_threshold(base);
      if (std::isfinite(t)) {
        in.threshold = t;
        in.threshold_source = "split-half";
      } else {
        in.threshold = 0;
        in.threshold_source = "none";
        r.warnings.push_back("fewer than 4 prompts (or no active feature): no split-half noise estimate, so every "
                             "non-zero delta counts as changed; pass --threshold or more prompts");
      }
    }
    in.top = top;
    in.examples = examples;
    in.builtin_prompts = builtin;
    const double t_diff = seconds_since(t0);
    in.timings = {{"load_sae", t_sae}, {"base", t_base}, {"finetune", t_ft}, {"diff", t_diff},
                  {"total", seconds_since(t_all)}};
    sae_diff::build_report(in, r);
    return r;
  }
};

}  // namespace

AQUIN_ANALYZER_PLUGIN(SaeDiff, "sae-diff", "0.1.0",
                      "sparse-feature deltas between base and fine-tune through an SAE")
