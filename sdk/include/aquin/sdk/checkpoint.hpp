// Opening what the user brings: a model folder, a merged checkpoint or a LoRA adapter
// (DESIGN.md §6). Format detection lives here and nowhere else.
#pragma once

#include <aquin/sdk/tensor_store.hpp>

#include <boost/config.hpp>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace aquin {

/// One LoRA-adapted module: ΔW = scale · B @ A for the weight `target + ".weight"`.
struct LoraModule {
  std::string target;  ///< source module name without lora suffix, e.g. "model.layers.0.self_attn.q_proj"
  std::string a_name;  ///< key of A ([r, in]; for embeddings lora_embedding_A [r, vocab])
  std::string b_name;  ///< key of B ([out, r]; for embeddings lora_embedding_B [d_model, r])
  int64_t rank = 0;
  double alpha = 0.0;
  double scale = 0.0;  ///< alpha / r, or alpha / sqrt(r) with rsLoRA
  bool embedding = false;  ///< ΔW is (B @ A)ᵀ in HF layout; norms are the same
};

struct Checkpoint {
  std::filesystem::path path;
  /// "safetensors", "hf-safetensors", "hf-sharded-safetensors", "hf-bin", "pt", "peft-adapter", "pt-lora"
  std::string format;
  std::optional<int64_t> step;
  std::string step_source;  ///< "pt", "trainer_state", "name" or "" when unknown
  std::unique_ptr<TensorStore> tensors;
  bool is_lora = false;
  std::vector<LoraModule> lora;              ///< when is_lora
  std::vector<std::string> full_tensors;     ///< when is_lora: full replacement weights (modules_to_save)
  std::map<std::string, std::string> notes;  ///< e.g. lora_scale_source
  std::vector<std::string> warnings;
};

/// Opens a checkpoint of any supported kind. Throws InputError("<path>: <problem>").
BOOST_SYMBOL_VISIBLE Checkpoint open_checkpoint(const std::filesystem::path& path);

/// Opens a model's weights: a folder (model.safetensors, a sharded index, pytorch_model.bin) or
/// a single weights file.
BOOST_SYMBOL_VISIBLE std::unique_ptr<TensorStore> open_model_weights(const std::filesystem::path& path);

/// The step number in a file or folder name: the number after a step-like word ("checkpoint-500",
/// "step_1200.pt", "ckpt-0300", "epoch3"), else the last run of digits. nullopt when there is none.
BOOST_SYMBOL_VISIBLE std::optional<int64_t> step_from_name(const std::filesystem::path& path);

}  // namespace aquin
