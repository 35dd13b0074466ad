// SAEs: every on-disk layout loads and encodes as its library does (float64 goldens written by
// tests/fixtures/make_sae_fixtures.py from the libraries' rules, plus SAELens' own hand-computed
// cases); bad SAEs are refused by name; the sae-diff statistics match an independent float64
// computation on the golden activations; and the commands end to end.
#include "cli_runner.hpp"

#include <aquin/sdk/atomic_file.hpp>
#include <aquin/sdk/checkpoint.hpp>
#include <aquin/sdk/errors.hpp>
#include <aquin/sdk/json.hpp>
#include <aquin/sdk/safetensors.hpp>
#include <aquin/sdk/sae.hpp>
#include <aquin/sdk/sae_features.hpp>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "model_loading.hpp"

#include "models.hpp"
#include "registry.hpp"

#include <cmath>

using namespace aquin;
using aquin::test::data_dir;
using aquin::test::TempDir;

namespace {

std::filesystem::path sae_dir() { return data_dir() / "sae"; }

rapidjson::Document read_json(const std::filesystem::path& p) { return json::parse(read_text_file(p), p.string()); }

std::string load_error(const std::filesystem::path& p, std::optional<int64_t> layer = std::nullopt) {
  try {
    Sae::load(p, layer);
  } catch (const InputError& e) {
    return e.what();
  }
  return "";
}

double max_abs(const at::Tensor& t) { return t.numel() ? t.abs().max().item<double>() : 0.0; }

}  // namespace

TEST(Sae, EveryLayoutEncodesLikeItsLibrary) {
  auto fixtures = read_json(sae_dir() / "fixtures.json");
  auto golden = open_safetensors(sae_dir() / "encode_golden.safetensors");
  int checked = 0;
  for (const auto& f : fixtures["fixtures"].GetArray()) {
    const std::string name = f["name"].GetString();
    SCOPED_TRACE(name);
    Sae sae = Sae::load(sae_dir() / f["path"].GetString());
    const SaeInfo& i = sae.info();
    EXPECT_EQ(i.format, f["format"].GetString());
    EXPECT_EQ(i.architecture, f["architecture"].GetString());
    // sparsify names its hookpoints by module; "layers.N" is the output of block N.
    const std::string hook = f["hook"].GetString();
    EXPECT_EQ(i.hook, hook.rfind("layers.", 0) == 0 && hook.find('.', 7) == std::string::npos
                          ? "blocks." + hook.substr(7) + ".hook_resid_post"
                          : hook);
    EXPECT_EQ(i.layer, f["layer"].GetInt64());
    EXPECT_EQ(i.d_in, f["d_in"].GetInt64());
    EXPECT_EQ(i.d_sae, f["d_sae"].GetInt64());
    EXPECT_EQ(i.k, f["k"].IsNull() ? 0 : f["k"].GetInt64());
    std::string prefix;  // "sparsify-run/layers.1" -> "sparsify-run__layers.1"
    for (char c : name) prefix += c == '/' ? std::string("__") : std::string(1, c);
    at::Tensor x = golden->load(prefix + ".x");
    at::Tensor want = golden->load(prefix + ".features");
    at::Tensor want_rec = golden->load(prefix + ".reconstruction");
    SaeOutput out = sae.run(x, true);
    at::Tensor dense = codes_to_dense(out.codes, i.d_sae).to(at::kDouble);
    // Within 1e-5 of the largest activation, and the same features active.
    EXPECT_LE(max_abs(dense - want), 1e-5 * max_abs(want)) << name;
    EXPECT_TRUE(at::equal(dense > 0, want > 0)) << name;
    EXPECT_LE(max_abs(out.reconstruction.to(at::kDouble) - want_rec), 1e-5 * max_abs(want_rec)) << name;
    // encode_dense and decode agree with run().
    EXPECT_TRUE(at::equal(sae.encode_dense(x), codes_to_dense(out.codes, i.d_sae)));
    if (i.normalize == "none" && !sae.weights().W_skip.defined())
      EXPECT_LE(max_abs(sae.decode(out.codes).to(at::kDouble) - want_rec), 1e-5 * max_abs(want_rec));
    // TopK keeps at most k features per vector.
    if (i.architecture == "topk") EXPECT_LE(out.codes.values.numel(), x.size(0) * i.k);
    ++checked;
  }
  EXPECT_EQ(checked, 18);
}

