// `aquin merge-analysis` end to end through the real binary, on the adapters of
// tests/fixtures/make_merge_fixtures.py (verdicts and reasons in tests/data/merge/expected.json).
#include "cli_runner.hpp"

#include <aquin/sdk/atomic_file.hpp>
#include <aquin/sdk/checkpoint.hpp>
#include <aquin/sdk/json.hpp>
#include <aquin/sdk/safetensors.hpp>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <map>
#include <set>
#include <tuple>

using aquin::test::Cli;

namespace {

std::filesystem::path merge_dir() { return aquin::test::data_dir() / "merge"; }
std::string adapter(const std::string& name) { return (merge_dir() / name).string(); }

// libgomp's threads spin while they wait; on a CI runner shared with other jobs every small
// parallel region then costs a scheduler slice, and these tiny models take seconds instead of
// tenths. Passive waiting keeps the tests fast without changing what they check.
constexpr const char* kPassiveWait = "OMP_WAIT_POLICY=passive";

void start(const Cli& cli, const std::string& model = (merge_dir() / "base").string()) {
  auto r = cli.run("session start --id m --model " + model);
  ASSERT_EQ(r.code, 0) << r.err;
}

rapidjson::Document parse(const std::string& s) { return aquin::json::parse(s, "output"); }

using Key = std::tuple<std::string, std::string, std::string>;

std::set<Key> reason_keys(const rapidjson::Value& doc) {
  std::set<Key> s;
  for (const auto& r : doc["reasons"].GetArray())
    s.emplace(r["signal"].GetString(), r["param"].GetString(), r["severity"].GetString());
  return s;
}

const rapidjson::Document& expected() {
  static rapidjson::Document d =
      aquin::json::parse(aquin::read_text_file(merge_dir() / "expected.json"), "merge/expected.json");
  return d;
}

std::string quoted(const std::filesystem::path& p) { return "'" + p.string() + "'"; }

}  // namespace

// Every fixture adapter: the verdict, the exact set of reasons and the exit code.
class MergeCli : public ::testing::TestWithParam<const char*> {};

TEST_P(MergeCli, VerdictReasonsAndExitCode) {
  Cli cli;
  cli.env = kPassiveWait;
  start(cli);
  const std::string name = GetParam();
  auto r = cli.run("merge-analysis --checkpoint " + adapter(name) + " --output json");
  const auto& exp = expected()[name.c_str()];
  const std::string want = exp["verdict"].GetString();
  EXPECT_EQ(r.code, want == "fail" ? 2 : 0) << r.err;
  auto doc = parse(r.out);
  EXPECT_EQ(doc["mergeVerdict"].GetString(), want);
  std::set<Key> want_reasons;
  for (const auto& x : exp["reasons"].GetArray())
    want_reasons.emplace(x[0].GetString(), x[1].GetString(), x[2].GetString());
  EXPECT_EQ(reason_keys(doc), want_reasons);
  for (const auto& x : doc["reasons"].GetArray()) {
    for (const char* f : {"signal", "param", "value", "threshold", "severity", "detail"}) EXPECT_TRUE(x.HasMember(f)) << f;
    if (std::string(x["signal"].GetString()) != "non_finite") {
      EXPECT_TRUE(x["value"].IsNumber());
      EXPECT_TRUE(x["threshold"].IsNumber());
    }
  }
  // Fail reasons come first.
  bool seen_warn = false;
  for (const auto& x : doc["reasons"].GetArray()) {
    if (std::string(x["severity"].GetString()) == "warn") seen_warn = true;
    else EXPECT_FALSE(seen_warn) << "a fail reason after a warn one";
  }
}

INSTANTIATE_TEST_SUITE_P(MergeAdapters, MergeCli,
                         ::testing::Values("lora-healthy", "lora-collapsed", "lora-intruder", "lora-noise", "lora-outlier",
                                           "lora-nan"),
                         [](const auto& info) {
                           std::string s = info.param;
                           for (auto& c : s) c = c == '-' ? '_' : c;
                           return s;
                         });

