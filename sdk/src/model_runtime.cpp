// LoadedModel's default greedy generation: a full forward with logits per new token over the
// right-padded batch (no KV cache). Adapters override it with a cached one giving the same tokens.
#include <aquin/sdk/errors.hpp>
#include <aquin/sdk/model_runtime.hpp>

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <stdexcept>

namespace aquin {

namespace {

// Log-probabilities of the next token after each sequence's last real token: [b, vocab] fp64.
// Padding is token 0 (masked; any id in the vocabulary would do).
at::Tensor last_logprobs(LoadedModel& model, const std::vector<std::vector<int64_t>>& seqs, c10::ScalarType dtype) {
  const int64_t b = static_cast<int64_t>(seqs.size());
  std::size_t t_max = 0;
  for (const auto& s : seqs) t_max = std::max(t_max, s.size());
  at::Tensor ids = at::zeros({b, static_cast<int64_t>(t_max)}, at::kLong);
  at::Tensor mask = at::zeros({b, static_cast<int64_t>(t_max)}, at::kLong);
  auto ia = ids.accessor<int64_t, 2>();
  auto ma = mask.accessor<int64_t, 2>();
  for (int64_t i = 0; i < b; ++i)
    for (std::size_t j = 0; j < seqs[static_cast<std::size_t>(i)].size(); ++j) {
      ia[i][static_cast<int64_t>(j)] = seqs[static_cast<std::size_t>(i)][j];
      ma[i][static_cast<int64_t>(j)] = 1;
    }
  ForwardRequest req;
  req.input_ids = ids;
  req.attention_mask = mask;
  req.logits = true;
  req.dtype = dtype;
  at::Tensor logits;
  Status st = model.forward(req, [](const std::string&, const at::Tensor&) {}, logits);
  if (!st.ok()) {
    if (st.code == StatusCode::Input) throw InputError(st.message);
    throw std::runtime_error(st.message);
  }
  if (!logits.defined()) throw std::runtime_error("the model returned no logits");
  at::Tensor last = (mask.sum(1) - 1).view({b, 1, 1}).expand({b, 1, logits.size(2)});
  return at::log_softmax(logits.gather(1, last).squeeze(1).to(at::kDouble), -1);
}

void generate_full_forward(LoadedModel& model, const GenerateRequest& req, GenerateResult& out) {
  if (req.max_new_tokens < 0) throw InputError("generate: max_new_tokens must not be negative");
  for (const auto& p : req.prompts)
    if (p.empty()) throw InputError("generate: every prompt needs at least one token");
  out = GenerateResult{};
  std::vector<std::vector<int64_t>> seqs = req.prompts;
  out.tokens.resize(seqs.size());
  if (seqs.empty()) {
    out.first_logprobs = at::empty({0, 0}, at::kDouble);
    return;
  }
  std::vector<bool> done(seqs.size(), false);
  for (int step = 0; step <= req.max_new_tokens; ++step) {
    if (std::all_of(done.begin(), done.end(), [](bool d) { return d; })) break;  // every continuation ended
    at::Tensor lp = last_logprobs(model, seqs, req.dtype);
    if (step == 0) out.first_logprobs = lp;
    if (step == req.max_new_tokens) break;
    at::Tensor next = lp.argmax(-1);
    for (std::size_t i = 0; i < seqs.size(); ++i) {
      if (done[i]) continue;  // still in the batch, padded on; its continuation ended
      const int64_t tok = next[static_cast<int64_t>(i)].item<int64_t>();
      seqs[i].push_back(tok);
      out.tokens[i].push_back(tok);
      done[i] = req.eos_id >= 0 && tok == req.eos_id;
    }
  }
}

}  // namespace

Status LoadedModel::generate_greedy(const GenerateRequest& req, GenerateResult& out) noexcept {
  try {
    at::NoGradGuard no_grad;
    generate_full_forward(*this, req, out);
    return {};
  } catch (const InputError& e) {
    return {StatusCode::Input, e.what()};
  } catch (const c10::Error& e) {
    return {StatusCode::Internal, std::string("generate failed: ") + e.what_without_backtrace()};
  } catch (const std::exception& e) {
    return {StatusCode::Internal, std::string("generate failed: ") + e.what()};
  } catch (...) {
    return {StatusCode::Internal, "generate failed"};
  }
}

}  // namespace aquin
