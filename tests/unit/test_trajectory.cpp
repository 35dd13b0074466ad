// trajectory-analysis: the base-norm cache in the weight-diff core, and the command end to end
// through the real binary on trajectories generated here (base + k·D, so ‖ΔW‖ is known to scale with k)
// mixed with the committed fixtures (.pt with a step, a sharded bf16 folder, a LoRA adapter).
#include "cli_runner.hpp"

#include <aquin/sdk/atomic_file.hpp>
#include <aquin/sdk/checkpoint.hpp>
#include <aquin/sdk/json.hpp>
#include <aquin/sdk/safetensors.hpp>
#include <aquin/sdk/weight_diff.hpp>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <map>

using aquin::test::Cli;
using aquin::test::TempDir;
using aquin::test::data_dir;
namespace fs = std::filesystem;

namespace {

fs::path base_model() { return data_dir() / "models/tiny-llama"; }
fs::path ckpt(const std::string& c) { return data_dir() / "ckpt" / c; }

// An HF folder (config.json + model.safetensors) holding base + factor·D, with D fixed by the seed:
// its ‖ΔW‖_F is factor·‖D‖_F and its stable ranks do not depend on factor.
void write_scaled_checkpoint(const fs::path& dir, double factor) {
  auto base = aquin::open_model_weights(base_model());
  at::manual_seed(1234);
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  for (const auto& info : base->tensors()) {
    at::Tensor w = base->load(info.name).to(at::kFloat);
    at::Tensor d = at::randn(w.sizes()) * 0.01;
    tensors.emplace_back(info.name, w + d * factor);
  }
  fs::create_directories(dir);
  fs::copy_file(base_model() / "config.json", dir / "config.json", fs::copy_options::overwrite_existing);
  aquin::write_safetensors(dir / "model.safetensors", tensors);
}

void start_session(const Cli& cli) {
  auto r = cli.run("session start --id t --model '" + base_model().string() + "'");
  ASSERT_EQ(r.code, 0) << r.err;
}

rapidjson::Document parse(const std::string& s) { return aquin::json::parse(s, "output"); }

const rapidjson::Value& row_named(const rapidjson::Document& doc, const std::string& name) {
  for (const auto& r : doc["rows"].GetArray())
    if (name == r["name"].GetString()) return r;
  ADD_FAILURE() << "no row named " << name;
  static rapidjson::Value none;
  return none;
}

std::vector<std::string> row_names(const rapidjson::Document& doc) {
  std::vector<std::string> out;
  for (const auto& r : doc["rows"].GetArray()) out.push_back(r["name"].GetString());
  return out;
}

void expect_rel(double got, double want, double tol, const std::string& what) {
  EXPECT_LE(std::abs(got - want), tol * std::max(std::abs(want), 1e-30)) << what << ": got " << got << " want " << want;
}

std::string q(const fs::path& p) { return "'" + p.string() + "'"; }

// Bitwise the same figure, NaN included (a figure that does not apply is NaN on both sides).
bool same(double a, double b) { return (std::isnan(a) && std::isnan(b)) || a == b; }

}  // namespace

