// The llm model-adapter's forward pass, through the real plugin, against golden activations
// computed independently by tests/fixtures/make_llm_goldens.py (float64, Hugging Face's math).
//
// "Relative error" of a tensor is max|got - want| / max|want| over the real (unpadded) positions;
// padded positions must be finite but are otherwise free.
#include "test_helpers.hpp"

#include "models.hpp"
#include "registry.hpp"

#include <aquin/sdk/atomic_file.hpp>
#include <aquin/sdk/checkpoint.hpp>
#include <aquin/sdk/errors.hpp>
#include <aquin/sdk/model_runtime.hpp>
#include <aquin/sdk/safetensors.hpp>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "model_loading.hpp"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>
#include <optional>

namespace fs = std::filesystem;
using namespace aquin;

namespace {

fs::path llm_dir() { return aquin::test::data_dir() / "llm"; }

const host::PluginRegistry& registry() { return aquin::test::plugin_registry(); }

ModelInfo describe(const fs::path& dir) { return host::describe_model(dir.string(), dir, registry(), {}); }

using aquin::test::load_model;
std::unique_ptr<LoadedModel> load(const fs::path& dir, const Checkpoint* overlay = nullptr) { return load_model(dir, overlay); }

using Acts = std::map<std::string, at::Tensor>;

struct Golden {
  at::Tensor ids, mask;
  Acts acts;  // every hook and "logits"
};

Golden golden(const std::string& name) {
  auto store = open_safetensors(llm_dir() / "golden" / (name + ".safetensors"));
  Golden g;
  for (const auto& info : store->tensors()) {
    at::Tensor t = store->load(info.name).clone();
    if (info.name == "input_ids") g.ids = t;
    else if (info.name == "attention_mask") g.mask = t;
    else g.acts[info.name] = t;
  }
  return g;
}

std::vector<std::string> all_hooks(const LoadedModel& m) { return m.hook_names(); }

// Runs a forward asking for `hooks` (and logits when asked); returns what the sink received,
// failing the test on a bad status.
Acts run(LoadedModel& m, const at::Tensor& ids, const at::Tensor& mask, const std::vector<std::string>& hooks,
         bool logits, c10::ScalarType dtype = at::kFloat) {
  ForwardRequest req;
  req.input_ids = ids;
  req.attention_mask = mask;
  req.hooks = hooks;
  req.logits = logits;
  req.dtype = dtype;
  Acts got;
  at::Tensor out;
  Status st = m.forward(req, [&](const std::string& h, const at::Tensor& t) {
    EXPECT_EQ(got.count(h), 0u) << h << " delivered twice";
    got[h] = t;
  }, out);
  EXPECT_TRUE(st.ok()) << st.message;
  if (logits) got["logits"] = out;
  else EXPECT_FALSE(out.defined());
  return got;
}

// max|a - b| / max|b| over the positions where mask is 1 ([B, T, ...] tensors).
double rel_error(const at::Tensor& got, const at::Tensor& want, const at::Tensor& mask) {
  at::Tensor keep = mask.to(at::kBool);
  at::Tensor a = got.to(at::kDouble).index({keep}), b = want.to(at::kDouble).index({keep});
  return ((a - b).abs().max() / b.abs().max()).item<double>();
}

// Checks every golden tensor; returns the worst relative error seen (for the log).
double expect_matches(const Acts& got, const Golden& g, double tol, const std::string& what) {
  double worst = 0;
  for (const auto& [name, want] : g.acts) {
    auto it = got.find(name);
    if (it == got.end() || it->second.sizes() != want.sizes()) {
      ADD_FAILURE() << what << ": " << name << (it == got.end() ? " missing" : " has the wrong shape");
      continue;
    }
    EXPECT_TRUE(at::isfinite(it->second).all().item<bool>()) << what << ": " << name << " has non-finite values";
    const double err = rel_error(it->second, want, g.mask);
    EXPECT_LE(err, tol) << what << ": " << name << " relative error " << err;
    worst = std::max(worst, err);
  }
  return worst;
}

// ------------------------------------------------------------------------------------------------

struct Variant {
  const char* golden;
  const char* model;
  const char* overlay;  // folder under tests/data/llm, or nullptr
};

class LlmGolden : public ::testing::TestWithParam<Variant> {};

TEST_P(LlmGolden, EveryHookAndLogitsMatchTheReference) {
  const Variant& v = GetParam();
  std::optional<Checkpoint> ck;
  if (v.overlay) ck.emplace(open_checkpoint(llm_dir() / v.overlay));
  auto model = load(llm_dir() / v.model, ck ? &*ck : nullptr);
  ASSERT_TRUE(model);
  const Golden g = golden(v.golden);
  Acts got = run(*model, g.ids, g.mask, all_hooks(*model), true);
  EXPECT_EQ(got.size(), g.acts.size());
  const double worst = expect_matches(got, g, 1e-4, v.golden);
  std::printf("%-18s worst relative error over %zu tensors: %.2e\n", v.golden, g.acts.size(), worst);
}

INSTANTIATE_TEST_SUITE_P(Models, LlmGolden,
                         ::testing::Values(Variant{"llama3-gqa", "llama3-gqa", nullptr},
                                           Variant{"llama3-gqa-merged", "llama3-gqa", "llama3-gqa-merged"},
                                           Variant{"llama3-gqa-lora", "llama3-gqa", "llama3-gqa-lora"},
                                           Variant{"llama-tied", "llama-tied", nullptr},
                                           Variant{"mistral-sw", "mistral-sw", nullptr},
                                           Variant{"qwen2-bias", "qwen2-bias", nullptr}),
                         [](const ::testing::TestParamInfo<Variant>& i) {
                           std::string s = i.param.golden;
                           std::replace(s.begin(), s.end(), '-', '_');
                           return s;
                         });

TEST(LlmForward, Qwen2SlidingWindowAppliesFromMaxWindowLayers) {
  // qwen2-bias's config carries sliding_window 4 with use_sliding_window false (ignored, as HF
  // does); switched on, block 1 (>= max_window_layers 1) attends through the window, block 0 not.
  aquin::test::TempDir dir;
  fs::copy_file(llm_dir() / "qwen2-bias/model.safetensors", dir / "model.safetensors");
  std::string cfg = read_text_file(llm_dir() / "qwen2-bias/config.json");
  const std::string off = "\"use_sliding_window\": false";
  ASSERT_NE(cfg.find(off), std::string::npos);
  cfg.replace(cfg.find(off), off.size(), "\"use_sliding_window\": true");
  write_file_atomic(dir / "config.json", cfg);
  auto model = load(dir.path());
  const Golden g = golden("qwen2-bias-swa");
  expect_matches(run(*model, g.ids, g.mask, all_hooks(*model), true), g, 1e-4, "qwen2 with sliding window");
  const Golden plain = golden("qwen2-bias");
  EXPECT_GT(rel_error(g.acts.at("logits"), plain.acts.at("logits"), g.mask), 1e-2) << "the window changed nothing";
}

TEST(LlmForward, AdapterDescribesTheFixtures) {
  ModelInfo m = describe(llm_dir() / "mistral-sw");
  EXPECT_EQ(m.adapter, "llm");
  EXPECT_EQ(m.d_head, 32);  // from head_dim, not hidden_size / heads
  EXPECT_EQ(m.n_kv_heads, 2);
  EXPECT_TRUE(describe(llm_dir() / "llama-tied").tied_embeddings);
}

TEST(LlmForward, Bf16ComputeStaysCloseToTheReference) {
  auto model = load(llm_dir() / "llama3-gqa");
  const Golden bf16 = golden("llama3-gqa-bf16"), f64 = golden("llama3-gqa");
  Acts got = run(*model, bf16.ids, bf16.mask, all_hooks(*model), true, at::kBFloat16);
  for (const auto& [name, t] : got) EXPECT_EQ(t.scalar_type(), at::kBFloat16) << name;
  // Against a bf16 run of the reference (same roundings up to summation order), and against the
  // exact answer (what bf16 costs).
  const double vs_bf16 = expect_matches(got, bf16, 2e-2, "bf16 vs bf16 reference");
  const double vs_f64 = expect_matches(got, f64, 4e-2, "bf16 vs float64 reference");
  std::printf("bf16 compute: worst relative error %.2e vs the bf16 reference, %.2e vs float64\n", vs_bf16, vs_f64);

  // fp32-stored weights rounded to bf16 on the way in, with biases and a LoRA adapter: close to
  // the exact answer (the loose bound only catches a wrong computation, not rounding).
  const Golden qwen = golden("qwen2-bias"), lora_golden = golden("llama3-gqa-lora");
  auto qwen_model = load(llm_dir() / "qwen2-bias");
  expect_matches(run(*qwen_model, qwen.ids, qwen.mask, all_hooks(*qwen_model), true, at::kBFloat16), qwen, 5e-2, "qwen2 bf16");
  Checkpoint ck = open_checkpoint(llm_dir() / "llama3-gqa-lora");
  auto lora = load(llm_dir() / "llama3-gqa", &ck);
  expect_matches(run(*lora, lora_golden.ids, lora_golden.mask, all_hooks(*lora), true, at::kBFloat16), lora_golden, 5e-2,
                 "LoRA bf16");
}

// bf16-stored weights computed in fp32 are converted on every forward until the model's second
// forward, which keeps the conversions (within $AQUIN_WEIGHT_CACHE_MB); later forwards read them.
// Whatever the budget (none, part of the model, all of it), every forward gives the same bits.
TEST(LlmForward, ConvertedWeightCacheChangesNoBit) {
  const Golden g = golden("llama-tied");
  Checkpoint ck = open_checkpoint(llm_dir() / "llama3-gqa-merged");
  std::vector<Acts> first;
  for (const char* budget : {"0", "0.05", "64"}) {
    ::setenv("AQUIN_WEIGHT_CACHE_MB", budget, 1);
    auto model = load(llm_dir() / "llama-tied");
    for (int i = 0; i < 3; ++i) {
      Acts got = run(*model, g.ids, g.mask, all_hooks(*model), true);
      if (first.empty()) {
        expect_matches(got, g, 1e-4, "llama-tied");
        first.push_back(got);
        continue;
      }
      for (const auto& [name, t] : first.front())
        EXPECT_TRUE(at::equal(got.at(name), t)) << "budget " << budget << " MB, forward " << i + 1 << ": " << name;
    }
  }
  // A bf16 merged checkpoint laid over an fp32 base: the overlaid weights are kept converted, the
  // base's are used in place.
  ::setenv("AQUIN_WEIGHT_CACHE_MB", "64", 1);
  const Golden mg = golden("llama3-gqa-merged");
  auto merged = load(llm_dir() / "llama3-gqa", &ck);
  for (int i = 0; i < 3; ++i)
    expect_matches(run(*merged, mg.ids, mg.mask, all_hooks(*merged), true), mg, 1e-4, "merged bf16 over fp32");
  ::setenv("AQUIN_WEIGHT_CACHE_MB", "lots", 1);
  EXPECT_THROW(load(llm_dir() / "llama-tied"), InputError);
  ::unsetenv("AQUIN_WEIGHT_CACHE_MB");
}

TEST(LlmForward, OnlyRequestedHooksAreDeliveredWithTheirShapes) {
  auto model = load(llm_dir() / "llama3-gqa");
  const Golden g = golden("llama3-gqa");
  Acts got = run(*model, g.ids, g.mask, {"blocks.1.hook_resid_mid", "blocks.0.hook_resid_pre"}, false);
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got.at("blocks.1.hook_resid_mid").sizes(), (std::vector<int64_t>{2, 10, 64}));
  expect_matches(got, Golden{g.ids, g.mask, {{"blocks.1.hook_resid_mid", g.acts.at("blocks.1.hook_resid_mid")},
                                             {"blocks.0.hook_resid_pre", g.acts.at("blocks.0.hook_resid_pre")}}},
                 1e-4, "subset");
  // Nothing asked: nothing delivered, no logits.
  EXPECT_TRUE(run(*model, g.ids, g.mask, {}, false).empty());
}

