// Times `aquin weight-diff` on a generated base / merged full fine-tune pair with Llama-3.2-1B shapes
// (bf16, random weights) against the plain PyTorch way measured in the same run, and checks that
// both agree on every stable rank.
//
//   bench_weight_diff [--layers 16] [--dir DIR] [--no-reference]
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

using Shape = aquin::bench::LlamaShape;

// Base weights with Llama-like scales; the fine-tune adds a dense change (~1% of each weight's
// scale) plus a rank-8 component, then rounds to bf16 as a merged checkpoint would be.
void generate(const fs::path& dir, const Shape& s) {
  if (fs::exists(dir / "ft" / "model.safetensors")) return;
  std::cout << "generating " << s.layers << "-layer Llama-3.2-1B-shaped pair in " << dir << " ..." << std::endl;
  at::manual_seed(0);
  std::vector<std::pair<std::string, at::Tensor>> base, ft;
  auto add = [&](const std::string& name, std::vector<int64_t> shape, double scale) {
    at::Tensor w = (at::randn(shape) * scale);
    if (shape.size() == 1) w = w + 1.0;
    at::Tensor delta = at::randn(shape) * (0.01 * scale);
    if (shape.size() == 2) delta = delta + at::mm(at::randn({shape[0], 8}), at::randn({8, shape[1]})) * (0.002 * scale);
    base.emplace_back(name, w.to(at::kBFloat16));
    ft.emplace_back(name, (w + delta).to(at::kBFloat16));
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
  for (const char* side : {"base", "ft"}) {
    fs::create_directories(dir / side);
    aquin::write_file_atomic(dir / side / "config.json", aquin::bench::llama_config_json(s));
  }
  aquin::write_safetensors(dir / "base" / "model.safetensors", base, {{"format", "pt"}});
  base.clear();
  aquin::write_safetensors(dir / "ft" / "model.safetensors", ft, {{"format", "pt"}});
}



void drop_page_cache_hint(const fs::path& dir) {
  // Read both files once so that both tools start from a warm page cache (fair and repeatable).
  std::system(("cat '" + (dir / "base/model.safetensors").string() + "' '" + (dir / "ft/model.safetensors").string() +
               "' > /dev/null")
                  .c_str());
}

}  // namespace

int main(int argc, char** argv) {
  Shape s;
  fs::path dir = fs::temp_directory_path() / "aquin-bench-weight-diff";
  bool reference = true;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--layers" && i + 1 < argc) s.layers = std::atoi(argv[++i]);
    else if (a == "--dir" && i + 1 < argc) dir = argv[++i];
    else if (a == "--no-reference") reference = false;
    else {
      std::cerr << "usage: bench_weight_diff [--layers N] [--dir DIR] [--no-reference]\n";
      return 1;
    }
  }
  const int threads = static_cast<int>(std::thread::hardware_concurrency());
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
  drop_page_cache_hint(dir);

  const fs::path home = dir / "home";
  const fs::path out = dir / "aquin.json";
  const std::string env = "AQUIN_HOME='" + home.string() + "' ";
  measure(env + AQUIN_BIN + " session start --id bench --model '" + (dir / "base").string() + "' > /dev/null");
  Measured aq = measure(env + AQUIN_BIN + " weight-diff --checkpoint '" + (dir / "ft").string() + "' --save '" +
                        out.string() + "' > /dev/null");
  if (aq.code != 0) {
    std::cerr << "aquin weight-diff failed (exit " << aq.code << ")\n";
    return 1;
  }
  std::printf("aquin weight-diff   %d layers: %.1f s wall, peak RSS %.0f MB (targets: < 60 s, < 2048 MB)\n", s.layers,
              aq.seconds, aq.peak_rss_mb);
  if (!reference) return 0;

  const fs::path ref_out = dir / "reference.json";
  Measured py = measure("/usr/bin/python3 " + std::string(AQUIN_BENCH_REFERENCE) + " '" + (dir / "base").string() + "' '" +
                        (dir / "ft").string() + "' --threads " + std::to_string(threads) + " > '" + ref_out.string() + "'");
  if (py.code != 0) {
    std::cerr << "reference failed (exit " << py.code << ")\n";
    return 1;
  }
  std::printf("PyTorch (svdvals)   %d layers: %.1f s wall, peak RSS %.0f MB\n", s.layers, py.seconds, py.peak_rss_mb);
  std::printf("speed-up            %.1fx (target >= 5x)\n", py.seconds / aq.seconds);

  // Agreement: aquin's figures against the reference's svdvals, tensor by tensor.
  auto a = aquin::json::parse(aquin::read_text_file(out), out.string());
  auto r = aquin::json::parse(aquin::read_text_file(ref_out), ref_out.string());
  double worst_sigma = 0, worst_fro = 0, worst_srank = 0;
  for (const auto& m : a["matrices"].GetArray()) {
    const auto& ref = r["matrices"][m["source_name"].GetString()];
    worst_fro = std::max(worst_fro, std::abs(m["delta_norm"].GetDouble() / ref["delta_norm"].GetDouble() - 1));
    if (ref.HasMember("spectral_norm") && m["spectral_norm"].IsNumber()) {
      worst_sigma = std::max(worst_sigma, std::abs(m["spectral_norm"].GetDouble() / ref["spectral_norm"].GetDouble() - 1));
      worst_srank = std::max(worst_srank, std::abs(m["stable_rank"].GetDouble() / ref["stable_rank"].GetDouble() - 1));
    }
  }
  std::printf("agreement           max rel. error: ‖ΔW‖_F %.2e, ‖ΔW‖_2 %.2e, stable rank %.2e\n", worst_fro, worst_sigma,
              worst_srank);
  return 0;
}