TEST(TrajectoryNormCache, FilledOnceThenReadInsteadOfRecomputed) {
  auto base = aquin::open_model_weights(base_model());
  aquin::Checkpoint ft = aquin::open_checkpoint(ckpt("llama-ft-step300.pt"));
  const aquin::WeightDiff plain = aquin::compute_weight_diff(*base, ft, "llama");

  aquin::BaseNormCache cache;
  aquin::WeightDiffOptions opts;
  opts.base_norms = &cache;
  const aquin::WeightDiff first = aquin::compute_weight_diff(*base, ft, "llama", opts);
  EXPECT_EQ(cache.origin, base->origin());
  EXPECT_EQ(cache.norms.size(), 21u);
  ASSERT_EQ(first.matrices.size(), plain.matrices.size());
  for (std::size_t i = 0; i < plain.matrices.size(); ++i) {
    const auto &a = first.matrices[i], &b = plain.matrices[i];
    EXPECT_TRUE(same(a.base_norm, b.base_norm) && same(a.delta_norm, b.delta_norm) &&
                same(a.spectral_norm, b.spectral_norm) && same(a.stable_rank, b.stable_rank))
        << b.param;
    EXPECT_EQ(cache.norms.at(plain.matrices[i].base_source_name), plain.matrices[i].base_norm);
  }
  EXPECT_EQ(first.total_base_norm, plain.total_base_norm);

  // A planted value shows up in the result: the cached norm is read, not recomputed, for merged
  // checkpoints and for adapters alike, and ΔW itself is unaffected.
  const std::string q_name = "model.layers.0.self_attn.q_proj.weight";
  cache.norms.at(q_name) = 1000.0;
  const aquin::WeightDiff again = aquin::compute_weight_diff(*base, ft, "llama", opts);
  aquin::Checkpoint lora = aquin::open_checkpoint(ckpt("llama-lora"));
  const aquin::WeightDiff adapter = aquin::compute_weight_diff(*base, lora, "llama", opts);
  auto find = [&](const aquin::WeightDiff& wd) -> const aquin::MatrixDiff& {
    for (const auto& m : wd.matrices)
      if (m.param == "blocks.0.attn.q.weight") return m;
    throw std::runtime_error("no blocks.0.attn.q.weight");
  };
  EXPECT_EQ(find(again).base_norm, 1000.0);
  EXPECT_EQ(find(again).delta_norm, find(plain).delta_norm);
  EXPECT_EQ(find(adapter).base_norm, 1000.0);
  EXPECT_EQ(cache.norms.size(), 21u);

  // A cache met with another base store starts afresh.
  auto other = aquin::open_model_weights(data_dir() / "models/tiny-llama-bf16");
  aquin::compute_weight_diff(*other, ft, "llama", opts);
  EXPECT_EQ(cache.origin, other->origin());
  EXPECT_NE(cache.norms.at(q_name), 1000.0);
}

