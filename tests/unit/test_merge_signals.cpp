// merge-analysis signal logic, tested directly: thresholds, robust scores, each signal on synthetic
// weight diffs, the intruder matching, and the intruder analysis on the fixtures against the float64
// reference of tests/fixtures/make_merge_fixtures.py (tests/data/merge/expected.json).
//
// The plugin is a MODULE library (nothing links against it), so its logic files are compiled into
// this test binary directly.
#include "../../plugins/merge-analysis/intruders.cpp"
#include "../../plugins/merge-analysis/signals.cpp"
#include "../../plugins/merge-analysis/thresholds.cpp"

#include "test_helpers.hpp"

#include <aquin/sdk/atomic_file.hpp>
#include <aquin/sdk/errors.hpp>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <set>
#include <tuple>

using namespace aquin;
using namespace aquin::merge;

namespace {

const at::TensorOptions kF64 = at::TensorOptions().dtype(at::kDouble);

MatrixDiff matrix(const std::string& kind_path, int layer, double relative, double stable_rank, bool lora = false,
                  int64_t rank = 8) {
  MatrixDiff m;
  m.param = "blocks." + std::to_string(layer) + "." + kind_path;
  m.layer = layer;
  m.shape = {128, 128};
  m.base_norm = 1.0;
  m.delta_norm = relative;
  m.relative = relative;
  m.spectral_norm = relative / std::sqrt(stable_rank);
  m.stable_rank = stable_rank;
  m.lora = lora;
  m.lora_rank = lora ? rank : 0;
  return m;
}

// Six layers of q with relative changes around 0.05 and healthy stable ranks.
WeightDiff six_layers(bool lora = false) {
  WeightDiff wd;
  const double rel[] = {0.050, 0.055, 0.047, 0.052, 0.049, 0.053};
  const double sr[] = {1.8, 2.1, 1.6, 1.9, 2.0, 1.7};
  for (int l = 0; l < 6; ++l) wd.matrices.push_back(matrix("attn.q.weight", l, rel[l], sr[l], lora));
  return wd;
}

std::set<std::tuple<std::string, std::string, std::string>> keys(const std::vector<Reason>& rs) {
  std::set<std::tuple<std::string, std::string, std::string>> s;
  for (const auto& r : rs) s.emplace(r.signal, r.param, r.severity);
  return s;
}

const rapidjson::Document& expected() {
  static rapidjson::Document d =
      json::parse(read_text_file(aquin::test::data_dir() / "merge/expected.json"), "merge/expected.json");
  return d;
}

}  // namespace

TEST(MergeThresholds, DefaultsFlagsAndSchemaAgree) {
  const Thresholds d = default_thresholds();
  EXPECT_DOUBLE_EQ(d.intruder_cos, 0.5);
  EXPECT_EQ(d.intruder_top_k, 10);
  const auto opts = threshold_options();
  ASSERT_EQ(opts.size(), threshold_defs().size());
  EXPECT_TRUE(validate_option_table(opts).empty());
  std::set<std::string> flags;
  for (const auto& o : opts) {
    flags.insert(o.name);
    EXPECT_FALSE(o.default_value) << o.name << ": an absent flag must leave the file's value";
    EXPECT_NE(o.help.find("(default "), std::string::npos) << o.help;
  }
  for (const char* f : {"max-stable-rank-ratio", "collapse-stable-rank", "intruder-cos", "outlier-z"})
    EXPECT_TRUE(flags.count(f)) << f;
  // Every default lies in its own valid range.
  for (const auto& def : threshold_defs()) {
    EXPECT_GE(def.get(d), def.min) << def.key;
    EXPECT_LE(def.get(d), def.max) << def.key;
  }
}

