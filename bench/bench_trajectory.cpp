// Times `aquin trajectory-analysis` over generated checkpoints of a small Llama-shaped model (bf16,
// HF folders checkpoint-N/ with config.json + model.safetensors) against `aquin weight-diff` of one
// of them, measured in the same run, and compares the peak RSS of runs over 5 and over all checkpoints.
//
//   bench_trajectory [--checkpoints 20] [--layers 4] [--dir DIR] [--repeat 2] [--quick] [--aquin BIN]
//                    [--threads N]
//
// --aquin runs another `aquin` binary (e.g. a copy of the build's bin/ and lib/, so that a rebuild
// in progress cannot disturb the measurement). --threads is passed to aquin (default: all cores); on
// a machine shared with other work, 1 gives repeatable figures, since OpenMP threads waiting for a
// descheduled peer make multi-threaded timings swing by 5x or more.
//
// Per checkpoint after the first = (T(all) - T(1)) / (all - 1). A weight-diff process also pays the
// start-up, plugin loading and the base model's norms; the fixed part of a trajectory run,
// T(1) - per-checkpoint, estimates it, so the comparison is also printed without it. Each figure is
// the fastest of --repeat runs: on a shared machine the slowest say more about the neighbours.
#include "bench_util.hpp"

#include <aquin/sdk/atomic_file.hpp>
#include <aquin/sdk/json.hpp>
#include <aquin/sdk/safetensors.hpp>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

namespace fs = std::filesystem;
using aquin::bench::Measured;
using aquin::bench::measure;

namespace {

// A small Llama (4 layers, d 512), so that 20 checkpoints stay quick to make and to read.
struct Shape : aquin::bench::LlamaShape {
  Shape() {
    layers = 4;
    d = 512;
    heads = 8;
    kv_heads = 4;
    mlp = 1408;
    vocab = 8192;
    max_positions = 4096;
  }
};

fs::path checkpoint_dir(const fs::path& dir, int i) { return dir / "run" / ("checkpoint-" + std::to_string(100 * (i + 1))); }

// A run that drifts: checkpoint i holds W0 + t·(D + L) with D dense and L of rank 8, plus noise of its
// own (so no two checkpoints are alike), rounded to bf16 as trainers save them. The shape of ΔW's
// spectrum does not change with t, so every checkpoint costs the spectral norm about the same and
// the average cost per checkpoint compares with the weight-diff of any one of them.
void generate(const fs::path& dir, const Shape& s, int n) {
  if (fs::exists(checkpoint_dir(dir, n - 1) / "model.safetensors")) return;
  std::cout << "generating a " << s.layers << "-layer model and " << n << " checkpoints in " << dir << " ..." << std::endl;
  at::manual_seed(0);
  struct Param {
    std::string name;
    at::Tensor w, d, low_rank;
  };
  std::vector<Param> params;
  auto add = [&](const std::string& name, std::vector<int64_t> shape, double scale) {
    at::Tensor w = at::randn(shape) * scale;
    if (shape.size() == 1) w = w + 1.0;
    at::Tensor lr = shape.size() == 2 ? at::mm(at::randn({shape[0], 8}), at::randn({8, shape[1]})) * (0.002 * scale)
                                      : at::zeros(shape);
    params.push_back({name, w, at::randn(shape) * (0.01 * scale), lr});
  };
  const int64_t hd = s.d / s.heads;
  add("model.embed_tokens.weight", {s.vocab, s.d}, 0.02);
  for (int l = 0; l < s.layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    add(p + "input_layernorm.weight", {s.d}, 0.05);
    add(p + "self_attn.q_proj.weight", {s.d, s.d}, 0.02);
    add(p + "self_attn.k_proj.weight", {s.kv_heads * hd, s.d}, 0.02);
    add(p + "self_attn.v_proj.weight", {s.kv_heads * hd, s.d}, 0.02);
    add(p + "self_attn.o_proj.weight", {s.d, s.d}, 0.02);
    add(p + "post_attention_layernorm.weight", {s.d}, 0.05);
    add(p + "mlp.gate_proj.weight", {s.mlp, s.d}, 0.02);
    add(p + "mlp.up_proj.weight", {s.mlp, s.d}, 0.02);
    add(p + "mlp.down_proj.weight", {s.d, s.mlp}, 0.02);
  }
  add("model.norm.weight", {s.d}, 0.05);
  auto save = [&](const fs::path& folder, auto&& value_of) {
    std::vector<std::pair<std::string, at::Tensor>> tensors;
    for (const auto& p : params) tensors.emplace_back(p.name, value_of(p).to(at::kBFloat16));
    fs::create_directories(folder);
    aquin::write_file_atomic(folder / "config.json", aquin::bench::llama_config_json(s));
    aquin::write_safetensors(folder / "model.safetensors", tensors, {{"format", "pt"}});
  };
  save(dir / "base", [](const Param& p) { return p.w; });
  for (int i = 0; i < n; ++i) {
    const double t = static_cast<double>(i + 1) / n;
    save(checkpoint_dir(dir, i), [&](const Param& p) {
      return p.w + (p.d + p.low_rank) * t + at::randn(p.w.sizes()) * (0.001 * p.d.abs().mean().item<double>());
    });
  }
}



// The fastest of `repeat` runs of `cmd` (by CPU time), with the largest peak RSS seen; exits when a
// run fails.
Measured best_of(int repeat, const std::string& cmd, const std::string& what) {
  Measured best;
  for (int i = 0; i < repeat; ++i) {
    Measured m = measure(cmd);
    if (m.code != 0) {
      std::cerr << what << " failed (exit " << m.code << ")\n";
      std::exit(1);
    }
    const double rss = std::max(best.peak_rss_mb, m.peak_rss_mb);
    if (i == 0 || m.cpu_seconds < best.cpu_seconds) best = m;
    best.peak_rss_mb = rss;
  }
  return best;
}

std::string q(const fs::path& p) { return "'" + p.string() + "'"; }

}  // namespace