TEST(MergeCliExport, FieldsThresholdsTimingsAndWeightDiff) {
  Cli cli;
  cli.env = kPassiveWait;
  start(cli);
  auto r = cli.run("merge-analysis --checkpoint " + adapter("lora-intruder") + " --output json --name gate");
  ASSERT_EQ(r.code, 0) << r.err;
  auto doc = parse(r.out);
  EXPECT_EQ(doc["card"].GetString(), std::string("mergeAnalysis"));
  EXPECT_EQ(doc["command"].GetString(), std::string("merge-analysis"));
  EXPECT_EQ(doc["tool"].GetString(), std::string("run_merge_analysis"));
  EXPECT_EQ(doc["name"].GetString(), std::string("gate"));
  EXPECT_EQ(doc["mergeVerdict"].GetString(), std::string("warn"));
  EXPECT_FALSE(doc["behavioral"].GetBool());
  EXPECT_EQ(doc["verdict_basis"].GetString(), std::string("weights"));
  // The intruder reason, with its value and threshold.
  ASSERT_EQ(doc["reasons"].Size(), 1u);
  const auto& reason = doc["reasons"][0];
  EXPECT_EQ(reason["signal"].GetString(), std::string("intruder"));
  EXPECT_EQ(reason["param"].GetString(), std::string("blocks.2.attn.v.weight"));
  EXPECT_LT(reason["value"].GetDouble(), 0.25);  // exactly ~0.001; see MergeFixture for why the two differ
  EXPECT_DOUBLE_EQ(reason["threshold"].GetDouble(), 0.5);
  EXPECT_EQ(reason["intruders"].GetDouble(), 1);
  // Thresholds used, and where they came from.
  EXPECT_DOUBLE_EQ(doc["thresholds"]["intruder_cos"].GetDouble(), 0.5);
  EXPECT_EQ(doc["thresholds"]["intruder_top_k"].GetInt(), 10);
  EXPECT_EQ(doc["thresholds_source"]["outlier_z"].GetString(), std::string("default"));
  EXPECT_TRUE(doc["thresholds_file"].IsNull());
  // Each signal's time, and the weight-diff summary and per-matrix figures.
  for (const char* s : {"open", "weight_diff", "integrity", "stable_rank", "rank_collapse", "relative_change_outlier",
                        "intruders", "total"})
    EXPECT_TRUE(doc["timings_s"][s].IsNumber()) << s;
  for (const char* s : {"integrity", "stable_rank", "rank_collapse", "relative_change_outlier", "intruders"})
    EXPECT_TRUE(doc["signals"][s]["evaluated"].IsInt()) << s;
  EXPECT_EQ(doc["signals"]["intruders"]["evaluated"].GetInt(), 42);
  EXPECT_EQ(doc["checkpoint"]["format"].GetString(), std::string("peft-adapter"));
  EXPECT_EQ(doc["summary"]["compared"].GetInt(), 42);
  ASSERT_EQ(doc["matrices"].Size(), 42u);
  for (const auto& m : doc["matrices"].GetArray()) {
    for (const char* f : {"param", "relative", "stable_rank", "lora_rank", "merge"}) EXPECT_TRUE(m.HasMember(f)) << f;
    const auto& merge = m["merge"];
    EXPECT_TRUE(merge["relative_z"].IsNumber());
    EXPECT_TRUE(merge["stable_rank_ratio"].IsNumber());
    EXPECT_EQ(merge["peers"].GetInt(), 6);
    const auto& intr = merge["intruders"];
    EXPECT_EQ(intr["vectors"].Size(), 10u);
    EXPECT_EQ(intr["method"].GetString(), std::string("randomized"));
    EXPECT_EQ(intr["count"].GetInt(), std::string(m["param"].GetString()) == "blocks.2.attn.v.weight" ? 1 : 0);
  }
  EXPECT_TRUE(doc["warnings"].IsArray());
  EXPECT_EQ(doc["warnings"].Size(), 0u);
}

