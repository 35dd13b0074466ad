// weight-diff core against float64 references computed independently by
// tests/fixtures/make_model_fixtures.py (numpy, exact SVD) and stored in expected.json.
#include "test_helpers.hpp"

#include <aquin/sdk/checkpoint.hpp>
#include <aquin/sdk/errors.hpp>
#include <aquin/sdk/json.hpp>
#include <aquin/sdk/atomic_file.hpp>
#include <aquin/sdk/weight_diff.hpp>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <map>

using namespace aquin;

namespace {

const rapidjson::Document& expected() {
  static rapidjson::Document d = json::parse(read_text_file(aquin::test::data_dir() / "ckpt/expected.json"), "expected.json");
  return d;
}

std::map<std::string, const MatrixDiff*> by_source(const WeightDiff& wd) {
  std::map<std::string, const MatrixDiff*> m;
  for (const auto& x : wd.matrices) {
    m[x.source_name] = &x;
    m[x.base_source_name] = &x;
  }
  return m;
}

void expect_rel(double got, double want, double tol, const std::string& what) {
  EXPECT_LE(std::abs(got - want), tol * std::max(std::abs(want), 1e-30)) << what << ": got " << got << " want " << want;
}

// Compares every entry of expected[key] with the MatrixDiff of the same base source name.
void check_against_reference(const std::string& key, const WeightDiff& wd, bool lora, double tol) {
  const auto& ref = expected()[key.c_str()];
  ASSERT_TRUE(ref.IsObject()) << key;
  std::map<std::string, const MatrixDiff*> got;
  for (const auto& m : wd.matrices) got[m.base_source_name] = &m;
  int checked = 0;
  for (auto it = ref.MemberBegin(); it != ref.MemberEnd(); ++it) {
    const std::string name = it->name.GetString();
    ASSERT_TRUE(got.count(name)) << key << ": no result for " << name;
    const MatrixDiff& m = *got[name];
    ASSERT_EQ(m.status, "ok") << name;
    EXPECT_EQ(m.lora, lora);
    const auto& e = it->value;
    expect_rel(m.base_norm, e["base_norm"].GetDouble(), 1e-6, name + " base_norm");
    expect_rel(m.delta_norm, e["delta_norm"].GetDouble(), tol, name + " delta_norm");
    expect_rel(m.max_abs_delta, e["max_abs_delta"].GetDouble(), tol, name + " max_abs_delta");
    if (e.HasMember("spectral_norm")) {
      expect_rel(m.spectral_norm, e["spectral_norm"].GetDouble(), 1e-4, name + " spectral_norm");
      expect_rel(m.stable_rank, e["stable_rank"].GetDouble(), 1e-4, name + " stable_rank");
    }
    if (e.HasMember("scale")) expect_rel(m.lora_scale, e["scale"].GetDouble(), 1e-12, name + " scale");
    ++checked;
  }
  EXPECT_GT(checked, 0);
}

std::unique_ptr<TensorStore> tiny_llama() { return open_model_weights(aquin::test::data_dir() / "models/tiny-llama"); }

}  // namespace

TEST(WeightDiff, MergedPtMatchesFloat64Reference) {
  auto base = tiny_llama();
  Checkpoint ck = open_checkpoint(aquin::test::data_dir() / "ckpt/llama-ft-step300.pt");
  EXPECT_EQ(ck.format, "pt");
  ASSERT_TRUE(ck.step);
  EXPECT_EQ(*ck.step, 300);
  EXPECT_EQ(ck.step_source, "pt");
  WeightDiff wd = compute_weight_diff(*base, ck, "llama");
  EXPECT_EQ(wd.matrices.size(), 21u);
  EXPECT_TRUE(wd.warnings.empty());
  check_against_reference("llama-ft-step300.pt", wd, false, 1e-5);
  for (const auto& m : wd.matrices) EXPECT_FALSE(m.below_noise_floor) << m.param;  // f32: no floor
}

TEST(WeightDiff, ShardedBf16MatchesReferenceAndHasNoiseFloor) {
  auto base = tiny_llama();
  Checkpoint ck = open_checkpoint(aquin::test::data_dir() / "ckpt/llama-ft-bf16-sharded");
  EXPECT_EQ(ck.format, "hf-sharded-safetensors");
  WeightDiff wd = compute_weight_diff(*base, ck, "llama");
  check_against_reference("llama-ft-bf16-sharded", wd, false, 1e-5);
  for (const auto& m : wd.matrices) {
    EXPECT_EQ(m.checkpoint_dtype, "BF16");
    EXPECT_GT(m.noise_floor, 0) << m.param;
  }
}

