// `aquin residual-drift`: per-layer activation drift between the base model and a fine-tune on the
// same probe prompts (cosine distance of the residual stream, per prompt and summarised).
#include <aquin/sdk/activation_drift.hpp>
#include <aquin/sdk/checkpoint.hpp>
#include <aquin/sdk/json.hpp>
#include <aquin/sdk/model_runtime.hpp>
#include <aquin/sdk/plugin.hpp>
#include <aquin/sdk/prompts.hpp>
#include <aquin/sdk/tokenizer.hpp>

#include <algorithm>
#include <cmath>
#include <numeric>

namespace {

using namespace aquin;

double mean_of(const std::vector<double>& v) {
  return v.empty() ? 0.0 : std::accumulate(v.begin(), v.end(), 0.0) / static_cast<double>(v.size());
}

std::string bar(double value, double max) {
  static const char* blocks[] = {" ", "▏", "▎", "▍", "▌", "▋", "▊", "▉", "█"};
  if (!(max > 0)) return "";
  const int eighths = static_cast<int>(std::round(24.0 * value / max));
  std::string s;
  for (int i = 0; i < eighths / 8; ++i) s += blocks[8];
  if (eighths % 8) s += blocks[eighths % 8];
  return s;
}

class ResidualDrift {
 public:
  CommandSpec spec() const {
    CommandSpec s;
    s.tool = "run_residual_drift";
    s.description =
        "Run the base model and the fine-tune on the same prompts and measure, per layer, how far the residual "
        "stream moved: cosine distance (1 - cos) of blocks.{L}.hook_resid_post (TransformerLens meaning, never "
        "normalised) at the last token or averaged over tokens; for embedding models, of each encoder layer's "
        "mask-weighted mean-pooled hidden state.";
    s.options = {
        required_option("checkpoint", OptionType::Path, "PATH",
                        "fine-tuned checkpoint: .pt, HF folder, .safetensors, or PEFT adapter folder"),
        make_option("prompts", OptionType::Path, "FILE",
                    "JSON array or JSONL of strings or {instruction, response} rows (default: a built-in set)"),
        choice_option("reduce", {"last", "mean"},
                      "token reduction: last real token (LLM default) or mask-weighted token mean (embedding models "
                      "always)"),
        make_option("batch-size", OptionType::Int, "N", "prompts per forward pass", "8"),
    };
    return s;
  }

