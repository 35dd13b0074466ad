// A Llama-architecture model with random bf16 weights at Llama-like scales, written as a Hugging Face
// folder (config.json + model.safetensors): what the benchmarks that run forwards measure against.
#pragma once

#include "bench_util.hpp"

#include <aquin/sdk/atomic_file.hpp>
#include <aquin/sdk/safetensors.hpp>

#include <ATen/ATen.h>

#include <filesystem>
#include <iostream>
#include <string>
#include <utility>
#include <vector>

namespace aquin::bench {

/// Writes the model into `dir` unless its model.safetensors is already there (seed 0: the same
/// weights on every run and every machine).
inline void write_random_llama(const std::filesystem::path& dir, const LlamaShape& s) {
  if (std::filesystem::exists(dir / "model.safetensors")) return;
  std::cout << "generating a " << s.layers << "-layer Llama-3.2-1B-shaped model in " << dir << " ..." << std::endl;
  at::manual_seed(0);
  std::vector<std::pair<std::string, at::Tensor>> t;
  auto add = [&](const std::string& name, std::vector<int64_t> shape, double scale, double offset = 0) {
    t.emplace_back(name, (at::randn(shape) * scale + offset).to(at::kBFloat16));
  };
  const int64_t kv = s.kv_heads * s.head_dim();
  add("model.embed_tokens.weight", {s.vocab, s.d}, 0.02);
  for (int l = 0; l < s.layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    add(p + "input_layernorm.weight", {s.d}, 0.05, 1.0);
    add(p + "self_attn.q_proj.weight", {s.d, s.d}, 0.02);
    add(p + "self_attn.k_proj.weight", {kv, s.d}, 0.02);
    add(p + "self_attn.v_proj.weight", {kv, s.d}, 0.02);
    add(p + "self_attn.o_proj.weight", {s.d, s.d}, 0.02);
    add(p + "post_attention_layernorm.weight", {s.d}, 0.05, 1.0);
    add(p + "mlp.gate_proj.weight", {s.mlp, s.d}, 0.02);
    add(p + "mlp.up_proj.weight", {s.mlp, s.d}, 0.02);
    add(p + "mlp.down_proj.weight", {s.d, s.mlp}, 0.02);
  }
  add("model.norm.weight", {s.d}, 0.05, 1.0);
  std::filesystem::create_directories(dir);
  write_file_atomic(dir / "config.json", llama_config_json(s));
  write_safetensors(dir / "model.safetensors", t, {{"format", "pt"}});
}

}  // namespace aquin::bench
