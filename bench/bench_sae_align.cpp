// Times `aquin sae align`: the exact assignment at d_sae 1024 / 4096 / 8192 (in process, through the
// SDK), and the whole command at d_sae 16384, d_in 2048 (the sparse candidate path), in a child.
//
// The decoders are SAE-like rather than pure noise: B is A with its features shuffled, 70% of them
// nudged (noise at 0.3 of a row's norm), 20% rotated half-way to a random direction and 10% replaced
// by new random directions, the way an SAE retrained on a fine-tune relates to the base's. A
// uniform-random cosine matrix, the assignment's hardest ordinary case, is timed at 1024 and 2048.
//
//   bench_sae_align [--d-sae 16384] [--d-in 2048] [--threads N] [--dir DIR] [--no-exact]
#include "bench_util.hpp"

#include <aquin/sdk/atomic_file.hpp>
#include <aquin/sdk/json.hpp>
#include <aquin/sdk/linear_assignment.hpp>
#include <aquin/sdk/sae_align.hpp>
#include <aquin/sdk/safetensors.hpp>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <string>
#include <thread>

namespace fs = std::filesystem;

namespace {

double since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// A pair of decoders as described above: A [n, d] and B [n, d], B's row k derived from A's perm[k].
std::pair<at::Tensor, at::Tensor> decoders(int64_t n, int64_t d, uint64_t seed) {
  at::manual_seed(seed);
  at::Tensor A = at::randn({n, d});
  at::Tensor perm = at::randperm(n);
  at::Tensor B = A.index_select(0, perm).clone();
  const int64_t nudged = n * 7 / 10, rotated = n * 2 / 10;
  B.slice(0, 0, nudged).add_(0.3 * at::randn({nudged, d}));
  B.slice(0, nudged, nudged + rotated).add_(at::randn({rotated, d}));
  B.slice(0, nudged + rotated, n).copy_(at::randn({n - nudged - rotated, d}));
  return {A, B};
}

void write_sae(const fs::path& dir, const at::Tensor& W_dec, uint64_t seed) {
  fs::create_directories(dir);
  const int64_t n = W_dec.size(0), d = W_dec.size(1);
  aquin::write_file_atomic(dir / "cfg.json",
                           "{\"architecture\": \"standard\", \"d_in\": " + std::to_string(d) + ", \"d_sae\": " +
                               std::to_string(n) +
                               ", \"dtype\": \"float32\", \"device\": \"cpu\", \"apply_b_dec_to_input\": true, "
                               "\"normalize_activations\": \"none\", \"metadata\": {\"hook_name\": "
                               "\"blocks.8.hook_resid_post\", \"model_name\": \"bench\"}}\n");
  at::manual_seed(seed);
  aquin::write_safetensors(dir / "sae_weights.safetensors",
                           {{"W_enc", W_dec.t().contiguous()},
                            {"W_dec", W_dec.contiguous()},
                            {"b_enc", at::zeros({n})},
                            {"b_dec", at::zeros({d})}});
}

}  // namespace