int main(int argc, char** argv) {
  Shape s;
  int n = 20, repeat = 2, threads = static_cast<int>(std::thread::hardware_concurrency());
  bool quick = false;
  std::string aquin_bin = AQUIN_BIN;
  fs::path dir = fs::temp_directory_path() / "aquin-bench-trajectory";
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--checkpoints" && i + 1 < argc) n = std::atoi(argv[++i]);
    else if (a == "--layers" && i + 1 < argc) s.layers = std::atoi(argv[++i]);
    else if (a == "--dir" && i + 1 < argc) dir = argv[++i];
    else if (a == "--repeat" && i + 1 < argc) repeat = std::max(1, std::atoi(argv[++i]));
    else if (a == "--quick") quick = true;
    else if (a == "--aquin" && i + 1 < argc) aquin_bin = argv[++i];
    else if (a == "--threads" && i + 1 < argc) threads = std::max(1, std::atoi(argv[++i]));
    else {
      std::cerr << "usage: bench_trajectory [--checkpoints N] [--layers N] [--dir DIR] [--repeat R] [--quick] [--aquin BIN] [--threads N]\n";
      return 1;
    }
  }
  if (n < 6) {
    std::cerr << "--checkpoints: at least 6 (the RSS comparison runs over 5 and over all)\n";
    return 1;
  }
  dir /= "v2-L" + std::to_string(s.layers) + "-N" + std::to_string(n);
  // Generate in a child: a child's ru_maxrss starts from its parent's RSS at fork (Linux carries the
  // forked copy's high-water mark across exec), so this process must stay small for the children's
  // peak RSS to be theirs. No torch call happens here before the fork, so OpenMP is not yet running.
  if (!aquin::bench::run_in_child([&] {
        at::set_num_threads(static_cast<int>(std::thread::hardware_concurrency()));
        generate(dir, s, n);
      })) {
    std::cerr << "generating the checkpoints failed\n";
    return 1;
  }
  // Warm page cache for every run alike.
  std::system(("cat " + q(dir) + "/base/model.safetensors " + q(dir) + "/run/*/model.safetensors > /dev/null").c_str());

  const std::string aq = "AQUIN_HOME=" + q(dir / "home") + " " + q(aquin_bin) + " --threads " + std::to_string(threads);
  const std::string tol = "1e-3";  // trajectory-analysis's default; weight-diff is run with the same
  best_of(1, aq + " session start --id bench --model " + q(dir / "base") + " > /dev/null", "session start");
  const fs::path one = checkpoint_dir(dir, n / 2);
  auto trajectory = [&](const std::string& what, const std::string& extra, const fs::path& out) {
    return best_of(repeat, aq + " trajectory-analysis " + what + " --spectral-tol " + tol + " " + extra + " --save " + q(out) +
                               " > /dev/null",
                   "trajectory-analysis " + what + " " + extra);
  };
  const Measured wd = best_of(repeat, aq + " weight-diff --checkpoint " + q(one) + " --spectral-tol " + tol + " --save " +
                                          q(dir / "wd.json") + " > /dev/null",
                              "weight-diff");
  const Measured t1 = trajectory("--checkpoints " + q(one), "", dir / "t1.json");
  std::string first5;
  for (int i = 0; i < 5; ++i) first5 += " " + q(checkpoint_dir(dir, i));
  const Measured t5 = trajectory("--checkpoints" + first5, "", dir / "t5.json");
  const Measured tn = trajectory("--dir " + q(dir / "run"), "", dir / "tn.json");

  // Sanity: every checkpoint completed, and the trajectory's row agrees with weight-diff.
  auto doc = aquin::json::parse(aquin::read_text_file(dir / "tn.json"), "tn.json");
  auto wdoc = aquin::json::parse(aquin::read_text_file(dir / "wd.json"), "wd.json");
  int rows = 0;
  double agree = NAN;
  for (const auto& r : doc["rows"].GetArray()) {
    if (r.HasMember("error")) {
      std::cerr << "row failed: " << r["error"].GetString() << "\n";
      return 1;
    }
    ++rows;
    if (fs::path(r["checkpoint"].GetString()).filename() == one.filename())
      agree = std::abs(r["total_delta_norm"].GetDouble() / wdoc["summary"]["total_delta_norm"].GetDouble() - 1);
  }
  const int ckpts = rows;

  // Per checkpoint after the first, in CPU seconds (robust to neighbours on a shared machine).
  auto per_checkpoint = [&](const Measured& all, const Measured& first) {
    return (all.cpu_seconds - first.cpu_seconds) / (ckpts - 1);
  };
  const double per = per_checkpoint(tn, t1);
  const double fixed = t1.cpu_seconds - per;  // start-up, plugins, base model, its norms
  std::printf("trajectory-analysis over %d checkpoints of a %d-layer Llama-shaped model (d=%lld, mlp=%lld, vocab=%lld, "
              "bf16), spectral tol %s, %d thread(s), fastest of %d\n",
              ckpts, s.layers, static_cast<long long>(s.d), static_cast<long long>(s.mlp),
              static_cast<long long>(s.vocab), tol.c_str(), threads, repeat);
  auto line = [](const std::string& what, const Measured& m) {
    std::printf("%-34s %6.2f s wall %6.2f s CPU   peak RSS %4.0f MB\n", what.c_str(), m.seconds, m.cpu_seconds,
                m.peak_rss_mb);
  };
  struct rusage self {};
  getrusage(RUSAGE_SELF, &self);
  std::printf("(this process's RSS, a floor under every peak RSS below: %.0f MB)\n", self.ru_maxrss / 1024.0);
  line("weight-diff, one checkpoint", wd);
  line("trajectory, 1 checkpoint", t1);
  line("trajectory, 5 checkpoints", t5);
  line("trajectory, " + std::to_string(ckpts) + " checkpoints", tn);
  std::printf("per checkpoint after the first     %6.2f s CPU = %.2fx one weight-diff process; %.2fx its work without "
              "the fixed %.2f s (target <= 1.2x)\n",
              per, per / wd.cpu_seconds, per / (wd.cpu_seconds - fixed), fixed);
  std::printf("peak RSS, %d vs 5 checkpoints      %+.1f MB (%.3fx; target: no growth)\n", ckpts,
              tn.peak_rss_mb - t5.peak_rss_mb, tn.peak_rss_mb / t5.peak_rss_mb);
  std::printf("agreement with weight-diff         total ‖ΔW‖_F rel. diff %.1e\n", agree);
  if (quick) return 0;

  // The spectral settings: what --no-spectra saves, what weight-diff's tolerance 1e-4 would cost.
  for (const auto& [extra, label] : {std::pair<std::string, std::string>{"--no-spectra", "--no-spectra"},
                                     {"--spectral-tol 1e-4", "--spectral-tol 1e-4"}}) {
    auto run_with = [&](const std::string& what, const fs::path& out) {
      return best_of(repeat, aq + " trajectory-analysis " + what + " " + extra + " --save " + q(out) + " > /dev/null",
                     "trajectory-analysis " + extra);
    };
    const Measured m1 = run_with("--checkpoints " + q(one), dir / "x1.json");
    const Measured mn = run_with("--dir " + q(dir / "run"), dir / "xn.json");
    const double p = per_checkpoint(mn, m1);
    std::printf("%-34s %6.2f s CPU per checkpoint after the first (%.2fx the default)\n", label.c_str(), p, p / per);
  }
  return 0;
}
