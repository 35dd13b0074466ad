// Times `aquin merge-analysis` on a rank-16 LoRA adapter (all seven linear weights of every layer)
// over a generated base with Llama-3.2-1B shapes (16 layers, d_model 2048, 32/8 heads, MLP 8192,
// vocab 128256, tied embeddings, bf16), and prints the time of every signal from the export.
//
// The base is not plain Gaussian noise: each block matrix is a Gaussian bulk plus 48 dominant
// directions with geometrically decaying strength, as trained weights have, so that "the base's top
// singular vectors" are well defined and the intruder analysis does the work it does on a real model.
// The adapter is trained-like: a geometric spectrum (ratio 0.7) per module with its magnitude jittered
// from module to module, at a few percent of each weight's norm. Its expected verdict is pass.
//
//   bench_merge [--layers 16] [--rank 16] [--dir DIR] [--threads N]
#include "bench_util.hpp"
#include "byte_tokenizer.hpp"

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

struct Shape : aquin::bench::LlamaShape {
  int64_t rank = 16;
};

// A Gaussian bulk (entries ~ scale) plus 48 spikes from 5× down to ~1× the bulk's edge.
at::Tensor spiked(int64_t rows, int64_t cols, double scale) {
  const int64_t k = 48;
  const double edge = scale * (std::sqrt(static_cast<double>(rows)) + std::sqrt(static_cast<double>(cols)));
  at::Tensor sigma = edge * (1 + 4 * at::pow(0.85, at::arange(k, at::kFloat)));
  at::Tensor u = at::randn({rows, k}) / std::sqrt(static_cast<double>(rows));
  at::Tensor v = at::randn({cols, k}) / std::sqrt(static_cast<double>(cols));
  return (at::randn({rows, cols}) * scale).addmm_(u * sigma, v.t()).to(at::kBFloat16);
}

struct Module {
  std::string name;  // HF module name without ".weight"
  int64_t rows, cols;
};

std::vector<Module> modules(const Shape& s) {
  const int64_t hd = s.d / s.heads;
  std::vector<Module> out;
  for (int l = 0; l < s.layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    out.push_back({p + "self_attn.q_proj", s.d, s.d});
    out.push_back({p + "self_attn.k_proj", s.kv_heads * hd, s.d});
    out.push_back({p + "self_attn.v_proj", s.kv_heads * hd, s.d});
    out.push_back({p + "self_attn.o_proj", s.d, s.d});
    out.push_back({p + "mlp.gate_proj", s.mlp, s.d});
    out.push_back({p + "mlp.up_proj", s.mlp, s.d});
    out.push_back({p + "mlp.down_proj", s.d, s.mlp});
  }
  return out;
}