TEST(LlmForward, PaddingDoesNotLeakIntoRealTokens) {
  // The 7-token prompt alone, unpadded, must give what it gave as the padded second row.
  auto model = load(llm_dir() / "mistral-sw");
  const Golden g = golden("mistral-sw");
  at::Tensor ids = g.ids.narrow(0, 1, 1).narrow(1, 0, 7).contiguous();
  Acts alone = run(*model, ids, at::ones_like(ids), all_hooks(*model), true);
  Acts batch = run(*model, g.ids, g.mask, all_hooks(*model), true);
  for (const auto& [name, t] : alone) {
    at::Tensor row = batch.at(name).narrow(0, 1, 1).narrow(1, 0, 7);
    EXPECT_LE(rel_error(t, row, at::ones_like(ids)), 1e-5) << name;
  }
}

TEST(LlmForward, FullyMaskedRowsStayFinite) {
  // An all-padding row and padded queries outside Mistral's window: no NaN anywhere.
  auto model = load(llm_dir() / "mistral-sw");
  const Golden g = golden("mistral-sw");
  at::Tensor mask = g.mask.clone();
  mask[1].zero_();
  for (auto dt : {at::kFloat, at::kBFloat16}) {
    Acts got = run(*model, g.ids, mask, all_hooks(*model), true, dt);
    for (const auto& [name, t] : got) EXPECT_TRUE(at::isfinite(t).all().item<bool>()) << name;
    // The untouched first row still matches.
    if (dt == at::kFloat) expect_matches(got, Golden{g.ids, mask, g.acts}, 1e-4, "row 0");
  }
}