TEST(Sae, SaeLensHandComputedCases) {
  auto cases = read_json(sae_dir() / "saelens_cases.json");
  auto tensor = [](const rapidjson::Value& v) {
    std::vector<double> flat;
    int64_t rows = 0, cols = 0;
    if (v[0].IsArray()) {
      rows = v.Size();
      cols = v[0].Size();
      for (const auto& r : v.GetArray())
        for (const auto& c : r.GetArray()) flat.push_back(c.GetDouble());
      return at::tensor(flat, at::kDouble).view({rows, cols}).to(at::kFloat);
    }
    for (const auto& c : v.GetArray()) flat.push_back(c.GetDouble());
    return at::tensor(flat, at::kDouble).to(at::kFloat);
  };
  for (const auto& c : cases["cases"].GetArray()) {
    SaeInfo info;
    info.architecture = c["architecture"].GetString();
    info.d_in = c["d_in"].GetInt64();
    info.d_sae = c["d_sae"].GetInt64();
    info.hook = "blocks.0.hook_resid_post";
    info.apply_b_dec_to_input = true;
    SaeWeights w;
    w.W_enc = tensor(c["W_enc"]);
    w.W_dec = tensor(c["W_dec"]);
    w.b_dec = tensor(c["b_dec"]);
    if (c.HasMember("b_enc")) w.b_enc = tensor(c["b_enc"]);
    if (c.HasMember("threshold")) w.threshold = tensor(c["threshold"]);
    if (c.HasMember("b_gate")) {
      w.b_gate = tensor(c["b_gate"]);
      w.r_mag = tensor(c["r_mag"]);
      w.b_mag = tensor(c["b_mag"]);
    }
    Sae sae = Sae::from_weights(info, w);
    at::Tensor x = tensor(c["x"]).unsqueeze(0);
    const double tol = c.HasMember("tolerance") ? c["tolerance"].GetDouble() : 1e-6;
    SaeOutput out = sae.run(x, true);
    at::Tensor feats = codes_to_dense(out.codes, info.d_sae)[0];
    at::Tensor want = tensor(c["expected_features"]);
    EXPECT_TRUE(at::allclose(feats, want, 0, tol)) << c["name"].GetString() << feats;
    EXPECT_TRUE(at::allclose(out.reconstruction[0], tensor(c["expected_reconstruction"]), 0, 10 * tol))
        << c["name"].GetString();
  }
}

TEST(Sae, BadFilesAreRefusedByName) {
  auto fixtures = read_json(sae_dir() / "fixtures.json");
  for (const auto& b : fixtures["bad"].GetArray()) {
    const std::string err = load_error(sae_dir() / b["path"].GetString());
    EXPECT_NE(err.find(b["error_contains"].GetString()), std::string::npos) << b["name"].GetString() << ": " << err;
    EXPECT_NE(err.find(b["path"].GetString()), std::string::npos) << "names the file: " << err;
    EXPECT_EQ(err.find('\n'), std::string::npos);
  }
  EXPECT_NE(load_error(sae_dir() / "no-such-sae").find("no such file"), std::string::npos);
  TempDir empty;
  EXPECT_NE(load_error(empty.path()).find("no SAE here"), std::string::npos);
}

