// The `sae` object every SAE card exports: where the SAE came from and how it encodes.
#pragma once

#include <aquin/sdk/json.hpp>
#include <aquin/sdk/sae.hpp>

namespace aquin {

/// {path, format, architecture, hook, layer, d_in, d_sae, k (null when not TopK),
///  normalize_activations, apply_b_dec_to_input, rescale_acts_by_decoder_norm, dtype, orientation,
///  encode_rule, trained_on (when known), notes}.
BOOST_SYMBOL_VISIBLE rapidjson::Value sae_json(const Sae& sae, json::Alloc& a);

}  // namespace aquin
