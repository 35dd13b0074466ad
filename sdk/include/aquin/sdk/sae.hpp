// Sparse autoencoders (DESIGN.md §8): one type whatever the SAE's origin. Each on-disk layout has
// its own loader (sdk/src/sae/load_*.cpp); encode and decode live here, so every command that uses
// an SAE (sae diff, capture, sae train, sae align, simulate) never branches on the format.
//
// Layouts read by Sae::load:
//   SAELens v6         cfg.json (architecture, d_in, d_sae, k, metadata.hook_name, ...) + sae_weights.safetensors
//   SAELens <= 5       the flat cfg.json (activation_fn_str, hook_name / hook_point, ...) + sae_weights.safetensors
//   sparsify           cfg.json (k, num_latents | expansion_factor, d_in) + sae.safetensors, in hookpoint
//                      folders ("layers.8") of a run folder
//   aquin hub          meta.json (model_slug, layer, d_model, d_sae, k, arch) + sae.pt (read without executing it)
#pragma once

#include <ATen/core/Tensor.h>

#include <boost/config.hpp>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace aquin {

/// What an SAE is, as recorded in sessions and exports.
struct SaeInfo {
  std::string path;          ///< the folder the SAE was read from
  std::string config_file;   ///< its configuration file (cfg.json, meta.json), named in errors
  std::string weights_file;  ///< its weights file, named in errors about tensors
  std::string format;        ///< "saelens-v6", "saelens-legacy", "sparsify", "aquin-hub" (or "memory")
  std::string architecture;  ///< "standard" (ReLU), "topk", "jumprelu" or "gated"
  std::string hook;          ///< canonical hook, e.g. "blocks.8.hook_resid_post"
  int64_t layer = -1;        ///< the block the hook belongs to (-1 when the hook has none)
  int64_t d_in = 0;
  int64_t d_sae = 0;
  int64_t k = 0;             ///< active features per vector for topk (0 for the others)
  /// Input normalisation applied to every vector before encoding and undone after decoding:
  /// "none", "constant_norm_rescale" (x·sqrt(d_in)/‖x‖) or "layer_norm" (centre, divide by std+1e-5).
  /// "expected_average_only_in" is folded into the weights when SAELens saves, so it reads as "none".
  std::string normalize = "none";
  bool apply_b_dec_to_input = false;          ///< x − b_dec before the encoder
  bool rescale_acts_by_decoder_norm = false;  ///< topk: rank h·‖W_dec row‖, decode with acts/‖W_dec row‖
  std::string dtype;         ///< storage dtype of the weights ("F32", "BF16", "F16"); compute is fp32
  std::string orientation;   ///< how the stored matrices were oriented into W_enc [d_in,d_sae], W_dec [d_sae,d_in]
  std::string model;         ///< the model the SAE was trained on, when the files say ("" otherwise)
  std::vector<std::string> notes;  ///< anything converted or assumed while loading
};

/// The weights in the one internal orientation, fp32 (converted once at load).
struct SaeWeights {
  at::Tensor W_enc;      ///< [d_in, d_sae]
  at::Tensor W_dec;      ///< [d_sae, d_in]
  at::Tensor b_enc;      ///< [d_sae] (standard, topk, jumprelu)
  at::Tensor b_dec;      ///< [d_in]
  at::Tensor threshold;  ///< [d_sae] (jumprelu)
  at::Tensor b_gate;     ///< [d_sae] (gated)
  at::Tensor r_mag;      ///< [d_sae] (gated)
  at::Tensor b_mag;      ///< [d_sae] (gated)
  at::Tensor decode_scale;  ///< [d_sae] or undefined: feature activations are multiplied by it before decoding (SAELens <= 5 scaling_factor)
  at::Tensor W_skip;        ///< [d_in, d_in] or undefined: sparsify's skip connection, reconstruction += x · W_skipᵀ
};

/// Sparse feature activations of a batch of N vectors, as a coordinate list in row order.
/// Only non-zero activations are listed.
struct SparseCodes {
  int64_t n_rows = 0;
  at::Tensor rows;      ///< [nnz] int64, the vector each entry belongs to (non-decreasing)
  at::Tensor features;  ///< [nnz] int64
  at::Tensor values;    ///< [nnz] float32, non-zero
};

/// What one encode pass gives.
struct SaeOutput {
  SparseCodes codes;
  at::Tensor reconstruction;  ///< [N, d_in] fp32 in the input's space (normalisation undone); defined when asked
};

/// A loaded SAE. Immutable and cheap to copy (the weights are shared); encode/decode are safe to
/// call from several threads at once.
class BOOST_SYMBOL_VISIBLE Sae {
 public:
  /// Reads the SAE at `path`: an SAE folder, a file inside one, or a folder of several SAEs
  /// (a sparsify run, an aquin hub repository, a folder of SAELens SAEs), where `layer` picks the
  /// SAE on `blocks.{layer}.hook_resid_post` (required when the folder holds more than one).
  /// Throws InputError("<file>: <problem>") for anything missing, malformed or unsupported
  /// (unknown architecture or normalisation, tensors missing or of the wrong shape, NaN/Inf weights).
  static Sae load(const std::filesystem::path& path, std::optional<int64_t> layer = std::nullopt);

  /// The layers of the SAEs at `path` (one entry for a single SAE folder; -1 where unknown),
  /// read from config files and names only, so a caller can pick a default --layer.
  static std::vector<int64_t> layers_in(const std::filesystem::path& path);

  /// An SAE from weights already in the internal orientation (trainers, tests). `info` must give
  /// architecture, d_in, d_sae, k (topk), hook; everything is validated as load() does.
  static Sae from_weights(SaeInfo info, SaeWeights weights);

  const SaeInfo& info() const;
  const SaeWeights& weights() const;

  /// Encodes x [N, d_in] (any floating dtype; computed in fp32) exactly as the source library
  /// does; with `reconstruct` also decodes. Work is done in row chunks of bounded memory.
  SaeOutput run(const at::Tensor& x, bool reconstruct) const;
  /// The codes alone.
  SparseCodes encode(const at::Tensor& x) const;
  /// Dense feature activations [N, d_sae] fp32 (for small cases and tests).
  at::Tensor encode_dense(const at::Tensor& x) const;
  /// Decodes codes to the SAE's own input space (before any per-vector normalisation is undone):
  /// Σ value·scale·W_dec[feature] + b_dec, [n_rows, d_in] fp32. Gathers only the listed rows of W_dec.
  at::Tensor decode(const SparseCodes& codes) const;

  /// Short rule of the encoder, for exports: e.g. "TopK(k=32) of ReLU((x - b_dec) W_enc + b_enc)".
  std::string encode_rule() const;

 private:
  struct Impl;
  std::shared_ptr<const Impl> impl_;
};

/// The layer of a hook name "blocks.{L}.…", or -1.
BOOST_SYMBOL_VISIBLE int64_t hook_layer(const std::string& hook);

/// Dense [n_rows, d_sae] fp32 activations from sparse codes.
BOOST_SYMBOL_VISIBLE at::Tensor codes_to_dense(const SparseCodes& codes, int64_t d_sae);

}  // namespace aquin