TEST(LlmForward, LoraLeavesAFreshBaseUntouchedAndDiffersFromIt) {
  const Golden g = golden("llama3-gqa");
  Checkpoint ck = open_checkpoint(llm_dir() / "llama3-gqa-lora");
  auto lora = load(llm_dir() / "llama3-gqa", &ck);
  auto base = load(llm_dir() / "llama3-gqa");
  Acts b = run(*base, g.ids, g.mask, {}, true);
  Acts l = run(*lora, g.ids, g.mask, {}, true);
  expect_matches(b, Golden{g.ids, g.mask, {{"logits", g.acts.at("logits")}}}, 1e-4, "base beside a LoRA model");
  EXPECT_GT(rel_error(l.at("logits"), b.at("logits"), g.mask), 1e-2);
}

TEST(LlmForward, LoraOverBf16WeightsEqualsTheMergedUpdate) {
  // llama-tied stores bf16, so its q/k/v and gate/up run as fused GEMMs with the LoRA updates added
  // to column blocks of the product. The same updates merged into fp32 weights (a partial merged
  // checkpoint: only the adapted tensors) take the unfused path. Both must agree.
  aquin::test::TempDir dir;
  auto base = open_model_weights(llm_dir() / "llama-tied");
  at::manual_seed(3);
  const double scale = 16.0 / 4;
  std::vector<std::pair<std::string, at::Tensor>> adapter, merged;
  for (const char* m : {"model.layers.0.self_attn.k_proj", "model.layers.1.mlp.up_proj", "model.layers.1.self_attn.o_proj"}) {
    at::Tensor w = base->load(std::string(m) + ".weight").to(at::kFloat);
    at::Tensor a = at::randn({4, w.size(1)}) * 0.2, b = at::randn({w.size(0), 4}) * 0.1;
    adapter.emplace_back(std::string("base_model.model.") + m + ".lora_A.weight", a);
    adapter.emplace_back(std::string("base_model.model.") + m + ".lora_B.weight", b);
    merged.emplace_back(std::string(m) + ".weight", w + scale * at::mm(b, a));
  }
  fs::create_directories(dir / "lora");
  fs::create_directories(dir / "merged");
  write_safetensors(dir / "lora/adapter_model.safetensors", adapter);
  write_file_atomic(dir / "lora/adapter_config.json", "{\"peft_type\": \"LORA\", \"r\": 4, \"lora_alpha\": 16}");
  write_safetensors(dir / "merged/model.safetensors", merged);
  write_file_atomic(dir / "merged/config.json", read_text_file(llm_dir() / "llama-tied/config.json"));
  Checkpoint lora_ck = open_checkpoint(dir / "lora"), merged_ck = open_checkpoint(dir / "merged");
  auto with_lora = load(llm_dir() / "llama-tied", &lora_ck);
  auto with_merged = load(llm_dir() / "llama-tied", &merged_ck);
  const Golden g = golden("llama-tied");
  Acts x = run(*with_lora, g.ids, g.mask, all_hooks(*with_lora), true);
  Acts y = run(*with_merged, g.ids, g.mask, all_hooks(*with_merged), true);
  for (const auto& [name, t] : y) EXPECT_LE(rel_error(x.at(name), t, g.mask), 1e-5) << name;
  EXPECT_GT(rel_error(y.at("logits"), g.acts.at("logits"), g.mask), 1e-3) << "the update changed nothing";
}