int main(int argc, char** argv) {
  int64_t n = 16384, d = 2048;
  int threads = static_cast<int>(std::thread::hardware_concurrency());
  fs::path dir = fs::temp_directory_path() / "aquin-bench-sae-align";
  bool exact = true;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--d-sae" && i + 1 < argc) n = std::atoll(argv[++i]);
    else if (a == "--d-in" && i + 1 < argc) d = std::atoll(argv[++i]);
    else if (a == "--threads" && i + 1 < argc) threads = std::atoi(argv[++i]);
    else if (a == "--dir" && i + 1 < argc) dir = argv[++i];
    else if (a == "--no-exact") exact = false;
    else {
      std::cerr << "usage: bench_sae_align [--d-sae N] [--d-in D] [--threads N] [--dir DIR] [--no-exact]\n";
      return 1;
    }
  }
  std::printf("%s\n", aquin::bench::machine_line(threads).c_str());

  // The command path first, while this process is still small (bench_util.hpp: children inherit
  // the parent's peak RSS across exec).
  dir /= std::to_string(n) + "x" + std::to_string(d);
  if (!aquin::bench::run_in_child([&] {
        at::set_num_threads(threads);
        if (fs::exists(dir / "b/sae_weights.safetensors")) return;
        auto [A, B] = decoders(n, d, 1);
        write_sae(dir / "a", A, 2);
        write_sae(dir / "b", B, 3);
      })) {
    std::cerr << "generating the SAEs failed\n";
    return 1;
  }
  std::system(("cat '" + (dir / "a/sae_weights.safetensors").string() + "' '" +
               (dir / "b/sae_weights.safetensors").string() + "' > /dev/null")
                  .c_str());
  const fs::path out = dir / "align.json";
  const std::string load = aquin::bench::load_average();
  const aquin::bench::Measured m =
      aquin::bench::measure("AQUIN_HOME='" + (dir / "home").string() + "' " + AQUIN_BIN + " --threads " +
                            std::to_string(threads) + " sae align --sae-a '" + (dir / "a").string() + "' --sae-b '" +
                            (dir / "b").string() + "' --output '" + out.string() + "' > /dev/null");
  if (m.code != 0) {
    std::cerr << "aquin sae align failed (exit " << m.code << ")\n";
    return 1;
  }
  auto doc = aquin::json::parse(aquin::read_text_file(out), out.string());
  const auto& s = doc["summary"];
  std::printf("aquin sae align, d_sae %ld x %ld, d_in %ld, %d threads (load average %s at the start):\n", n, n, d,
              threads, load.c_str());
  std::printf("  %.2f s wall (target <= 60 s), %.2f s CPU, peak RSS %.0f MB; method %s, K %ld, %ld edges, %ld matched "
              "outside the candidates\n",
              m.seconds, m.cpu_seconds, m.peak_rss_mb, doc["method"].GetString(),
              s["candidates"].IsNull() ? 0L : s["candidates"].GetInt64(), s["n_edges"].GetInt64(),
              s["n_fallback"].GetInt64());
  std::printf("  mean matched cosine %.6f, upper bound of the dense optimum %.6f, gap %.2e\n",
              s["mean_matched_cosine"].GetDouble(), s["upper_bound"].GetDouble(), s["gap"].GetDouble());
  std::printf("  per stage (s):");
  for (auto it = doc["timings_s"].MemberBegin(); it != doc["timings_s"].MemberEnd(); ++it)
    std::printf(" %s %.3f;", it->name.GetString(), it->value.GetDouble());
  std::printf("\n");

  if (!exact) return 0;
  at::set_num_threads(threads);
  std::printf("exact assignment through the SDK (align_decoders, d_in %ld):\n", d);
  for (int64_t k : {1024, 4096, 8192}) {
    auto [A, B] = decoders(k, d, 10 + static_cast<uint64_t>(k));
    const auto t0 = std::chrono::steady_clock::now();
    aquin::AlignResult r = aquin::align_decoders(A, B);
    std::printf("  d_sae %5ld: %.2f s (cosines %.2f s, assignment %.2f s), method %s, mean matched cosine %.4f\n", k,
                since(t0), r.seconds_similarity, r.seconds_assignment, r.method.c_str(),
                r.total / static_cast<double>(r.n_matched));
  }
  std::printf("uniform random matrix (the assignment alone, fp32):\n");
  for (int64_t k : {1024, 2048}) {
    at::manual_seed(5);
    at::Tensor M = at::rand({k, k});
    const auto t0 = std::chrono::steady_clock::now();
    aquin::Assignment a = aquin::linear_sum_assignment(M.data_ptr<float>(), k, k, true);
    std::printf("  %ld x %ld: %.2f s (total %.3f)\n", k, k, since(t0), a.total);
  }
  return 0;
}