TEST(Sae, FolderOfSeveralSaesPicksByLayer) {
  // sparsify run: layers.1 and layers.2.mlp.
  EXPECT_EQ(Sae::load(sae_dir() / "sparsify-run", 1).info().hook, "blocks.1.hook_resid_post");
  EXPECT_NE(load_error(sae_dir() / "sparsify-run").find("pass --layer"), std::string::npos);
  EXPECT_NE(load_error(sae_dir() / "sparsify-run", 5).find("no SAE for layer 5"), std::string::npos);
  EXPECT_EQ(Sae::load(sae_dir() / "sparsify-run/layers.2.mlp").info().hook, "layers.2.mlp");
  // aquin hub repository: layer1_96_top8, layer2_96_top8.
  Sae two = Sae::load(sae_dir() / "aquin-hub", 2);
  EXPECT_EQ(two.info().hook, "blocks.2.hook_resid_post");
  EXPECT_NE(two.info().orientation.find("W_enc"), std::string::npos);
  EXPECT_NE(Sae::load(sae_dir() / "aquin-hub", 1).info().orientation.find("transposed"), std::string::npos);
  // A file inside an SAE folder names that folder; a --layer that disagrees is an error.
  EXPECT_EQ(Sae::load(sae_dir() / "saelens-v6-topk/cfg.json").info().d_sae, 96);
  EXPECT_NE(load_error(sae_dir() / "saelens-v6-topk", 3).find("disagrees"), std::string::npos);
}

TEST(Sae, StudentTAndSplitHalf) {
  for (double t : {0.0, 0.3, 1.0, 2.5, 10.0, -4.0}) {
    EXPECT_NEAR(student_t_two_sided_p(t, 1), 1 - 2 / M_PI * std::atan(std::fabs(t)), 1e-12) << t;
    EXPECT_NEAR(student_t_two_sided_p(t, 2), 1 - std::fabs(t) / std::sqrt(2 + t * t), 1e-12) << t;
  }
  // Large dof tends to the normal: p(1.959964) = 0.05.
  EXPECT_NEAR(student_t_two_sided_p(1.959963985, 1e7), 0.05, 1e-6);

  FeatureStats s = start_feature_stats(6, 3, 2);
  s.prompt_values = at::tensor({1.0, 0.0, 5.0, 2.0, 0.0, 5.0, 3.0, 0.0, 5.0, 5.0, 0.0, 5.0, 1.0, 0.0, 5.0, 0.0, 0.0, 5.0},
                               at::kDouble).view({6, 3});
  s.active = at::tensor({5, 0, 6}, at::kLong);
  // even prompts 0, 2, 4: feature 0 mean 5/3; odd 1, 3, 5: 7/3; feature 2: 0 gap; feature 1 unused.
  const double gaps[] = {0.0, 2.0 / 3.0};
  EXPECT_NEAR(split_half_threshold(s), gaps[0] + 0.99 * (gaps[1] - gaps[0]), 1e-12);
  s.n_prompts = 3;
  s.prompt_values = s.prompt_values.narrow(0, 0, 3);
  EXPECT_TRUE(std::isnan(split_half_threshold(s)));
}

namespace {


using aquin::test::load_model;

// The golden batch as prompts; position 0 of each LLM prompt counts as the template's BOS.
SaePrompts golden_prompts(const std::filesystem::path& golden, bool bos) {
  auto g = open_safetensors(golden);
  at::Tensor ids = g->load("input_ids"), mask = g->load("attention_mask");
  SaePrompts p;
  for (int64_t i = 0; i < ids.size(0); ++i) {
    std::vector<int64_t> row;
    for (int64_t j = 0; j < ids.size(1); ++j)
      if (mask[i][j].item<int64_t>() == 1) row.push_back(ids[i][j].item<int64_t>());
    std::vector<uint8_t> special(row.size(), 0);
    if (bos) special[0] = 1;
    p.ids.push_back(row);
    p.special.push_back(special);
  }
  return p;
}

}  // namespace

