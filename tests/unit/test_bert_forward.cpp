// The BERT forward pass of the `embedding` model-adapter plugin, loaded the way the host loads it,
// against goldens from an independent float64 re-implementation of Hugging Face BertModel
// (tests/fixtures/make_bert_goldens.py, cross-checked there against nn.TransformerEncoderLayer).
#include "test_helpers.hpp"

#include <aquin/sdk/atomic_file.hpp>
#include <aquin/sdk/checkpoint.hpp>
#include <aquin/sdk/safetensors.hpp>

#include "models.hpp"
#include "registry.hpp"

#include <ATen/ATen.h>
#include <ATen/record_function.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <map>

using aquin::test::TempDir;
using aquin::test::data_dir;
namespace fs = std::filesystem;

namespace {

fs::path bert(const std::string& sub) { return data_dir() / "bert" / sub; }

const aquin::host::PluginRegistry& registry() {
  static aquin::host::PluginRegistry* reg = [] {
    auto* r = new aquin::host::PluginRegistry;  // plugins stay loaded to process exit anyway
    r->discover(aquin::host::plugin_search_path({}));
    return r;
  }();
  return *reg;
}

aquin::ModelInfo describe(const fs::path& dir) { return aquin::host::describe_model(dir.string(), dir, registry(), {}); }

// The adapter's load(), with its Status as the result.
aquin::Status try_load(const fs::path& dir, const aquin::Checkpoint* overlay, std::unique_ptr<aquin::LoadedModel>& out) {
  const aquin::ModelInfo info = describe(dir);
  for (const auto* p : registry().adapters())
    if (p->name == info.adapter) return p->adapter->load(info, overlay, out);
  return {aquin::StatusCode::Internal, "adapter '" + info.adapter + "' not found"};
}

std::unique_ptr<aquin::LoadedModel> load(const fs::path& dir, const aquin::Checkpoint* overlay = nullptr) {
  std::unique_ptr<aquin::LoadedModel> m;
  aquin::Status st = try_load(dir, overlay, m);
  EXPECT_TRUE(st.ok()) << st.message;
  return m;
}

using Hooks = std::map<std::string, at::Tensor>;

aquin::Status try_run(aquin::LoadedModel& m, const at::Tensor& ids, const at::Tensor& mask,
                      const std::vector<std::string>& hooks, Hooks& out) {
  aquin::ForwardRequest req;
  req.input_ids = ids;
  req.attention_mask = mask;
  req.hooks = hooks;
  at::Tensor logits;
  return m.forward(req, [&](const std::string& h, const at::Tensor& t) { out[h] = t; }, logits);
}

Hooks run(aquin::LoadedModel& m, const at::Tensor& ids, const at::Tensor& mask, const std::vector<std::string>& hooks) {
  Hooks out;
  aquin::Status st = try_run(m, ids, mask, hooks, out);
  EXPECT_TRUE(st.ok()) << st.message;
  return out;
}

const aquin::TensorStore& golden() {
  static auto store = aquin::open_safetensors(bert("golden.safetensors"));
  return *store;
}

std::vector<std::string> all_hooks(int64_t n_layers) {
  std::vector<std::string> h{"embed", "pooled"};
  for (int64_t l = 0; l < n_layers; ++l) h.push_back("blocks." + std::to_string(l) + ".hook_resid_post");
  return h;
}

double rel_err(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>() / b.to(at::kDouble).abs().max().item<double>();
}

// Every hook of `variant` against the goldens at real positions (max|a−b| / max|b| per tensor);
// padded positions must be finite (and are zeros). Returns the worst error seen.
double expect_matches_golden(aquin::LoadedModel& m, const std::string& variant, double tol) {
  const at::Tensor ids = golden().load("input_ids"), mask = golden().load("attention_mask");
  const Hooks got = run(m, ids, mask, all_hooks(m.info().n_layers));
  double worst = 0;
  for (const auto& hook : all_hooks(m.info().n_layers)) {
    SCOPED_TRACE(variant + " " + hook);
    auto it = got.find(hook);
    if (it == got.end()) {
      ADD_FAILURE() << "hook not delivered";
      continue;
    }
    const at::Tensor want = golden().load(variant + "." + hook);
    if (it->second.sizes() != want.sizes()) {
      ADD_FAILURE() << "shape " << it->second.sizes() << ", golden " << want.sizes();
      continue;
    }
    EXPECT_TRUE(at::isfinite(it->second).all().item<bool>()) << "non-finite values (padding included)";
    if (hook == "pooled") {
      const double e = rel_err(it->second, want);
      EXPECT_LT(e, tol);
      worst = std::max(worst, e);
      continue;
    }
    for (int64_t b = 0; b < ids.size(0); ++b) {
      const int64_t n = mask[b].sum().item<int64_t>();
      const double e = rel_err(it->second[b].narrow(0, 0, n), want[b].narrow(0, 0, n));
      EXPECT_LT(e, tol) << "prompt " << b;
      worst = std::max(worst, e);
      // Padding never runs through the dense layers: zeros there, as bert.hpp documents.
      EXPECT_EQ(it->second[b].narrow(0, n, ids.size(1) - n).abs().sum().item<double>(), 0.0) << "prompt " << b;
    }
  }
  return worst;
}

// A copy of the tiny model whose config.json differs by `edit`.
void copy_model_with_config(const fs::path& dir, const std::string& from, const std::string& to) {
  fs::create_directories(dir);
  fs::copy_file(bert("tiny/model.safetensors"), dir / "model.safetensors");
  std::string cfg = aquin::read_text_file(bert("tiny/config.json"));
  auto pos = cfg.find(from);
  ASSERT_NE(pos, std::string::npos) << from;
  cfg.replace(pos, from.size(), to);
  aquin::test::write_bytes(dir / "config.json", cfg);
}

// Counts dispatched aten::layer_norm calls (1 for the embeddings + 2 per block run).
std::atomic<int> g_layer_norms{0};
std::unique_ptr<at::ObserverContext> count_layer_norm(const at::RecordFunction& fn) {
  if (std::strcmp(fn.name(), "aten::layer_norm") == 0) ++g_layer_norms;
  return nullptr;
}

int layer_norms_for(aquin::LoadedModel& m, const std::vector<std::string>& hooks) {
  const at::Tensor ids = golden().load("input_ids"), mask = golden().load("attention_mask");
  g_layer_norms = 0;
  auto handle = at::addGlobalCallback(at::RecordFunctionCallback(count_layer_norm).scopes({at::RecordScope::FUNCTION}));
  Hooks out = run(m, ids, mask, hooks);
  at::removeCallback(handle);
  return g_layer_norms.load();
}

}  // namespace

