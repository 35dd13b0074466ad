// Times `aquin sae diff` end to end, as a user runs it (the real CLI in a child process), at
// Llama-3.2-1B shapes: a generated base (16 layers, d_model 2048, 32/8 heads, MLP 8192, vocab 128256,
// tied, llama3 RoPE, random bf16 weights) with a byte-level tokenizer, a PEFT LoRA fine-tune (r 16,
// alpha 32 on q_proj and v_proj of every block), a random TopK SAE on blocks.8.hook_resid_post
// (d_sae 32768, k 32, aquin hub layout: layer8_32768_top32/meta.json + sae.pt written by torch.save),
// and 32 ASCII prompts of 64 bytes = 64 tokens (the byte tokenizer adds no BOS). It prints
//   - aquin's wall time, CPU time and peak RSS (wait4's ru_maxrss of the child), and the per-stage
//     times of the export's timings_s;
//   - the same work done the PyTorch way (bench/reference_sae_diff.py: both models in fp32 eager, all
//     hidden states, dense TopK encode), its wall time and peak RSS, and the ratio reference / aquin;
//   - how well the two agree on every feature's base mean, fine-tune mean and delta.
// Everything generated is kept under the build folder (bench-data/sae-diff), so reruns start at once.
//
//   bench_sae_diff [--dir DIR] [--threads N] [--no-reference]
#include "bench_util.hpp"
#include "random_llama.hpp"
#include "byte_tokenizer.hpp"

#include <aquin/sdk/atomic_file.hpp>
#include <aquin/sdk/json.hpp>
#include <aquin/sdk/safetensors.hpp>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

namespace fs = std::filesystem;
using aquin::bench::Measured;
using aquin::bench::measure;

namespace {

using Shape = aquin::bench::LlamaShape;

constexpr int kLayer = 8, kDSae = 32768, kK = 32, kPrompts = 32, kPromptBytes = 64, kRank = 16;

// The random Llama-3.2-1B-shaped model, with a byte tokenizer.
void generate_base(const fs::path& dir, const Shape& s) {
  aquin::bench::write_random_llama(dir, s);
  // One token per byte, no BOS: a 64-byte prompt is 64 tokens.
  if (!fs::exists(dir / "tokenizer.json")) aquin::write_file_atomic(dir / "tokenizer.json", aquin::test::byte_tokenizer_json(256));
}

// A PEFT adapter: r 16, alpha 32 on q_proj and v_proj of every block (fp32 factors). B is large
// enough (entries 0.01: ‖(alpha/r) B A‖_F about a tenth of the weight's) for the features to move measurably.
void generate_lora(const fs::path& dir, const Shape& s) {
  if (fs::exists(dir / "adapter_model.safetensors")) return;
  std::cout << "generating a rank-" << kRank << " LoRA on q_proj, v_proj in " << dir << " ..." << std::endl;
  at::manual_seed(1);
  const int64_t kv = s.kv_heads * s.head_dim();
  std::vector<std::pair<std::string, at::Tensor>> t;
  for (int l = 0; l < s.layers; ++l) {
    const std::string p = "base_model.model.model.layers." + std::to_string(l) + ".";
    for (const auto& [m, out] : std::vector<std::pair<std::string, int64_t>>{{"self_attn.q_proj", s.d}, {"self_attn.v_proj", kv}}) {
      t.emplace_back(p + m + ".lora_A.weight", at::randn({kRank, s.d}) / std::sqrt(static_cast<double>(s.d)));
      t.emplace_back(p + m + ".lora_B.weight", at::randn({out, kRank}) * 0.01);
    }
  }
  fs::create_directories(dir);
  aquin::write_file_atomic(dir / "adapter_config.json",
                           "{\"peft_type\": \"LORA\", \"r\": " + std::to_string(kRank) + ", \"lora_alpha\": " +
                               std::to_string(2 * kRank) +
                               ", \"target_modules\": [\"q_proj\", \"v_proj\"], \"use_rslora\": false, \"bias\": \"none\"}\n");
  aquin::write_safetensors(dir / "adapter_model.safetensors", t);
}

// 32 ASCII prompts of exactly 64 bytes (no quote or backslash, so the JSON needs no escapes).
void write_prompts(const fs::path& file) {
  static const char* openings[] = {
      "The capital of France is Paris, and the river that runs through",
      "Write a short poem about the sea at night, with waves and stars",
      "def fibonacci(n): return n if n < 2 else fibonacci(n - 1) + fib",
      "Explain why the sky is blue in terms a ten year old understands.",
      "Translate to German: good morning, how are you today, my friend",
      "Q: What is 17 times 3? A: 17 times 3 is 51, because 17 + 17 + 1",
      "Once upon a time, in a village at the edge of a dark forest, the",
      "List three uses of a paperclip: holding paper, resetting phones,"};
  static const char* lead[] = {"Note", "Task", "Hint", "Also"};
  std::string json = "[";
  for (int i = 0; i < kPrompts; ++i) {
    // A different start for each: the model is causal, so every later token differs too.
    std::string p = std::string(lead[i / 8]) + " " + std::to_string(i + 1) + ": " + openings[i % 8];
    p.resize(kPromptBytes, '.');
    json += (i ? ",\n " : "") + std::string("\"") + p + "\"";
  }
  aquin::write_file_atomic(file, json + "]\n");
}

bool valid_sae(const fs::path& dir) { return fs::exists(dir / "meta.json") && fs::exists(dir / "sae.pt"); }

}  // namespace