TEST(MergeCliExport, TextSaveAndTool) {
  Cli cli;
  cli.env = kPassiveWait;
  start(cli);
  auto r = cli.run("merge-analysis --checkpoint " + adapter("lora-outlier") + " --save --name o");
  EXPECT_EQ(r.code, 2) << r.err;
  EXPECT_NE(r.out.find("merge verdict: FAIL (1 fail, 1 warn; weight-only)"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("exit code 2"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("Reasons"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("blocks.4.attn.o.weight"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("relative_change_outlier"), std::string::npos) << r.out;
  // A failed verdict is still a complete export.
  auto saved = parse(aquin::read_text_file(cli.home() / "sessions/m/exports/merge-analysis-o.json"));
  EXPECT_EQ(saved["mergeVerdict"].GetString(), std::string("fail"));
  auto events = aquin::read_text_file(cli.home() / "sessions/m/events.jsonl");
  EXPECT_NE(events.find("\"exit_code\":2"), std::string::npos) << events;

  auto tool = cli.run("tool run_merge_analysis --input '{\"checkpoint\": \"" + adapter("lora-outlier") +
                      "\", \"outlier_fail_z\": 1000}'");
  EXPECT_EQ(tool.code, 0) << tool.err;  // the fail threshold raised past the outlier: warn only
  auto doc = parse(tool.out);
  EXPECT_EQ(doc["mergeVerdict"].GetString(), std::string("warn"));
  EXPECT_EQ(doc["thresholds_source"]["outlier_fail_z"].GetString(), std::string("flag"));
}

TEST(MergeCliThresholds, FileAndFlagsOverrideDefaults) {
  Cli cli;
  cli.env = kPassiveWait;
  start(cli);
  aquin::test::TempDir dir;
  aquin::test::write_bytes(dir / "t.json", R"({"intruder_cos": 0.0, "collapse_stable_rank": 1.0})");
  auto r = cli.run("merge-analysis --checkpoint " + adapter("lora-intruder") + " --thresholds " +
                   quoted(dir / "t.json") + " --output json");
  ASSERT_EQ(r.code, 0) << r.err;
  auto doc = parse(r.out);
  EXPECT_EQ(doc["mergeVerdict"].GetString(), std::string("pass"));
  EXPECT_EQ(doc["thresholds_source"]["intruder_cos"].GetString(), std::string("file"));
  EXPECT_EQ(doc["thresholds_file"].GetString(), (dir / "t.json").string());
  // A flag beats the file.
  r = cli.run("merge-analysis --checkpoint " + adapter("lora-collapsed") + " --thresholds " + quoted(dir / "t.json") +
              " --collapse-stable-rank 1.2 --output json");
  doc = parse(r.out);
  EXPECT_EQ(doc["mergeVerdict"].GetString(), std::string("warn"));
  EXPECT_DOUBLE_EQ(doc["thresholds"]["collapse_stable_rank"].GetDouble(), 1.2);
  EXPECT_EQ(doc["thresholds_source"]["collapse_stable_rank"].GetString(), std::string("flag"));
  // Unknown keys are an error naming the key; nothing is printed on stdout.
  aquin::test::write_bytes(dir / "bad.json", R"({"outlier_z": 4, "intruder_cosine": 0.3})");
  r = cli.run("merge-analysis --checkpoint " + adapter("lora-healthy") + " --thresholds " + quoted(dir / "bad.json"));
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("unknown threshold 'intruder_cosine'"), std::string::npos) << r.err;
  EXPECT_EQ(aquin::test::count_lines(r.err), 1) << r.err;
  EXPECT_TRUE(r.out.empty());
  r = cli.run("merge-analysis --checkpoint " + adapter("lora-healthy") + " --intruder-cos 2");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("--intruder-cos"), std::string::npos) << r.err;
}

// The LLM fixture of make_llm_goldens.py with a one-token-per-byte tokenizer, so that text prompts
// are exactly the golden token ids (make_behavior_goldens.py's float64 greedy decoding).
class MergeCliBehavioral : public ::testing::Test {
 protected:
  void SetUp() override {
    cli.env = kPassiveWait;
    std::filesystem::copy(aquin::test::data_dir() / "llm/llama3-gqa", dir / "base");
    aquin::test::write_bytes(dir / "base/tokenizer.json", aquin::test::byte_tokenizer_json(128));
    start(cli, (dir / "base").string());
    golden = aquin::json::parse(aquin::read_text_file(aquin::test::data_dir() / "llm/golden/behavior.json"), "behavior.json");
    std::string arr = "[";
    for (const auto& p : golden["prompts"].GetArray()) {
      std::string text;
      for (const auto& id : p["ids"].GetArray()) {
        char buf[8];
        std::snprintf(buf, sizeof buf, "\\u%04x", id.GetInt());
        text += buf;
      }
      arr += (arr.size() > 1 ? ", \"" : "\"") + text + "\"";
    }
    aquin::test::write_bytes(dir / "probes.json", arr + "]\n");
  }
  std::string run_args(const std::string& ck) const {
    return "merge-analysis --checkpoint " + ck + " --prompts " + quoted(dir / "probes.json") + " --new-tokens " +
           std::to_string(golden["new_tokens"].GetInt());
  }
  Cli cli;
  aquin::test::TempDir dir;
  rapidjson::Document golden;
};

std::vector<int64_t> ids_of(const rapidjson::Value& v) {
  std::vector<int64_t> out;
  for (const auto& x : v.GetArray()) out.push_back(x.GetInt64());
  return out;
}

// The base laid over itself: every score is exact, the verdict rests on weights and behaviour.
TEST_F(MergeCliBehavioral, IdenticalModelsScoreZero) {
  auto r = cli.run(run_args((dir / "base").string()) + " --output json");
  ASSERT_EQ(r.code, 0) << r.err;
  auto doc = parse(r.out);
  EXPECT_TRUE(doc["behavioral"].GetBool());
  EXPECT_EQ(doc["verdict_basis"].GetString(), std::string("weights+behavior"));
  EXPECT_EQ(doc["mergeVerdict"].GetString(), std::string("pass"));
  const auto& s = doc["behavioral_scores"]["summary"];
  EXPECT_EQ(s["mean_kl"].GetDouble(), 0.0);
  EXPECT_EQ(s["top1_agreement"].GetDouble(), 1.0);
  EXPECT_EQ(s["mean_edit_fraction"].GetDouble(), 0.0);
  EXPECT_EQ(doc["signals"]["behavior"]["evaluated"].GetInt(), 2);
  EXPECT_EQ(doc["warnings"].Size(), 0u);
  const auto& rows = doc["behavioral_scores"]["per_prompt"];
  ASSERT_EQ(rows.Size(), 2u);
  for (rapidjson::SizeType i = 0; i < 2; ++i) {
    EXPECT_EQ(ids_of(rows[i]["base_continuation_ids"]), ids_of(golden["prompts"][i]["base_greedy"]));
    EXPECT_EQ(rows[i]["tokens"].GetInt(), static_cast<int>(golden["prompts"][i]["ids"].Size()));
  }
}

// The LoRA adapter: scores match the float64 reference, and the default thresholds fail it
// (mean KL 1.04 nats > 1.0, top-1 agreement 0 < 0.3; continuations all differ: > 0.9 warns).
TEST_F(MergeCliBehavioral, LoraScoresMatchGoldenAndFeedTheVerdict) {
  const std::string lora = (aquin::test::data_dir() / "llm/llama3-gqa-lora").string();
  auto r = cli.run(run_args(lora) + " --output json");
  ASSERT_EQ(r.code, 2) << r.err;
  auto doc = parse(r.out);
  EXPECT_EQ(doc["mergeVerdict"].GetString(), std::string("fail"));
  const auto& rows = doc["behavioral_scores"]["per_prompt"];
  ASSERT_EQ(rows.Size(), golden["prompts"].Size());
  double mean_kl = 0, mean_edit = 0, agree = 0;
  for (rapidjson::SizeType i = 0; i < rows.Size(); ++i) {
    const auto& g = golden["prompts"][i];
    EXPECT_NEAR(rows[i]["kl"].GetDouble(), g["kl"].GetDouble(), 1e-4 * g["kl"].GetDouble()) << i;
    EXPECT_EQ(rows[i]["top1_agree"].GetBool(), g["top1_agree"].GetBool()) << i;
    EXPECT_EQ(ids_of(rows[i]["base_continuation_ids"]), ids_of(g["base_greedy"])) << i;
    EXPECT_EQ(ids_of(rows[i]["ft_continuation_ids"]), ids_of(g["lora_greedy"])) << i;
    EXPECT_EQ(rows[i]["edit_distance"].GetInt(), g["edit_distance"].GetInt()) << i;
    mean_kl += g["kl"].GetDouble() / rows.Size();
    const double len = std::max(g["base_greedy"].Size(), g["lora_greedy"].Size());
    mean_edit += g["edit_distance"].GetDouble() / len / rows.Size();
    agree += g["top1_agree"].GetBool() ? 1.0 / rows.Size() : 0.0;
  }
  const auto& summary = doc["behavioral_scores"]["summary"];
  EXPECT_DOUBLE_EQ(summary["mean_edit_fraction"].GetDouble(), mean_edit);
  EXPECT_DOUBLE_EQ(summary["top1_agreement"].GetDouble(), agree);
  EXPECT_NEAR(doc["behavioral_scores"]["summary"]["mean_kl"].GetDouble(), mean_kl, 1e-4 * mean_kl);
  std::map<std::string, const rapidjson::Value*> by_signal;
  for (const auto& x : doc["reasons"].GetArray()) by_signal[x["signal"].GetString()] = &x;
  ASSERT_TRUE(by_signal.count("behavior_kl"));
  EXPECT_EQ((*by_signal["behavior_kl"])["severity"].GetString(), std::string("fail"));
  EXPECT_EQ((*by_signal["behavior_kl"])["threshold"].GetDouble(), 1.0);
  EXPECT_NEAR((*by_signal["behavior_kl"])["value"].GetDouble(), mean_kl, 1e-4 * mean_kl);
  ASSERT_TRUE(by_signal.count("behavior_top1"));
  EXPECT_EQ((*by_signal["behavior_top1"])["severity"].GetString(), std::string("fail"));
  EXPECT_EQ((*by_signal["behavior_top1"])["value"].GetDouble(), 0.0);
  ASSERT_TRUE(by_signal.count("behavior_greedy_edit"));
  EXPECT_EQ((*by_signal["behavior_greedy_edit"])["severity"].GetString(), std::string("warn"));
  EXPECT_DOUBLE_EQ((*by_signal["behavior_greedy_edit"])["value"].GetDouble(), mean_edit);
  EXPECT_EQ(doc["thresholds"]["behavior_kl_fail"].GetDouble(), 1.0);

  // Laxer behavioural thresholds from a file: no behavioural reason is left.
  aquin::test::write_bytes(dir / "lax.json",
                           R"({"behavior_kl_warn": 2, "behavior_kl_fail": 5, "behavior_top1_warn": 0,
                               "behavior_top1_fail": 0, "behavior_edit_warn": 1})");
  r = cli.run(run_args(lora) + " --thresholds " + quoted(dir / "lax.json") + " --output json");
  ASSERT_TRUE(r.code == 0 || r.code == 2) << r.err;
  doc = parse(r.out);
  for (const auto& x : doc["reasons"].GetArray())
    EXPECT_EQ(std::string(x["signal"].GetString()).rfind("behavior", 0), std::string::npos) << x["signal"].GetString();
  EXPECT_EQ(doc["thresholds_source"]["behavior_kl_fail"].GetString(), std::string("file"));

  // The terminal names the verdict's basis and shows the probes.
  r = cli.run(run_args(lora));
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.out.find("weights and behaviour"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("Behaviour on 2 probe prompts"), std::string::npos) << r.out;
}

TEST_F(MergeCliBehavioral, OptOutAndBadInput) {
  // --no-behavioral: the probes do not run and nothing is said about them.
  auto r = cli.run(run_args((dir / "base").string()) + " --no-behavioral --output json");
  ASSERT_EQ(r.code, 0) << r.err;
  auto doc = parse(r.out);
  EXPECT_FALSE(doc["behavioral"].GetBool());
  EXPECT_FALSE(doc["behavioral_requested"].GetBool());
  EXPECT_TRUE(doc["behavioral_scores"].IsNull());
  EXPECT_EQ(doc["verdict_basis"].GetString(), std::string("weights"));
  EXPECT_EQ(doc["warnings"].Size(), 0u);
  // A prompts file that is not there, or is malformed, is an input error before any work.
  r = cli.run("merge-analysis --checkpoint " + (dir / "base").string() + " --prompts " + quoted(dir / "nope.txt"));
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("nope.txt: no such file"), std::string::npos) << r.err;
  aquin::test::write_bytes(dir / "bad.jsonl", "\"fine\"\n{\"text\": 3}\n");
  r = cli.run("merge-analysis --checkpoint " + (dir / "base").string() + " --prompts " + quoted(dir / "bad.jsonl"));
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("bad.jsonl: line 2"), std::string::npos) << r.err;
  EXPECT_EQ(aquin::test::count_lines(r.err), 1) << r.err;
  EXPECT_TRUE(r.out.empty());
  r = cli.run(run_args((dir / "base").string()) + " --new-tokens 0");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("--new-tokens"), std::string::npos) << r.err;
  // A base model without a tokenizer cannot run probes: said before any weight is read.
  ASSERT_EQ(cli.run("session start --id bare --model " + (aquin::test::data_dir() / "llm/llama3-gqa").string()).code, 0);
  r = cli.run(run_args((aquin::test::data_dir() / "llm/llama3-gqa-lora").string()));
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("no tokenizer"), std::string::npos) << r.err;
  EXPECT_EQ(aquin::test::count_lines(r.err), 1) << r.err;
  ASSERT_EQ(cli.run("session use m").code, 0);
  // Inconsistent behavioural thresholds are a usage error.
  r = cli.run(run_args((dir / "base").string()) + " --behavior-kl-warn 2 --behavior-kl-fail 1");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("behavior_kl_fail"), std::string::npos) << r.err;
}