TEST(BertForward, ClaimedAndDescribedByTheEmbeddingAdapter) {
  const aquin::ModelInfo info = describe(bert("tiny"));
  EXPECT_EQ(info.adapter, "embedding");
  EXPECT_EQ(info.family, "bert");
  EXPECT_EQ(info.n_layers, 2);
  EXPECT_EQ(info.d_model, 48);
  auto m = load(bert("tiny"));
  ASSERT_TRUE(m);
  const auto names = m->hook_names();
  for (const char* h : {"embed", "blocks.0.hook_resid_post", "blocks.1.hook_resid_post", "blocks.1.hook_resid_pre", "pooled"})
    EXPECT_NE(std::find(names.begin(), names.end(), h), names.end()) << h;
}

TEST(BertForward, BaseMatchesGoldenAtEveryHook) {
  auto m = load(bert("tiny"));
  ASSERT_TRUE(m);
  const double worst = expect_matches_golden(*m, "base", 1e-4);
  std::cout << "[ base ] worst relative error " << worst << std::endl;
}

TEST(BertForward, MergedPytorchModelBinReplacesTheBaseWeights) {
  // bert.-prefixed names, a classifier head and the position_ids buffer, as HF saves BertForX.
  std::unique_ptr<aquin::LoadedModel> m;
  {
    aquin::Checkpoint ck = aquin::open_checkpoint(bert("tiny-merged"));
    m = load(bert("tiny"), &ck);
  }  // the model keeps what it needs of the checkpoint (its memory maps), not the Checkpoint
  ASSERT_TRUE(m);
  const double worst = expect_matches_golden(*m, "merged", 1e-4);
  std::cout << "[ merged ] worst relative error " << worst << std::endl;
}