TEST(LlmForward, TransformerLensAndHfCheckpointsOfOneFineTuneAgree) {
  // tests/data/ckpt holds one fine-tune of tiny-llama in HF names (.pt) and in TransformerLens
  // layout ([heads, d_model, d_head] ...): both must run to the same model.
  const fs::path ckpt = aquin::test::data_dir() / "ckpt";
  Checkpoint hf = open_checkpoint(ckpt / "llama-ft-step300.pt");
  Checkpoint tl = open_checkpoint(ckpt / "llama-ft-transformer-lens.pt");
  auto a = load(aquin::test::data_dir() / "models/tiny-llama", &hf);
  auto b = load(aquin::test::data_dir() / "models/tiny-llama", &tl);
  auto base = load(aquin::test::data_dir() / "models/tiny-llama");
  at::Tensor ids = at::randint(0, 64, {2, 6}, at::TensorOptions().dtype(at::kLong));
  at::Tensor mask = at::ones_like(ids);
  Acts x = run(*a, ids, mask, all_hooks(*a), true), y = run(*b, ids, mask, all_hooks(*b), true);
  for (const auto& [name, t] : x) EXPECT_LE(rel_error(y.at(name), t, mask), 1e-6) << name;
  Acts z = run(*base, ids, mask, {}, true);
  EXPECT_GT(rel_error(x.at("logits"), z.at("logits"), mask), 1e-3) << "the fine-tune changed nothing";
}

TEST(LlmForward, MergedShapeMismatchNamesTheTensor) {
  Checkpoint ck = open_checkpoint(aquin::test::data_dir() / "ckpt/llama-mismatch.pt");
  try {
    load(aquin::test::data_dir() / "models/tiny-llama", &ck);
    FAIL() << "expected an InputError";
  } catch (const InputError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("model.layers.0.mlp.up_proj.weight"), std::string::npos) << msg;
    EXPECT_NE(msg.find("[48, 32]"), std::string::npos) << msg;
    EXPECT_NE(msg.find("[64, 32]"), std::string::npos) << msg;
  }
}

TEST(LlmForward, BaseMissingATensorAndBadConfigsAreInputErrors) {
  aquin::test::TempDir dir;
  auto store = open_model_weights(llm_dir() / "llama-tied");
  std::vector<std::pair<std::string, at::Tensor>> kept;
  for (const auto& info : store->tensors())
    if (info.name != "model.layers.1.mlp.up_proj.weight") kept.emplace_back(info.name, store->load(info.name));
  write_safetensors(dir / "model.safetensors", kept);
  std::string cfg = read_text_file(llm_dir() / "llama-tied/config.json");
  write_file_atomic(dir / "config.json", cfg);
  EXPECT_THROW(
      {
        try {
          load(dir.path());
        } catch (const InputError& e) {
          EXPECT_NE(std::string(e.what()).find("blocks.1.mlp.up.weight"), std::string::npos) << e.what();
          throw;
        }
      },
      InputError);

  // A rope scaling this code cannot reproduce exactly is refused by name.
  const std::string key = "\"model_type\": \"llama\",";
  std::string yarn = cfg;
  yarn.replace(yarn.find(key), key.size(), key + " \"rope_scaling\": {\"rope_type\": \"yarn\", \"factor\": 4.0},");
  write_file_atomic(dir / "config.json", yarn);
  write_safetensors(dir / "model.safetensors", {});
  try {
    load(dir.path());
    FAIL() << "expected an InputError";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("'yarn'"), std::string::npos) << e.what();
  }
}