TEST(TrajectoryCli, OrdersByStepRecordsTheSourceAndScalesAsExpected) {
  Cli cli;
  start_session(cli);
  TempDir t;
  const fs::path run = t / "run";
  for (int step : {100, 200, 400}) write_scaled_checkpoint(run / ("checkpoint-" + std::to_string(step)), step / 100.0);
  write_scaled_checkpoint(run / "nested/deeper/checkpoint-50", 0.5);
  // The step inside the .pt wins over the number in its name.
  fs::copy_file(ckpt("llama-ft-step300.pt"), run / "run-999.pt");
  // trainer_state.json's global_step wins over the name; optimizer.pt beside it is training state.
  fs::copy(ckpt("llama-ft-bf16-sharded"), run / "checkpoint-900");
  aquin::test::write_bytes(run / "checkpoint-900/trainer_state.json", R"({"global_step": 250, "epoch": 1.0})");
  aquin::test::write_bytes(run / "checkpoint-900/optimizer.pt", "not a checkpoint");
  // No step anywhere: listed last.
  fs::copy(ckpt("llama-lora"), run / "adapter");
  fs::create_directories(run / ".cache");
  aquin::test::write_bytes(run / ".cache/ignored.pt", "hidden");
  aquin::test::write_bytes(run / "scheduler.pt", "training state");

  auto r = cli.run("trajectory-analysis --dir " + q(run) + " --output json --name traj");
  ASSERT_EQ(r.code, 0) << r.err << r.out;
  auto doc = parse(r.out);
  EXPECT_STREQ(doc["card"].GetString(), "trajectoryAnalysis");
  EXPECT_STREQ(doc["tool"].GetString(), "run_trajectory_analysis");
  EXPECT_STREQ(doc["command"].GetString(), "trajectory-analysis");
  EXPECT_STREQ(doc["name"].GetString(), "traj");
  EXPECT_EQ(row_names(doc), (std::vector<std::string>{"nested/deeper/checkpoint-50", "checkpoint-100", "checkpoint-200",
                                                      "checkpoint-900", "run-999.pt", "checkpoint-400", "adapter"}));
  std::map<std::string, std::pair<int64_t, std::string>> steps = {
      {"checkpoint-100", {100, "name"}}, {"checkpoint-900", {250, "trainer_state"}}, {"run-999.pt", {300, "pt"}}};
  for (const auto& [name, want] : steps) {
    const auto& row = row_named(doc, name);
    EXPECT_EQ(row["step"].GetInt64(), want.first) << name;
    EXPECT_EQ(row["step_source"].GetString(), want.second) << name;
  }
  EXPECT_TRUE(row_named(doc, "adapter")["step"].IsNull());
  EXPECT_TRUE(row_named(doc, "adapter")["step_source"].IsNull());
  EXPECT_STREQ(row_named(doc, "adapter")["relative_scope"].GetString(), "adapted matrices");
  EXPECT_TRUE(doc["warnings"].GetArray().Empty()) << r.out;

  // base + k·D: ‖ΔW‖ scales with k; stable ranks do not.
  const auto& unit = row_named(doc, "checkpoint-100");
  const double d1 = unit["total_delta_norm"].GetDouble();
  EXPECT_GT(d1, 0);
  for (auto [name, k] : {std::pair{"nested/deeper/checkpoint-50", 0.5}, {"checkpoint-200", 2.0}, {"checkpoint-400", 4.0}}) {
    const auto& row = row_named(doc, name);
    expect_rel(row["total_delta_norm"].GetDouble(), k * d1, 1e-4, name);
    expect_rel(row["relative"].GetDouble(), row["total_delta_norm"].GetDouble() / row["total_base_norm"].GetDouble(),
               1e-12, name);
    expect_rel(row["stable_rank"]["median"].GetDouble(), unit["stable_rank"]["median"].GetDouble(), 1e-4, name);
    for (rapidjson::SizeType l = 0; l < 2; ++l)
      expect_rel(row["layers"][l]["delta_norm"].GetDouble(), k * unit["layers"][l]["delta_norm"].GetDouble(), 1e-4, name);
  }
  for (const auto& row : doc["rows"].GetArray()) {
    for (const char* f : {"checkpoint", "step", "step_source", "total_delta_norm", "relative", "layers", "stable_rank",
                          "most_moved"})
      EXPECT_TRUE(row.HasMember(f)) << f;
    EXPECT_FALSE(row.HasMember("error"));
    EXPECT_EQ(row["layers"].Size(), 2u);
    EXPECT_LE(row["most_moved"].Size(), 5u);
    EXPECT_GE(row["most_moved"].Size(), 1u);
  }

  // The .pt row is exactly what weight-diff says of the same file.
  auto wd = cli.run("weight-diff --checkpoint " + q(ckpt("llama-ft-step300.pt")) + " --output json");
  ASSERT_EQ(wd.code, 0) << wd.err;
  auto wdoc = parse(wd.out);
  const auto& pt = row_named(doc, "run-999.pt");
  EXPECT_EQ(pt["total_delta_norm"].GetDouble(), wdoc["summary"]["total_delta_norm"].GetDouble());
  EXPECT_EQ(pt["total_base_norm"].GetDouble(), wdoc["summary"]["total_base_norm"].GetDouble());
  EXPECT_STREQ(pt["most_moved"][0]["param"].GetString(), wdoc["summary"]["max_relative_param"].GetString());
  for (rapidjson::SizeType l = 0; l < 2; ++l)
    EXPECT_EQ(pt["layers"][l]["delta_norm"].GetDouble(), wdoc["layers"][l]["delta_norm"].GetDouble());

  // Series: aligned with the rows, ready to plot; per-kind norms add up (in squares) to the total.
  const auto& s = doc["series"];
  const auto n = doc["rows"].Size();
  for (const char* f : {"checkpoints", "steps", "total_delta_norm", "relative", "stable_rank_median"})
    EXPECT_EQ(s[f].Size(), n) << f;
  EXPECT_EQ(s["steps"][0].GetInt(), 50);
  EXPECT_TRUE(s["steps"][n - 1].IsNull());
  ASSERT_TRUE(s["by_layer"].HasMember("0") && s["by_layer"].HasMember("1"));
  EXPECT_EQ(s["by_layer"]["1"].Size(), n);
  for (rapidjson::SizeType i = 0; i + 1 < n; ++i) {
    double sq = 0;
    for (auto it = s["by_kind"].MemberBegin(); it != s["by_kind"].MemberEnd(); ++it)
      if (it->value[i].IsNumber()) sq += it->value[i].GetDouble() * it->value[i].GetDouble();
    expect_rel(std::sqrt(sq), s["total_delta_norm"][i].GetDouble(), 1e-9, "by_kind at " + std::to_string(i));
    EXPECT_EQ(s["by_layer"]["0"][i].GetDouble(), doc["rows"][i]["layers"][0]["delta_norm"].GetDouble());
  }
  EXPECT_EQ(s["by_kind"]["q"].Size(), n);

  // The terminal view: step table and a sparkline of total ‖ΔW‖_F.
  auto text = cli.run("trajectory-analysis --dir " + q(run));
  ASSERT_EQ(text.code, 0) << text.err;
  EXPECT_NE(text.out.find("Trajectory, by training step"), std::string::npos) << text.out;
  // One glyph per row in row order: the smallest change first, the largest at checkpoint-400 (row 5).
  const std::string lead = "total ‖ΔW‖_F  ";
  const auto at = text.out.find(lead);
  ASSERT_NE(at, std::string::npos) << text.out;
  const std::string spark = text.out.substr(at + lead.size(), 7 * 3);  // ▁..█ are 3 bytes each in UTF-8
  EXPECT_EQ(spark.substr(0, 3), "▁") << spark;
  EXPECT_EQ(spark.substr(5 * 3, 3), "█") << spark;
  EXPECT_NE(text.out.find("trainer_state"), std::string::npos) << text.out;
  EXPECT_NE(text.out.find("layer 1"), std::string::npos) << text.out;
}