  Result run(const RunContext& ctx, const Args& args) {
    if (ctx.models == nullptr) throw std::logic_error("residual-drift needs the host's model loader");
    const bool embedding = ctx.base.kind == "embedding";
    Reduce reduce = embedding ? Reduce::TokenMean : Reduce::LastToken;
    Result r;
    if (auto red = args.opt_str("reduce")) {
      if (embedding && *red == "last")
        r.warnings.push_back("--reduce last ignored: embedding models are compared on their mask-weighted mean pool");
      else
        reduce = *red == "last" ? Reduce::LastToken : Reduce::TokenMean;
    }
    const int64_t batch = args.integer("batch-size");
    if (batch < 1) throw UsageError("option --batch-size: expected a positive integer");

    std::vector<std::string> prompts = args.has("prompts") ? read_prompts(args.str("prompts")) : builtin_prompts();
    auto tok = Tokenizer::from_folder(ctx.base.path);
    const std::size_t max_len = ctx.base.max_positions > 0 ? static_cast<std::size_t>(ctx.base.max_positions) : 0;
    Tokenized toks = tokenize(*tok, prompts, max_len);
    if (toks.truncated > 0)
      r.warnings.push_back(std::to_string(toks.truncated) + " prompt(s) truncated to the model's " +
                           std::to_string(max_len) + " positions");
    const int64_t pad = tok->pad_id().value_or(tok->eos_id().value_or(0));

    Checkpoint ck = open_checkpoint(args.str("checkpoint"));
    r.warnings.insert(r.warnings.end(), ck.warnings.begin(), ck.warnings.end());
    // One model at a time: the base's activations are reduced and kept, then it is freed.
    std::vector<at::Tensor> base_acts, ft_acts;
    {
      auto base = ctx.models->load(nullptr);
      base_acts = reduced_resid_post(*base, toks, reduce, pad, static_cast<std::size_t>(batch));
    }
    {
      auto ft = ctx.models->load(&ck);
      ft_acts = reduced_resid_post(*ft, toks, reduce, pad, static_cast<std::size_t>(batch));
    }
    std::vector<LayerDrift> layers = compare_layers(base_acts, ft_acts);

    r.card = "residualDrift";
    auto& a = r.doc.GetAllocator();
    const std::string reduce_name = embedding ? "mask_mean" : (reduce == Reduce::LastToken ? "last" : "mean");
    json::put(r.doc, "checkpoint", json::str(ck.path.string(), a), a);
    json::put(r.doc, "checkpoint_format", json::str(ck.format, a), a);
    json::put(r.doc, "reduce", json::str(reduce_name, a), a);
    json::put(r.doc, "hook", json::str("blocks.{L}.hook_resid_post", a), a);
    json::put(r.doc, "hook_note",
              json::str(embedding ? "each encoder layer's output hidden state, mask-weighted mean over tokens"
                                  : "TransformerLens resid_post: resid_pre + attn_out + mlp_out, not normalised",
                        a),
              a);
    rapidjson::Value parr(rapidjson::kArrayType);
    for (std::size_t i = 0; i < prompts.size(); ++i) {
      rapidjson::Value p(rapidjson::kObjectType);
      json::put(p, "text", json::str(prompts[i], a), a);
      json::put(p, "tokens", rapidjson::Value(static_cast<uint64_t>(toks.ids[i].size())), a);
      parr.PushBack(p, a);
    }
    json::put(r.doc, "prompts", std::move(parr), a);

    Table t;
    t.title = std::string("Per layer: cosine distance of ") + (embedding ? "mean-pooled hidden states" : "hook_resid_post") +
              " (" + reduce_name + "), over " + std::to_string(prompts.size()) + " prompts";
    t.columns = {"layer", "mean 1-cos", "max 1-cos", "rel. norm change", "rel. distance", ""};
    double worst = 0;
    for (const auto& l : layers) worst = std::max(worst, mean_of(l.cosine_distance));
    rapidjson::Value larr(rapidjson::kArrayType);
    for (const auto& l : layers) {
      const double mean = mean_of(l.cosine_distance);
      const double mx = *std::max_element(l.cosine_distance.begin(), l.cosine_distance.end());
      rapidjson::Value o(rapidjson::kObjectType);
      json::put(o, "layer", rapidjson::Value(l.layer), a);
      rapidjson::Value cd(rapidjson::kObjectType);
      json::put(cd, "mean", json::num(mean), a);
      json::put(cd, "max", json::num(mx), a);
      rapidjson::Value pp(rapidjson::kArrayType);
      for (double v : l.cosine_distance) pp.PushBack(json::num(v), a);
      json::put(cd, "per_prompt", std::move(pp), a);
      json::put(o, "cosine_distance", std::move(cd), a);
      json::put(o, "relative_norm_change", json::num(mean_of(l.relative_norm_change)), a);
      json::put(o, "relative_distance", json::num(mean_of(l.relative_distance)), a);
      larr.PushBack(o, a);
      t.rows.push_back({std::to_string(l.layer), fmt_num(mean, 3), fmt_num(mx, 3),
                        fmt_num(mean_of(l.relative_norm_change), 3), fmt_num(mean_of(l.relative_distance), 3),
                        bar(mean, worst)});
    }
    json::put(r.doc, "layers", std::move(larr), a);
    r.headline.push_back("checkpoint " + ck.path.string() + " (" + ck.format + ") vs base " + ctx.base.model + ", " +
                         std::to_string(prompts.size()) + " prompts" + (args.has("prompts") ? "" : " (built-in set)"));
    r.tables.push_back(std::move(t));
    return r;
  }
};

}  // namespace

AQUIN_ANALYZER_PLUGIN(ResidualDrift, "residual-drift", "0.1.0",
                      "per-layer activation drift between base and fine-tune on the same prompts")