TEST(SaeDiff, MatchesFloat64ReferenceOnGoldenActivations) {
  auto golden = read_json(sae_dir() / "diff_golden.json");
  int cases = 0;
  for (const auto& c : golden["cases"].GetArray()) {
    const std::string sae_name = c["sae"].GetString(), model = c["model"].GetString(), ft = c["finetune"].GetString(),
                      red = c["reduce"].GetString();
    SCOPED_TRACE(sae_name + " " + model + " " + ft + " " + red);
    const bool llm = model == "llama3-gqa";
    const auto base_dir = llm ? data_dir() / "llm/llama3-gqa" : data_dir() / "bert/tiny";
    const auto ft_path = llm ? data_dir() / ("llm/llama3-gqa-" + ft) : data_dir() / ("bert/tiny-" + ft);
    SaePrompts prompts = golden_prompts(llm ? data_dir() / "llm/golden/llama3-gqa.safetensors"
                                            : data_dir() / "bert/golden.safetensors",
                                        llm);
    const SaeReduce reduce = red == "tokens" ? SaeReduce::Tokens
                             : red == "mean" ? SaeReduce::TokenMean
                             : red == "last" ? SaeReduce::LastToken
                                             : SaeReduce::Pooled;
    Sae sae = Sae::load(sae_dir() / sae_name);
    Checkpoint ck = open_checkpoint(ft_path);
    FeatureStats b = collect_feature_stats(*load_model(base_dir, nullptr), sae, prompts, reduce, 0, 8);
    FeatureStats f = collect_feature_stats(*load_model(base_dir, &ck), sae, prompts, reduce, 0, 8);
    EXPECT_EQ(b.n_vectors, c["n_vectors_base"].GetInt64());
    for (const auto& [stats, key] : {std::pair{&b, "base"}, {&f, "ft"}}) {
      const auto& h = c[key];
      EXPECT_NEAR(stats->fvu(), h["fvu"].GetDouble(), 1e-4 * h["fvu"].GetDouble()) << key;
      EXPECT_DOUBLE_EQ(stats->mean_l0(), h["mean_l0"].GetDouble()) << key;
      EXPECT_EQ(stats->dead(), h["dead"].GetInt64()) << key;
    }
    std::vector<FeatureDelta> d = diff_features(b, f);
    const auto& want = c["features"];
    ASSERT_EQ(d.size(), want.Size());
    double scale = 0;
    for (const auto& w : want.GetArray())
      scale = std::max({scale, std::fabs(w["base_mean"].GetDouble()), std::fabs(w["ft_mean"].GetDouble())});
    for (std::size_t j = 0; j < d.size(); ++j) {
      const auto& w = want[static_cast<rapidjson::SizeType>(j)];
      ASSERT_EQ(d[j].feature, w["feature"].GetInt64());
      EXPECT_NEAR(d[j].base_mean, w["base_mean"].GetDouble(), 1e-5 * scale) << j;
      EXPECT_NEAR(d[j].ft_mean, w["ft_mean"].GetDouble(), 1e-5 * scale) << j;
      EXPECT_NEAR(d[j].delta, w["delta"].GetDouble(), 1e-5 * scale) << j;
      EXPECT_DOUBLE_EQ(d[j].base_freq, w["base_freq"].GetDouble()) << j;
      EXPECT_DOUBLE_EQ(d[j].ft_freq, w["ft_freq"].GetDouble()) << j;
      EXPECT_NEAR(d[j].delta_se, w["delta_se"].GetDouble(), 1e-5 * scale) << j;
      // p-values of near-zero standard errors are sensitive; compare where the t statistic is stable.
      if (w["delta_se"].GetDouble() > 1e-3 * scale)
        EXPECT_NEAR(d[j].p_value, w["p_value"].GetDouble(), 1e-3) << j;
    }
    ++cases;
  }
  EXPECT_EQ(cases, 26);
}

