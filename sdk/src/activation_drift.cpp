#include <aquin/sdk/activation_drift.hpp>

#include <aquin/sdk/errors.hpp>

#include <ATen/ATen.h>

#include <algorithm>

namespace aquin {

Tokenized tokenize(const Tokenizer& tok, const std::vector<std::string>& prompts, std::size_t max_len) {
  Tokenized out;
  for (const auto& p : prompts) {
    Encoding e = tok.encode(p, /*add_special_tokens=*/true, max_len);
    if (e.ids.empty()) throw InputError("prompt '" + p.substr(0, 40) + "'", "tokenizes to no tokens");
    out.truncated += e.truncated ? 1 : 0;
    out.ids.push_back(std::move(e.ids));
  }
  return out;
}

PaddedBatch padded_batch(const std::vector<std::vector<int64_t>>& prompts, int64_t start, int64_t b, int64_t pad_id,
                         int64_t vocab_size) {
  std::size_t t_max = 0;
  for (int64_t i = 0; i < b; ++i) t_max = std::max(t_max, prompts[static_cast<std::size_t>(start + i)].size());
  PaddedBatch out;
  out.ids = at::full({b, static_cast<int64_t>(t_max)}, pad_id, at::kLong);
  out.mask = at::zeros({b, static_cast<int64_t>(t_max)}, at::kLong);
  auto ia = out.ids.accessor<int64_t, 2>();
  auto ma = out.mask.accessor<int64_t, 2>();
  for (int64_t i = 0; i < b; ++i) {
    const auto& row = prompts[static_cast<std::size_t>(start + i)];
    for (std::size_t j = 0; j < row.size(); ++j) {
      if (row[j] < 0 || row[j] >= vocab_size)
        throw InputError("tokenizer", "token id " + std::to_string(row[j]) + " is outside the model's vocabulary (" +
                                          std::to_string(vocab_size) + ")");
      ia[i][static_cast<int64_t>(j)] = row[j];
      ma[i][static_cast<int64_t>(j)] = 1;
    }
  }
  return out;
}

std::vector<at::Tensor> reduced_resid_post(LoadedModel& model, const Tokenized& prompts, Reduce reduce, int64_t pad_id,
                                           std::size_t batch_size) {
  const ModelInfo& info = model.info();
  const int64_t n = static_cast<int64_t>(prompts.ids.size());
  std::vector<at::Tensor> per_layer(static_cast<std::size_t>(info.n_layers));
  for (auto& t : per_layer) t = at::zeros({n, info.d_model}, at::kDouble);
  std::vector<std::string> hooks;
  for (int64_t l = 0; l < info.n_layers; ++l) hooks.push_back("blocks." + std::to_string(l) + ".hook_resid_post");

  for (int64_t start = 0; start < n; start += static_cast<int64_t>(batch_size)) {
    const int64_t b = std::min<int64_t>(static_cast<int64_t>(batch_size), n - start);
    const PaddedBatch batch = padded_batch(prompts.ids, start, b, pad_id, info.vocab_size);
    ForwardRequest req;
    req.input_ids = batch.ids;
    req.attention_mask = batch.mask;
    req.hooks = hooks;
    at::Tensor maskf = batch.mask.to(at::kDouble).unsqueeze(-1);  // [b, T, 1]
    at::Tensor last = batch.mask.sum(1) - 1;                       // index of each prompt's last real token
    HookSink sink = [&](const std::string& hook, const at::Tensor& value) {
      // "blocks.{L}.hook_resid_post"
      const auto dot = hook.find('.', 7);
      const int64_t layer = std::stoll(hook.substr(7, dot - 7));
      at::Tensor v = value.to(at::kDouble);  // [b, T, d]
      at::Tensor reduced = reduce == Reduce::LastToken
                               ? v.gather(1, last.view({b, 1, 1}).expand({b, 1, v.size(2)})).squeeze(1)
                               : (v * maskf).sum(1) / maskf.sum(1);
      per_layer[static_cast<std::size_t>(layer)].narrow(0, start, b).copy_(reduced);
    };
    at::Tensor logits;
    Status st = model.forward(req, sink, logits);
    if (!st.ok()) {
      if (st.code == StatusCode::Input) throw InputError(st.message);
      throw std::runtime_error("forward failed: " + st.message);
    }
  }
  return per_layer;
}

std::vector<LayerDrift> compare_layers(const std::vector<at::Tensor>& base, const std::vector<at::Tensor>& ft) {
  std::vector<LayerDrift> out;
  for (std::size_t l = 0; l < base.size(); ++l) {
    const at::Tensor& a = base[l];
    const at::Tensor& b = ft[l];
    at::Tensor na = a.norm(2, {1}), nb = b.norm(2, {1});
    at::Tensor cos = (a * b).sum(1) / (na * nb).clamp_min(1e-300);
    at::Tensor dist = (b - a).norm(2, {1}) / na.clamp_min(1e-300);
    LayerDrift d;
    d.layer = static_cast<int>(l);
    for (int64_t i = 0; i < a.size(0); ++i) {
      d.cosine_distance.push_back(std::max(0.0, 1.0 - cos[i].item<double>()));  // rounding can dip below 0
      d.relative_norm_change.push_back((nb[i].item<double>() - na[i].item<double>()) / na[i].item<double>());
      d.relative_distance.push_back(dist[i].item<double>());
    }
    out.push_back(std::move(d));
  }
  return out;
}

}  // namespace aquin