TEST(LlmForward, BadRequestsAreInputErrorsNotCrashes) {
  auto model = load(llm_dir() / "qwen2-bias");
  const Golden g = golden("qwen2-bias");
  auto status = [&](ForwardRequest req) {
    at::Tensor logits;
    return model->forward(req, [](const std::string&, const at::Tensor&) {}, logits);
  };
  ForwardRequest req;
  req.input_ids = g.ids;
  req.attention_mask = g.mask;
  req.hooks = {"blocks.2.hook_resid_post"};  // the model has 2 blocks
  Status st = status(req);
  EXPECT_EQ(st.code, StatusCode::Input);
  EXPECT_NE(st.message.find("unknown hook 'blocks.2.hook_resid_post'"), std::string::npos) << st.message;
  req.hooks = {"blocks.0.hook_attn_out"};
  EXPECT_EQ(status(req).code, StatusCode::Input);
  req.hooks = {};
  req.logits = true;
  req.input_ids = g.ids.clone();
  req.input_ids[0][0] = 128;  // vocab is 128
  st = status(req);
  EXPECT_EQ(st.code, StatusCode::Input);
  EXPECT_NE(st.message.find("token id 128"), std::string::npos) << st.message;
  req.input_ids = g.ids;
  req.attention_mask = g.mask.narrow(1, 0, 5);
  EXPECT_EQ(status(req).code, StatusCode::Input);
  req.attention_mask = g.mask;
  req.dtype = at::kHalf;
  EXPECT_EQ(status(req).code, StatusCode::Input);
}

TEST(LlmForward, UnsupportedModelTypeListsTheFamilies) {
  aquin::test::TempDir dir;
  write_file_atomic(dir / "config.json", "{\"model_type\": \"gpt_neox\", \"num_hidden_layers\": 2}");
  try {
    describe(dir.path());
    FAIL() << "expected an InputError";
  } catch (const InputError& e) {
    const std::string msg = e.what();
    for (const char* t : {"gpt_neox", "llama (llm)", "mistral (llm)", "qwen2 (llm)"})
      EXPECT_NE(msg.find(t), std::string::npos) << msg;
  }
}

TEST(LlmForward, LongPromptsAgreeWithTheirPrefixes) {
  // 2 x 2048 tokens through a GQA Mistral with a 700-token window: long enough that attention runs
  // its (prompt, kv head) tasks in parallel and in query chunks. Causality says the first 300
  // positions must equal a run of the first 300 tokens alone (short: the serial path).
  aquin::test::TempDir dir;
  at::manual_seed(11);
  const int64_t d = 64, vocab = 64;
  std::vector<std::pair<std::string, at::Tensor>> t;
  auto w = [](std::vector<int64_t> s, double scale) { return at::randn(s) * scale; };
  t.emplace_back("model.embed_tokens.weight", w({vocab, d}, 1.0));
  t.emplace_back("model.layers.0.input_layernorm.weight", at::ones({d}));
  t.emplace_back("model.layers.0.post_attention_layernorm.weight", at::ones({d}));
  t.emplace_back("model.layers.0.self_attn.q_proj.weight", w({64, d}, 0.3));
  t.emplace_back("model.layers.0.self_attn.k_proj.weight", w({16, d}, 0.3));
  t.emplace_back("model.layers.0.self_attn.v_proj.weight", w({16, d}, 0.2));
  t.emplace_back("model.layers.0.self_attn.o_proj.weight", w({d, 64}, 0.2));
  t.emplace_back("model.layers.0.mlp.gate_proj.weight", w({128, d}, 0.2));
  t.emplace_back("model.layers.0.mlp.up_proj.weight", w({128, d}, 0.2));
  t.emplace_back("model.layers.0.mlp.down_proj.weight", w({d, 128}, 0.1));
  t.emplace_back("model.norm.weight", at::ones({d}));
  t.emplace_back("lm_head.weight", w({vocab, d}, 0.2));
  write_safetensors(dir / "model.safetensors", t);
  write_file_atomic(dir / "config.json",
                    "{\"model_type\": \"mistral\", \"hidden_size\": 64, \"intermediate_size\": 128, \"num_attention_heads\": 4, "
                    "\"num_key_value_heads\": 1, \"head_dim\": 16, \"num_hidden_layers\": 1, \"vocab_size\": 64, "
                    "\"sliding_window\": 700, \"rms_norm_eps\": 1e-5}");
  auto model = load(dir.path());
  at::Tensor ids = at::randint(0, vocab, {2, 2048}, at::TensorOptions().dtype(at::kLong));
  Acts full = run(*model, ids, at::ones_like(ids), all_hooks(*model), true);
  at::Tensor head = ids.narrow(1, 0, 300).contiguous();
  Acts part = run(*model, head, at::ones_like(head), all_hooks(*model), true);
  for (const auto& [name, x] : part) EXPECT_LE(rel_error(full.at(name).narrow(1, 0, 300), x, at::ones_like(head)), 1e-5) << name;
}