TEST(TrajectoryCli, FailedCheckpointsBecomeRowsAndTheExportIsStillSaved) {
  Cli cli;
  start_session(cli);
  TempDir t;
  const fs::path run = t / "run";
  write_scaled_checkpoint(run / "checkpoint-100", 1.0);
  write_scaled_checkpoint(run / "checkpoint-300", 3.0);
  // A truncated safetensors file in a checkpoint folder, a .pt that is not one, NaN weights.
  write_scaled_checkpoint(run / "checkpoint-200", 2.0);
  const std::string full = aquin::test::read_bytes(run / "checkpoint-200/model.safetensors");
  aquin::test::write_bytes(run / "checkpoint-200/model.safetensors", full.substr(0, full.size() - 100));
  aquin::test::write_bytes(run / "step-250.pt", "garbage, not a torch.save archive");
  fs::copy_file(ckpt("llama-nan.pt"), run / "diverged.pt");
  const fs::path exp = t / "traj.json";

  auto r = cli.run("trajectory-analysis --dir " + q(run) + " --save " + q(exp));
  EXPECT_EQ(r.code, 1) << r.err;
  EXPECT_TRUE(r.err.empty()) << r.err;
  EXPECT_NE(r.out.find("3 of 5 checkpoint(s) failed"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("export saved: " + exp.string()), std::string::npos) << r.out;
  ASSERT_TRUE(fs::exists(exp));
  auto doc = parse(aquin::read_text_file(exp));
  // diverged.pt carries step 5 inside the file; the failed rows keep their place on the step axis.
  EXPECT_EQ(row_names(doc), (std::vector<std::string>{"diverged.pt", "checkpoint-100", "checkpoint-200", "step-250.pt",
                                                      "checkpoint-300"}));
  const auto& cut = row_named(doc, "checkpoint-200");
  EXPECT_NE(std::string(cut["error"].GetString()).find("out of range"), std::string::npos) << cut["error"].GetString();
  EXPECT_EQ(cut["step"].GetInt(), 200);
  EXPECT_TRUE(cut["total_delta_norm"].IsNull());
  const auto& junk = row_named(doc, "step-250.pt");
  EXPECT_NE(std::string(junk["error"].GetString()).find("not a safetensors file"), std::string::npos);
  EXPECT_EQ(junk["step"].GetInt(), 250);
  EXPECT_STREQ(junk["step_source"].GetString(), "name");
  EXPECT_TRUE(junk["format"].IsNull());
  const auto& nan = row_named(doc, "diverged.pt");
  EXPECT_NE(std::string(nan["error"].GetString()).find("non-finite weights: blocks.1.attn.k.weight"), std::string::npos);
  EXPECT_STREQ(nan["step_source"].GetString(), "pt");
  // The readable checkpoints are complete.
  expect_rel(row_named(doc, "checkpoint-300")["total_delta_norm"].GetDouble(),
             3 * row_named(doc, "checkpoint-100")["total_delta_norm"].GetDouble(), 1e-4, "checkpoint-300");
  EXPECT_FALSE(row_named(doc, "checkpoint-300").HasMember("error"));
  EXPECT_EQ(doc["summary"]["failed"].GetInt(), 3);
  EXPECT_TRUE(doc["series"]["total_delta_norm"][2].IsNull());
  EXPECT_TRUE(doc["series"]["total_delta_norm"][1].IsNumber());
  int failures = 0;
  for (const auto& w : doc["warnings"].GetArray()) failures += std::string(w.GetString()).rfind("failed: ", 0) == 0;
  EXPECT_EQ(failures, 3);
  auto events = aquin::read_text_file(cli.home() / "sessions/t/events.jsonl");
  EXPECT_NE(events.find("\"exit_code\":1"), std::string::npos) << events;

  // The same through the agent tool: the exit code and the document agree with the CLI.
  auto js = cli.run("trajectory-analysis --dir " + q(run) + " --output json");
  auto tool = cli.run("tool run_trajectory_analysis --input '{\"dir\": \"" + run.string() + "\"}'");
  EXPECT_EQ(js.code, 1);
  EXPECT_EQ(tool.code, 1);
  EXPECT_EQ(tool.out, js.out);
}

TEST(TrajectoryCli, GlobPatternsAcrossFolders) {
  Cli cli;
  start_session(cli);
  TempDir t;
  const fs::path runs = t / "my runs";  // a space: the pattern never goes through a shell
  write_scaled_checkpoint(runs / "a/checkpoint-100", 1.0);
  write_scaled_checkpoint(runs / "b/checkpoint-200", 2.0);
  write_scaled_checkpoint(runs / "b/checkpoint-300", 3.0);
  write_scaled_checkpoint(runs / "b/checkpoint-1000", 10.0);
  aquin::test::write_bytes(runs / "b/checkpoint-300/trainer_state.json", R"({"global_step": 300})");
  write_scaled_checkpoint(runs / "b/sub/checkpoint-400", 4.0);
  write_scaled_checkpoint(runs / "b/.old/checkpoint-500", 5.0);
  fs::create_directories(runs / "b/checkpoint-logs");
  fs::copy_file(ckpt("llama-ft-step300.pt"), runs / "a/ft.pt");

  auto names = [&](const std::string& args) {
    auto r = cli.run("trajectory-analysis " + args + " --output json");
    EXPECT_EQ(r.code, 0) << args << "\n" << r.err;
    std::vector<std::string> out;
    if (r.code != 0) return out;
    auto doc = parse(r.out);
    for (const auto& row : doc["rows"].GetArray()) out.push_back(fs::path(row["checkpoint"].GetString()).lexically_relative(runs).string());
    return out;
  };
  using V = std::vector<std::string>;
  EXPECT_EQ(names("--checkpoints " + q(runs / "**/checkpoint-[1-3]00")),
            (V{"a/checkpoint-100", "b/checkpoint-200", "b/checkpoint-300"}));
  EXPECT_EQ(names("--checkpoints " + q(runs / "**/checkpoint-?00")),
            (V{"a/checkpoint-100", "b/checkpoint-200", "b/checkpoint-300", "b/sub/checkpoint-400"}));
  EXPECT_EQ(names("--checkpoints " + q(runs / "*/checkpoint-[!1]*")), (V{"b/checkpoint-200", "b/checkpoint-300"}));
  EXPECT_EQ(names("--checkpoints " + q(runs / "b/.old/*")), (V{"b/.old/checkpoint-500"}));
  // Several patterns, or a list the shell already expanded: duplicates count once.
  EXPECT_EQ(names("--checkpoints " + q(runs / "a/*.pt") + " " + q(runs / "a/checkpoint-100") + " " + q(runs / "a/*")),
            (V{"a/checkpoint-100", "a/ft.pt"}));

  // Weights files inside checkpoint folders take the folder's step (trainer_state.json, then name),
  // so checkpoint-1000 comes after checkpoint-300 although it sorts before it by name.
  auto r = cli.run("trajectory-analysis --checkpoints " + q(runs / "b/checkpoint-*/model.safetensors") + " --output json");
  ASSERT_EQ(r.code, 0) << r.err;
  auto doc = parse(r.out);
  ASSERT_EQ(doc["rows"].Size(), 3u);
  EXPECT_EQ(doc["series"]["steps"][0].GetInt(), 200);
  EXPECT_EQ(doc["series"]["steps"][1].GetInt(), 300);
  EXPECT_EQ(doc["series"]["steps"][2].GetInt(), 1000);
  EXPECT_STREQ(doc["rows"][1]["step_source"].GetString(), "trainer_state");
  EXPECT_STREQ(doc["rows"][2]["step_source"].GetString(), "name");

  // A folder a wildcard matched that holds no weights is skipped with a warning.
  r = cli.run("trajectory-analysis --checkpoints " + q(runs / "b/checkpoint-*") + " --output json");
  ASSERT_EQ(r.code, 0) << r.err;
  doc = parse(r.out);
  EXPECT_EQ(doc["rows"].Size(), 3u);
  ASSERT_EQ(doc["warnings"].Size(), 1u);
  EXPECT_NE(std::string(doc["warnings"][0].GetString()).find("checkpoint-logs"), std::string::npos);
}

TEST(TrajectoryCli, UsageAndInputErrorsAreOneLine) {
  Cli cli;
  start_session(cli);
  TempDir t;
  struct Case {
    std::string args, message;
  };
  for (const auto& c : std::vector<Case>{
           {"", "give the checkpoints to compare: --checkpoints GLOB or --dir DIR"},
           {"--dir " + t.path().string() + " --checkpoints 'x/*'", "give either --checkpoints or --dir, not both"},
           {"--checkpoints '" + (t / "none/*.pt").string() + "'", "no checkpoint matches"},
           {"--dir " + (t / "absent").string(), "no such directory"},
           {"--dir " + t.path().string(), "no *.pt files, checkpoint folders or adapter folders found"},
           {"--dir " + ckpt("llama-ft-step300.pt").string(), "not a directory"},
           {"--dir " + t.path().string() + " --spectral-tol 2", "--spectral-tol: expected a number in (0, 1)"},
       }) {
    auto r = cli.run("trajectory-analysis " + c.args + " --save " + (t / "x.json").string());
    EXPECT_EQ(r.code, 1) << c.args;
    EXPECT_NE(r.err.find(c.message), std::string::npos) << c.args << ": " << r.err;
    EXPECT_EQ(aquin::test::count_lines(r.err), 1) << r.err;
    EXPECT_FALSE(fs::exists(t / "x.json"));
  }
}

TEST(TrajectoryCli, NoSpectraKeepsNormsAndAdapterStableRanks) {
  Cli cli;
  start_session(cli);
  TempDir t;
  write_scaled_checkpoint(t / "run/checkpoint-100", 1.0);
  fs::copy(ckpt("llama-lora"), t / "run/adapter");
  auto with = parse(cli.run("trajectory-analysis --dir " + q(t / "run") + " --output json").out);
  auto r = cli.run("trajectory-analysis --dir " + q(t / "run") + " --no-spectra --output json");
  ASSERT_EQ(r.code, 0) << r.err;
  auto without = parse(r.out);
  EXPECT_FALSE(without["summary"]["spectra"].GetBool());
  EXPECT_TRUE(without["summary"]["spectral_tol"].IsNull());
  EXPECT_TRUE(row_named(without, "checkpoint-100")["stable_rank"]["median"].IsNull());
  EXPECT_EQ(row_named(without, "checkpoint-100")["total_delta_norm"].GetDouble(),
            row_named(with, "checkpoint-100")["total_delta_norm"].GetDouble());
  EXPECT_TRUE(row_named(with, "checkpoint-100")["stable_rank"]["median"].IsNumber());
  EXPECT_TRUE(row_named(without, "adapter")["stable_rank"]["median"].IsNumber());
}

TEST(TrajectoryCli, ListedAsPluginAndTool) {
  Cli cli;
  auto r = cli.run("plugins");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("trajectory-analysis"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("refused"), std::string::npos) << r.out;
  r = cli.run("tools");
  ASSERT_EQ(r.code, 0) << r.err;
  auto doc = parse(r.out);
  const rapidjson::Value* tool = nullptr;
  for (const auto& x : doc["tools"].GetArray())
    if (std::string(x["name"].GetString()) == "run_trajectory_analysis") tool = &x;
  ASSERT_NE(tool, nullptr);
  const auto& props = (*tool)["input_schema"]["properties"];
  EXPECT_STREQ(props["checkpoints"]["type"].GetString(), "array");
  EXPECT_STREQ(props["dir"]["type"].GetString(), "string");
  EXPECT_EQ(props["spectral_tol"]["default"].GetDouble(), 1e-3);
  EXPECT_TRUE((*tool)["input_schema"]["required"].Empty());
  r = cli.run("trajectory-analysis --help");
  EXPECT_NE(r.out.find("--checkpoints GLOB"), std::string::npos) << r.out;
}
