#include "sae_diff_report.hpp"

#include <aquin/sdk/json.hpp>
#include <aquin/sdk/sae_json.hpp>

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <numeric>

namespace aquin::sae_diff {

namespace {

using json::Alloc;
using json::num;
using json::put;
using json::str;

// Text for one terminal cell: control characters shown, length capped.
std::string cell_text(const std::string& s, std::size_t max_chars = 60) {
  std::string out;
  std::size_t chars = 0;
  for (std::size_t i = 0; i < s.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if ((c & 0xC0) != 0x80 && ++chars > max_chars) {
      out += "…";
      break;
    }
    if (c == '\n') out += "⏎";
    else if (c < 0x20 || c == 0x7f) out += ' ';
    else out += static_cast<char>(c);
  }
  return out;
}

std::string signed_bar(double v, double max) {
  static const char* blocks[] = {"", "▏", "▎", "▍", "▌", "▋", "▊", "▉", "█"};
  if (!(max > 0) || !std::isfinite(v)) return "";
  const int eighths = static_cast<int>(std::round(16.0 * std::fabs(v) / max));
  std::string s = v < 0 ? "-" : "+";
  for (int i = 0; i < eighths / 8; ++i) s += blocks[8];
  s += blocks[eighths % 8];
  return s;
}

std::string pct(double f) { return fmt_num(100.0 * f, 3) + "%"; }

// The token at `pos` of prompt `p` in its context: "… before⟦token⟧after …".
std::string token_context(const Inputs& in, int64_t p, int32_t pos, std::string* token) {
  const auto& ids = in.tokens->ids[static_cast<std::size_t>(p)];
  if (pos < 0 || static_cast<std::size_t>(pos) >= ids.size()) return "";
  const std::size_t j = static_cast<std::size_t>(pos);
  const std::size_t lo = j >= 8 ? j - 8 : 0, hi = std::min(ids.size(), j + 4);
  std::vector<int64_t> before(ids.begin() + static_cast<std::ptrdiff_t>(lo), ids.begin() + static_cast<std::ptrdiff_t>(j));
  std::vector<int64_t> after(ids.begin() + static_cast<std::ptrdiff_t>(j + 1), ids.begin() + static_cast<std::ptrdiff_t>(hi));
  *token = in.tokenizer->decode({ids[j]}, false);
  return (lo > 0 ? "…" : "") + in.tokenizer->decode(before, true) + "⟦" + *token + "⟧" + in.tokenizer->decode(after, true) +
         (hi < ids.size() ? "…" : "");
}

// The prompts where feature f is most active on one model.
rapidjson::Value examples_json(const Inputs& in, const FeatureStats& s, int64_t f, Alloc& a) {
  rapidjson::Value arr(rapidjson::kArrayType);
  if (in.examples == 0) return arr;
  at::Tensor col = s.top_value.select(1, f);
  std::vector<int64_t> order(static_cast<std::size_t>(s.n_prompts));
  std::iota(order.begin(), order.end(), 0);
  auto cv = col.accessor<float, 1>();
  std::stable_sort(order.begin(), order.end(), [&](int64_t x, int64_t y) { return cv[x] > cv[y]; });
  for (std::size_t i = 0; i < order.size() && static_cast<int64_t>(i) < in.examples; ++i) {
    const int64_t p = order[i];
    if (!(cv[p] > 0)) break;
    rapidjson::Value e(rapidjson::kObjectType);
    put(e, "prompt", rapidjson::Value(p), a);
    put(e, "max_activation", num(cv[p]), a);
    put(e, "prompt_mean", num(s.prompt_values[p][f].item<double>()), a);
    const int32_t pos = s.top_position[p][f].item<int32_t>();
    if (pos >= 0) {
      std::string token;
      std::string ctx = token_context(in, p, pos, &token);
      put(e, "position", rapidjson::Value(pos), a);
      put(e, "token", str(token, a), a);
      put(e, "context", str(ctx, a), a);
    }
    arr.PushBack(e, a);
  }
  return arr;
}

rapidjson::Value health_json(const FeatureStats& s, Alloc& a) {
  rapidjson::Value o(rapidjson::kObjectType);
  put(o, "fvu", num(s.fvu()), a);
  put(o, "mean_l0", num(s.mean_l0()), a);
  put(o, "dead", rapidjson::Value(s.dead()), a);
  put(o, "n_vectors", rapidjson::Value(s.n_vectors), a);
  return o;
}

}  // namespace

void build_report(const Inputs& in, Result& r) {
  const SaeInfo& si = in.sae->info();
  auto& a = r.doc.GetAllocator();
  r.card = "saeDiff";
  const bool pooled = in.reduce == SaeReduce::Pooled;

  put(r.doc, "model", str(in.model, a), a);
  put(r.doc, "checkpoint", str(in.checkpoint, a), a);
  put(r.doc, "checkpoint_format", str(in.checkpoint_format, a), a);
  put(r.doc, "sae", sae_json(*in.sae, a), a);
  put(r.doc, "reduce", str(sae_reduce_name(in.reduce), a), a);
  put(r.doc, "reduce_note",
      str(pooled ? "mask-weighted mean pool of the layer's hidden states over real tokens (special tokens "
                   "included), encoded once per prompt"
          : in.reduce == SaeReduce::Tokens
              ? "every real token except the template's special tokens (BOS) is encoded; each feature is averaged "
                "over a prompt's tokens, then over prompts (each prompt weighs the same)"
          : in.reduce == SaeReduce::TokenMean
              ? "the mean residual over the prompt's real tokens (special tokens excluded) is encoded once per prompt"
              : "the last real token of each prompt (special tokens excluded) is encoded",
          a),
      a);
  put(r.doc, "layer", rapidjson::Value(si.layer), a);
  put(r.doc, "hook", str(si.hook, a), a);
  rapidjson::Value parr(rapidjson::kArrayType);
  for (std::size_t i = 0; i < in.prompts.size(); ++i) {
    rapidjson::Value p(rapidjson::kObjectType);
    put(p, "text", str(in.prompts[i], a), a);
    put(p, "tokens", rapidjson::Value(static_cast<uint64_t>(in.tokens->ids[i].size())), a);
    put(p, "encoded_vectors", rapidjson::Value(in.base->vectors_per_prompt[i]), a);
    parr.PushBack(p, a);
  }
  put(r.doc, "prompts", std::move(parr), a);

  // Order by |delta| (ties by feature id) and count what changed.
  std::vector<const FeatureDelta*> order;
  double sum_abs = 0, max_abs = 0;
  int64_t n_changed = 0;
  for (const auto& d : in.deltas) {
    order.push_back(&d);
    sum_abs += std::fabs(d.delta);
    max_abs = std::max(max_abs, std::fabs(d.delta));
    n_changed += std::fabs(d.delta) > in.threshold ? 1 : 0;
  }
  std::stable_sort(order.begin(), order.end(),
                   [](const FeatureDelta* x, const FeatureDelta* y) { return std::fabs(x->delta) > std::fabs(y->delta); });
  const std::size_t listed = in.top == 0 ? order.size() : std::min(order.size(), static_cast<std::size_t>(in.top));

  const FeatureStats& b = *in.base;
  const FeatureStats& f = *in.ft;
  const bool fvu_warn = std::isfinite(f.fvu()) && std::isfinite(b.fvu()) && f.fvu() - b.fvu() > kFvuWarnAbs &&
                        f.fvu() > kFvuWarnRatio * b.fvu();
  rapidjson::Value summary(rapidjson::kObjectType);
  put(summary, "n_features", rapidjson::Value(si.d_sae), a);
  put(summary, "n_changed", rapidjson::Value(n_changed), a);
  put(summary, "threshold", num(in.threshold), a);
  put(summary, "threshold_source", str(in.threshold_source, a), a);
  put(summary, "mean_abs_delta", num(in.deltas.empty() ? 0.0 : sum_abs / static_cast<double>(in.deltas.size())), a);
  put(summary, "max_abs_delta", num(max_abs), a);
  put(summary, "n_prompts", rapidjson::Value(b.n_prompts), a);
  put(summary, "n_vectors", rapidjson::Value(b.n_vectors), a);
  rapidjson::Value rec(rapidjson::kObjectType);
  put(rec, "base", health_json(b, a), a);
  put(rec, "finetune", health_json(f, a), a);
  put(rec, "fvu_increase", num(f.fvu() - b.fvu()), a);
  put(rec, "fvu_warning", rapidjson::Value(fvu_warn), a);
  put(rec, "fvu_warning_rule",
      str("fine-tune FVU > base FVU + " + fmt_num(kFvuWarnAbs, 2) + " and > " + fmt_num(kFvuWarnRatio, 3) + " × base FVU",
          a),
      a);
  put(summary, "reconstruction", std::move(rec), a);
  put(summary, "uncertainty",
      str("delta_se: standard error over prompts of the paired per-prompt difference; p_value: two-sided paired "
          "t-test over prompts (n-1 degrees of freedom)",
          a),
      a);
  put(summary, "frequency_note", str("base_freq / ft_freq: share of all encoded vectors where the feature is > 0", a), a);
  put(r.doc, "summary", std::move(summary), a);

  rapidjson::Value feats(rapidjson::kArrayType);
  const std::size_t with_examples = std::min<std::size_t>(listed, 20);
  for (std::size_t i = 0; i < listed; ++i) {
    const FeatureDelta& d = *order[i];
    rapidjson::Value o(rapidjson::kObjectType);
    put(o, "feature", rapidjson::Value(d.feature), a);
    put(o, "base_mean", num(d.base_mean), a);
    put(o, "ft_mean", num(d.ft_mean), a);
    put(o, "delta", num(d.delta), a);
    put(o, "base_freq", num(d.base_freq), a);
    put(o, "ft_freq", num(d.ft_freq), a);
    put(o, "delta_se", num(d.delta_se), a);
    put(o, "p_value", num(d.p_value), a);
    put(o, "changed", rapidjson::Value(std::fabs(d.delta) > in.threshold), a);
    if (i < with_examples) {
      put(o, "base_examples", examples_json(in, b, d.feature, a), a);
      put(o, "ft_examples", examples_json(in, f, d.feature, a), a);
    }
    feats.PushBack(o, a);
  }
  put(r.doc, "features", std::move(feats), a);
  rapidjson::Value tim(rapidjson::kObjectType);
  for (const auto& [k, v] : in.timings) put(tim, k, num(v), a);
  put(r.doc, "timings_s", std::move(tim), a);

  // Terminal.
  r.headline.push_back("checkpoint " + in.checkpoint + " (" + in.checkpoint_format + ") vs base " + in.model);
  r.headline.push_back("SAE " + si.path + " (" + si.format + ", " + si.architecture +
                       (si.k > 0 ? " k=" + std::to_string(si.k) : "") + ", d_sae " + std::to_string(si.d_sae) + ") at " +
                       si.hook);
  r.headline.push_back(std::to_string(b.n_prompts) + " prompts" + (in.builtin_prompts ? " (built-in set)" : "") + ", " +
                       std::to_string(b.n_vectors) + " encoded vectors (reduce " + sae_reduce_name(in.reduce) + ")");
  r.headline.push_back(std::to_string(n_changed) + " of " + std::to_string(si.d_sae) + " features changed (|Δ| > " +
                       fmt_num(in.threshold, 3) + ", " + in.threshold_source + "); mean |Δ| " +
                       fmt_num(in.deltas.empty() ? 0.0 : sum_abs / static_cast<double>(in.deltas.size()), 3) +
                       ", max |Δ| " + fmt_num(max_abs, 3));

  Table health;
  health.title = "Reconstruction health of the SAE";
  health.columns = {"model", "FVU", "mean L0", "dead features"};
  health.rows.push_back({"base", fmt_num(b.fvu(), 4), fmt_num(b.mean_l0(), 4), std::to_string(b.dead())});
  health.rows.push_back({"fine-tune", fmt_num(f.fvu(), 4), fmt_num(f.mean_l0(), 4), std::to_string(f.dead())});
  r.tables.push_back(std::move(health));
  if (fvu_warn)
    r.warnings.push_back("the SAE reconstructs the fine-tune worse than the base (FVU " + fmt_num(b.fvu(), 3) + " -> " +
                         fmt_num(f.fvu(), 3) + "): its features may no longer describe the fine-tuned model");

  Table t;
  t.title = "Top " + std::to_string(listed) + " features by |Δ| (mean activation per prompt)";
  t.columns = {"feature", "base", "fine-tune", "Δ", "± se", "p", "base freq", "ft freq", ""};
  for (std::size_t i = 0; i < listed && i < 50; ++i) {
    const FeatureDelta& d = *order[i];
    t.rows.push_back({std::to_string(d.feature) + (std::fabs(d.delta) > in.threshold ? "" : " ·"),
                      fmt_num(d.base_mean, 4), fmt_num(d.ft_mean, 4), fmt_num(d.delta, 4), fmt_num(d.delta_se, 3),
                      fmt_num(d.p_value, 2), pct(d.base_freq), pct(d.ft_freq), signed_bar(d.delta, max_abs)});
  }
  if (listed > 50) t.notes.push_back("(" + std::to_string(listed - 50) + " more in the export)");
  t.notes.push_back("· = below the change threshold");
  r.tables.push_back(std::move(t));

  Table ex;
  ex.title = "Where the top features fire most (max activation)";
  ex.columns = {"feature", "model", "act", "prompt / token in context"};
  for (std::size_t i = 0; i < std::min<std::size_t>(listed, 5); ++i) {
    const int64_t fid = order[i]->feature;
    for (const auto* s : {&b, &f}) {
      at::Tensor col = s->top_value.select(1, fid);
      const int64_t p = col.argmax().item<int64_t>();
      const float v = col[p].item<float>();
      if (!(v > 0)) {
        ex.rows.push_back({std::to_string(fid), s == &b ? "base" : "fine-tune", "-", "(never active)"});
        continue;
      }
      std::string token, where = in.prompts[static_cast<std::size_t>(p)];
      const int32_t pos = s->top_position[p][fid].item<int32_t>();
      if (pos >= 0) where = token_context(in, p, pos, &token);
      ex.rows.push_back({std::to_string(fid), s == &b ? "base" : "fine-tune", fmt_num(v, 4),
                         "#" + std::to_string(p + 1) + " " + cell_text(where)});
    }
  }
  if (!ex.rows.empty()) r.tables.push_back(std::move(ex));
}

}  // namespace aquin::sae_diff
