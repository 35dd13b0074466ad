// residual-drift: prompt files, the reduction and cosine figures against the golden activations
// written by tests/fixtures/make_llm_goldens.py (an independent PyTorch implementation), and the
// command end to end.
#include "cli_runner.hpp"

#include <aquin/sdk/activation_drift.hpp>
#include <aquin/sdk/atomic_file.hpp>
#include <aquin/sdk/behavior.hpp>
#include <aquin/sdk/checkpoint.hpp>
#include <aquin/sdk/errors.hpp>
#include <aquin/sdk/json.hpp>
#include <aquin/sdk/prompts.hpp>
#include <aquin/sdk/safetensors.hpp>

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

std::string prompt_error(const std::string& content) {
  TempDir d;
  aquin::test::write_bytes(d / "p.jsonl", content);
  try {
    read_prompts(d / "p.jsonl");
  } catch (const InputError& e) {
    return e.what();
  }
  return "";
}



std::unique_ptr<LoadedModel> load(const std::filesystem::path& dir, const Checkpoint* overlay) {
  return aquin::test::load_model(dir, overlay);
}

// The golden batch's prompts as unpadded id lists.
Tokenized golden_prompts(const TensorStore& g) {
  at::Tensor ids = g.load("input_ids"), mask = g.load("attention_mask");
  Tokenized t;
  for (int64_t i = 0; i < ids.size(0); ++i) {
    std::vector<int64_t> row;
    for (int64_t j = 0; j < ids.size(1); ++j)
      if (mask[i][j].item<int64_t>() == 1) row.push_back(ids[i][j].item<int64_t>());
    t.ids.push_back(row);
  }
  return t;
}

// Reduction of a golden hook, written independently of the code under test.
at::Tensor golden_reduce(const TensorStore& g, const std::string& hook, Reduce reduce) {
  at::Tensor v = g.load(hook).to(at::kDouble), mask = g.load("attention_mask").to(at::kDouble);
  std::vector<at::Tensor> rows;
  for (int64_t i = 0; i < v.size(0); ++i) {
    const int64_t n = static_cast<int64_t>(mask[i].sum().item<double>());
    rows.push_back(reduce == Reduce::LastToken ? v[i][n - 1] : v[i].narrow(0, 0, n).mean(0));
  }
  return at::stack(rows);
}

}  // namespace

TEST(Prompts, JsonArrayJsonlAndInstructionRows) {
  TempDir d;
  aquin::test::write_bytes(d / "a.json", R"(["one", {"instruction": "Say hi", "response": "hi"}])");
  auto p = read_prompts(d / "a.json");
  ASSERT_EQ(p.size(), 2u);
  EXPECT_EQ(p[1], "Say hi\n\nhi");
  aquin::test::write_bytes(d / "b.jsonl", "\"first\"\n\n{\"instruction\": \"second\"}\n");
  EXPECT_EQ(read_prompts(d / "b.jsonl"), (std::vector<std::string>{"first", "second"}));
  EXPECT_FALSE(builtin_prompts().empty());
}

TEST(Prompts, ErrorsNameTheLine) {
  EXPECT_NE(prompt_error("\"ok\"\n{bad json\n").find("p.jsonl: line 2: invalid JSON"), std::string::npos);
  EXPECT_NE(prompt_error("\"ok\"\n\"   \"\n").find("line 2: empty prompt"), std::string::npos);
  EXPECT_NE(prompt_error("\"ok\"\n42\n").find("line 2: expected a string"), std::string::npos);
  EXPECT_NE(prompt_error("").find("no prompts"), std::string::npos);
  EXPECT_NE(prompt_error("[\"a\",\n\"b\",\n]").find("line 3: invalid JSON"), std::string::npos);
}

