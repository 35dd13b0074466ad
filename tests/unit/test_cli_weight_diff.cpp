// `aquin session` and `aquin weight-diff` end to end through the real binary.
#include "cli_runner.hpp"

#include <aquin/sdk/atomic_file.hpp>
#include <aquin/sdk/json.hpp>

#include <gtest/gtest.h>

using aquin::test::Cli;
using aquin::test::data_dir;

namespace {

std::string model(const std::string& m) { return (data_dir() / "models" / m).string(); }
std::string ckpt(const std::string& c) { return (data_dir() / "ckpt" / c).string(); }

void start(const Cli& cli, const std::string& m = "tiny-llama") {
  auto r = cli.run("session start --id t1 --model " + model(m));
  ASSERT_EQ(r.code, 0) << r.err;
}

rapidjson::Document parse(const std::string& s) { return aquin::json::parse(s, "output"); }

bool folder_is_empty(const std::filesystem::path& p) {
  return std::filesystem::is_empty(p);
}

}  // namespace

TEST(CliSession, StartShowAndUse) {
  Cli cli;
  auto r = cli.run("weight-diff --checkpoint " + ckpt("llama-ft-step300.pt"));
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("no current session"), std::string::npos) << r.err;
  start(cli);
  r = cli.run("session show");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("session t1 (current)"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("llama, llm"), std::string::npos) << r.out;
  r = cli.run("session start --id t2 --model " + model("tiny-bert"));
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("bert, embedding"), std::string::npos) << r.out;
  r = cli.run("session list");
  EXPECT_NE(r.out.find("* t2"), std::string::npos) << r.out;
  r = cli.run("session use t1");
  ASSERT_EQ(r.code, 0);
  r = cli.run("session show --id t2");
  EXPECT_NE(r.out.find("session t2\n"), std::string::npos) << r.out;
}

TEST(CliSession, UnresolvableModelSaysWhereItLooked) {
  Cli cli;
  cli.env = "AQUIN_MODELS=/nonexistent/models HF_HOME=/nonexistent/hf";
  auto r = cli.run("session start --id x --model llama-3.2-1b");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("cannot find model 'llama-3.2-1b'"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("/nonexistent/models/llama-3.2-1b"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("/nonexistent/hf/hub/models--meta-llama--Llama-3.2-1B/snapshots"), std::string::npos) << r.err;
  EXPECT_EQ(aquin::test::count_lines(r.err), 1);
}

TEST(CliSession, SlugResolvesFromAquinModelsAndHfCache) {
  Cli cli;
  aquin::test::TempDir models;
  std::filesystem::create_directories(models / "gte-small");
  std::filesystem::copy(model("tiny-bert"), models / "gte-small");
  cli.env = "AQUIN_MODELS=" + models.path().string();
  auto r = cli.run("session start --id g --model gte-small");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find((models / "gte-small").string()), std::string::npos) << r.out;

  aquin::test::TempDir hf;
  auto snap = hf / "hub/models--meta-llama--Llama-3.2-1B/snapshots/abc123";
  std::filesystem::create_directories(snap);
  std::filesystem::create_directories(hf / "hub/models--meta-llama--Llama-3.2-1B/refs");
  aquin::test::write_bytes(hf / "hub/models--meta-llama--Llama-3.2-1B/refs/main", "abc123");
  std::filesystem::copy(model("tiny-llama"), snap);
  cli.env = "HF_HOME=" + hf.path().string();
  r = cli.run("session start --id l --model llama-3.2-1b");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("snapshots/abc123"), std::string::npos) << r.out;
}