// ------------------------------------------------------------------------------------------------
// Greedy generation: the adapter's KV-cached generate_greedy against the SDK's default (a full
// forward per new token), called explicitly as LoadedModel::generate_greedy.

// The golden's input_ids rows cut by their attention_mask (two prompts of different lengths).
std::vector<std::vector<int64_t>> golden_prompt_rows(const Golden& g) {
  std::vector<std::vector<int64_t>> out;
  for (int64_t i = 0; i < g.ids.size(0); ++i) {
    const int64_t n = g.mask[i].sum().item<int64_t>();
    at::Tensor row = g.ids[i].narrow(0, 0, n).to(at::kLong).contiguous();
    out.emplace_back(row.data_ptr<int64_t>(), row.data_ptr<int64_t>() + n);
  }
  return out;
}

GenerateResult generate(LoadedModel& m, const GenerateRequest& req, bool full_forward) {
  GenerateResult out;
  Status st = full_forward ? m.LoadedModel::generate_greedy(req, out) : m.generate_greedy(req, out);
  EXPECT_TRUE(st.ok()) << st.message;
  return out;
}

// Same tokens, first_logprobs within `tol`; returns the largest first_logprobs difference.
double expect_same_generation(const GenerateResult& kv, const GenerateResult& full, double tol, const std::string& what) {
  EXPECT_EQ(kv.tokens, full.tokens) << what;
  if (!kv.first_logprobs.defined() || kv.first_logprobs.sizes() != full.first_logprobs.sizes()) {
    ADD_FAILURE() << what << ": first_logprobs missing or of the wrong shape";
    return 0;
  }
  EXPECT_EQ(kv.first_logprobs.scalar_type(), at::kDouble) << what;
  const double diff = (kv.first_logprobs - full.first_logprobs).abs().max().item<double>();
  EXPECT_LE(diff, tol) << what;
  return diff;
}

struct GenCase {
  const char* name;
  const char* model;
  const char* overlay;  // folder under tests/data/llm, or nullptr
};

class LlmForwardGenerate : public ::testing::TestWithParam<GenCase> {};

TEST_P(LlmForwardGenerate, KvCacheGivesTheFullForwardsTokens) {
  const GenCase& c = GetParam();
  std::optional<Checkpoint> ck;
  if (c.overlay) ck.emplace(open_checkpoint(llm_dir() / c.overlay));
  auto model = load(llm_dir() / c.model, ck ? &*ck : nullptr);
  GenerateRequest req;
  req.prompts = golden_prompt_rows(golden(c.model));
  ASSERT_EQ(req.prompts.size(), 2u);
  ASSERT_NE(req.prompts[0].size(), req.prompts[1].size());
  ASSERT_GT(std::min(req.prompts[0].size(), req.prompts[1].size()), 4u);  // longer than mistral-sw's window
  req.max_new_tokens = 6;
  const GenerateResult full = generate(*model, req, true);
  const GenerateResult kv = generate(*model, req, false);
  for (const auto& t : kv.tokens) EXPECT_EQ(t.size(), 6u);
  const double diff = expect_same_generation(kv, full, 1e-5, c.name);
  std::printf("%-16s KV-cached generation: same tokens, first_logprobs within %.1e\n", c.name, diff);
  // A second run (converted-weight cache filling from here on) gives the same again.
  expect_same_generation(generate(*model, req, false), full, 1e-5, std::string(c.name) + " (second run)");

  // EOS: the first token generated for prompt 0 ends that continuation (kept); the other goes on
  // until it produces the same token, if ever.
  req.eos_id = full.tokens[0][0];
  const GenerateResult stopped = generate(*model, req, false);
  EXPECT_EQ(stopped.tokens[0], std::vector<int64_t>{req.eos_id});
  auto end = std::find(full.tokens[1].begin(), full.tokens[1].end(), req.eos_id);
  EXPECT_EQ(stopped.tokens[1], std::vector<int64_t>(full.tokens[1].begin(), end == full.tokens[1].end() ? end : end + 1));
  expect_same_generation(stopped, generate(*model, req, true), 1e-5, std::string(c.name) + " with EOS");

  // No new tokens: first_logprobs only; one prompt alone: the same continuation as in the batch.
  req.eos_id = -1;
  req.max_new_tokens = 0;
  const GenerateResult none = generate(*model, req, false);
  EXPECT_TRUE(none.tokens[0].empty() && none.tokens[1].empty());
  expect_same_generation(none, generate(*model, req, true), 1e-5, std::string(c.name) + " with 0 new tokens");
  req.max_new_tokens = 6;
  req.prompts.resize(1);
  const GenerateResult alone = generate(*model, req, false);
  EXPECT_EQ(alone.tokens[0], full.tokens[0]) << c.name;
}