TEST(WeightDiff, CanonicalNamesAndKinds) {
  auto base = tiny_llama();
  Checkpoint ck = open_checkpoint(aquin::test::data_dir() / "ckpt/llama-ft-step300.pt");
  WeightDiff wd = compute_weight_diff(*base, ck, "llama");
  auto m = by_source(wd);
  EXPECT_EQ(m["model.layers.1.self_attn.q_proj.weight"]->param, "blocks.1.attn.q.weight");
  EXPECT_EQ(m["model.layers.1.self_attn.q_proj.weight"]->kind, ParamKind::Q);
  EXPECT_EQ(*m["model.layers.1.self_attn.q_proj.weight"]->layer, 1);
  EXPECT_EQ(m["model.layers.0.mlp.gate_proj.weight"]->kind, ParamKind::MlpGate);
  EXPECT_EQ(m["model.embed_tokens.weight"]->kind, ParamKind::Embed);
  EXPECT_FALSE(m["model.embed_tokens.weight"]->layer);
  EXPECT_EQ(m["lm_head.weight"]->kind, ParamKind::Unembed);
  EXPECT_EQ(m["model.norm.weight"]->param, "ln_final.weight");
  EXPECT_EQ(m["model.norm.weight"]->kind, ParamKind::Norm);
  EXPECT_TRUE(std::isnan(m["model.norm.weight"]->stable_rank));  // 1-D: no spectrum
}

TEST(WeightDiff, TransformerLensStateDictEqualsHfResult) {
  auto base = tiny_llama();
  WeightDiff hf = compute_weight_diff(*base, open_checkpoint(aquin::test::data_dir() / "ckpt/llama-ft-step300.pt"), "llama");
  WeightDiff tl = compute_weight_diff(*base, open_checkpoint(aquin::test::data_dir() / "ckpt/llama-ft-transformer-lens.pt"), "llama");
  std::map<std::string, const MatrixDiff*> t;
  for (const auto& m : tl.matrices) t[m.param] = &m;
  for (const auto& m : hf.matrices) {
    ASSERT_TRUE(t.count(m.param)) << m.param;
    const MatrixDiff& x = *t[m.param];
    EXPECT_EQ(x.status, "ok") << m.param << " " << x.detail;
    EXPECT_EQ(x.shape, m.shape) << m.param;
    // Same values in another layout: the delta is bit-identical after rearrangement.
    EXPECT_NEAR(x.delta_norm, m.delta_norm, 1e-6 * m.delta_norm) << m.param;
    EXPECT_DOUBLE_EQ(x.max_abs_delta, m.max_abs_delta) << m.param;
  }
  EXPECT_TRUE(tl.warnings.empty()) << tl.warnings.front();
}

TEST(WeightDiff, LoraFromTheRxRProblemMatchesMaterialised) {
  auto base = tiny_llama();
  for (std::string key : {"llama-lora", "llama-lora-rslora", "llama-lora-uniform.pt"}) {
    Checkpoint ck = open_checkpoint(aquin::test::data_dir() / "ckpt" / key);
    ASSERT_TRUE(ck.is_lora) << key;
    WeightDiff wd = compute_weight_diff(*base, ck, "llama");
    check_against_reference(key, wd, true, 1e-5);
  }
}

TEST(WeightDiff, LoraRankAndAlphaPatterns) {
  Checkpoint ck = open_checkpoint(aquin::test::data_dir() / "ckpt/llama-lora");
  EXPECT_EQ(ck.format, "peft-adapter");
  std::map<std::string, LoraModule> mods;
  for (const auto& m : ck.lora) mods[m.target] = m;
  ASSERT_EQ(mods.size(), 5u);
  EXPECT_EQ(mods["base_model.model.model.layers.1.mlp.down_proj"].rank, 2);
  EXPECT_DOUBLE_EQ(mods["base_model.model.model.layers.1.mlp.down_proj"].scale, 3.0);
  EXPECT_DOUBLE_EQ(mods["base_model.model.model.layers.0.self_attn.q_proj"].scale, 2.0);
  Checkpoint rs = open_checkpoint(aquin::test::data_dir() / "ckpt/llama-lora-rslora");
  for (const auto& m : rs.lora)
    if (m.rank == 4) EXPECT_DOUBLE_EQ(m.scale, 4.0);
}

TEST(WeightDiff, BelowNoiseFloorIsMarked) {
  auto base = open_model_weights(aquin::test::data_dir() / "models/tiny-llama-bf16");
  WeightDiff wd = compute_weight_diff(*base, open_checkpoint(aquin::test::data_dir() / "ckpt/llama-noise-bf16"), "llama");
  for (const auto& m : wd.matrices) {
    if (m.param == "blocks.0.attn.q.weight") {
      EXPECT_GT(m.delta_norm, 0);  // some elements flipped by one ulp
      EXPECT_TRUE(m.below_noise_floor) << m.delta_norm << " vs floor " << m.noise_floor;
    } else if (m.param == "blocks.1.mlp.up.weight") {
      EXPECT_FALSE(m.below_noise_floor);
      EXPECT_GT(m.delta_norm, 10 * m.noise_floor);
    } else {
      EXPECT_EQ(m.delta_norm, 0.0) << m.param;
    }
  }
}

