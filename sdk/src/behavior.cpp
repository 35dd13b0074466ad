#include <aquin/sdk/behavior.hpp>
#include <aquin/sdk/errors.hpp>

#include <ATen/ATen.h>

#include <algorithm>

namespace aquin {

namespace {

// Log-probabilities of the next token after each sequence's last real token: [b, vocab] fp64.
at::Tensor last_logprobs(LoadedModel& model, const std::vector<std::vector<int64_t>>& seqs, int64_t pad_id) {
  const int64_t b = static_cast<int64_t>(seqs.size());
  std::size_t t_max = 0;
  for (const auto& s : seqs) t_max = std::max(t_max, s.size());
  at::Tensor ids = at::full({b, static_cast<int64_t>(t_max)}, pad_id, at::kLong);
  at::Tensor mask = at::zeros({b, static_cast<int64_t>(t_max)}, at::kLong);
  for (int64_t i = 0; i < b; ++i)
    for (std::size_t j = 0; j < seqs[static_cast<std::size_t>(i)].size(); ++j) {
      ids[i][static_cast<int64_t>(j)] = seqs[static_cast<std::size_t>(i)][j];
      mask[i][static_cast<int64_t>(j)] = 1;
    }
  ForwardRequest req;
  req.input_ids = ids;
  req.attention_mask = mask;
  req.logits = true;
  at::Tensor logits;
  Status st = model.forward(req, [](const std::string&, const at::Tensor&) {}, logits);
  if (!st.ok()) {
    if (st.code == StatusCode::Input) throw InputError(st.message);
    throw std::runtime_error("forward failed: " + st.message);
  }
  if (!logits.defined()) throw std::runtime_error("the model returned no logits");
  at::Tensor last = (mask.sum(1) - 1).view({b, 1, 1}).expand({b, 1, logits.size(2)});
  return at::log_softmax(logits.gather(1, last).squeeze(1).to(at::kDouble), -1);
}

}  // namespace

ProbeOutput probe_model(LoadedModel& model, const Tokenized& prompts, int64_t pad_id, int n_new, std::size_t batch_size,
                        int64_t eos_id) {
  ProbeOutput out;
  const std::size_t n = prompts.ids.size();
  std::vector<at::Tensor> firsts;
  out.greedy.resize(n);
  for (std::size_t start = 0; start < n; start += batch_size) {
    const std::size_t end = std::min(n, start + batch_size);
    std::vector<std::vector<int64_t>> seqs(prompts.ids.begin() + static_cast<long>(start), prompts.ids.begin() + static_cast<long>(end));
    std::vector<bool> done(seqs.size(), false);
    for (int step = 0; step <= n_new; ++step) {
      if (std::all_of(done.begin(), done.end(), [](bool d) { return d; })) break;  // every continuation ended
      at::Tensor lp = last_logprobs(model, seqs, pad_id);
      if (step == 0) firsts.push_back(lp);
      if (step == n_new) break;
      at::Tensor next = lp.argmax(-1);
      for (std::size_t i = 0; i < seqs.size(); ++i) {
        if (done[i]) continue;  // still in the batch, padded on; its continuation ended
        const int64_t tok = next[static_cast<int64_t>(i)].item<int64_t>();
        seqs[i].push_back(tok);
        out.greedy[start + i].push_back(tok);
        done[i] = tok == eos_id;
      }
    }
  }
  out.next_logprobs = firsts.empty() ? at::empty({0, 0}, at::kDouble) : at::cat(firsts, 0);
  return out;
}

int token_edit_distance(const std::vector<int64_t>& a, const std::vector<int64_t>& b) {
  std::vector<int> prev(b.size() + 1), cur(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) prev[j] = static_cast<int>(j);
  for (std::size_t i = 1; i <= a.size(); ++i) {
    cur[0] = static_cast<int>(i);
    for (std::size_t j = 1; j <= b.size(); ++j)
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)});
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

std::vector<PromptBehavior> compare_behavior(const ProbeOutput& base, const ProbeOutput& ft) {
  if (!base.next_logprobs.sizes().equals(ft.next_logprobs.sizes()))
    throw std::invalid_argument("compare_behavior: the two probe outputs cover different prompts or vocabularies");
  // KL(p ‖ q) = Σ p (log p − log q); exp(-inf) = 0 terms contribute nothing.
  at::Tensor p = base.next_logprobs.exp();
  at::Tensor kl = (p * (base.next_logprobs - ft.next_logprobs)).nan_to_num(0.0).sum(-1);
  at::Tensor agree = base.next_logprobs.argmax(-1).eq(ft.next_logprobs.argmax(-1));
  std::vector<PromptBehavior> out(base.greedy.size());
  for (std::size_t i = 0; i < out.size(); ++i) {
    out[i].kl = std::max(0.0, kl[static_cast<int64_t>(i)].item<double>());
    out[i].top1_agree = agree[static_cast<int64_t>(i)].item<bool>();
    out[i].edit_distance = token_edit_distance(base.greedy[i], ft.greedy[i]);
  }
  return out;
}

}  // namespace aquin