INSTANTIATE_TEST_SUITE_P(Models, LlmForwardGenerate,
                         ::testing::Values(GenCase{"llama3-gqa", "llama3-gqa", nullptr},
                                           GenCase{"llama-tied", "llama-tied", nullptr},
                                           GenCase{"mistral-sw", "mistral-sw", nullptr},
                                           GenCase{"qwen2-bias", "qwen2-bias", nullptr},
                                           GenCase{"llama3-gqa-lora", "llama3-gqa", "llama3-gqa-lora"}),
                         [](const ::testing::TestParamInfo<GenCase>& i) {
                           std::string s = i.param.name;
                           std::replace(s.begin(), s.end(), '-', '_');
                           return s;
                         });

TEST(LlmForward, GenerateQwen2SlidingWindowAndBf16) {
  // qwen2-bias with its window (4) switched on for block 1, then bf16 compute.
  aquin::test::TempDir dir;
  fs::copy_file(llm_dir() / "qwen2-bias/model.safetensors", dir / "model.safetensors");
  std::string cfg = read_text_file(llm_dir() / "qwen2-bias/config.json");
  const std::string off = "\"use_sliding_window\": false";
  ASSERT_NE(cfg.find(off), std::string::npos);
  cfg.replace(cfg.find(off), off.size(), "\"use_sliding_window\": true");
  write_file_atomic(dir / "config.json", cfg);
  auto model = load(dir.path());
  GenerateRequest req;
  req.prompts = golden_prompt_rows(golden("qwen2-bias-swa"));
  req.max_new_tokens = 6;
  const GenerateResult full = generate(*model, req, true);
  expect_same_generation(generate(*model, req, false), full, 1e-5, "qwen2 with sliding window");

  for (const char* name : {"llama3-gqa", "qwen2-bias"}) {
    auto m = load(llm_dir() / name);
    req.prompts = golden_prompt_rows(golden(name));
    req.dtype = at::kFloat;
    const GenerateResult f32 = generate(*m, req, true);
    req.dtype = at::kBFloat16;
    const GenerateResult kv = generate(*m, req, false), ref = generate(*m, req, true);
    // bf16 roundings depend on summation order (a step's GEMMs have other shapes than a full
    // forward's): the first distribution stays close to both references; the tokens are checked
    // only where the fp32 and bf16 full forwards agree on them.
    EXPECT_LE((kv.first_logprobs - ref.first_logprobs).abs().max().item<double>(), 1e-2) << name;
    EXPECT_LE((kv.first_logprobs - f32.first_logprobs).abs().max().item<double>(), 0.1) << name;
    for (std::size_t i = 0; i < kv.tokens.size(); ++i) {
      EXPECT_EQ(kv.tokens[i].size(), 6u) << name;
      if (ref.tokens[i] == f32.tokens[i]) EXPECT_EQ(kv.tokens[i], ref.tokens[i]) << name << " prompt " << i;
    }
  }
}

TEST(LlmForward, GenerateOverLongPromptsThroughASlidingWindow) {
  // Prompts of 750 and 720 tokens through a 64-token window, with parallel chunked attention in
  // the prefill; the steps then read the cache through the window.
  aquin::test::TempDir dir;
  at::manual_seed(12);
  const int64_t d = 64, vocab = 64;
  std::vector<std::pair<std::string, at::Tensor>> t;
  auto w = [](std::vector<int64_t> s, double scale) { return at::randn(s) * scale; };
  t.emplace_back("model.embed_tokens.weight", w({vocab, d}, 1.0));
  for (int l = 0; l < 2; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    t.emplace_back(p + "input_layernorm.weight", at::ones({d}));
    t.emplace_back(p + "post_attention_layernorm.weight", at::ones({d}));
    t.emplace_back(p + "self_attn.q_proj.weight", w({64, d}, 0.3));
    t.emplace_back(p + "self_attn.k_proj.weight", w({16, d}, 0.3));
    t.emplace_back(p + "self_attn.v_proj.weight", w({16, d}, 0.2));
    t.emplace_back(p + "self_attn.o_proj.weight", w({d, 64}, 0.2));
    t.emplace_back(p + "mlp.gate_proj.weight", w({128, d}, 0.2));
    t.emplace_back(p + "mlp.up_proj.weight", w({128, d}, 0.2));
    t.emplace_back(p + "mlp.down_proj.weight", w({d, 128}, 0.1));
  }
  t.emplace_back("model.norm.weight", at::ones({d}));
  t.emplace_back("lm_head.weight", w({vocab, d}, 0.5));
  write_safetensors(dir / "model.safetensors", t);
  write_file_atomic(dir / "config.json",
                    "{\"model_type\": \"mistral\", \"hidden_size\": 64, \"intermediate_size\": 128, \"num_attention_heads\": 4, "
                    "\"num_key_value_heads\": 1, \"head_dim\": 16, \"num_hidden_layers\": 2, \"vocab_size\": 64, "
                    "\"sliding_window\": 64, \"rms_norm_eps\": 1e-5}");
  auto model = load(dir.path());
  GenerateRequest req;
  for (int64_t n : {750, 720}) {
    at::Tensor ids = at::randint(0, vocab, {n}, at::TensorOptions().dtype(at::kLong));
    req.prompts.emplace_back(ids.data_ptr<int64_t>(), ids.data_ptr<int64_t>() + n);
  }
  req.max_new_tokens = 6;
  const double diff = expect_same_generation(generate(*model, req, false), generate(*model, req, true), 1e-5, "long prompts");
  std::printf("long prompts: same tokens, first_logprobs within %.1e\n", diff);
}

