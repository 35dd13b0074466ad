#include <aquin/sdk/behavior.hpp>
#include <aquin/sdk/errors.hpp>

#include <ATen/ATen.h>

#include <algorithm>

namespace aquin {

ProbeOutput probe_model(LoadedModel& model, const Tokenized& prompts, int n_new, std::size_t batch_size,
                        int64_t eos_id) {
  ProbeOutput out;
  const std::size_t n = prompts.ids.size();
  if (batch_size == 0) batch_size = 1;
  std::vector<at::Tensor> firsts;
  out.greedy.resize(n);
  for (std::size_t start = 0; start < n; start += batch_size) {
    const std::size_t end = std::min(n, start + batch_size);
    GenerateRequest req;
    req.prompts.assign(prompts.ids.begin() + static_cast<long>(start), prompts.ids.begin() + static_cast<long>(end));
    req.max_new_tokens = n_new;
    req.eos_id = eos_id;
    GenerateResult res;
    Status st = model.generate_greedy(req, res);
    if (!st.ok()) {
      if (st.code == StatusCode::Input) throw InputError(st.message);
      throw std::runtime_error(st.message);
    }
    if (!res.first_logprobs.defined() || res.first_logprobs.dim() != 2 ||
        res.first_logprobs.size(0) != static_cast<int64_t>(end - start) || res.tokens.size() != end - start)
      throw std::runtime_error("generate_greedy returned a result that does not match its prompts");
    firsts.push_back(res.first_logprobs.to(at::kDouble));
    for (std::size_t i = 0; i < res.tokens.size(); ++i) out.greedy[start + i] = std::move(res.tokens[i]);
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