TEST(MergeThresholds, FileThenFlagsWithSources) {
  aquin::test::TempDir dir;
  const auto file = dir / "t.json";
  aquin::test::write_bytes(file, R"({"outlier_z": 5, "intruder_top_k": 4, "collapse_stable_rank": 1.3})");
  Args args;
  args.set("thresholds", file.string());
  args.set("outlier-z", 6.0);
  const ResolvedThresholds r = resolve_thresholds(args);
  EXPECT_DOUBLE_EQ(r.values.outlier_z, 6.0);
  EXPECT_EQ(r.source.at("outlier_z"), "flag");
  EXPECT_EQ(r.values.intruder_top_k, 4);
  EXPECT_EQ(r.source.at("intruder_top_k"), "file");
  EXPECT_DOUBLE_EQ(r.values.collapse_stable_rank, 1.3);
  EXPECT_EQ(r.source.at("intruder_cos"), "default");
  EXPECT_EQ(r.file, file.string());
}

TEST(MergeThresholds, FileErrorsNameTheKey) {
  ResolvedThresholds r;
  r.values = default_thresholds();
  auto expect_error = [&](const char* text, const std::string& needle) {
    rapidjson::Document d = json::parse(text, "t");
    try {
      apply_threshold_file(r, d, "t.json");
      ADD_FAILURE() << "no error for " << text;
    } catch (const InputError& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
      EXPECT_EQ(std::string(e.what()).rfind("t.json: ", 0), 0u) << e.what();
    }
  };
  expect_error(R"({"outlier_zz": 3})", "unknown threshold 'outlier_zz'");
  expect_error(R"({"intruder_cos": "0.5"})", "'intruder_cos' must be a number");
  expect_error(R"({"intruder_cos": 1.5})", "'intruder_cos' must be in [0, 1]");
  expect_error(R"({"intruder_top_k": 2.5})", "'intruder_top_k' must be an integer");
  expect_error(R"([1, 2])", "expected a JSON object");
  // Flags are range-checked too, and fail below warn is refused.
  Args a;
  a.set("intruder-cos", -0.1);
  EXPECT_THROW(resolve_thresholds(a), UsageError);
  Args b;
  b.set("outlier-fail-z", 2.0);
  EXPECT_THROW(resolve_thresholds(b), UsageError);
}

TEST(MergeSignals, RobustZAndPeerGroups) {
  double med = 0, scale = 0;
  // MAD 0: the floor sets the scale.
  auto z = robust_z({0, 0, 0, 0, 1}, kMinLogSpread, &med, &scale);
  EXPECT_DOUBLE_EQ(med, 0);
  EXPECT_DOUBLE_EQ(scale, kMinLogSpread);
  EXPECT_DOUBLE_EQ(z[4], 1 / kMinLogSpread);
  // A wide group: 1.4826 · MAD.
  z = robust_z({-2, -1, 0, 1, 2}, 0.01, &med, &scale);
  EXPECT_NEAR(scale, 1.4826, 1e-12);
  EXPECT_NEAR(z[0], -2 / 1.4826, 1e-12);

  MatrixDiff m = matrix("mlp.up.weight", 12, 0.1, 2);
  EXPECT_EQ(peer_group(m), "blocks.*.mlp.up.weight");
  m.layer.reset();
  EXPECT_EQ(peer_group(m), "");
}

TEST(MergeSignals, IntegrityFailsOnEveryBrokenStatus) {
  WeightDiff wd = six_layers();
  const char* statuses[] = {"non_finite", "shape_mismatch", "missing_in_checkpoint", "missing_in_base"};
  for (int i = 0; i < 4; ++i) {
    wd.matrices[i].status = statuses[i];
    wd.matrices[i].non_finite = i == 0 ? 3 : 0;
  }
  const SignalResult res = integrity_reasons(wd);
  ASSERT_EQ(res.reasons.size(), 4u);
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(res.reasons[i].signal, statuses[i]);
    EXPECT_EQ(res.reasons[i].severity, "fail");
    EXPECT_EQ(res.reasons[i].param, wd.matrices[i].param);
  }
  EXPECT_DOUBLE_EQ(res.reasons[0].value, 3);
  EXPECT_EQ(verdict(res.reasons), "fail");
}

