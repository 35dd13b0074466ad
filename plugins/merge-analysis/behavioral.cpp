#include "behavioral.hpp"

#include <aquin/sdk/activation_drift.hpp>
#include <aquin/sdk/errors.hpp>
#include <aquin/sdk/model_runtime.hpp>

#include <ATen/ATen.h>

#include <algorithm>
#include <cstdio>

namespace aquin::merge {

namespace {

std::string fixed(double v, int digits) {
  char buf[48];
  std::snprintf(buf, sizeof buf, "%.*f", digits, v);
  return buf;
}

// One line of a continuation for the terminal: line breaks and tabs shown escaped, long text cut.
std::string one_line(const std::string& s, std::size_t max_bytes = 40) {
  std::string out;
  for (char c : s) {
    if (c == '\n') out += "\\n";
    else if (c == '\r') out += "\\r";
    else if (c == '\t') out += "\\t";
    else out += c;
  }
  if (out.size() <= max_bytes) return out;
  std::size_t cut = max_bytes;
  while (cut > 0 && (static_cast<unsigned char>(out[cut]) & 0xC0) == 0x80) --cut;  // not inside a UTF-8 sequence
  return out.substr(0, cut) + "…";
}

}  // namespace

BehaviorResult run_behavior(const RunContext& ctx, const Checkpoint& ck, const Tokenizer& tok, const std::string& file,
                            const std::vector<std::string>& prompts, int new_tokens, std::size_t batch_size) {
  if (ctx.models == nullptr) throw std::logic_error("merge-analysis: behavioural scores need the host's model loader");
  BehaviorResult b;
  b.prompts_file = file;
  b.new_tokens = new_tokens;
  // Room for the continuation inside the model's positions.
  std::size_t max_len = 0;
  if (ctx.base.max_positions > 0) {
    if (ctx.base.max_positions <= new_tokens + 1)
      throw UsageError("option --new-tokens: the model has only " + std::to_string(ctx.base.max_positions) + " positions");
    max_len = static_cast<std::size_t>(ctx.base.max_positions - new_tokens);
  }
  const Tokenized toks = tokenize(tok, prompts, max_len);
  b.truncated = toks.truncated;
  const int64_t eos = tok.eos_id().value_or(-1);
  ProbeOutput base_out, ft_out;
  {
    auto base = ctx.models->load(nullptr);
    base_out = probe_model(*base, toks, new_tokens, batch_size, eos);
  }
  {
    auto ft = ctx.models->load(&ck);
    ft_out = probe_model(*ft, toks, new_tokens, batch_size, eos);
  }
  const std::vector<PromptBehavior> scores = compare_behavior(base_out, ft_out);
  const at::Tensor base_top = base_out.next_logprobs.argmax(-1), ft_top = ft_out.next_logprobs.argmax(-1);
  double kl_sum = 0, edit_sum = 0;
  int agree = 0;
  for (std::size_t i = 0; i < prompts.size(); ++i) {
    ProbeRow row;
    row.text = prompts[i];
    row.tokens = toks.ids[i].size();
    row.score = scores[i];
    row.base_top1 = base_top[static_cast<int64_t>(i)].item<int64_t>();
    row.ft_top1 = ft_top[static_cast<int64_t>(i)].item<int64_t>();
    row.base_greedy = base_out.greedy[i];
    row.ft_greedy = ft_out.greedy[i];
    row.base_text = tok.decode(row.base_greedy);
    row.ft_text = tok.decode(row.ft_greedy);
    kl_sum += row.score.kl;
    if (row.score.kl > b.max_kl || b.worst_prompt < 0) {
      b.max_kl = row.score.kl;
      b.worst_prompt = static_cast<int>(i);
    }
    agree += row.score.top1_agree ? 1 : 0;
    const std::size_t len = std::max(row.base_greedy.size(), row.ft_greedy.size());
    edit_sum += len > 0 ? static_cast<double>(row.score.edit_distance) / static_cast<double>(len) : 0.0;
    b.rows.push_back(std::move(row));
  }
  const double n = static_cast<double>(prompts.size());
  b.mean_kl = kl_sum / n;
  b.top1_agreement = agree / n;
  b.mean_edit_fraction = edit_sum / n;
  return b;
}

SignalResult behavior_reasons(const BehaviorResult& b, const Thresholds& t) {
  SignalResult res;
  res.evaluated = static_cast<int>(b.rows.size());
  const std::string param = "probes (" + std::to_string(b.rows.size()) + " prompts)";
  const std::vector<std::pair<std::string, double>> context = {
      {"prompts", static_cast<double>(b.rows.size())}, {"max_kl", b.max_kl}, {"worst_prompt", b.worst_prompt}};
  if (b.mean_kl > t.behavior_kl_warn) {
    const bool fail = b.mean_kl > t.behavior_kl_fail;
    Reason r;
    r.signal = "behavior_kl";
    r.param = param;
    r.value = b.mean_kl;
    r.threshold = fail ? t.behavior_kl_fail : t.behavior_kl_warn;
    r.severity = fail ? "fail" : "warn";
    r.detail = "mean next-token KL(base ‖ fine-tune) " + fixed(b.mean_kl, 3) + " nats (largest " + fixed(b.max_kl, 3) +
               " on prompt " + std::to_string(b.worst_prompt + 1) + ")";
    r.figures = context;
    res.reasons.push_back(std::move(r));
  }
  if (b.top1_agreement < t.behavior_top1_warn) {
    const bool fail = b.top1_agreement < t.behavior_top1_fail;
    Reason r;
    r.signal = "behavior_top1";
    r.param = param;
    r.value = b.top1_agreement;
    r.threshold = fail ? t.behavior_top1_fail : t.behavior_top1_warn;
    r.severity = fail ? "fail" : "warn";
    r.detail = "the fine-tune's most likely next token agrees with the base's on " + fixed(100 * b.top1_agreement, 0) +
               "% of the prompts";
    r.figures = {{"prompts", static_cast<double>(b.rows.size())}};
    res.reasons.push_back(std::move(r));
  }
  if (b.mean_edit_fraction > t.behavior_edit_warn) {
    Reason r;
    r.signal = "behavior_greedy_edit";
    r.param = param;
    r.value = b.mean_edit_fraction;
    r.threshold = t.behavior_edit_warn;
    r.severity = "warn";
    r.detail = "greedy continuations of " + std::to_string(b.new_tokens) + " tokens differ in " +
               fixed(100 * b.mean_edit_fraction, 0) + "% of their tokens (edit distance)";
    r.figures = {{"prompts", static_cast<double>(b.rows.size())}, {"new_tokens", static_cast<double>(b.new_tokens)}};
    res.reasons.push_back(std::move(r));
  }
  return res;
}

rapidjson::Value behavior_json(const BehaviorResult& b, json::Alloc& a) {
  using json::num;
  using json::put;
  using json::str;
  rapidjson::Value o(rapidjson::kObjectType);
  put(o, "prompts_file", str(b.prompts_file, a), a);
  put(o, "new_tokens", rapidjson::Value(b.new_tokens), a);
  put(o, "truncated_prompts", rapidjson::Value(b.truncated), a);
  rapidjson::Value s(rapidjson::kObjectType);
  put(s, "mean_kl", num(b.mean_kl), a);
  put(s, "max_kl", num(b.max_kl), a);
  put(s, "worst_prompt", rapidjson::Value(b.worst_prompt), a);
  put(s, "top1_agreement", num(b.top1_agreement), a);
  put(s, "mean_edit_fraction", num(b.mean_edit_fraction), a);
  put(o, "summary", std::move(s), a);
  auto ids = [&](const std::vector<int64_t>& v) {
    rapidjson::Value arr(rapidjson::kArrayType);
    for (int64_t x : v) arr.PushBack(rapidjson::Value(x), a);
    return arr;
  };
  rapidjson::Value rows(rapidjson::kArrayType);
  for (const auto& r : b.rows) {
    rapidjson::Value x(rapidjson::kObjectType);
    put(x, "text", str(r.text, a), a);
    put(x, "tokens", rapidjson::Value(static_cast<uint64_t>(r.tokens)), a);
    put(x, "kl", num(r.score.kl), a);
    put(x, "top1_agree", rapidjson::Value(r.score.top1_agree), a);
    put(x, "base_top1", rapidjson::Value(r.base_top1), a);
    put(x, "ft_top1", rapidjson::Value(r.ft_top1), a);
    put(x, "base_continuation", str(r.base_text, a), a);
    put(x, "ft_continuation", str(r.ft_text, a), a);
    put(x, "base_continuation_ids", ids(r.base_greedy), a);
    put(x, "ft_continuation_ids", ids(r.ft_greedy), a);
    put(x, "edit_distance", rapidjson::Value(r.score.edit_distance), a);
    rows.PushBack(x, a);
  }
  put(o, "per_prompt", std::move(rows), a);
  return o;
}

Table behavior_table(const BehaviorResult& b) {
  Table t;
  t.title = "Behaviour on " + std::to_string(b.rows.size()) + " probe prompts (" + b.prompts_file + ")";
  t.columns = {"#", "KL (nats)", "top-1", "edit", "base continues", "fine-tune continues"};
  for (std::size_t i = 0; i < b.rows.size(); ++i) {
    const ProbeRow& r = b.rows[i];
    t.rows.push_back({std::to_string(i + 1), fixed(r.score.kl, 4), r.score.top1_agree ? "same" : "differs",
                      std::to_string(r.score.edit_distance) + "/" +
                          std::to_string(std::max(r.base_greedy.size(), r.ft_greedy.size())),
                      one_line(r.base_text), one_line(r.ft_text)});
  }
  t.notes.push_back("mean KL " + fixed(b.mean_kl, 4) + " nats, top-1 agreement " + fixed(100 * b.top1_agreement, 0) +
                    "%, greedy edit distance " + fixed(100 * b.mean_edit_fraction, 0) + "% of " +
                    std::to_string(b.new_tokens) + " new tokens");
  return t;
}

}  // namespace aquin::merge
