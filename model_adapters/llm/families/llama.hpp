// The Llama family's forward pass (llama, mistral, qwen2), matching Hugging Face transformers'
// eager implementation (modeling_llama.py / modeling_mistral.py / modeling_qwen2.py).
#pragma once

#include <aquin/sdk/checkpoint.hpp>
#include <aquin/sdk/model_info.hpp>
#include <aquin/sdk/model_runtime.hpp>

#include <memory>

namespace aquin::llm {

/// Loads the model described by `base` (config.json and weights in base.path) with `overlay`
/// (a merged checkpoint or a LoRA adapter; may be null) laid over it. Reads headers and LoRA
/// factors only: weights stay memory-mapped until a forward uses them (see ../weights.hpp for the
/// memory behaviour). The model keeps its own handles on both files, so `overlay` need not
/// outlive the call. One model runs one forward at a time (forward() reuses a conversion buffer).
/// Hooks and logits come back in the request's compute dtype (Float or BFloat16).
/// Throws InputError for a config this code cannot run exactly (an unknown rope_scaling type, an
/// activation other than SiLU) and for weights that do not fit the config or the base model.
std::unique_ptr<LoadedModel> load_llama(const ModelInfo& base, const Checkpoint* overlay);

}  // namespace aquin::llm