TEST(WeightDiff, RoundingNoiseFloorFormula) {
  // bf16 values in [1, 2) have ulp 2^-7: floor = sqrt(n) * 2^-7 / sqrt(12).
  at::Tensor v = at::full({100}, 1.5f);
  EXPECT_NEAR(rounding_noise_floor(v, DType::BF16), 10.0 * std::ldexp(1.0, -7) / std::sqrt(12.0), 1e-12);
  EXPECT_NEAR(rounding_noise_floor(v, DType::F16), 10.0 * std::ldexp(1.0, -10) / std::sqrt(12.0), 1e-12);
  EXPECT_EQ(rounding_noise_floor(v, DType::F32), 0.0);
  EXPECT_EQ(rounding_noise_floor(at::zeros({4}), DType::BF16), 0.0);
}

TEST(WeightDiff, NanAndInfAreReportedNotThrown) {
  auto base = tiny_llama();
  WeightDiff wd = compute_weight_diff(*base, open_checkpoint(aquin::test::data_dir() / "ckpt/llama-nan.pt"), "llama");
  int bad = 0;
  for (const auto& m : wd.matrices) {
    if (m.param == "blocks.1.attn.k.weight") {
      EXPECT_EQ(m.status, "non_finite");
      EXPECT_EQ(m.non_finite, 2);
      ++bad;
    } else {
      EXPECT_EQ(m.status, "ok");
    }
  }
  EXPECT_EQ(bad, 1);
  ASSERT_EQ(wd.warnings.size(), 1u);
  EXPECT_NE(wd.warnings[0].find("NaN/Inf"), std::string::npos);
  EXPECT_TRUE(std::isfinite(wd.total_delta_norm));
}

TEST(WeightDiff, MissingExtraAndMismatchedKeysAreListed) {
  auto base = tiny_llama();
  WeightDiff wd = compute_weight_diff(*base, open_checkpoint(aquin::test::data_dir() / "ckpt/llama-mismatch.pt"), "llama");
  std::map<std::string, std::string> status;
  for (const auto& m : wd.matrices) status[m.param] = m.status;
  EXPECT_EQ(status["blocks.0.mlp.up.weight"], "shape_mismatch");
  EXPECT_EQ(status["blocks.1.mlp.gate.weight"], "missing_in_checkpoint");
  EXPECT_EQ(status["model.layers.1.mlp.extra_proj.weight"], "missing_in_base");
  EXPECT_EQ(wd.warnings.size(), 3u);
}

TEST(WeightDiff, BertFamilyFromPytorchModelBin) {
  auto base = open_model_weights(aquin::test::data_dir() / "models/tiny-bert");
  Checkpoint ck = open_checkpoint(aquin::test::data_dir() / "ckpt/bert-ft");
  EXPECT_EQ(ck.format, "hf-bin");
  WeightDiff wd = compute_weight_diff(*base, ck, "bert");
  check_against_reference("bert-ft", wd, false, 1e-5);
  std::map<std::string, const MatrixDiff*> m;
  for (const auto& x : wd.matrices) m[x.param] = &x;
  EXPECT_EQ(m["blocks.1.attn.q.weight"]->kind, ParamKind::Q);
  EXPECT_EQ(m["blocks.1.attn.o.bias"]->kind, ParamKind::O);
  EXPECT_EQ(m["blocks.0.mlp.up.weight"]->base_source_name, "encoder.layer.0.intermediate.dense.weight");
  EXPECT_EQ(m["blocks.0.mlp.up.weight"]->source_name, "bert.encoder.layer.0.intermediate.dense.weight");
  EXPECT_EQ(m["blocks.0.ln2.weight"]->kind, ParamKind::Norm);
  EXPECT_EQ(m["embed.position.weight"]->kind, ParamKind::Embed);
  EXPECT_EQ(m["pooler.weight"]->kind, ParamKind::Other);
}

TEST(Checkpoint, AdapterRankDisagreeingWithTensorsIsAnError) {
  try {
    open_checkpoint(aquin::test::data_dir() / "ckpt/bad-lora-rank");
    FAIL();
  } catch (const InputError& e) {
    std::string m = e.what();
    EXPECT_NE(m.find("adapter_config.json"), std::string::npos) << m;
    EXPECT_NE(m.find("r=8"), std::string::npos) << m;
    EXPECT_NE(m.find("4 rows"), std::string::npos) << m;
  }
}

TEST(Checkpoint, StepFromName) {
  EXPECT_EQ(step_from_name("/x/checkpoint-500"), 500);
  EXPECT_EQ(step_from_name("/x/run3_step_1200.pt"), 1200);
  EXPECT_FALSE(step_from_name("/x/final.pt"));
  EXPECT_EQ(step_from_name("/x/llama3-8b-step700-v2.pt"), 700);
  EXPECT_EQ(step_from_name("/x/run-0450.pt"), 450);
}

TEST(Checkpoint, MissingPathNamesIt) {
  try {
    open_checkpoint("/no/such/ckpt.pt");
    FAIL();
  } catch (const InputError& e) {
    EXPECT_STREQ(e.what(), "/no/such/ckpt.pt: no such file or directory");
  }
}