TEST(CliSession, UnsupportedModelTypeListsFamilies) {
  Cli cli;
  aquin::test::TempDir m;
  aquin::test::write_bytes(m / "config.json", R"({"model_type": "gpt_neox", "hidden_size": 8})");
  auto r = cli.run("session start --id x --model " + m.path().string());
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("model_type 'gpt_neox' is not supported"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("llama (llm)"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("bert (embedding)"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("a model-adapter plugin adds a family"), std::string::npos) << r.err;
}

TEST(CliWeightDiff, TableJsonAndToolAgree) {
  Cli cli;
  start(cli);
  auto text = cli.run("weight-diff --checkpoint " + ckpt("llama-ft-step300.pt"));
  ASSERT_EQ(text.code, 0) << text.err;
  EXPECT_NE(text.out.find("Per layer: ‖ΔW‖_F (stable rank of ΔW)"), std::string::npos) << text.out;
  EXPECT_NE(text.out.find("(pt step 300)"), std::string::npos) << text.out;

  auto js = cli.run("weight-diff --checkpoint " + ckpt("llama-ft-step300.pt") + " --output json --name ft");
  ASSERT_EQ(js.code, 0) << js.err;
  auto doc = parse(js.out);
  EXPECT_EQ(doc["schema_version"].GetInt(), 1);
  EXPECT_STREQ(doc["card"].GetString(), "weightDiff");
  EXPECT_STREQ(doc["command"].GetString(), "weight-diff");
  EXPECT_STREQ(doc["tool"].GetString(), "run_weight_diff");
  EXPECT_STREQ(doc["name"].GetString(), "ft");
  EXPECT_STREQ(doc["base"]["family"].GetString(), "llama");
  EXPECT_STREQ(doc["base"]["kind"].GetString(), "llm");
  EXPECT_STREQ(doc["checkpoint"]["format"].GetString(), "pt");
  EXPECT_EQ(doc["checkpoint"]["step"].GetInt(), 300);
  ASSERT_EQ(doc["matrices"].Size(), 21u);
  for (const auto& m : doc["matrices"].GetArray()) {
    for (const char* f : {"param", "source_name", "layer", "kind", "shape", "base_norm", "delta_norm", "relative",
                          "stable_rank", "max_abs_delta", "below_noise_floor"})
      EXPECT_TRUE(m.HasMember(f)) << f;
  }
  EXPECT_TRUE(doc["summary"].IsObject());
  EXPECT_TRUE(doc["warnings"].IsArray());

  auto tool = cli.run("tool run_weight_diff --input '{\"checkpoint\": \"" + ckpt("llama-ft-step300.pt") + "\", \"name\": \"ft\"}'");
  ASSERT_EQ(tool.code, 0) << tool.err;
  EXPECT_EQ(tool.out, js.out);
}

TEST(CliWeightDiff, SaveWritesExportAtomically) {
  Cli cli;
  start(cli);
  auto r = cli.run("weight-diff --checkpoint " + ckpt("llama-lora") + " --save --name lora1");
  ASSERT_EQ(r.code, 0) << r.err;
  auto exp = cli.home() / "sessions/t1/exports/weight-diff-lora1.json";
  ASSERT_TRUE(std::filesystem::exists(exp)) << r.out;
  auto doc = parse(aquin::read_text_file(exp));
  EXPECT_STREQ(doc["checkpoint"]["format"].GetString(), "peft-adapter");
  EXPECT_EQ(doc["checkpoint"]["lora"]["modules"].GetInt(), 5);
  aquin::test::TempDir out;
  r = cli.run("weight-diff --checkpoint " + ckpt("llama-lora") + " --save " + (out / "x.json").string());
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(std::filesystem::exists(out / "x.json"));
  auto events = aquin::read_text_file(cli.home() / "sessions/t1/events.jsonl");
  EXPECT_EQ(aquin::test::count_lines(events), 2);
}

TEST(CliWeightDiff, EmbeddingModelGroupsEncoderWeights) {
  Cli cli;
  start(cli, "tiny-bert");
  auto r = cli.run("weight-diff --checkpoint " + ckpt("bert-ft") + " --output json");
  ASSERT_EQ(r.code, 0) << r.err;
  auto doc = parse(r.out);
  EXPECT_STREQ(doc["base"]["kind"].GetString(), "embedding");
  EXPECT_EQ(doc["layers"].Size(), 2u);
  EXPECT_EQ(doc["summary"]["compared"].GetInt(), 39);
}

struct BadInput {
  const char* name;
  const char* checkpoint;  // relative to tests/data/ckpt, or crafted below when empty
  const char* message;
};

class CliBadInput : public ::testing::TestWithParam<BadInput> {};

TEST_P(CliBadInput, OneLineErrorExit1NoExport) {
  Cli cli;
  start(cli);
  aquin::test::TempDir out;
  std::string path = ckpt(GetParam().checkpoint);
  const std::string n = GetParam().name;
  if (n == "truncated") {
    std::string full = aquin::test::read_bytes(model("tiny-llama") + "/model.safetensors");
    path = (out / "cut.safetensors").string();
    aquin::test::write_bytes(path, full.substr(0, full.size() - 100));
  } else if (n == "header_past_end") {
    path = (out / "h.safetensors").string();
    aquin::test::write_bytes(path, std::string("\xff\xff\x00\x00\x00\x00\x00\x00{}", 10));
  } else if (n == "overlap") {
    path = (out / "o.safetensors").string();
    aquin::test::write_bytes(path, aquin::test::safetensors_bytes(
        R"({"lm_head.weight":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},"model.norm.weight":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
        std::string(16, '\0')));
  } else if (n == "unknown_dtype") {
    path = (out / "d.safetensors").string();
    aquin::test::write_bytes(path, aquin::test::safetensors_bytes(
        R"({"lm_head.weight":{"dtype":"Q4_K","shape":[2],"data_offsets":[0,2]}})", std::string(2, '\0')));
  } else if (n == "missing") {
    path = (out / "nope.pt").string();
  }
  std::filesystem::create_directories(out / "exports");
  auto r = cli.run("weight-diff --checkpoint " + path + " --save " + (out / "exports/x.json").string());
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_EQ(aquin::test::count_lines(r.err), 1) << r.err;
  EXPECT_NE(r.err.find(path), std::string::npos) << r.err;
  EXPECT_NE(r.err.find(GetParam().message), std::string::npos) << r.err;
  EXPECT_TRUE(folder_is_empty(out / "exports"));
  EXPECT_TRUE(r.out.empty()) << r.out;
}

INSTANTIATE_TEST_SUITE_P(
    Cases, CliBadInput,
    ::testing::Values(BadInput{"missing", "", "no such file or directory"},
                      BadInput{"truncated", "", "out of range"},
                      BadInput{"header_past_end", "", "past end of file"},
                      BadInput{"overlap", "", "overlap"},
                      BadInput{"unknown_dtype", "", "unknown dtype 'Q4_K'"},
                      BadInput{"shape_mismatch", "llama-mismatch.pt", "shape mismatch with the base model: blocks.0.mlp.up.weight"},
                      BadInput{"nan", "llama-nan.pt", "non-finite weights: blocks.1.attn.k.weight 2 NaN/Inf values"},
                      BadInput{"evil_global", "../pt/evil_global.pt", "pickle global"},
                      BadInput{"legacy", "../pt/legacy.pt", "legacy"},
                      BadInput{"bad_rank", "bad-lora-rank", "disagrees with its tensors"}),
    [](const auto& info) { return std::string(info.param.name); });

TEST(CliWeightDiff, KeepGoingListsBrokenTensors) {
  Cli cli;
  start(cli);
  auto r = cli.run("weight-diff --checkpoint " + ckpt("llama-mismatch.pt") + " --keep-going --output json");
  ASSERT_EQ(r.code, 0) << r.err;
  auto doc = parse(r.out);
  EXPECT_EQ(doc["summary"]["shape_mismatch"].GetInt(), 1);
  EXPECT_EQ(doc["summary"]["missing_in_checkpoint"].GetInt(), 1);
  EXPECT_EQ(doc["summary"]["missing_in_base"].GetInt(), 1);
  EXPECT_EQ(doc["warnings"].Size(), 3u);
}

TEST(CliTools, SchemaMatchesGoldenFile) {
  Cli cli;
  auto r = cli.run("tools");
  ASSERT_EQ(r.code, 0) << r.err;
  auto doc = parse(r.out);
  const rapidjson::Value* wd = nullptr;
  for (const auto& t : doc["tools"].GetArray())
    if (std::string(t["name"].GetString()) == "run_weight_diff") wd = &t;
  ASSERT_NE(wd, nullptr);
  auto golden = parse(aquin::read_text_file(data_dir() / "golden/tool_run_weight_diff.json"));
  EXPECT_EQ(aquin::json::to_text(*wd), aquin::json::to_text(golden))
      << "regenerate with: aquin tools | jq '.tools[] | select(.name==\"run_weight_diff\")'";
}

TEST(CliHelp, CommandHelpComesFromTheDeclaration) {
  Cli cli;
  auto r = cli.run("weight-diff --help");
  ASSERT_EQ(r.code, 0);
  EXPECT_NE(r.out.find("usage: aquin weight-diff --checkpoint PATH"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("--spectral-tol REL"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("--save [PATH]"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("--output text|json"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("agent tool: run_weight_diff"), std::string::npos) << r.out;
}