TEST(ResidualDrift, ReductionsAndCosinesMatchGoldenActivations) {
  const auto llm = data_dir() / "llm";
  auto gb = open_safetensors(llm / "golden/llama3-gqa.safetensors");
  auto gl = open_safetensors(llm / "golden/llama3-gqa-lora.safetensors");
  Tokenized prompts = golden_prompts(*gb);
  Checkpoint lora = open_checkpoint(llm / "llama3-gqa-lora");
  for (Reduce reduce : {Reduce::LastToken, Reduce::TokenMean}) {
    auto base_acts = reduced_resid_post(*load(llm / "llama3-gqa", nullptr), prompts, reduce, 0, /*batch_size=*/1);
    auto ft_acts = reduced_resid_post(*load(llm / "llama3-gqa", &lora), prompts, reduce, 0, 2);
    auto layers = compare_layers(base_acts, ft_acts);
    ASSERT_EQ(layers.size(), base_acts.size());
    for (const auto& l : layers) {
      const std::string hook = "blocks." + std::to_string(l.layer) + ".hook_resid_post";
      at::Tensor a = golden_reduce(*gb, hook, reduce), b = golden_reduce(*gl, hook, reduce);
      for (int64_t i = 0; i < a.size(0); ++i) {
        const double cos = (a[i] * b[i]).sum().item<double>() / (a[i].norm().item<double>() * b[i].norm().item<double>());
        EXPECT_NEAR(l.cosine_distance[static_cast<std::size_t>(i)], 1 - cos, 1e-5) << hook << " prompt " << i;
        const double rel = (b[i].norm().item<double>() - a[i].norm().item<double>()) / a[i].norm().item<double>();
        EXPECT_NEAR(l.relative_norm_change[static_cast<std::size_t>(i)], rel, 1e-5) << hook;
      }
      EXPECT_GT(l.cosine_distance[0], 0.0);
    }
  }
}

TEST(ResidualDriftCli, EndToEndZeroDriftAndExport) {
  aquin::test::Cli cli;
  TempDir m;
  std::filesystem::copy(data_dir() / "llm/llama3-gqa", m.path() / "base");
  aquin::test::write_bytes(m / "base/tokenizer.json", aquin::test::byte_tokenizer_json(128));
  aquin::test::write_bytes(m / "prompts.jsonl", "\"Hello there\"\n{\"instruction\": \"Add 2 and 2.\", \"response\": \"4\"}\n");
  ASSERT_EQ(cli.run("session start --id rd --model " + (m / "base").string()).code, 0);
  // The base laid over itself: no drift at all.
  auto r = cli.run("residual-drift --checkpoint " + (m / "base").string() + " --prompts " + (m / "prompts.jsonl").string() +
                   " --output json");
  ASSERT_EQ(r.code, 0) << r.err;
  auto doc = json::parse(r.out, "out");
  EXPECT_STREQ(doc["card"].GetString(), "residualDrift");
  EXPECT_STREQ(doc["tool"].GetString(), "run_residual_drift");
  EXPECT_STREQ(doc["reduce"].GetString(), "last");
  EXPECT_EQ(doc["prompts"].Size(), 2u);
  EXPECT_EQ(doc["prompts"][0]["tokens"].GetInt(), 11);
  ASSERT_EQ(doc["layers"].Size(), 3u);  // llama3-gqa has 3 layers
  for (const auto& l : doc["layers"].GetArray()) {
    EXPECT_LE(l["cosine_distance"]["max"].GetDouble(), 1e-12);
    EXPECT_EQ(l["cosine_distance"]["per_prompt"].Size(), 2u);
    EXPECT_LE(std::abs(l["relative_norm_change"].GetDouble()), 1e-12);
  }
  r = cli.run("residual-drift --checkpoint " + (data_dir() / "llm/llama3-gqa-lora").string() + " --reduce mean --output json");
  ASSERT_EQ(r.code, 0) << r.err;
  doc = json::parse(r.out, "out");
  EXPECT_STREQ(doc["reduce"].GetString(), "mean");
  EXPECT_GT(doc["layers"][1]["cosine_distance"]["mean"].GetDouble(), 0.0);
  r = cli.run("tool run_residual_drift --input '{\"checkpoint\": \"" + (data_dir() / "llm/llama3-gqa-lora").string() +
              "\", \"reduce\": \"mean\"}'");
  ASSERT_EQ(r.code, 0) << r.err;
  aquin::test::write_bytes(m / "bad.jsonl", "\"fine\"\n\"\"\n");
  r = cli.run("residual-drift --checkpoint " + (m / "base").string() + " --prompts " + (m / "bad.jsonl").string());
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("bad.jsonl: line 2: empty prompt"), std::string::npos) << r.err;
}