TEST(MergeSignals, StableRankAgainstLoraRankAndPeers) {
  const Thresholds t = default_thresholds();
  // LoRA: 7.2 of rank 8 is noise-like; rank-2 modules are not judged.
  WeightDiff wd = six_layers(/*lora=*/true);
  wd.matrices[2].stable_rank = 7.2;
  wd.matrices[4].lora_rank = 2;
  ScoreTable scores;
  SignalResult res = stable_rank_reasons(wd, t, scores);
  ASSERT_EQ(res.reasons.size(), 1u);
  EXPECT_EQ(res.reasons[0].signal, "stable_rank_ratio");
  EXPECT_EQ(res.reasons[0].param, "blocks.2.attn.q.weight");
  EXPECT_NEAR(res.reasons[0].value, 7.2 / 8, 1e-12);
  EXPECT_DOUBLE_EQ(res.reasons[0].threshold, t.max_stable_rank_ratio);
  EXPECT_EQ(res.evaluated, 5);
  ASSERT_EQ(res.notes.size(), 1u);
  EXPECT_NEAR(scores["blocks.0.attn.q.weight"].stable_rank_ratio, 1.8 / 8, 1e-12);

  // Merged: one layer's stable rank 20× its peers'.
  WeightDiff dense = six_layers();
  dense.matrices[5].stable_rank = 40;
  scores.clear();
  res = stable_rank_reasons(dense, t, scores);
  ASSERT_EQ(res.reasons.size(), 1u);
  EXPECT_EQ(res.reasons[0].signal, "stable_rank_z");
  EXPECT_EQ(res.reasons[0].param, "blocks.5.attn.q.weight");
  EXPECT_GT(res.reasons[0].value, t.stable_rank_z);
  EXPECT_EQ(scores["blocks.5.attn.q.weight"].peers, 6);
  EXPECT_EQ(scores["blocks.5.attn.q.weight"].peer_group, "blocks.*.attn.q.weight");
  // Too few peers: nothing scored, and said so.
  dense.matrices.resize(4);
  res = stable_rank_reasons(dense, t, scores);
  EXPECT_TRUE(res.reasons.empty());
  EXPECT_EQ(res.evaluated, 0);
  ASSERT_EQ(res.notes.size(), 1u);
  EXPECT_NE(res.notes[0].find("fewer than min_peers"), std::string::npos);
}

TEST(MergeSignals, CollapseSkipsUnmeasurableAndTinyRanks) {
  const Thresholds t = default_thresholds();
  WeightDiff wd = six_layers(/*lora=*/true);
  wd.matrices[0].stable_rank = 1.02;   // collapsed
  wd.matrices[1].stable_rank = 1.01;
  wd.matrices[1].lora_rank = 1;        // rank 1 is one direction by construction
  wd.matrices[2].stable_rank = 1.05;
  wd.matrices[2].delta_norm = 0;       // unchanged: nothing to judge
  wd.matrices[3].stable_rank = 1.01;
  wd.matrices[3].below_noise_floor = true;
  const SignalResult res = collapse_reasons(wd, t);
  ASSERT_EQ(res.reasons.size(), 1u);
  EXPECT_EQ(res.reasons[0].signal, "rank_collapse");
  EXPECT_EQ(res.reasons[0].param, "blocks.0.attn.q.weight");
  EXPECT_DOUBLE_EQ(res.reasons[0].value, 1.02);
  EXPECT_DOUBLE_EQ(res.reasons[0].threshold, t.collapse_stable_rank);
  EXPECT_EQ(res.reasons[0].severity, "warn");
  EXPECT_EQ(res.evaluated, 3);
}