void generate(const fs::path& dir, const Shape& s) {
  const fs::path base = dir / "base", lora = dir / ("lora-r" + std::to_string(s.rank));
  if (!fs::exists(base / "model.safetensors")) {
    std::cout << "generating a " << s.layers << "-layer Llama-3.2-1B-shaped base in " << base << " ..." << std::endl;
    at::manual_seed(0);
    std::vector<std::pair<std::string, at::Tensor>> t;
    t.emplace_back("model.embed_tokens.weight", (at::randn({s.vocab, s.d}) * 0.02).to(at::kBFloat16));
    auto mods = modules(s);
    for (int l = 0; l < s.layers; ++l) {
      const std::string p = "model.layers." + std::to_string(l) + ".";
      t.emplace_back(p + "input_layernorm.weight", (1 + 0.05 * at::randn({s.d})).to(at::kBFloat16));
      for (int i = 0; i < 7; ++i) {
        const Module& m = mods[static_cast<std::size_t>(l) * 7 + i];
        t.emplace_back(m.name + ".weight", spiked(m.rows, m.cols, 0.02));
      }
      t.emplace_back(p + "post_attention_layernorm.weight", (1 + 0.05 * at::randn({s.d})).to(at::kBFloat16));
    }
    t.emplace_back("model.norm.weight", (1 + 0.05 * at::randn({s.d})).to(at::kBFloat16));
    fs::create_directories(base);
    aquin::write_file_atomic(base / "config.json", aquin::bench::llama_config_json(s));
    aquin::write_safetensors(base / "model.safetensors", t, {{"format", "pt"}});
  }
  if (!fs::exists(lora / "adapter_model.safetensors")) {
    std::cout << "generating a rank-" << s.rank << " adapter in " << lora << " ..." << std::endl;
    at::manual_seed(1);
    const double alpha = 2.0 * static_cast<double>(s.rank), scale = alpha / static_cast<double>(s.rank);
    std::vector<std::pair<std::string, at::Tensor>> t;
    for (const auto& m : modules(s)) {
      // ‖ΔW‖₂ about 1.5 (a tenth of the spikes' top, under the 10th spike), spectrum 0.7^i.
      const double magnitude = 1.5 * std::exp(0.2 * at::randn({1}).item<double>());
      at::Tensor decay = at::pow(0.7, at::arange(s.rank, at::kFloat));
      at::Tensor a = at::randn({s.rank, m.cols}) / std::sqrt(static_cast<double>(m.cols));  // rows ~ orthonormal
      at::Tensor b = at::randn({m.rows, s.rank}) / std::sqrt(static_cast<double>(m.rows)) * decay * (magnitude / scale);
      t.emplace_back("base_model.model." + m.name + ".lora_A.weight", a);
      t.emplace_back("base_model.model." + m.name + ".lora_B.weight", b);
    }
    fs::create_directories(lora);
    aquin::write_file_atomic(lora / "adapter_config.json",
                             "{\"peft_type\": \"LORA\", \"r\": " + std::to_string(s.rank) + ", \"lora_alpha\": " +
                                 std::to_string(static_cast<int>(alpha)) +
                                 ", \"target_modules\": [\"q_proj\", \"k_proj\", \"v_proj\", \"o_proj\", \"gate_proj\", "
                                 "\"up_proj\", \"down_proj\"], \"use_rslora\": false, \"bias\": \"none\"}\n");
    aquin::write_safetensors(lora / "adapter_model.safetensors", t);
  }
}


// The 1-minute load average: on a shared machine a wall time means little without it.
std::string load_average() {
  std::string s = aquin::read_text_file("/proc/loadavg");
  return s.substr(0, s.find(' '));
}



}  // namespace

// --probes: the same gate with behavioural scores on the 8 built-in-style prompts below (8 new
// tokens each), the base given a byte-level tokenizer (one token per UTF-8 byte) for the purpose.
int run_probes(const fs::path& dir, const fs::path& lora, const std::string& env, int threads) {
  aquin::write_file_atomic(dir / "base/tokenizer.json", aquin::test::byte_tokenizer_json(256));
  const fs::path prompts = dir / "probes.json", out = dir / "merge-probes.json";
  aquin::write_file_atomic(prompts,
                           R"(["The capital of France is", "Write a short poem about the sea.", "def fibonacci(n):",
                               "Explain why the sky is blue.", "Translate to German: good morning",
                               "Q: What is 17 times 3?\nA:", "Once upon a time,", "List three uses of a paperclip."])");
  const Measured m = measure(env + AQUIN_BIN + " --threads " + std::to_string(threads) + " merge-analysis --checkpoint '" +
                             lora.string() + "' --prompts '" + prompts.string() + "' --save '" + out.string() + "' > /dev/null");
  if (m.code != 0 && m.code != 2) {
    std::cerr << "aquin merge-analysis --prompts failed (exit " << m.code << ")\n";
    return 1;
  }
  auto doc = aquin::json::parse(aquin::read_text_file(out), out.string());
  const auto& sc = doc["behavioral_scores"];
  int tokens = 0;
  for (const auto& p : sc["per_prompt"].GetArray()) tokens += p["tokens"].GetInt();
  std::printf("with behavioural scores (8 prompts, %d prompt tokens, %d new tokens each, base then adapter):\n", tokens,
              sc["new_tokens"].GetInt());
  std::printf("  %.2f s wall, %.2f s CPU, peak RSS %.0f MB; behaviour stage %.2f s; verdict %s\n", m.seconds, m.cpu_seconds,
              m.peak_rss_mb, doc["timings_s"]["behavior"].GetDouble(), doc["mergeVerdict"].GetString());
  return 0;
}