namespace {

// A copy of llama3-gqa with a byte-level tokenizer, a session on it, and a prompts file.
struct SaeCliSetup {
  aquin::test::Cli cli;
  TempDir m;
  SaeCliSetup() {
    std::filesystem::copy(data_dir() / "llm/llama3-gqa", m.path() / "base");
    aquin::test::write_bytes(m / "base/tokenizer.json", aquin::test::byte_tokenizer_json(128));
    std::string prompts;
    for (int i = 0; i < 9; ++i) prompts += "\"Probe number " + std::to_string(i) + " about the weather and tea\"\n";
    aquin::test::write_bytes(m / "prompts.jsonl", prompts);
  }
  std::string base() const { return (m / "base").string(); }
  std::string prompts() const { return (m / "prompts.jsonl").string(); }
};

}  // namespace

TEST(SaeDiffCli, ExportMatchesTheSdkFeatureForFeature) {
  SaeCliSetup s;
  const std::string sae = (sae_dir() / "saelens-v6-jumprelu").string();
  const std::string lora = (data_dir() / "llm/llama3-gqa-lora").string();
  // No session: --model names the base.
  auto r = s.cli.run("sae diff --model " + s.base() + " --checkpoint " + lora + " --sae " + sae + " --prompts " +
                     s.prompts() + " --top 0 --output json");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.err, "");  // no progress output in JSON mode
  auto doc = json::parse(r.out, "out");
  EXPECT_STREQ(doc["card"].GetString(), "saeDiff");
  EXPECT_STREQ(doc["tool"].GetString(), "run_sae_diff");
  EXPECT_EQ(doc["schema_version"].GetInt(), 1);
  EXPECT_STREQ(doc["sae"]["architecture"].GetString(), "jumprelu");
  EXPECT_STREQ(doc["hook"].GetString(), "blocks.1.hook_resid_post");
  EXPECT_STREQ(doc["reduce"].GetString(), "tokens");
  ASSERT_EQ(doc["features"].Size(), 96u);
  EXPECT_STREQ(doc["summary"]["threshold_source"].GetString(), "split-half");

  // The same computation through the SDK.
  auto tok = Tokenizer::from_folder(s.base());
  std::vector<std::string> texts;
  for (const auto& p : doc["prompts"].GetArray()) texts.push_back(p["text"].GetString());
  SaePrompts prompts = tokenize_for_sae(*tok, texts, 256);
  Sae sdk_sae = Sae::load(sae);
  Checkpoint ck = open_checkpoint(lora);
  FeatureStats b = collect_feature_stats(*load_model(s.base(), nullptr), sdk_sae, prompts, SaeReduce::Tokens, 0, 8);
  FeatureStats f = collect_feature_stats(*load_model(s.base(), &ck), sdk_sae, prompts, SaeReduce::Tokens, 0, 8);
  std::vector<FeatureDelta> d = diff_features(b, f);
  const double threshold = doc["summary"]["threshold"].GetDouble();
  EXPECT_NEAR(threshold, split_half_threshold(b), 1e-6 * threshold);
  double scale = 0;
  for (const auto& x : d) scale = std::max({scale, std::fabs(x.base_mean), std::fabs(x.ft_mean)});
  int changed = 0;
  double prev = INFINITY;
  for (const auto& e : doc["features"].GetArray()) {
    const FeatureDelta& x = d[static_cast<std::size_t>(e["feature"].GetInt64())];
    // The CLI runs on every core, this process on its own thread count: GEMM sums in another order.
    EXPECT_NEAR(e["delta"].GetDouble(), x.delta, 1e-6 * scale);
    EXPECT_NEAR(e["base_mean"].GetDouble(), x.base_mean, 1e-6 * scale);
    EXPECT_DOUBLE_EQ(e["ft_freq"].GetDouble(), x.ft_freq);
    EXPECT_LE(std::fabs(e["delta"].GetDouble()), prev);  // ordered by |delta|
    prev = std::fabs(e["delta"].GetDouble());
    EXPECT_EQ(e["changed"].GetBool(), std::fabs(e["delta"].GetDouble()) > threshold);
    changed += e["changed"].GetBool() ? 1 : 0;
  }
  EXPECT_EQ(doc["summary"]["n_changed"].GetInt(), changed);
  EXPECT_NEAR(doc["summary"]["reconstruction"]["finetune"]["fvu"].GetDouble(), f.fvu(), 1e-6);
  // The top feature's examples name a prompt and the token in context.
  const auto& top = doc["features"][0];
  ASSERT_TRUE(top.HasMember("ft_examples"));
  if (top["ft_examples"].Size() > 0) EXPECT_TRUE(top["ft_examples"][0].HasMember("context"));

  // --output FILE.json writes the same export; --reduce last and the text view work.
  r = s.cli.run("sae diff --model " + s.base() + " --checkpoint " + lora + " --sae " + sae + " --prompts " + s.prompts() +
                " --reduce last --output " + (s.m / "out.json").string());
  ASSERT_EQ(r.code, 0) << r.err;
  auto written = read_json(s.m / "out.json");
  EXPECT_STREQ(written["reduce"].GetString(), "last");
  EXPECT_NE(r.out.find("Reconstruction health"), std::string::npos);
  EXPECT_NE(r.out.find("aquin sae diff"), std::string::npos);
  r = s.cli.run("sae diff --model " + s.base() + " --checkpoint " + lora + " --sae " + sae + " --output out.txt");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("--output"), std::string::npos);
}