// The agent tool runs the same probes and prints the same document as the CLI.
TEST_F(MergeCliBehavioral, ToolMatchesCli) {
  const std::string lora = (aquin::test::data_dir() / "llm/llama3-gqa-lora").string();
  auto cli_out = cli.run(run_args(lora) + " --output json");
  auto tool = cli.run("tool run_merge_analysis --input '{\"checkpoint\": \"" + lora + "\", \"prompts\": \"" +
                      (dir / "probes.json").string() + "\", \"new_tokens\": 4}'");
  EXPECT_EQ(tool.code, 2) << tool.err;
  auto a = parse(cli_out.out), b = parse(tool.out);
  EXPECT_EQ(aquin::json::to_text(a["behavioral_scores"]), aquin::json::to_text(b["behavioral_scores"]));
  EXPECT_EQ(aquin::json::to_text(a["reasons"]), aquin::json::to_text(b["reasons"]));
}

TEST(MergeCliEmbedding, BehavioralAsksGetAWeightOnlyVerdict) {
  Cli cli;
  cli.env = kPassiveWait;
  start(cli, (aquin::test::data_dir() / "models/tiny-bert").string());
  aquin::test::TempDir dir;
  aquin::test::write_bytes(dir / "p.jsonl", "\"query: hello\"\n");
  auto r = cli.run("merge-analysis --checkpoint " + (aquin::test::data_dir() / "ckpt/bert-ft").string() + " --prompts " +
                   quoted(dir / "p.jsonl") + " --output json");
  ASSERT_TRUE(r.code == 0 || r.code == 2) << r.err;
  auto doc = parse(r.out);
  EXPECT_EQ(doc["base"]["kind"].GetString(), std::string("embedding"));
  EXPECT_EQ(doc["verdict_basis"].GetString(), std::string("weights"));
  EXPECT_FALSE(doc["behavioral"].GetBool());
  ASSERT_EQ(doc["warnings"].Size(), 1u);
  EXPECT_NE(std::string(doc["warnings"][0].GetString()).find("apply to LLMs"), std::string::npos);
  // Two layers are too few peers for a robust score: said, not silently skipped.
  EXPECT_EQ(doc["signals"]["relative_change_outlier"]["evaluated"].GetInt(), 0);
  EXPECT_GT(doc["signals"]["relative_change_outlier"]["notes"].Size(), 0u);
}