TEST(BertForward, LoraAdapterAppliedInsideTheLinearLayers) {
  std::unique_ptr<aquin::LoadedModel> m;
  {
    aquin::Checkpoint ck = aquin::open_checkpoint(bert("tiny-lora"));
    ASSERT_TRUE(ck.is_lora);
    m = load(bert("tiny"), &ck);
  }
  ASSERT_TRUE(m);
  const double worst = expect_matches_golden(*m, "lora", 1e-4);
  std::cout << "[ lora ] worst relative error " << worst << std::endl;
}

TEST(BertForward, OtherActivations) {
  TempDir tmp;
  // gelu_new differs from gelu by only ~1e-4 here, so hold both to a tolerance that tells them apart.
  for (const char* act : {"gelu_new", "relu"}) {
    SCOPED_TRACE(act);
    copy_model_with_config(tmp / act, "\"hidden_act\": \"gelu\"", std::string("\"hidden_act\": \"") + act + "\"");
    auto m = load(tmp / act);
    ASSERT_TRUE(m);
    const double worst = expect_matches_golden(*m, act, 2e-5);
    std::cout << "[ " << act << " ] worst relative error " << worst << std::endl;
  }
  copy_model_with_config(tmp / "bad", "\"hidden_act\": \"gelu\"", "\"hidden_act\": \"mish2\"");
  std::unique_ptr<aquin::LoadedModel> m;
  aquin::Status st = try_load(tmp / "bad", nullptr, m);
  EXPECT_EQ(st.code, aquin::StatusCode::Input);
  EXPECT_NE(st.message.find("hidden_act 'mish2'"), std::string::npos) << st.message;
}

TEST(BertForward, PooledVectorIgnoresPadding) {
  auto m = load(bert("tiny"));
  ASSERT_TRUE(m);
  const at::Tensor ids = golden().load("input_ids"), mask = golden().load("attention_mask");
  const at::Tensor batch = run(*m, ids, mask, {"pooled"}).at("pooled");
  for (int64_t b = 0; b < ids.size(0); ++b) {
    SCOPED_TRACE("prompt " + std::to_string(b));
    const int64_t n = mask[b].sum().item<int64_t>();
    // Alone and unpadded, with no mask at all.
    at::Tensor alone_ids = ids[b].narrow(0, 0, n).unsqueeze(0).clone();
    const at::Tensor alone = run(*m, alone_ids, at::Tensor(), {"pooled"}).at("pooled");
    EXPECT_LT(rel_err(alone[0], batch[b]), 1e-5);
    // Alone, padded far out with arbitrary (non-[PAD]) token ids: only the mask decides.
    at::Tensor padded = at::full({1, 40}, 77, at::kLong);
    padded.narrow(1, 0, n).copy_(alone_ids);
    at::Tensor pmask = at::zeros({1, 40}, at::kLong);
    pmask.narrow(1, 0, n).fill_(1);
    const at::Tensor far = run(*m, padded, pmask, {"pooled"}).at("pooled");
    EXPECT_LT(rel_err(far[0], batch[b]), 1e-5);
  }
}

TEST(BertForward, AllPaddingPromptStaysFinite) {
  auto m = load(bert("tiny"));
  ASSERT_TRUE(m);
  at::Tensor ids = golden().load("input_ids").clone(), mask = golden().load("attention_mask").clone();
  mask[1].zero_();
  const Hooks got = run(*m, ids, mask, all_hooks(2));
  for (const auto& [hook, t] : got) EXPECT_TRUE(at::isfinite(t).all().item<bool>()) << hook;
  EXPECT_EQ(got.at("pooled")[1].abs().max().item<float>(), 0.0f);
  // The other prompts do not notice.
  EXPECT_LT(rel_err(got.at("pooled")[0], golden().load("base.pooled")[0]), 1e-4);
}