TEST(MergeSignals, RelativeChangeOutliersWarnThenFail) {
  const Thresholds t = default_thresholds();
  WeightDiff wd = six_layers();
  wd.matrices[1].relative *= 3;   // ~2.9× the median: warn
  wd.matrices[3].relative *= 40;  // fail
  for (auto& m : wd.matrices) m.delta_norm = m.relative;
  ScoreTable scores;
  const SignalResult res = outlier_reasons(wd, t, scores);
  EXPECT_EQ(keys(res.reasons),
            (std::set<std::tuple<std::string, std::string, std::string>>{
                {"relative_change_outlier", "blocks.1.attn.q.weight", "warn"},
                {"relative_change_outlier", "blocks.3.attn.q.weight", "fail"}}));
  for (const auto& r : res.reasons) EXPECT_DOUBLE_EQ(r.threshold, r.severity == "fail" ? t.outlier_fail_z : t.outlier_z);
  EXPECT_LT(std::abs(scores["blocks.0.attn.q.weight"].relative_z), 1.0);
  EXPECT_EQ(verdict(res.reasons), "fail");
}

TEST(MergeIntruders, ClustersAbsorbRotationsButNotNewDirections) {
  // Base: the first 9 coordinate axes, σ = 8, 4, then a tight run 2.1 … 1.9, then 1, 0.5.
  const int64_t n = 40;
  at::Tensor base_u = at::eye(n, kF64).narrow(1, 0, 9);
  at::Tensor base_s = at::tensor({8.0, 4.0, 2.1, 2.05, 2.0, 1.95, 1.9, 1.0, 0.5}, kF64);
  at::Tensor y = at::zeros({n, 3}, kF64);
  y[0][0] = 1;                                           // the base's own top direction
  for (int i = 2; i <= 6; ++i) y[i][1] = 1 / std::sqrt(5.0);  // a rotation inside the tight run
  y[30][2] = 1;                                          // a direction the base does not have
  at::Tensor s = at::tensor({8.1, 2.1, 1.5}, kF64);
  const at::Tensor exact = at::zeros({9}, kF64);
  const auto v = match_vectors(base_u, base_s, exact, y, s, /*update_norm=*/0.2, /*cos_threshold=*/0.5);
  ASSERT_EQ(v.size(), 3u);
  EXPECT_NEAR(v[0].best_cos, 1, 1e-12);
  EXPECT_EQ(v[0].best_match, 0);
  EXPECT_FALSE(v[0].intruder);
  EXPECT_NEAR(v[1].plain_cos, 1 / std::sqrt(5.0), 1e-12);  // PEFT's criterion alone would call it an intruder
  EXPECT_NEAR(v[1].best_cos, 1, 1e-12);
  EXPECT_NEAR(v[1].overlap, 1, 1e-12);
  EXPECT_FALSE(v[1].intruder);
  EXPECT_NEAR(v[2].best_cos, 0, 1e-12);
  EXPECT_NEAR(v[2].overlap, 0, 1e-12);
  EXPECT_TRUE(v[2].intruder);
  EXPECT_DOUBLE_EQ(v[2].sigma, 1.5);
  // With no tolerance every vector stands alone: the paper's max |cos|.
  const auto alone = match_vectors(base_u, base_s, exact, y, s, 0.0, 0.5);
  EXPECT_TRUE(alone[1].intruder);
  EXPECT_NEAR(alone[1].best_cos, 1 / std::sqrt(5.0), 1e-12);
  // Loose Ritz vectors widen their clusters just as a larger update does.
  const auto loose = match_vectors(base_u, base_s, at::full({9}, 0.2, kF64), y, s, 0.0, 0.5);
  EXPECT_FALSE(loose[1].intruder);
  EXPECT_TRUE(loose[2].intruder);
}

TEST(MergeIntruders, SeverityFollowsTheIntrudersSigma) {
  const Thresholds t = default_thresholds();
  IntruderResult res;
  res.param = "blocks.2.attn.v.weight";
  res.top_k = 10;
  res.base_k = 32;
  res.base_sigma1 = 2.0;
  VectorMatch ok, bad;
  ok.best_cos = 0.99;
  bad.index = 4;
  bad.sigma = 1.0;
  bad.best_cos = 0.03;
  bad.intruder = true;
  res.vectors = {ok, bad};
  SignalResult r = intruder_reasons({res}, t);
  ASSERT_EQ(r.reasons.size(), 1u);
  EXPECT_EQ(r.reasons[0].severity, "warn");
  EXPECT_DOUBLE_EQ(r.reasons[0].value, 0.03);
  EXPECT_DOUBLE_EQ(r.reasons[0].threshold, 0.5);
  res.vectors[1].sigma = 2.5;  // stronger than anything the base had
  r = intruder_reasons({res}, t);
  EXPECT_EQ(r.reasons[0].severity, "fail");
}

