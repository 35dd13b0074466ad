// The weights a forward pass runs on: the base model's, addressed by canonical name, with a
// checkpoint laid over them (DESIGN.md §4). Shared by the families in this plugin.
#pragma once

#include <aquin/sdk/checkpoint.hpp>
#include <aquin/sdk/model_info.hpp>

#include <ATen/core/Tensor.h>

#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

namespace aquin::embedding {

/// A LoRA update kept factored: ΔW = scale · B @ A ([out, in]); for an embedding table the
/// update is (B @ A)ᵀ ([vocab, d]). Both factors are fp32 and stay memory-mapped when stored so.
struct LoraDelta {
  at::Tensor a;  ///< [r, in]; embedding: [r, vocab]
  at::Tensor b;  ///< [out, r]; embedding: [d, r]
  double scale = 0.0;
  bool embedding = false;
  std::string source;  ///< the adapter's module name, for messages
};

/// The base model's weights with a merged checkpoint's tensors replacing them, or with a LoRA
/// adapter's updates alongside them (never merged, so a LoRA model holds one copy of the weights).
class OverlaidWeights {
 public:
  /// Indexes the weights at `base.path` and `overlay` (may be null) by canonical name; reads no
  /// tensor data. `overlay` must outlive this object, not the tensors it hands out (those keep
  /// their memory maps alive). Throws InputError when the overlay does not fit the model at all:
  /// a merged checkpoint none of whose tensors is a weight of the model, a LoRA module whose
  /// target the model lacks.
  OverlaidWeights(const ModelInfo& base, const Checkpoint* overlay);
  ~OverlaidWeights();

  /// The weight `canonical` in Hugging Face layout and fp32: the overlay's tensor when it has one,
  /// else the base's. F32 tensors alias the file's memory map (read-only: never write into them);
  /// other dtypes are converted. Throws InputError naming the tensor and its file when the base
  /// lacks it or when its shape (or the overlay's) is not `shape`.
  at::Tensor get(const std::string& canonical, const std::vector<int64_t>& shape) const;
  /// Whether the base model has the weight (an overlay only ever replaces or updates the base's).
  bool has(const std::string& canonical) const;
  /// The LoRA update for the weight `canonical` of shape `shape` (an embedding table when `table`,
  /// else a linear layer's weight), if the overlay has one. Throws InputError naming the adapter
  /// module when its factors do not fit `shape` or it is of the other kind.
  std::optional<LoraDelta> lora(const std::string& canonical, const std::vector<int64_t>& shape, bool table) const;

 private:
  struct Source {
    const TensorStore* store = nullptr;
    std::string name;  ///< key in the store
  };
  at::Tensor load_f32(const Source& s) const;

  std::unique_ptr<TensorStore> base_store_;
  const Checkpoint* overlay_ = nullptr;
  std::unordered_map<std::string, Source> base_, replaced_;
  std::unordered_map<std::string, const LoraModule*> lora_module_;  ///< canonical -> module in *overlay_
};

}  // namespace aquin::embedding
