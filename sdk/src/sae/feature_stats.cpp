// Feature statistics of one model through an SAE, and the per-feature difference of two models.
#include <aquin/sdk/activation_drift.hpp>
#include <aquin/sdk/errors.hpp>
#include <aquin/sdk/sae_features.hpp>

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <set>

namespace aquin {

const char* sae_reduce_name(SaeReduce r) {
  switch (r) {
    case SaeReduce::Tokens: return "tokens";
    case SaeReduce::TokenMean: return "mean";
    case SaeReduce::LastToken: return "last";
    case SaeReduce::Pooled: return "pooled";
  }
  return "?";
}

SaePrompts tokenize_for_sae(const Tokenizer& tok, const std::vector<std::string>& prompts, std::size_t max_len) {
  SaePrompts out;
  for (std::size_t i = 0; i < prompts.size(); ++i) {
    Encoding e = tok.encode(prompts[i], /*add_special_tokens=*/true, max_len);
    if (e.ids.empty())
      throw InputError("prompt " + std::to_string(i + 1) + " ('" + prompts[i].substr(0, 40) + "')", "tokenizes to no tokens");
    out.truncated += e.truncated ? 1 : 0;
    std::vector<uint8_t> special = e.special_tokens_mask;
    special.resize(e.ids.size(), 0);
    out.ids.push_back(std::move(e.ids));
    out.special.push_back(std::move(special));
  }
  return out;
}

double FeatureStats::fvu() const {
  return sq_total > 0 ? sq_error / sq_total : std::numeric_limits<double>::quiet_NaN();
}
double FeatureStats::mean_l0() const { return n_vectors > 0 ? l0_sum / static_cast<double>(n_vectors) : 0.0; }
int64_t FeatureStats::dead() const { return active.defined() ? (active == 0).sum().item<int64_t>() : d_sae; }

FeatureStats start_feature_stats(int64_t n_prompts, int64_t d_sae, int64_t d_in) {
  FeatureStats s;
  s.n_prompts = n_prompts;
  s.d_sae = d_sae;
  s.prompt_values = at::zeros({n_prompts, d_sae}, at::kDouble);
  s.active = at::zeros({d_sae}, at::kLong);
  s.top_value = at::zeros({n_prompts, d_sae}, at::kFloat);
  s.top_position = at::full({n_prompts, d_sae}, -1, at::kInt);
  s.vectors_per_prompt.assign(static_cast<std::size_t>(n_prompts), 0);
  s.sum_x = at::zeros({d_in}, at::kDouble);
  return s;
}

void accumulate_vectors(FeatureStats& s, const Sae& sae, const at::Tensor& vectors, const std::vector<int64_t>& prompt_of_row,
                        const std::vector<int32_t>& position_of_row) {
  const int64_t n = vectors.size(0);
  if (n == 0) return;
  at::Tensor x = vectors.to(at::kFloat).contiguous();
  SaeOutput out = sae.run(x, /*reconstruct=*/true);
  at::Tensor xd = x.to(at::kDouble);
  s.sq_error += (xd - out.reconstruction.to(at::kDouble)).pow(2).sum().item<double>();
  s.sum_x += xd.sum(0);
  s.sum_sq += xd.pow(2).sum().item<double>();
  s.n_vectors += n;
  for (int64_t r = 0; r < n; ++r) s.vectors_per_prompt[static_cast<std::size_t>(prompt_of_row[static_cast<std::size_t>(r)])] += 1;

  const SparseCodes& c = out.codes;
  const int64_t nnz = c.values.numel();
  s.l0_sum += static_cast<double>(nnz);
  auto rows = c.rows.accessor<int64_t, 1>();
  auto feats = c.features.accessor<int64_t, 1>();
  auto vals = c.values.accessor<float, 1>();
  auto sums = s.prompt_values.accessor<double, 2>();
  auto active = s.active.accessor<int64_t, 1>();
  auto top = s.top_value.accessor<float, 2>();
  auto pos = s.top_position.accessor<int32_t, 2>();
  for (int64_t i = 0; i < nnz; ++i) {
    const int64_t row = rows[i], f = feats[i];
    const float v = vals[i];
    const int64_t p = prompt_of_row[static_cast<std::size_t>(row)];
    sums[p][f] += v;
    if (v > 0) active[f] += 1;
    if (v > top[p][f]) {
      top[p][f] = v;
      pos[p][f] = position_of_row[static_cast<std::size_t>(row)];
    }
  }
}

void finish_feature_stats(FeatureStats& s) {
  at::Tensor counts = at::zeros({s.n_prompts, 1}, at::kDouble);
  for (int64_t p = 0; p < s.n_prompts; ++p)
    counts[p][0] = static_cast<double>(std::max<int64_t>(1, s.vectors_per_prompt[static_cast<std::size_t>(p)]));
  s.prompt_values.div_(counts);
  if (s.n_vectors > 0) {
    const double mean_sq = s.sum_x.pow(2).sum().item<double>() / static_cast<double>(s.n_vectors);
    s.sq_total = std::max(0.0, s.sum_sq - mean_sq);
  }
}

namespace {

// "blocks.{L}.hook_resid_post (L = 0..15), embed, ..." from a model's hook list.
std::string describe_hooks(const std::vector<std::string>& hooks) {
  std::set<std::string> patterns;
  int64_t max_layer = -1;
  for (const auto& h : hooks) {
    const int64_t l = hook_layer(h);
    if (l < 0) {
      patterns.insert(h);
      continue;
    }
    max_layer = std::max(max_layer, l);
    patterns.insert("blocks.{L}" + h.substr(h.find('.', 7)));
  }
  std::string s;
  for (const auto& p : patterns) s += (s.empty() ? "" : ", ") + p;
  if (max_layer >= 0) s += " (L = 0.." + std::to_string(max_layer) + ")";
  return s;
}

}  // namespace

FeatureStats collect_feature_stats(LoadedModel& model, const Sae& sae, const SaePrompts& prompts, SaeReduce reduce,
                                   int64_t pad_id, std::size_t batch_size, const ProgressFn& progress) {
  const ModelInfo& info = model.info();
  const SaeInfo& si = sae.info();
  if (si.d_in != info.d_model)
    throw InputError(si.path, "the SAE's d_in is " + std::to_string(si.d_in) + " but the model's d_model is " +
                                  std::to_string(info.d_model));
  const std::vector<std::string> offered = model.hook_names();
  if (std::find(offered.begin(), offered.end(), si.hook) == offered.end())
    throw InputError(si.path, "the SAE reads hook '" + si.hook + "', which the model (" + info.model_type +
                                  ") does not offer; it offers " + describe_hooks(offered));
  if (reduce == SaeReduce::Pooled && si.hook.find("hook_resid_post") == std::string::npos)
    throw InputError(si.path, "pooled embeddings are read at blocks.{L}.hook_resid_post, not " + si.hook);
  if (batch_size == 0) batch_size = 1;

  const int64_t n = static_cast<int64_t>(prompts.ids.size());
  FeatureStats stats = start_feature_stats(n, si.d_sae, si.d_in);
  for (int64_t start = 0; start < n; start += static_cast<int64_t>(batch_size)) {
    const int64_t b = std::min<int64_t>(static_cast<int64_t>(batch_size), n - start);
    const PaddedBatch batch = padded_batch(prompts.ids, start, b, pad_id, info.vocab_size);
    ForwardRequest req;
    req.input_ids = batch.ids;
    req.attention_mask = batch.mask;
    req.hooks = {si.hook};
    bool seen = false;
    HookSink sink = [&](const std::string& hook, const at::Tensor& value) {
      if (hook != si.hook) return;
      seen = true;
      at::Tensor v = value.to(at::kFloat);  // [b, T, d]
      std::vector<at::Tensor> rows;
      std::vector<int64_t> prompt_of_row;
      std::vector<int32_t> position_of_row;
      for (int64_t i = 0; i < b; ++i) {
        const std::size_t p = static_cast<std::size_t>(start + i);
        const auto& special = prompts.special[p];
        const int64_t len = static_cast<int64_t>(prompts.ids[p].size());
        at::Tensor h = v[i].narrow(0, 0, len);  // [len, d]
        if (reduce == SaeReduce::Pooled) {
          rows.push_back(h.to(at::kDouble).mean(0).to(at::kFloat).unsqueeze(0));
          prompt_of_row.push_back(static_cast<int64_t>(p));
          position_of_row.push_back(-1);
          continue;
        }
        std::vector<int64_t> keep;
        for (int64_t j = 0; j < len; ++j)
          if (!special[static_cast<std::size_t>(j)]) keep.push_back(j);
        if (keep.empty())
          throw InputError("prompt " + std::to_string(p + 1), "has no tokens besides the template's special tokens");
        at::Tensor idx = at::tensor(keep, at::kLong);
        if (reduce == SaeReduce::Tokens) {
          rows.push_back(h.index_select(0, idx));
          for (int64_t j : keep) {
            prompt_of_row.push_back(static_cast<int64_t>(p));
            position_of_row.push_back(static_cast<int32_t>(j));
          }
        } else if (reduce == SaeReduce::TokenMean) {
          rows.push_back(h.index_select(0, idx).to(at::kDouble).mean(0).to(at::kFloat).unsqueeze(0));
          prompt_of_row.push_back(static_cast<int64_t>(p));
          position_of_row.push_back(-1);
        } else {
          rows.push_back(h[keep.back()].unsqueeze(0));
          prompt_of_row.push_back(static_cast<int64_t>(p));
          position_of_row.push_back(static_cast<int32_t>(keep.back()));
        }
      }
      accumulate_vectors(stats, sae, at::cat(rows), prompt_of_row, position_of_row);
    };
    at::Tensor logits;
    Status st = model.forward(req, sink, logits);
    if (!st.ok()) {
      if (st.code == StatusCode::Input) throw InputError(st.message);
      throw std::runtime_error("forward failed: " + st.message);
    }
    if (!seen) throw std::runtime_error("the model adapter did not deliver hook " + si.hook);
    if (progress) progress(start + b, n);
  }
  finish_feature_stats(stats);
  return stats;
}

double student_t_two_sided_p(double t, double dof) {
  if (!std::isfinite(t)) return std::isnan(t) ? std::numeric_limits<double>::quiet_NaN() : 0.0;
  if (!(dof > 0)) return std::numeric_limits<double>::quiet_NaN();
  // p = I_x(dof/2, 1/2) with x = dof / (dof + t²): the regularised incomplete beta function,
  // evaluated by its continued fraction (modified Lentz), using the symmetry for fast convergence.
  const double a = dof / 2, b = 0.5, x = dof / (dof + t * t);
  auto cont_frac = [](double a, double b, double x) {
    const double tiny = 1e-300;
    double c = 1, d = 1 - (a + b) * x / (a + 1);
    if (std::fabs(d) < tiny) d = tiny;
    d = 1 / d;
    double h = d;
    for (int m = 1; m <= 400; ++m) {
      const double m2 = 2.0 * m;
      double aa = m * (b - m) * x / ((a + m2 - 1) * (a + m2));
      d = 1 + aa * d;
      if (std::fabs(d) < tiny) d = tiny;
      c = 1 + aa / c;
      if (std::fabs(c) < tiny) c = tiny;
      d = 1 / d;
      h *= d * c;
      aa = -(a + m) * (a + b + m) * x / ((a + m2) * (a + m2 + 1));
      d = 1 + aa * d;
      if (std::fabs(d) < tiny) d = tiny;
      c = 1 + aa / c;
      if (std::fabs(c) < tiny) c = tiny;
      d = 1 / d;
      const double del = d * c;
      h *= del;
      if (std::fabs(del - 1) < 1e-15) break;
    }
    return h;
  };
  if (x <= 0) return 0.0;
  if (x >= 1) return 1.0;
  const double log_front = std::lgamma(a + b) - std::lgamma(a) - std::lgamma(b) + a * std::log(x) + b * std::log1p(-x);
  double ib;
  if (x < (a + 1) / (a + b + 2)) ib = std::exp(log_front) * cont_frac(a, b, x) / a;
  else ib = 1 - std::exp(log_front) * cont_frac(b, a, 1 - x) / b;
  return std::clamp(ib, 0.0, 1.0);
}

std::vector<FeatureDelta> diff_features(const FeatureStats& base, const FeatureStats& ft) {
  if (base.n_prompts != ft.n_prompts || base.d_sae != ft.d_sae)
    throw std::logic_error("diff_features: statistics of different prompts or SAEs");
  const int64_t n = base.n_prompts, d = base.d_sae;
  at::Tensor bm = base.prompt_values.mean(0), fm = ft.prompt_values.mean(0);
  at::Tensor diff = ft.prompt_values - base.prompt_values;
  at::Tensor se = n >= 2 ? diff.std(0, /*unbiased=*/true) / std::sqrt(static_cast<double>(n))
                         : at::full({d}, std::numeric_limits<double>::quiet_NaN(), at::kDouble);
  auto bma = bm.accessor<double, 1>(), fma = fm.accessor<double, 1>(), sea = se.accessor<double, 1>();
  auto ba = base.active.accessor<int64_t, 1>(), fa = ft.active.accessor<int64_t, 1>();
  std::vector<FeatureDelta> out(static_cast<std::size_t>(d));
  for (int64_t f = 0; f < d; ++f) {
    FeatureDelta& x = out[static_cast<std::size_t>(f)];
    x.feature = f;
    x.base_mean = bma[f];
    x.ft_mean = fma[f];
    x.delta = x.ft_mean - x.base_mean;
    x.base_freq = base.n_vectors > 0 ? static_cast<double>(ba[f]) / static_cast<double>(base.n_vectors) : 0.0;
    x.ft_freq = ft.n_vectors > 0 ? static_cast<double>(fa[f]) / static_cast<double>(ft.n_vectors) : 0.0;
    x.delta_se = sea[f];
    if (n < 2) x.p_value = std::numeric_limits<double>::quiet_NaN();
    else if (x.delta_se == 0) x.p_value = x.delta == 0 ? 1.0 : 0.0;
    else x.p_value = student_t_two_sided_p(x.delta / x.delta_se, static_cast<double>(n - 1));
  }
  return out;
}

double split_half_threshold(const FeatureStats& base) {
  const int64_t n = base.n_prompts;
  if (n < 4) return std::numeric_limits<double>::quiet_NaN();
  at::Tensor even = base.prompt_values.slice(0, 0, n, 2).mean(0);
  at::Tensor odd = base.prompt_values.slice(0, 1, n, 2).mean(0);
  at::Tensor gap = (even - odd).abs();
  // Features the base never uses would pull the percentile to zero: only the active ones count.
  at::Tensor used = gap.masked_select(base.active > 0);
  if (used.numel() == 0) return std::numeric_limits<double>::quiet_NaN();
  std::vector<double> v(used.data_ptr<double>(), used.data_ptr<double>() + used.numel());
  std::sort(v.begin(), v.end());
  const double pos = 0.99 * static_cast<double>(v.size() - 1);
  const std::size_t lo = static_cast<std::size_t>(std::floor(pos));
  const std::size_t hi = std::min(lo + 1, v.size() - 1);
  return v[lo] + (pos - static_cast<double>(lo)) * (v[hi] - v[lo]);
}

}  // namespace aquin
