// BERT-family encoders (BertModel: gte-small, bge-small, e5-small), fp32 forward pass matching
// Hugging Face transformers' BertModel in eval mode, with sentence-transformers' mean pooling.
#pragma once

#include <aquin/sdk/checkpoint.hpp>
#include <aquin/sdk/model_info.hpp>
#include <aquin/sdk/model_runtime.hpp>

#include <memory>

namespace aquin::bert {

/// Loads the model at `base.path` (config.json + weights) with `overlay` (a merged checkpoint or
/// a LoRA adapter; may be null) laid over it. `overlay` is only read during the call. Throws
/// InputError for a config or weights that do not fit together (the message names the tensor).
///
/// The model offers "embed", "blocks.{L}.hook_resid_pre", "blocks.{L}.hook_resid_post" and
/// "pooled". Real (mask 1) positions match transformers; padded positions of the [B, T, d] hooks
/// hold zeros (the model only runs real tokens through its dense layers).
std::unique_ptr<LoadedModel> load(const ModelInfo& base, const Checkpoint* overlay);

}  // namespace aquin::bert