// The intruder analysis and the weight-diff figures on the fixtures, against the float64 reference.
class MergeFixture : public ::testing::TestWithParam<const char*> {};

TEST_P(MergeFixture, MatchesFloat64Reference) {
  const std::string name = GetParam();
  const auto dir = aquin::test::data_dir() / "merge";
  auto base = open_model_weights(dir / "base");
  Checkpoint ck = open_checkpoint(dir / name);
  const Thresholds t = default_thresholds();
  BaseNormCache norms;
  const auto results = analyze_lora_intruders(*base, ck, "llama", t, norms);
  const WeightDiff wd = compute_weight_diff(*base, ck, "llama");
  // The norms handed to the weight diff are the ones it computes itself.
  for (const auto& m : wd.matrices) {
    auto it = norms.norms.find(m.base_source_name);
    ASSERT_TRUE(it != norms.norms.end()) << m.param;
    EXPECT_NEAR(it->second, m.base_norm, 1e-12 * m.base_norm) << m.param;
  }
  EXPECT_TRUE(analyze_dense_intruders(*base, ck, wd, "llama", t).empty());
  std::map<std::string, const IntruderResult*> by_param;
  for (const auto& r : results) by_param[r.param] = &r;
  const auto& ref = expected()[name.c_str()]["matrices"];
  int checked = 0;
  for (const auto& m : wd.matrices) {
    ASSERT_TRUE(ref.HasMember(m.param.c_str())) << m.param;
    const auto& e = ref[m.param.c_str()];
    if (e.HasMember("non_finite")) {
      EXPECT_EQ(m.status, "non_finite");
      continue;
    }
    EXPECT_NEAR(m.stable_rank, e["stable_rank"].GetDouble(), 1e-4 * e["stable_rank"].GetDouble()) << m.param;
    EXPECT_NEAR(m.relative, e["relative"].GetDouble(), 1e-5 * e["relative"].GetDouble()) << m.param;
    ASSERT_TRUE(by_param.count(m.param)) << m.param;
    const IntruderResult& r = *by_param[m.param];
    EXPECT_FALSE(r.exact) << "128-wide weights take the randomized path";
    EXPECT_NEAR(r.base_sigma1, e["base_sigma1"].GetDouble(), 1e-4 * e["base_sigma1"].GetDouble()) << m.param;
    double min_best = 1;
    for (const auto& v : r.vectors) min_best = std::min(min_best, v.best_cos);
    // Two passes leave the base's last few top-32 vectors mixed with the next ones, which can only
    // raise a best |cos| (by 0.15 at most on these weights); the verdict needs far less.
    EXPECT_NEAR(min_best, e["min_best_cos"].GetDouble(), 0.2) << m.param;
    EXPECT_GE(min_best, e["min_best_cos"].GetDouble() - 0.02) << m.param;
    EXPECT_EQ(r.intruders(), e["intruders"].GetInt()) << m.param;
    EXPECT_LT(r.max_residual, 0.05) << m.param;
    ++checked;
  }
  EXPECT_GE(checked, 41);
}

INSTANTIATE_TEST_SUITE_P(MergeAdapters, MergeFixture,
                         ::testing::Values("lora-healthy", "lora-collapsed", "lora-intruder", "lora-noise", "lora-outlier",
                                           "lora-nan"),
                         [](const auto& info) {
                           std::string s = info.param;
                           for (auto& c : s) c = c == '-' ? '_' : c;
                           return s;
                         });