int main(int argc, char** argv) {
  Shape s;
  fs::path dir = fs::temp_directory_path() / "aquin-bench-merge";
  bool probes = false;
  int threads = static_cast<int>(std::thread::hardware_concurrency());
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--layers" && i + 1 < argc) s.layers = std::atoi(argv[++i]);
    else if (a == "--rank" && i + 1 < argc) s.rank = std::atoi(argv[++i]);
    else if (a == "--dir" && i + 1 < argc) dir = argv[++i];
    else if (a == "--threads" && i + 1 < argc) threads = std::atoi(argv[++i]);
    else if (a == "--probes") probes = true;
    else {
      std::cerr << "usage: bench_merge [--layers N] [--rank R] [--dir DIR] [--threads N] [--probes]\n";
      return 1;
    }
  }
  dir /= "L" + std::to_string(s.layers);
  // In a child, so that this process stays small (bench_util.hpp).
  if (!aquin::bench::run_in_child([&] {
        at::set_num_threads(threads);
        generate(dir, s);
      })) {
    std::cerr << "generating the models failed\n";
    return 1;
  }
  at::set_num_threads(threads);
  const fs::path lora = dir / ("lora-r" + std::to_string(s.rank));
  // Warm the page cache so the figure is the analysis, not the disk.
  std::system(("cat '" + (dir / "base/model.safetensors").string() + "' '" + (lora / "adapter_model.safetensors").string() +
               "' > /dev/null")
                  .c_str());

  const fs::path home = dir / "home", out = dir / "merge.json";
  const std::string env = "AQUIN_HOME='" + home.string() + "' ";
  measure(env + AQUIN_BIN + " session start --id bench --model '" + (dir / "base").string() + "' > /dev/null");
  const std::string load = load_average();
  const Measured m = measure(env + AQUIN_BIN + " --threads " + std::to_string(threads) + " merge-analysis --checkpoint '" +
                             lora.string() + "' --save '" + out.string() + "' > /dev/null");
  if (m.code != 0 && m.code != 2) {
    std::cerr << "aquin merge-analysis failed (exit " << m.code << ")\n";
    return 1;
  }
  auto doc = aquin::json::parse(aquin::read_text_file(out), out.string());
  std::printf("aquin merge-analysis, rank-%ld LoRA on %d layers x 7 weights (%u modules), %d threads:\n", s.rank, s.layers,
              doc["matrices"].Size(), threads);
  std::printf("  %.2f s wall (target < 10 s), %.2f s CPU, peak RSS %.0f MB, load average %s at the start; verdict %s (exit %d)\n",
              m.seconds, m.cpu_seconds, m.peak_rss_mb, load.c_str(), doc["mergeVerdict"].GetString(), m.code);
  std::printf("  per stage (s):");
  for (auto it = doc["timings_s"].MemberBegin(); it != doc["timings_s"].MemberEnd(); ++it)
    std::printf(" %s %.3f;", it->name.GetString(), it->value.GetDouble());
  std::printf("\n");
  double worst_res = 0;
  int passes = 0, intruders = 0;
  for (const auto& x : doc["matrices"].GetArray()) {
    if (!x["merge"].HasMember("intruders")) continue;
    const auto& in = x["merge"]["intruders"];
    worst_res = std::max(worst_res, in["max_residual"].GetDouble());
    passes = std::max(passes, in["passes"].GetInt());
    intruders += in["count"].GetInt();
  }
  std::printf("  intruder analysis: %d passes per decomposition, largest residual %.2e of sigma_1, %d intruder(s)\n",
              passes, worst_res, intruders);
  for (const auto& r : doc["reasons"].GetArray())
    std::printf("  reason: %s %s %s %s\n", r["severity"].GetString(), r["signal"].GetString(), r["param"].GetString(),
                r["detail"].GetString());
  if (probes) return run_probes(dir, lora, env, threads);
  return 0;
}
