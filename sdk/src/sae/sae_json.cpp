#include <aquin/sdk/sae_json.hpp>

namespace aquin {

rapidjson::Value sae_json(const Sae& sae, json::Alloc& a) {
  using json::put;
  using json::str;
  const SaeInfo& si = sae.info();
  rapidjson::Value o(rapidjson::kObjectType);
  put(o, "path", str(si.path, a), a);
  put(o, "format", str(si.format, a), a);
  put(o, "architecture", str(si.architecture, a), a);
  put(o, "hook", str(si.hook, a), a);
  put(o, "layer", rapidjson::Value(si.layer), a);
  put(o, "d_in", rapidjson::Value(si.d_in), a);
  put(o, "d_sae", rapidjson::Value(si.d_sae), a);
  put(o, "k", si.k > 0 ? rapidjson::Value(si.k) : rapidjson::Value(rapidjson::kNullType), a);
  put(o, "normalize_activations", str(si.normalize, a), a);
  put(o, "apply_b_dec_to_input", rapidjson::Value(si.apply_b_dec_to_input), a);
  put(o, "rescale_acts_by_decoder_norm", rapidjson::Value(si.rescale_acts_by_decoder_norm), a);
  put(o, "dtype", str(si.dtype, a), a);
  put(o, "orientation", str(si.orientation, a), a);
  put(o, "encode_rule", str(sae.encode_rule(), a), a);
  if (!si.model.empty()) put(o, "trained_on", str(si.model, a), a);
  put(o, "notes", json::str_array(si.notes, a), a);
  return o;
}

}  // namespace aquin