TEST(BertForward, StopsAfterTheLastBlockAHookNeeds) {
  auto m = load(bert("tiny"));
  ASSERT_TRUE(m);
  EXPECT_EQ(layer_norms_for(*m, {"embed"}), 1);
  EXPECT_EQ(layer_norms_for(*m, {"blocks.0.hook_resid_post"}), 3);
  EXPECT_EQ(layer_norms_for(*m, {"blocks.1.hook_resid_pre"}), 3);
  EXPECT_EQ(layer_norms_for(*m, {"blocks.0.hook_resid_post", "blocks.1.hook_resid_post"}), 5);
  EXPECT_EQ(layer_norms_for(*m, {"pooled"}), 5);  // pooling needs the last layer
  // The shortened run gives the same layer 0 as the full one, and only what was asked for.
  const at::Tensor ids = golden().load("input_ids"), mask = golden().load("attention_mask");
  const Hooks short_run = run(*m, ids, mask, {"blocks.0.hook_resid_post", "blocks.1.hook_resid_pre"});
  EXPECT_EQ(short_run.size(), 2u);
  const Hooks full = run(*m, ids, mask, all_hooks(2));
  EXPECT_TRUE(at::equal(short_run.at("blocks.0.hook_resid_post"), full.at("blocks.0.hook_resid_post")));
  EXPECT_TRUE(at::equal(short_run.at("blocks.1.hook_resid_pre"), full.at("blocks.0.hook_resid_post")));
}

TEST(BertForward, BadRequestsAreInputErrors) {
  auto m = load(bert("tiny"));
  ASSERT_TRUE(m);
  const at::Tensor ids = golden().load("input_ids"), mask = golden().load("attention_mask");
  auto expect_error = [&](const at::Tensor& i, const at::Tensor& k, const std::vector<std::string>& hooks,
                          const std::string& text) {
    Hooks out;
    aquin::Status st = try_run(*m, i, k, hooks, out);
    EXPECT_EQ(st.code, aquin::StatusCode::Input) << text;
    EXPECT_NE(st.message.find(text), std::string::npos) << st.message;
    EXPECT_EQ(st.message.find('\n'), std::string::npos) << st.message;
  };
  expect_error(ids, mask, {"blocks.2.hook_resid_post"}, "no hook 'blocks.2.hook_resid_post'");
  expect_error(ids, mask, {"ln_final.hook_normalized"}, "no hook");
  expect_error(at::full({1, 65}, 3, at::kLong), at::Tensor(), {"pooled"}, "exceed max_position_embeddings 64");
  expect_error(at::full({1, 4}, 100, at::kLong), at::Tensor(), {"pooled"}, "token id 100 is outside the vocabulary");
  expect_error(ids, mask.narrow(1, 0, 3), {"pooled"}, "attention_mask must have the shape of input_ids");
  aquin::ForwardRequest req;
  req.input_ids = ids;
  req.hooks = {"pooled"};
  req.logits = true;
  at::Tensor logits;
  aquin::Status st = m->forward(req, [](const std::string&, const at::Tensor&) {}, logits);
  EXPECT_EQ(st.code, aquin::StatusCode::Input);
  EXPECT_NE(st.message.find("no logits"), std::string::npos) << st.message;
}

TEST(BertForward, MergedShapeMismatchNamesTheTensor) {
  TempDir tmp;
  auto base = aquin::open_model_weights(bert("tiny"));
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  for (const auto& info : base->tensors()) tensors.emplace_back("bert." + info.name, base->load(info.name).clone());
  for (auto& [name, t] : tensors)
    if (name == "bert.encoder.layer.1.intermediate.dense.weight") t = at::zeros({80, 48});
  aquin::write_safetensors(tmp / "ft.safetensors", tensors);
  aquin::Checkpoint ck = aquin::open_checkpoint(tmp / "ft.safetensors");
  std::unique_ptr<aquin::LoadedModel> m;
  aquin::Status st = try_load(bert("tiny"), &ck, m);
  EXPECT_EQ(st.code, aquin::StatusCode::Input);
  EXPECT_NE(st.message.find("bert.encoder.layer.1.intermediate.dense.weight has shape [80, 48]"), std::string::npos)
      << st.message;
  EXPECT_NE(st.message.find("[96, 48]"), std::string::npos) << st.message;
}