// A merged checkpoint (the healthy adapter folded into the base, fp32), then broken three ways.
TEST(MergeCliMerged, DenseCheckpointPassesAndBrokenOnesFail) {
  auto base = aquin::open_model_weights(merge_dir() / "base");
  aquin::Checkpoint ck = aquin::open_checkpoint(merge_dir() / "lora-healthy");
  std::vector<std::pair<std::string, at::Tensor>> merged;
  for (const auto& info : base->tensors()) {
    at::Tensor w = base->load(info.name).to(at::kFloat);
    const std::string module = info.name.substr(0, info.name.size() - std::string(".weight").size());
    for (const auto& m : ck.lora)
      if (m.target == module || m.target == "base_model.model." + module)
        w = w + m.scale * at::mm(ck.tensors->load(m.b_name).to(at::kFloat), ck.tensors->load(m.a_name).to(at::kFloat));
    merged.emplace_back(info.name, w.contiguous());
  }
  aquin::test::TempDir dir;
  auto write = [&](const std::string& name, const std::vector<std::pair<std::string, at::Tensor>>& tensors) {
    std::filesystem::create_directories(dir / name);
    std::filesystem::copy_file(merge_dir() / "base/config.json", dir / name / "config.json");
    aquin::write_safetensors(dir / name / "model.safetensors", tensors);
    return (dir / name).string();
  };
  Cli cli;
  cli.env = kPassiveWait;
  start(cli);
  auto r = cli.run("merge-analysis --checkpoint " + write("merged", merged) + " --output json");
  EXPECT_EQ(r.code, 0) << r.err;
  auto doc = parse(r.out);
  EXPECT_EQ(doc["mergeVerdict"].GetString(), std::string("pass")) << aquin::json::to_text(doc["reasons"]);
  EXPECT_EQ(doc["checkpoint"]["format"].GetString(), std::string("hf-safetensors"));
  EXPECT_EQ(doc["signals"]["intruders"]["evaluated"].GetInt(), 42);  // unchanged tensors are not analysed
  EXPECT_GT(doc["signals"]["stable_rank"]["evaluated"].GetInt(), 0);

  // Drop one tensor, add one the base lacks, change a shape, plant a NaN.
  auto broken = merged;
  broken.erase(broken.begin() + 3);
  broken.emplace_back("model.layers.0.mlp.extra_proj.weight", at::zeros({4, 4}));
  for (auto& [n, t] : broken) {
    if (n == "model.layers.1.self_attn.q_proj.weight") t = at::zeros({64, 128});
    if (n == "model.layers.2.mlp.up_proj.weight") {
      t = t.clone();
      t[0][0] = NAN;
    }
  }
  const std::string dropped = merged[3].first;
  r = cli.run("merge-analysis --checkpoint " + write("broken", broken) + " --output json");
  EXPECT_EQ(r.code, 2) << r.err;
  doc = parse(r.out);
  EXPECT_EQ(doc["mergeVerdict"].GetString(), std::string("fail"));
  const auto keys = reason_keys(doc);
  EXPECT_TRUE(keys.count({"shape_mismatch", "blocks.1.attn.q.weight", "fail"})) << aquin::json::to_text(doc["reasons"]);
  EXPECT_TRUE(keys.count({"non_finite", "blocks.2.mlp.up.weight", "fail"})) << aquin::json::to_text(doc["reasons"]);
  EXPECT_TRUE(keys.count({"missing_in_base", "model.layers.0.mlp.extra_proj.weight", "fail"}))
      << aquin::json::to_text(doc["reasons"]);
  int missing = 0;
  for (const auto& [s, p, sev] : keys) missing += s == "missing_in_checkpoint";
  EXPECT_EQ(missing, 1) << dropped;
}

