// The weights a forward pass runs on (DESIGN.md §4, §7): the base model's memory-mapped tensors,
// addressed by canonical name, with a checkpoint laid over them. A merged checkpoint's tensors
// replace the base's; a LoRA adapter's factors are kept beside the weight they adapt and applied
// inside the linear layer, so a LoRA model never holds a second copy of any weight.
//
// Memory behaviour: nothing is read at load time except LoRA factors (small, copied to fp32). A
// forward asks for one weight (or one fused group: q/k/v, gate/up) at a time; the tensor it gets
// aliases the file's memory map, and when that alias dies its pages leave the process's resident
// set (the SDK's mapping deleter drops them; they stay in the page cache). fp32 weights computed
// in fp32 are used in place; anything else is converted into one reusable buffer the size of the
// largest group (134 MB fp32 for Llama-3.2-1B's gate+up) on a model's first forward, and from its
// second forward on kept converted, within a budget (ConvertedCache), for the forwards after it.
// Measured on a Llama-3.2-1B-shaped bf16 model, 8 x 64 tokens: peak RSS 655 MB for load + one
// forward (PyTorch with fp32 copies: 7.3 GB); a forward converting its weights takes ~7.35 s, one
// reading kept conversions ~6.9 s, level with that PyTorch run (bench_llm_forward).

#pragma once

#include <aquin/sdk/checkpoint.hpp>
#include <aquin/sdk/names.hpp>

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

namespace aquin::llm {

/// Where one canonical parameter's values live.
struct ParamSource {
  const TensorStore* store = nullptr;
  std::string key;                 ///< the name in `store`
  SourceLayout layout = SourceLayout::HF;
  std::vector<int64_t> shape;      ///< in Hugging Face layout
  DType dtype = DType::F32;        ///< storage dtype
  std::string origin;              ///< the store's file, for messages
  bool defined() const { return store != nullptr; }
  /// The tensor in HF layout and storage dtype. Usually a view of the memory map (read-only);
  /// a TransformerLens tensor whose layout needs a copy is copied.
  at::Tensor load() const;
};

/// A LoRA update kept factored: ΔW = scale · B @ A for a linear weight [out, in]; for the
/// embedding table ΔE = scale · (B @ A)ᵀ [vocab, d]. Factors are fp32 copies owned here.
struct LoraFactors {
  at::Tensor a;  ///< [r, in]  (embedding: [r, vocab])
  at::Tensor b;  ///< [out, r] (embedding: [d, r])
  double scale = 0.0;
};

/// What the model expects of one parameter.
struct ExpectedParam {
  std::string name;             ///< canonical, e.g. "blocks.0.attn.q.weight"
  std::vector<int64_t> shape;   ///< HF layout
  bool required = true;         ///< the base model must have it
  bool lora_target = false;     ///< a LoRA adapter may adapt it (linear weights and the embedding)
  bool embedding = false;       ///< a LoRA update of it is an embedding update
};

class WeightSet {
 public:
  /// Opens the base weights at `model_path` (lazily: headers only), indexes them by canonical
  /// name and checks every expected parameter is present with its shape; then lays `overlay` (may
  /// be null) over them. `n_layers` bounds the block indices an overlay may name.
  /// Throws InputError naming the file and tensor for a missing tensor, a shape mismatch, a LoRA
  /// module whose target the model lacks, or a merged checkpoint that holds none of the weights.
  WeightSet(const std::filesystem::path& model_path, const std::vector<ExpectedParam>& expected,
            const Checkpoint* overlay, int64_t n_layers);
  ~WeightSet();
  WeightSet(const WeightSet&) = delete;
  WeightSet& operator=(const WeightSet&) = delete;

  /// The source of an expected parameter; undefined (store == nullptr) for an absent optional one.
  const ParamSource& param(const std::string& canonical) const;
  /// The LoRA update of a parameter, or nullptr.
  const LoraFactors* lora(const std::string& canonical) const;

 private:
  std::unique_ptr<TensorStore> base_;
  std::optional<Checkpoint> overlay_;  ///< re-opened here, so its memory maps live as long as the model
  std::map<std::string, ParamSource> params_;
  std::map<std::string, LoraFactors> lora_;
};

/// Writes `parts` (matrices with one column count, any dtype) converted to dst's dtype into the
/// rows of `dst`, one after the other.
void convert_rows_into(const std::vector<at::Tensor>& parts, const at::Tensor& dst);

/// Weights converted to the compute dtype, kept between forwards while they fit a byte budget, so
/// a model that runs many forwards (batches of prompts, greedy steps) converts each weight once
/// instead of once per forward. Why not always: a single forward gains nothing from keeping them,
/// and an fp32 copy of a bf16 model is twice its size (4.9 GB for Llama-3.2-1B), so the caller
/// starts filling the cache only from a model's second forward, and stops at the budget (the
/// weights past it are converted per forward, as before).
class ConvertedCache {
 public:
  /// `budget_bytes` <= 0 disables the cache.
  explicit ConvertedCache(int64_t budget_bytes) : budget_(budget_bytes) {}
  /// The kept conversion of (`source`, `part`) in `dt`, or an undefined tensor.
  at::Tensor find(const void* source, int64_t part, c10::ScalarType dt) const;
  /// Room for one more conversion under the budget, kept under (`source`, `part`, `dt`) for the
  /// caller to fill before its first use; undefined when the budget is spent.
  at::Tensor reserve(const void* source, int64_t part, c10::ScalarType dt, const std::vector<int64_t>& shape);
  int64_t used_bytes() const { return used_; }

 private:
  std::map<std::tuple<const void*, int64_t, int>, at::Tensor> kept_;
  int64_t budget_ = 0;
  int64_t used_ = 0;
};

/// The converted-weight budget: $AQUIN_WEIGHT_CACHE_MB (a number of MB; 0 turns the cache off) when set, else half
/// of the memory the kernel reports available (MemAvailable) when the model is loaded.
int64_t converted_cache_budget();

/// Converts weights into the compute dtype in one reusable buffer, so a forward allocates (and
/// page-faults) that memory once instead of once per matrix.
class Scratch {
 public:
  /// `src` as a contiguous tensor of dtype `dt`: `src` itself when it already is one (for a
  /// memory-mapped fp32 weight: zero copies), else a view of the buffer holding the converted
  /// values, valid until the next call.
  at::Tensor convert(const at::Tensor& src, c10::ScalarType dt);
  /// Matrices with one column count, converted to `dt` and stacked by rows in the buffer
  /// ([Σ rows, cols]); valid until the next call.
  at::Tensor stack_rows(const std::vector<at::Tensor>& parts, c10::ScalarType dt);

 private:
  at::Tensor reserve(int64_t numel, c10::ScalarType dt);
  at::Tensor buffer_;
};

}  // namespace aquin::llm
