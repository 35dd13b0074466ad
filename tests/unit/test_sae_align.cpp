// `sae align`: the assignment solver against scipy, the sparse candidate path and its bound, and the CLI.
#include "cli_runner.hpp"

#include <aquin/sdk/atomic_file.hpp>
#include <aquin/sdk/json.hpp>
#include <aquin/sdk/linear_assignment.hpp>
#include <aquin/sdk/sae.hpp>
#include <aquin/sdk/sae_align.hpp>
#include <aquin/sdk/safetensors.hpp>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <limits>
#include <set>
#include <stdexcept>

namespace {

namespace fs = std::filesystem;
using aquin::test::data_dir;

// Every row of the smaller side assigned, no column (row) used twice, and the total as reported.
template <typename T>
void expect_valid(const aquin::Assignment& a, const std::vector<T>& m, int64_t rows, int64_t cols, const std::string& name) {
  std::set<int64_t> used;
  int64_t n = 0;
  double total = 0;
  ASSERT_EQ(static_cast<int64_t>(a.col_for_row.size()), rows) << name;
  for (int64_t i = 0; i < rows; ++i) {
    const int64_t j = a.col_for_row[static_cast<std::size_t>(i)];
    if (j < 0) continue;
    ASSERT_LT(j, cols) << name;
    EXPECT_TRUE(used.insert(j).second) << name << ": column " << j << " used twice";
    EXPECT_EQ(a.row_for_col[static_cast<std::size_t>(j)], i) << name;
    total += static_cast<double>(m[static_cast<std::size_t>(i * cols + j)]);
    ++n;
  }
  EXPECT_EQ(n, std::min(rows, cols)) << name;
  EXPECT_NEAR(a.total, total, 1e-9 * std::max(1.0, std::fabs(total))) << name;
}

TEST(SaeAlignLap, MatchesScipyOnRandomAndAdversarialMatrices) {
  const auto doc = aquin::json::parse(aquin::read_text_file(data_dir() / "align/lap_cases.json"), "lap_cases.json");
  int checked = 0;
  for (const auto& c : doc["cases"].GetArray()) {
    const std::string name = c["name"].GetString();
    const int64_t rows = c["rows"].GetInt64(), cols = c["cols"].GetInt64();
    const bool maximize = c["maximize"].GetBool();
    std::vector<double> m;
    for (const auto& x : c["values"].GetArray()) m.push_back(x.GetDouble());
    const double expected = c["total"].GetDouble();
    const aquin::Assignment a = aquin::linear_sum_assignment(m.data(), rows, cols, maximize);
    expect_valid(a, m, rows, cols, name);
    EXPECT_NEAR(a.total, expected, 1e-9 * std::max(1.0, std::fabs(expected))) << name;

    // The sparse solver on the complete graph reaches the same optimum (fp32 values).
    if (rows <= cols) {
      std::vector<float> mf(m.begin(), m.end());
      aquin::SparseGraph g;
      g.n_rows = rows;
      g.n_cols = cols;
      g.row_ptr.push_back(0);
      for (int64_t i = 0; i < rows; ++i) {
        for (int64_t j = 0; j < cols; ++j) {
          g.cols.push_back(j);
          g.values.push_back(mf[static_cast<std::size_t>(i * cols + j)]);
        }
        g.row_ptr.push_back(static_cast<int64_t>(g.cols.size()));
      }
      const aquin::Assignment dense_f = aquin::linear_sum_assignment(mf.data(), rows, cols, maximize);
      // Below every edge when maximising, above every edge when minimising: no row stays unmatched.
      const aquin::Assignment s = aquin::sparse_linear_assignment(g, maximize, maximize ? -1e30 : 1e30);
      EXPECT_EQ(s.n_assigned, rows) << name;
      expect_valid(s, mf, rows, cols, name + " (sparse)");
      EXPECT_NEAR(s.total, dense_f.total, 1e-9 * std::max(1.0, std::fabs(dense_f.total))) << name;
    }
    ++checked;
  }
  EXPECT_GE(checked, 50);
}

TEST(SaeAlignLap, RefusesNonFiniteAndHandlesEmpty) {
  for (double bad : {std::nan(""), -std::numeric_limits<double>::infinity(), std::numeric_limits<double>::infinity()}) {
    std::vector<double> m = {1, 2, 3, bad};
    EXPECT_THROW(aquin::linear_sum_assignment(m.data(), 2, 2, false), std::invalid_argument);
    EXPECT_THROW(aquin::linear_sum_assignment(m.data(), 2, 2, true), std::invalid_argument);
  }
  const aquin::Assignment e = aquin::linear_sum_assignment(static_cast<const double*>(nullptr), 0, 3, false);
  EXPECT_EQ(e.col_for_row.size(), 0u);
  EXPECT_EQ(e.row_for_col, std::vector<int64_t>(3, -1));
  aquin::SparseGraph g;
  g.n_rows = 1;
  g.n_cols = 2;
  g.row_ptr = {0, 2};
  g.cols = {1, 1};
  g.values = {0.5f, 0.5f};
  EXPECT_THROW(aquin::sparse_linear_assignment(g, true, -2), std::invalid_argument);  // duplicate edge
}

// The sparse path on small problems, forced by a low exact limit: its matching is feasible, never
// better than the exact optimum, and the bound it reports is never below that optimum.
TEST(SaeAlignSparse, BoundIsHonestAgainstTheExactOptimum) {
  for (int seed = 0; seed < 6; ++seed) {
    at::manual_seed(seed);
    const int64_t na = 60 + 10 * seed, nb = seed % 2 ? 90 : 50;
    at::Tensor A = at::randn({na, 16});
    at::Tensor B = at::cat({A.slice(0, 0, std::min(na, nb) / 2) + 0.3 * at::randn({std::min(na, nb) / 2, 16}),
                            at::randn({nb - std::min(na, nb) / 2, 16})});
    aquin::AlignResult exact = aquin::align_decoders(A, B);
    ASSERT_EQ(exact.method, "exact");
    aquin::AlignOptions o;
    o.dense_limit = 40;
    o.candidates = 3;
    o.block_rows = 17;
    aquin::AlignResult sp = aquin::align_decoders(A, B, o);
    ASSERT_EQ(sp.method, "sparse-candidates");
    EXPECT_EQ(sp.n_matched, std::min(na, nb));
    std::set<int64_t> used;
    int64_t matched = 0;
    for (int64_t i = 0; i < na; ++i)
      if (sp.match_a[static_cast<std::size_t>(i)] >= 0) {
        EXPECT_TRUE(used.insert(sp.match_a[static_cast<std::size_t>(i)]).second);
        ++matched;
      }
    EXPECT_EQ(matched, std::min(na, nb));
    EXPECT_LE(sp.total, exact.total + 1e-4) << "seed " << seed;
    EXPECT_GE(sp.upper_bound_total, exact.total - 1e-4) << "seed " << seed;
    EXPECT_GE(sp.upper_bound_total, sp.total);
    // Best matches regardless of the others agree between the two paths.
    for (int64_t i = 0; i < na; ++i) EXPECT_NEAR(sp.best_a[static_cast<std::size_t>(i)], exact.best_a[static_cast<std::size_t>(i)], 1e-5);
    for (int64_t j = 0; j < nb; ++j) EXPECT_NEAR(sp.best_b[static_cast<std::size_t>(j)], exact.best_b[static_cast<std::size_t>(j)], 1e-5);
  }
}

// d_sae 10000 (above the exact limit): B is A's features permuted, plus noise. The planted pairing
// is every feature's best match both ways, so it is the dense optimum; the sparse path must find it
// and certify it (gap ~0).
TEST(SaeAlignSparse, RecoversAPermutedIdentityAt10000) {
  at::manual_seed(7);
  const int64_t n = 10000, d = 64;
  at::Tensor A = at::randn({n, d});
  at::Tensor perm = at::randperm(n);
  at::Tensor B = A.index_select(0, perm) + 0.05 * at::randn({n, d});  // B[k] ≈ A[perm[k]]
  aquin::AlignResult r = aquin::align_decoders(A, B);
  ASSERT_EQ(r.method, "sparse-candidates");
  EXPECT_EQ(r.n_matched, n);
  auto p = perm.accessor<int64_t, 1>();
  int64_t right = 0;
  for (int64_t k = 0; k < n; ++k) right += r.match_b[static_cast<std::size_t>(k)] == p[k];
  EXPECT_EQ(right, n);
  EXPECT_GE(r.upper_bound_total, r.total);
  EXPECT_LT((r.upper_bound_total - r.total) / static_cast<double>(n), 1e-6);
  EXPECT_GT(r.total / static_cast<double>(n), 0.99);
}

TEST(SaeAlignSdk, RectangularBothWays) {
  at::manual_seed(3);
  at::Tensor A = at::randn({96, 32});
  at::Tensor idx = at::randperm(96).slice(0, 0, 60);
  at::Tensor B = A.index_select(0, idx);  // 60 of A's features, shuffled
  for (bool a_first : {true, false}) {
    aquin::AlignResult r = a_first ? aquin::align_decoders(A, B) : aquin::align_decoders(B, A);
    EXPECT_EQ(r.n_matched, 60);
    EXPECT_NEAR(r.total, 60.0, 1e-4);
    auto ix = idx.accessor<int64_t, 1>();
    for (int64_t k = 0; k < 60; ++k) {
      if (a_first) EXPECT_EQ(r.match_b[static_cast<std::size_t>(k)], ix[k]);
      else EXPECT_EQ(r.match_a[static_cast<std::size_t>(k)], ix[k]);
    }
    const auto& big = a_first ? r.match_a : r.match_b;
    EXPECT_EQ(std::count(big.begin(), big.end(), -1), 36);
  }
  EXPECT_THROW(aquin::align_decoders(A, at::randn({5, 31})), std::invalid_argument);
}

// A copy of a SAELens fixture with its features permuted: feature k of the copy is feature perm[k].
fs::path permuted_copy(const fs::path& src, const fs::path& dst, const at::Tensor& perm) {
  aquin::Sae s = aquin::Sae::load(src);
  fs::create_directories(dst);
  fs::copy_file(src / "cfg.json", dst / "cfg.json");
  const auto& w = s.weights();
  aquin::write_safetensors(dst / "sae_weights.safetensors", {{"W_enc", w.W_enc.index_select(1, perm).contiguous()},
                                                             {"W_dec", w.W_dec.index_select(0, perm).contiguous()},
                                                             {"b_enc", w.b_enc.index_select(0, perm).contiguous()},
                                                             {"b_dec", w.b_dec.contiguous()}});
  return dst;
}

rapidjson::Document run_json(const aquin::test::Cli& cli, const std::string& args) {
  auto r = cli.run("sae align " + args + " --output json");
  EXPECT_EQ(r.code, 0) << r.err;
  return aquin::json::parse(r.out, "sae align output");
}

TEST(SaeAlignCli, SelfPermutedAndNull) {
  aquin::test::Cli cli;
  const fs::path a = data_dir() / "sae/saelens-v6-standard";
  {
    auto d = run_json(cli, "--sae-a " + a.string() + " --sae-b " + a.string() + " --top 5");
    EXPECT_STREQ(d["card"].GetString(), "saeAlign");
    EXPECT_STREQ(d["method"].GetString(), "exact");
    EXPECT_TRUE(d["null"].IsNull());
    EXPECT_NEAR(d["summary"]["mean_matched_cosine"].GetDouble(), 1.0, 1e-5);
    EXPECT_NEAR(d["summary"]["gap"].GetDouble(), 0.0, 1e-9);
    EXPECT_EQ(d["summary"]["n_matched"].GetInt64(), 96);
    EXPECT_EQ(d["strongest"].Size(), 5u);
    for (const auto* list : {"strongest", "weakest"})
      for (const auto& m : d[list].GetArray()) EXPECT_EQ(m["a"].GetInt64(), m["b"].GetInt64());
    EXPECT_EQ(d["unmatched_a"].Size(), 0u);
    EXPECT_FALSE(d.HasMember("baseline"));
  }
  aquin::test::TempDir tmp;
  at::manual_seed(11);
  at::Tensor perm = at::randperm(96);
  const fs::path b = permuted_copy(a, tmp / "permuted", perm);
  const fs::path null_sae = data_dir() / "sae/saelens-v6-topk";  // same d_in and hook, another SAE
  auto d = run_json(cli, "--sae-a " + a.string() + " --sae-b " + b.string() + " --null " + null_sae.string() +
                             " --top 0 --name perm");
  EXPECT_NEAR(d["summary"]["mean_matched_cosine"].GetDouble(), 1.0, 1e-5);
  auto p = perm.accessor<int64_t, 1>();
  ASSERT_EQ(d["strongest"].Size(), 96u);  // --top 0: every match
  for (const auto& m : d["strongest"].GetArray()) EXPECT_EQ(p[m["b"].GetInt64()], m["a"].GetInt64());
  ASSERT_TRUE(d["baseline"].IsObject());
  const auto& base = d["baseline"];
  EXPECT_LT(base["mean_matched_cosine"].GetDouble(), 0.9);  // two unrelated SAEs
  EXPECT_TRUE(base["p05"].IsNumber());
  EXPECT_EQ(base["n_below_p05"].GetInt64(), 0);
  EXPECT_DOUBLE_EQ(base["share_below_p05"].GetDouble(), 0.0);
  for (const auto& m : d["weakest"].GetArray()) EXPECT_DOUBLE_EQ(m["null_percentile"].GetDouble(), 100.0);
  EXPECT_TRUE(d["null"].IsObject());
  int64_t hist = 0;
  for (const auto& c : d["histogram"]["counts"].GetArray()) hist += c.GetInt64();
  EXPECT_EQ(hist, 96);

  // A weaker B (against the null itself): some matches now sit below the null's 5th percentile or not,
  // but every figure is there and the terminal view renders.
  auto t = cli.run("sae align --sae-a " + a.string() + " --sae-b " + null_sae.string() + " --null " + b.string());
  EXPECT_EQ(t.code, 0) << t.err;
  EXPECT_NE(t.out.find("mean matched cosine"), std::string::npos) << t.out;
  EXPECT_NE(t.out.find("Weakest matches"), std::string::npos) << t.out;
}

TEST(SaeAlignCli, DifferentDInIsOneLineNamingTheFile) {
  aquin::test::Cli cli;
  const fs::path a = data_dir() / "sae/saelens-v6-standard";
  const fs::path b = data_dir() / "sae/saelens-v6-bert-standard";  // d_in 48
  auto r = cli.run("sae align --sae-a " + a.string() + " --sae-b " + b.string());
  EXPECT_EQ(r.code, 1) << r.out << r.err;
  EXPECT_EQ(aquin::test::count_lines(r.err), 1) << r.err;
  EXPECT_NE(r.err.find("saelens-v6-bert-standard"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("d_in"), std::string::npos) << r.err;
  auto tool = cli.run("tools");
  EXPECT_NE(tool.out.find("run_sae_align"), std::string::npos);
}

}  // namespace