TEST(MergeCliHelp, HelpAndToolSchemaComeFromTheDeclaration) {
  Cli cli;
  cli.env = kPassiveWait;
  auto r = cli.run("merge-analysis --help");
  ASSERT_EQ(r.code, 0);
  for (const char* s : {"usage: aquin merge-analysis --checkpoint PATH", "--prompts FILE", "--no-behavioral",
                        "--thresholds FILE", "--max-stable-rank-ratio X", "--collapse-stable-rank X", "--intruder-cos X",
                        "--outlier-z X", "agent tool: run_merge_analysis"})
    EXPECT_NE(r.out.find(s), std::string::npos) << s << "\n" << r.out;
  r = cli.run("tools");
  ASSERT_EQ(r.code, 0) << r.err;
  auto doc = parse(r.out);
  const rapidjson::Value* tool = nullptr;
  for (const auto& t : doc["tools"].GetArray())
    if (std::string(t["name"].GetString()) == "run_merge_analysis") tool = &t;
  ASSERT_NE(tool, nullptr);
  auto golden = parse(aquin::read_text_file(merge_dir() / "tool_run_merge_analysis.json"));
  EXPECT_EQ(aquin::json::to_text(*tool), aquin::json::to_text(golden))
      << "regenerate with: aquin tools | jq '.tools[] | select(.name==\"run_merge_analysis\")'";
}