TEST(LlmForward, GenerateBadRequestsAreInputErrors) {
  auto model = load(llm_dir() / "llama3-gqa");
  for (bool full : {false, true}) {
    GenerateRequest req;
    GenerateResult out;
    req.prompts = {{1, 2, 3}, {}};
    req.max_new_tokens = 2;
    Status st = full ? model->LoadedModel::generate_greedy(req, out) : model->generate_greedy(req, out);
    EXPECT_EQ(st.code, StatusCode::Input) << st.message;
    req.prompts = {{1, 2, 100000}};
    st = full ? model->LoadedModel::generate_greedy(req, out) : model->generate_greedy(req, out);
    EXPECT_EQ(st.code, StatusCode::Input) << st.message;
    EXPECT_NE(st.message.find("outside the vocabulary"), std::string::npos) << st.message;
    req.prompts = {{1, 2, 3}};
    req.dtype = at::kHalf;
    st = full ? model->LoadedModel::generate_greedy(req, out) : model->generate_greedy(req, out);
    EXPECT_EQ(st.code, StatusCode::Input) << st.message;
  }
}

// A model big enough that a block costs measurably more than the fixed overheads.
void write_timing_model(const fs::path& dir, int layers) {
  const int64_t d = 256, mlp = 1024, vocab = 64;
  std::vector<std::pair<std::string, at::Tensor>> t;
  at::manual_seed(7);
  auto w = [](std::vector<int64_t> s) { return at::randn(s) * 0.05; };
  t.emplace_back("model.embed_tokens.weight", w({vocab, d}));
  for (int l = 0; l < layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    t.emplace_back(p + "input_layernorm.weight", at::ones({d}));
    t.emplace_back(p + "post_attention_layernorm.weight", at::ones({d}));
    for (const char* m : {"q", "k", "v", "o"}) t.emplace_back(p + "self_attn." + m + "_proj.weight", w({d, d}));
    t.emplace_back(p + "mlp.gate_proj.weight", w({mlp, d}));
    t.emplace_back(p + "mlp.up_proj.weight", w({mlp, d}));
    t.emplace_back(p + "mlp.down_proj.weight", w({d, mlp}));
  }
  t.emplace_back("model.norm.weight", at::ones({d}));
  write_safetensors(dir / "model.safetensors", t);
  write_file_atomic(dir / "config.json",
                    "{\"model_type\": \"llama\", \"hidden_size\": 256, \"intermediate_size\": 1024, "
                    "\"num_attention_heads\": 4, \"num_key_value_heads\": 4, \"num_hidden_layers\": " +
                        std::to_string(layers) + ", \"vocab_size\": 64, \"rms_norm_eps\": 1e-5, \"tie_word_embeddings\": true}");
}

TEST(LlmForward, AskingForLayerZeroRunsFewerLayers) {
  aquin::test::TempDir dir;
  const int layers = 8;
  write_timing_model(dir.path(), layers);
  auto model = load(dir.path());
  at::Tensor ids = at::randint(0, 64, {4, 64}, at::TensorOptions().dtype(at::kLong));
  at::Tensor mask = at::ones_like(ids);
  auto best_of = [&](const std::vector<std::string>& hooks) {
    double best = 1e30;
    for (int i = 0; i < 5; ++i) {
      auto t0 = std::chrono::steady_clock::now();
      run(*model, ids, mask, hooks, false);
      best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    return best;
  };
  best_of({"blocks.0.hook_resid_post"});  // warm the page cache and allocator
  const double first = best_of({"blocks.0.hook_resid_post"});
  const double all = best_of({"blocks.7.hook_resid_post"});
  // One block of eight, plus fixed costs: well under half of all eight.
  EXPECT_LT(first, 0.5 * all) << "layer 0: " << first << " s, all layers: " << all << " s";
  std::printf("blocks.0 only: %.1f ms, through blocks.7: %.1f ms (%.0f%%)\n", 1e3 * first, 1e3 * all, 100 * first / all);
  // Stopping early changes nothing about what was computed.
  Acts early = run(*model, ids, mask, {"blocks.0.hook_resid_post"}, false);
  Acts full = run(*model, ids, mask, {"blocks.0.hook_resid_post", "ln_final.hook_normalized"}, false);
  EXPECT_TRUE(at::equal(early.at("blocks.0.hook_resid_post"), full.at("blocks.0.hook_resid_post")));
}

}  // namespace
