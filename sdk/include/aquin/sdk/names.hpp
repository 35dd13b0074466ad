// Canonical weight names (DESIGN.md §4): analyzers never see a format-specific name.
//
// Llama family (llama, mistral, qwen2):   BERT family:
//   embed.weight                            embed.word.weight / embed.position.weight /
//   blocks.{L}.ln1.weight                     embed.token_type.weight / embed.ln.{weight,bias}
//   blocks.{L}.attn.{q,k,v,o}.{weight,bias} blocks.{L}.attn.{q,k,v,o}.{weight,bias}
//   blocks.{L}.ln2.weight                   blocks.{L}.ln1.{weight,bias}  (attention.output.LayerNorm)
//   blocks.{L}.mlp.{gate,up,down}.weight    blocks.{L}.mlp.{up,down}.{weight,bias} (intermediate / output)
//   ln_final.weight                         blocks.{L}.ln2.{weight,bias}  (output.LayerNorm)
//   unembed.weight                          pooler.{weight,bias}
// Canonical tensors are in Hugging Face layout ([out, in] for linear weights).
#pragma once

#include <ATen/core/Tensor.h>

#include <boost/config.hpp>
#include <optional>
#include <string>

namespace aquin {

enum class ParamKind { Q, K, V, O, MlpGate, MlpUp, MlpDown, Embed, Unembed, Norm, Other };

/// "q", "k", "v", "o", "mlp_gate", "mlp_up", "mlp_down", "embed", "unembed", "norm", "other"
BOOST_SYMBOL_VISIBLE const char* kind_name(ParamKind k);

/// How a source tensor must be rearranged to reach Hugging Face layout.
enum class SourceLayout {
  HF,          ///< already [out, in] (or 1-D)
  TLHeadsIn,   ///< TransformerLens W_Q/W_K/W_V: [n_heads, d_model, d_head]
  TLHeadsOut,  ///< TransformerLens W_O: [n_heads, d_head, d_model]
  TLHeadBias,  ///< TransformerLens b_Q/b_K/b_V: [n_heads, d_head]
  Transposed,  ///< TransformerLens W_in/W_gate/W_out/W_U: [in, out]
};

struct CanonicalParam {
  std::string param;          ///< canonical name, e.g. "blocks.3.attn.q.weight"
  std::optional<int> layer;   ///< block index, none for embeddings, final norm, head
  ParamKind kind = ParamKind::Other;
  SourceLayout layout = SourceLayout::HF;
};

/// Maps a weight name from a Hugging Face, PEFT (after stripping lora suffixes) or
/// TransformerLens state dict to its canonical name. `family` is "llama" or "bert".
/// Returns nullopt for buffers that are not weights (rotary caches, position_ids, masks).
/// Unknown names map to kind Other with the source name kept as the canonical name.
BOOST_SYMBOL_VISIBLE std::optional<CanonicalParam> canonicalize(const std::string& family,
                                                                const std::string& source_name);

/// Rearranges a tensor from `layout` into Hugging Face layout (a view where possible).
BOOST_SYMBOL_VISIBLE at::Tensor to_hf_layout(const at::Tensor& t, SourceLayout layout);

}  // namespace aquin