TEST(SaeDiffCli, SessionSaeAndLoadSae) {
  SaeCliSetup s;
  const std::string lora = (data_dir() / "llm/llama3-gqa-lora").string();
  ASSERT_EQ(s.cli.run("session start --id sd --model " + s.base()).code, 0);
  // No SAE yet: a clear usage error.
  auto r = s.cli.run("sae diff --checkpoint " + lora);
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("aquin load sae"), std::string::npos) << r.err;
  // An SAE of another model (BERT, d_in 48) is refused with both sizes.
  r = s.cli.run("load sae " + (sae_dir() / "saelens-v6-bert-standard").string());
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("48"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("64"), std::string::npos) << r.err;
  // A hook the model does not offer (sparsify's MLP hookpoint) is refused with the hooks it offers.
  r = s.cli.run("load sae " + (sae_dir() / "sparsify-run").string() + " --layer 2");
  EXPECT_EQ(r.code, 1);
  r = s.cli.run("load sae " + (sae_dir() / "sparsify-run/layers.2.mlp").string());
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("blocks.{L}.hook_resid_pre"), std::string::npos) << r.err;
  r = s.cli.run("sae diff --checkpoint " + lora + " --sae " + (sae_dir() / "sparsify-run/layers.2.mlp").string());
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("does not offer"), std::string::npos) << r.err;
  // A folder of several: --layer picks.
  r = s.cli.run("load sae " + (sae_dir() / "aquin-hub").string() + " --layer 1");
  ASSERT_EQ(r.code, 0) << r.err;
  r = s.cli.run("session show");
  EXPECT_NE(r.out.find("aquin-hub, topk k=8"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("blocks.1.hook_resid_post"), std::string::npos) << r.out;
  r = s.cli.run("sae diff --checkpoint " + lora + " --prompts " + s.prompts() + " --output json --save");
  ASSERT_EQ(r.code, 0) << r.err;
  auto doc = json::parse(r.out, "out");
  EXPECT_STREQ(doc["sae"]["format"].GetString(), "aquin-hub");
  EXPECT_STREQ(doc["session"].GetString(), "sd");
  EXPECT_TRUE(std::filesystem::exists(s.cli.home() / "sessions/sd/exports/sae-diff-llama3-gqa-lora.json"));
  // --layer that disagrees with the session's SAE.
  r = s.cli.run("sae diff --checkpoint " + lora + " --layer 2");
  EXPECT_EQ(r.code, 1);
  // The agent tool runs the same command.
  r = s.cli.run("tool run_sae_diff --input '{\"checkpoint\": \"" + lora + "\", \"top\": 3}'");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(json::parse(r.out, "out")["features"].Size(), 3u);
}