// Against two independent references: the golden logits of make_llm_goldens.py (KL, top-1) and
// make_behavior_goldens.py's float64 greedy decoding, each prompt alone (continuations, edit
// distances). The goldens' smallest top-2 logit gap is 0.015, far above fp32 noise, so a greedy
// token that differs is a real error, not a tie.
TEST(Behavior, KlTop1AndGreedyMatchGoldens) {
  const auto llm = data_dir() / "llm";
  auto gb = open_safetensors(llm / "golden/llama3-gqa.safetensors");
  auto gl = open_safetensors(llm / "golden/llama3-gqa-lora.safetensors");
  const auto greedy = json::parse(read_text_file(llm / "golden/behavior.json"), "behavior.json");
  const int n_new = greedy["new_tokens"].GetInt();
  Tokenized prompts = golden_prompts(*gb);
  Checkpoint lora = open_checkpoint(llm / "llama3-gqa-lora");
  ProbeOutput pb = probe_model(*load(llm / "llama3-gqa", nullptr), prompts, n_new);
  ProbeOutput pl = probe_model(*load(llm / "llama3-gqa", &lora), prompts, n_new, /*batch_size=*/1);
  auto beh = compare_behavior(pb, pl);
  ASSERT_EQ(beh.size(), prompts.ids.size());
  ASSERT_EQ(greedy["prompts"].Size(), prompts.ids.size());
  auto ids = [](const rapidjson::Value& v) {
    std::vector<int64_t> out;
    for (const auto& x : v.GetArray()) out.push_back(x.GetInt64());
    return out;
  };
  at::Tensor mask = gb->load("attention_mask");
  for (std::size_t i = 0; i < beh.size(); ++i) {
    const auto& g = greedy["prompts"][static_cast<rapidjson::SizeType>(i)];
    ASSERT_EQ(ids(g["ids"]), prompts.ids[i]);
    const int64_t last = mask[static_cast<int64_t>(i)].sum().item<int64_t>() - 1;
    at::Tensor lb = at::log_softmax(gb->load("logits")[static_cast<int64_t>(i)][last].to(at::kDouble), -1);
    at::Tensor ll = at::log_softmax(gl->load("logits")[static_cast<int64_t>(i)][last].to(at::kDouble), -1);
    const double kl = (lb.exp() * (lb - ll)).sum().item<double>();
    EXPECT_NEAR(beh[i].kl, kl, 1e-4 * std::max(kl, 1e-3)) << "prompt " << i;
    EXPECT_NEAR(beh[i].kl, g["kl"].GetDouble(), 1e-4 * g["kl"].GetDouble()) << "prompt " << i;
    EXPECT_EQ(beh[i].top1_agree, lb.argmax().item<int64_t>() == ll.argmax().item<int64_t>());
    EXPECT_EQ(beh[i].top1_agree, g["top1_agree"].GetBool());
    EXPECT_EQ(pb.greedy[i], ids(g["base_greedy"])) << "prompt " << i;
    EXPECT_EQ(pl.greedy[i], ids(g["lora_greedy"])) << "prompt " << i;
    EXPECT_EQ(beh[i].edit_distance, g["edit_distance"].GetInt());
  }
  auto same = compare_behavior(pb, pb);
  for (const auto& b : same) {
    EXPECT_EQ(b.kl, 0.0);
    EXPECT_TRUE(b.top1_agree);
    EXPECT_EQ(b.edit_distance, 0);
  }
  // A continuation ends at the end-of-sequence token (kept), as Hugging Face's generate does:
  // declare the base's first greedy token of prompt 0 to be EOS.
  const int64_t eos = pb.greedy[0][0];
  ProbeOutput stopped = probe_model(*load(llm / "llama3-gqa", nullptr), prompts, n_new, 8, eos);
  EXPECT_EQ(stopped.greedy[0], std::vector<int64_t>{eos});
  for (std::size_t i = 1; i < prompts.ids.size(); ++i) {
    const auto& full = pb.greedy[i];
    auto end = std::find(full.begin(), full.end(), eos);
    EXPECT_EQ(stopped.greedy[i], std::vector<int64_t>(full.begin(), end == full.end() ? end : end + 1));
  }
}

TEST(Behavior, TokenEditDistance) {
  EXPECT_EQ(token_edit_distance({1, 2, 3}, {1, 2, 3}), 0);
  EXPECT_EQ(token_edit_distance({1, 2, 3}, {1, 3}), 1);
  EXPECT_EQ(token_edit_distance({}, {4, 5}), 2);
  EXPECT_EQ(token_edit_distance({1, 2, 3, 4}, {2, 1, 3, 5}), 3);
}