int main(int argc, char** argv) {
  Shape s;
  fs::path dir = AQUIN_BENCH_SAE_DIFF_DIR;
  bool reference = true;
  int threads = static_cast<int>(std::thread::hardware_concurrency());
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--dir" && i + 1 < argc) dir = argv[++i];
    else if (a == "--threads" && i + 1 < argc) threads = std::atoi(argv[++i]);
    else if (a == "--no-reference") reference = false;
    else {
      std::cerr << "usage: bench_sae_diff [--dir DIR] [--threads N] [--no-reference]\n";
      return 1;
    }
  }
  try {
    dir /= "L" + std::to_string(s.layers);
    const fs::path base = dir / "base", lora = dir / ("lora-qv-r" + std::to_string(kRank));
    const fs::path sae = dir / "sae" / ("layer" + std::to_string(kLayer) + "_" + std::to_string(kDSae) + "_top" + std::to_string(kK));
    const fs::path prompts = dir / "prompts.json";
    // In a child, so that this process stays small (bench_util.hpp).
    if (!aquin::bench::run_in_child([&] {
          at::set_num_threads(threads);
          generate_base(base, s);
          generate_lora(lora, s);
          write_prompts(prompts);
        }))
      throw std::runtime_error("generating the models failed");
    const std::string python = "/usr/bin/python3 '" + std::string(AQUIN_BENCH_SAE_DIFF_REFERENCE) + "'";
    if (!valid_sae(sae)) {
      std::cout << "writing a TopK SAE (d_sae " << kDSae << ", k " << kK << ") in " << sae << " ..." << std::endl;
      const Measured m = measure(python + " --make-sae '" + sae.string() + "' --d-model " + std::to_string(s.d) +
                                 " --d-sae " + std::to_string(kDSae) + " --k " + std::to_string(kK) + " --layer " +
                                 std::to_string(kLayer) + " --threads " + std::to_string(threads));
      if (m.code != 0 || !valid_sae(sae)) throw std::runtime_error("writing the SAE failed");
    }
    // Warm the page cache so the figures are the work, not the disk.
    std::system(("cat '" + (base / "model.safetensors").string() + "' '" + (lora / "adapter_model.safetensors").string() +
                 "' '" + (sae / "sae.pt").string() + "' > /dev/null")
                    .c_str());

    std::printf("machine: %s\n", aquin::bench::machine_line(threads).c_str());
    std::printf("base %s (%d layers, bf16), fine-tune %s (PEFT LoRA r%d on q_proj, v_proj), SAE %s (TopK d_sae %d, k %d, "
                "blocks.%d.hook_resid_post), %d prompts x %d tokens\n",
                base.c_str(), s.layers, lora.filename().c_str(), kRank, sae.filename().c_str(), kDSae, kK, kLayer, kPrompts,
                kPromptBytes);

    const fs::path out = dir / "sae-diff.json", ref_out = dir / "reference_out.safetensors", ref_json = dir / "reference.json";
    const std::string env = "AQUIN_PROGRESS=0 AQUIN_HOME='" + (dir / "home").string() + "' ";
    fs::remove(out);
    const Measured m = measure(env + AQUIN_BIN + " --threads " + std::to_string(threads) + " sae diff --model '" +
                               base.string() + "' --checkpoint '" + lora.string() + "' --sae '" + sae.string() +
                               "' --prompts '" + prompts.string() + "' --top 0 --output '" + out.string() + "' > /dev/null");
    if (m.code != 0) throw std::runtime_error("aquin sae diff failed (exit " + std::to_string(m.code) + ")");

    Measured r;
    if (reference) {
      fs::remove(ref_out);
      r = measure(python + " '" + base.string() + "' '" + lora.string() + "' '" + sae.string() + "' '" + prompts.string() +
                  "' '" + ref_out.string() + "' --threads " + std::to_string(threads) + " --batch-size 8 > '" +
                  ref_json.string() + "'");
      if (r.code != 0) throw std::runtime_error("the reference failed (exit " + std::to_string(r.code) + ")");
    }

    // Only now, with every timed child done, does this process read anything large.
    auto doc = aquin::json::parse(aquin::read_text_file(out), out.string());
    const auto& sm = doc["summary"];
    std::printf("aquin sae diff (%d threads):\n", threads);
    std::printf("  %.2f s wall (target <= 35 s), %.2f s CPU, peak RSS %.0f MB (target <= 2560 MB)\n", m.seconds,
                m.cpu_seconds, m.peak_rss_mb);
    std::printf("  per stage (s):");
    double total = 0;
    for (auto it = doc["timings_s"].MemberBegin(); it != doc["timings_s"].MemberEnd(); ++it) {
      std::printf(" %s %.3f;", it->name.GetString(), it->value.GetDouble());
      if (std::string(it->name.GetString()) == "total") total = it->value.GetDouble();
    }
    std::printf(" outside the command (process start, plugins, export) %.3f\n", m.seconds - total);
    std::printf("  %d vectors per model, %d of %d features changed (threshold %.3g, %s), max |delta| %.4g; FVU base %.3f, "
                "fine-tune %.3f; mean L0 %.1f\n",
                sm["n_vectors"].GetInt(), sm["n_changed"].GetInt(), sm["n_features"].GetInt(), sm["threshold"].GetDouble(),
                sm["threshold_source"].GetString(), sm["max_abs_delta"].GetDouble(),
                sm["reconstruction"]["base"]["fvu"].GetDouble(), sm["reconstruction"]["finetune"]["fvu"].GetDouble(),
                sm["reconstruction"]["base"]["mean_l0"].GetDouble());
    if (!reference) return 0;

    auto rj = aquin::json::parse(aquin::read_text_file(ref_json), ref_json.string());
    std::printf("PyTorch eager (fp32, both models loaded, all hidden states, dense TopK encode):\n");
    std::printf("  %.2f s wall, %.2f s CPU, peak RSS %.0f MB\n", r.seconds, r.cpu_seconds, r.peak_rss_mb);
    std::printf("  per stage (s): import %.3f; load %.3f; base %.3f; finetune %.3f; diff %.3f; total %.3f\n",
                rj["import_s"].GetDouble(), rj["load_s"].GetDouble(), rj["base_s"].GetDouble(), rj["finetune_s"].GetDouble(),
                rj["diff_s"].GetDouble(), rj["total_s"].GetDouble());
    std::printf("reference / aquin: wall %.2fx (target >= 1.5x), peak RSS %.2fx\n", r.seconds / m.seconds,
                r.peak_rss_mb / m.peak_rss_mb);

    // Agreement on every feature: the export lists all of them (--top 0), sorted by |delta|.
    at::Tensor a_base = at::zeros({kDSae}, at::kDouble), a_ft = at::zeros({kDSae}, at::kDouble),
               a_delta = at::zeros({kDSae}, at::kDouble);
    int listed = 0;
    {
      auto ab = a_base.accessor<double, 1>(), af = a_ft.accessor<double, 1>(), ad = a_delta.accessor<double, 1>();
      for (const auto& f : doc["features"].GetArray()) {
        const int64_t id = f["feature"].GetInt64();
        ab[id] = f["base_mean"].GetDouble();
        af[id] = f["ft_mean"].GetDouble();
        ad[id] = f["delta"].GetDouble();
        ++listed;
      }
    }
    auto ro = aquin::open_safetensors(ref_out);
    at::Tensor r_base = ro->load("base_mean"), r_ft = ro->load("ft_mean"), r_delta = ro->load("delta");
    auto rel = [](const at::Tensor& a, const at::Tensor& b) {
      return ((a - b).abs().max() / b.abs().max().clamp_min(1e-300)).item<double>();
    };
    constexpr double kTol = 1e-3;
    const double e_base = rel(a_base, r_base), e_ft = rel(a_ft, r_ft), e_delta = rel(a_delta, r_delta);
    // The 100 features the reference moves most, as the export lists them first.
    at::Tensor top = std::get<1>(r_delta.abs().topk(100));
    const double e_top = rel(a_delta.index_select(0, top), r_delta.index_select(0, top));
    const double corr = at::corrcoef(at::stack({a_delta, r_delta}))[0][1].item<double>();
    std::printf("agreement on %d features (max |aquin - reference| / max |reference|, tolerance %.0e): base mean %.1e, "
                "fine-tune mean %.1e, delta %.1e (top 100 by |delta| %.1e), delta correlation %.6f -> %s\n",
                listed, kTol, e_base, e_ft, e_delta, e_top, corr,
                listed == kDSae && std::max({e_base, e_ft, e_delta}) <= kTol ? "agree" : "DISAGREE");
  } catch (const std::exception& e) {
    std::cerr << "bench_sae_diff: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