TEST(SaeDiffCli, CatalogSlugsResolveOffline) {
  SaeCliSetup s;
  ASSERT_EQ(s.cli.run("session start --id cat --model " + s.base()).code, 0);
  // A public slug that is not on this machine: the error says which files go where.
  auto r = s.cli.run("load sae llama-3.2-1b-l8");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("meta.json and sae.pt"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("layer8_32768_top32"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("$AQUIN_SAES/llama-3.2-1b-l8/"), std::string::npos) << r.err;
  r = s.cli.run("load sae llama-3.2-1b-l99");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("outside"), std::string::npos) << r.err;
  // $AQUIN_SAES/<slug>/ and the Hugging Face cache layout, with a catalog of test slugs.
  TempDir t;
  aquin::test::write_bytes(t / "saes.json",
                           R"({"saes": [{"slug": "tiny-l{layer}", "layers": [0, 2], "model": "tiny", "repo": "Org/tiny-sae",)"
                           R"( "subfolder": "layer{layer}_96_top8", "layout": "aquin-hub", "hook": "blocks.{layer}.hook_resid_post"}]})");
  std::filesystem::create_directories(t / "saes");
  std::filesystem::copy(sae_dir() / "aquin-hub/layer1_96_top8", t / "saes/tiny-l1");
  const auto snap = t / "hf/hub/models--Org--tiny-sae/snapshots/abc123";
  std::filesystem::create_directories(snap);
  std::filesystem::copy(sae_dir() / "aquin-hub/layer2_96_top8", snap / "layer2_96_top8");
  s.cli.env = "AQUIN_SAE_CATALOG=" + (t / "saes.json").string() + " AQUIN_SAES=" + (t / "saes").string() +
              " HF_HOME=" + (t / "hf").string();
  r = s.cli.run("load sae tiny-l1");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("blocks.1.hook_resid_post"), std::string::npos);
  r = s.cli.run("load sae tiny-l2");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(s.cli.run("session show").out.find("abc123/layer2_96_top8"), std::string::npos);
}

TEST(SaeDiffCli, EmbeddingModelsEncodeTheMeanPool) {
  aquin::test::Cli cli;
  TempDir m;
  std::filesystem::copy(data_dir() / "bert/tiny", m.path() / "base");
  aquin::test::write_bytes(m / "base/tokenizer.json", aquin::test::byte_tokenizer_json(100));
  std::string prompts;
  for (int i = 0; i < 6; ++i) prompts += "\"a query about item " + std::to_string(i) + "\"\n";
  aquin::test::write_bytes(m / "p.jsonl", prompts);
  auto r = cli.run("sae diff --model " + (m / "base").string() + " --checkpoint " + (data_dir() / "bert/tiny-lora").string() +
                   " --sae " + (sae_dir() / "saelens-v6-bert-standard").string() + " --prompts " + (m / "p.jsonl").string() +
                   " --reduce last --output json");
  ASSERT_EQ(r.code, 0) << r.err;
  auto doc = json::parse(r.out, "out");
  EXPECT_STREQ(doc["reduce"].GetString(), "pooled");
  EXPECT_EQ(doc["summary"]["n_vectors"].GetInt(), 6);  // one pooled vector per prompt
  EXPECT_EQ(doc["features"].Size(), 20u);
  bool warned = false;
  for (const auto& w : doc["warnings"].GetArray()) warned |= std::string(w.GetString()).find("--reduce last ignored") != std::string::npos;
  EXPECT_TRUE(warned);
  EXPECT_GT(doc["summary"]["max_abs_delta"].GetDouble(), 0.0);
}