TEST(BertForward, CheckpointOfAnotherModelIsRefused) {
  aquin::Checkpoint ck = aquin::open_checkpoint(data_dir() / "models/tiny-llama");
  std::unique_ptr<aquin::LoadedModel> m;
  aquin::Status st = try_load(bert("tiny"), &ck, m);
  EXPECT_EQ(st.code, aquin::StatusCode::Input);
  EXPECT_NE(st.message.find("is a weight of"), std::string::npos) << st.message;
  aquin::Checkpoint lora = aquin::open_checkpoint(data_dir() / "ckpt/llama-lora");
  st = try_load(bert("tiny"), &lora, m);
  EXPECT_EQ(st.code, aquin::StatusCode::Input);
  EXPECT_NE(st.message.find("LoRA module 'base_model.model.model.layers.0.self_attn.q_proj'"), std::string::npos)
      << st.message;
}

TEST(BertForward, Bf16WeightsAreWidenedExactly) {
  // The same bf16-rounded weights stored as BF16 and as F32 must give the same activations.
  TempDir tmp;
  auto base = aquin::open_model_weights(bert("tiny"));
  std::vector<std::pair<std::string, at::Tensor>> bf16, f32;
  for (const auto& info : base->tensors()) {
    at::Tensor r = base->load(info.name).to(at::kBFloat16);
    bf16.emplace_back(info.name, r);
    f32.emplace_back(info.name, r.to(at::kFloat));
  }
  for (auto [name, tensors] : {std::pair{"bf16", &bf16}, std::pair{"f32", &f32}}) {
    fs::create_directories(tmp / name);
    fs::copy_file(bert("tiny/config.json"), tmp / name / "config.json");
    aquin::write_safetensors(tmp / name / "model.safetensors", *tensors);
  }
  const at::Tensor ids = golden().load("input_ids"), mask = golden().load("attention_mask");
  auto a = load(tmp / "bf16"), b = load(tmp / "f32");
  ASSERT_TRUE(a && b);
  const Hooks ha = run(*a, ids, mask, all_hooks(2)), hb = run(*b, ids, mask, all_hooks(2));
  for (const auto& [hook, t] : hb) EXPECT_TRUE(at::equal(ha.at(hook), t)) << hook;
  // And they are a (bf16-rounded) version of the model.
  EXPECT_LT(rel_err(ha.at("pooled"), golden().load("base.pooled")), 5e-2);
}

TEST(BertForward, EmbeddingLoraEqualsItsMergedTable) {
  // A PEFT lora_embedding_A/B on the word embeddings against the same update merged into the
  // table, E' = E + scale · (B @ A)ᵀ.
  TempDir tmp;
  auto base = aquin::open_model_weights(bert("tiny"));
  at::manual_seed(7);
  const at::Tensor A = at::randn({4, 100}), B = at::randn({48, 4}) * 0.1;
  fs::create_directories(tmp / "adapter");
  aquin::write_safetensors(tmp / "adapter/adapter_model.safetensors",
                           {{"base_model.model.embeddings.word_embeddings.lora_embedding_A", A},
                            {"base_model.model.embeddings.word_embeddings.lora_embedding_B", B}});
  aquin::test::write_bytes(tmp / "adapter/adapter_config.json",
                           R"({"peft_type": "LORA", "r": 4, "lora_alpha": 2, "target_modules": ["word_embeddings"]})");
  aquin::write_safetensors(tmp / "merged.safetensors",
                           {{"embeddings.word_embeddings.weight",
                             base->load("embeddings.word_embeddings.weight") + 0.5 * at::mm(B, A).t()}});
  aquin::Checkpoint lora = aquin::open_checkpoint(tmp / "adapter"), merged = aquin::open_checkpoint(tmp / "merged.safetensors");
  auto a = load(bert("tiny"), &lora), b = load(bert("tiny"), &merged);
  ASSERT_TRUE(a && b);
  const at::Tensor ids = golden().load("input_ids"), mask = golden().load("attention_mask");
  const Hooks ha = run(*a, ids, mask, all_hooks(2)), hb = run(*b, ids, mask, all_hooks(2));
  for (const auto& [hook, t] : hb) EXPECT_LT(rel_err(ha.at(hook), t), 1e-5) << hook;
  EXPECT_GT(rel_err(ha.at("embed"), golden().load("base.embed")), 1e-2);  // the update did something
}
