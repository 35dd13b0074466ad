// SAELens: cfg.json + sae_weights.safetensors. v6 writes `architecture` at the top and the hook
// under `metadata`; <= 5 writes a flat config (`activation_fn_str`, `hook_name`, older files
// `hook_point`, `activation_fn`) and may carry a `scaling_factor` tensor that SAELens multiplies
// into the feature activations inside decode().
#include "sae/loaders.hpp"

#include <aquin/sdk/errors.hpp>
#include <aquin/sdk/safetensors.hpp>

#include <ATen/ATen.h>

namespace aquin::sae_detail {

namespace {

int major_version(const std::string& v) {
  std::size_t i = 0;
  while (i < v.size() && std::isdigit(static_cast<unsigned char>(v[i]))) ++i;
  return i == 0 || i > 6 ? -1 : std::stoi(v.substr(0, i));
}

// normalize_activations: a string, a boolean (SAELens 2: true rescaled every vector to norm
// sqrt(d_in)) or absent.
std::string read_normalize(const JsonFile& cfg, std::vector<std::string>& notes) {
  const rapidjson::Value* v = cfg.find("normalize_activations");
  if (!v) return "none";
  if (v->IsBool()) {
    if (!v->GetBool()) return "none";
    notes.push_back("normalize_activations: true read as constant_norm_rescale (its meaning in SAELens 2)");
    return "constant_norm_rescale";
  }
  if (!v->IsString()) cfg.fail("\"normalize_activations\" is neither a string nor a boolean");
  std::string s = v->GetString();
  if (s == "expected_average_only_in") {
    notes.push_back("normalize_activations expected_average_only_in: SAELens folds the scaling factor into the "
                    "weights when it saves, so nothing is applied at inference");
    return "none";
  }
  if (s == "none" || s.empty()) return "none";
  return s;  // constant_norm_rescale, layer_norm, or refused by Sae::from_weights naming it
}

}  // namespace

Sae load_saelens(const fs::path& dir) {
  JsonFile cfg(dir / "cfg.json");
  const fs::path wpath = dir / "sae_weights.safetensors";
  SaeInfo info;
  info.path = dir.string();
  info.config_file = cfg.path().string();
  info.weights_file = wpath.string();
  const rapidjson::Value* md = cfg.find("metadata");
  if (md && !md->IsObject()) cfg.fail("\"metadata\" is not an object");

  std::string version;
  if (auto v = cfg.opt_str("sae_lens_version")) version = *v;
  else if (md)
    if (auto v2 = cfg.opt_str("sae_lens_version", md)) version = *v2;
  const bool v6 = major_version(version) >= 6 || (md && cfg.find("hook_name", md));
  info.format = v6 ? "saelens-v6" : "saelens-legacy";

  // Hook and model: metadata (v6), the flat fields (<= 5), or the oldest names.
  for (const char* key : {"hook_name", "hook_point"}) {
    if (!info.hook.empty()) break;
    if (md)
      if (auto h = cfg.opt_str(key, md)) info.hook = *h;
    if (info.hook.empty())
      if (auto h = cfg.opt_str(key)) info.hook = *h;
  }
  if (info.hook.empty()) cfg.fail("missing \"hook_name\" (metadata.hook_name in SAELens 6)");
  for (const char* key : {"hook_layer", "hook_point_layer"}) {
    auto l = md ? cfg.opt_int(key, md) : std::nullopt;
    if (!l) l = cfg.opt_int(key);
    if (l) {
      info.layer = *l;
      break;
    }
  }
  if (info.layer < 0) info.layer = hook_layer(info.hook);
  if (auto m = md ? cfg.opt_str("model_name", md) : std::nullopt) info.model = *m;
  else if (auto m2 = cfg.opt_str("model_name")) info.model = *m2;
  for (const char* key : {"hook_head_index"})
    if ((md && cfg.find(key, md)) || cfg.find(key))
      cfg.fail("hook_head_index is set: per-head SAEs (attention hook_z) are not supported");
  if (auto r = cfg.opt_str("reshape_activations"); r && *r != "none")
    cfg.fail("reshape_activations '" + *r + "' is not supported (per-head hook_z SAEs)");

  info.d_in = cfg.req_int("d_in");
  info.d_sae = cfg.req_int("d_sae");
  info.apply_b_dec_to_input = cfg.opt_bool("apply_b_dec_to_input").value_or(true);
  info.normalize = read_normalize(cfg, info.notes);

  // Architecture and activation.
  std::string arch = cfg.opt_str("architecture").value_or("standard");
  std::string act = cfg.opt_str("activation_fn_str").value_or(cfg.opt_str("activation_fn").value_or(""));
  if (arch == "standard" && act == "topk") arch = "topk";  // SAELens <= 5 spelled TopK as an activation
  if (arch == "standard" && !act.empty() && act != "relu" && act != "topk")
    cfg.fail("activation function '" + act + "' is not supported (relu, topk)");
  if (arch != "standard" && arch != "topk" && arch != "jumprelu" && arch != "gated")
    cfg.fail("architecture '" + arch + "' is not supported (standard, topk, jumprelu, gated)");
  info.architecture = arch;
  if (arch == "topk") {
    std::optional<int64_t> k = cfg.opt_int("k");
    if (!k)
      if (const rapidjson::Value* kw = cfg.find("activation_fn_kwargs")) k = cfg.opt_int("k", kw);
    if (!k) cfg.fail("a topk SAE needs \"k\" (activation_fn_kwargs.k in SAELens <= 5)");
    info.k = *k;
    info.rescale_acts_by_decoder_norm = cfg.opt_bool("rescale_acts_by_decoder_norm").value_or(false);
  }

  auto store = open_safetensors(wpath);
  SaeWeights w;
  std::string enc_name;
  w.W_enc = take(*store, {"W_enc"}, &enc_name);
  w.W_dec = take(*store, {"W_dec"});
  w.b_dec = take(*store, {"b_dec"});
  if (!w.W_enc.defined()) throw InputError(wpath.string(), "missing tensor W_enc");
  if (!w.W_dec.defined()) throw InputError(wpath.string(), "missing tensor W_dec");
  if (!w.b_dec.defined()) throw InputError(wpath.string(), "missing tensor b_dec");
  info.dtype = dtype_name(store->find("W_enc")->dtype);
  info.orientation = "as stored: W_enc [d_in, d_sae], W_dec [d_sae, d_in]";
  // Some exports store the encoder the nn.Linear way; a non-square shape says which it is.
  if (info.d_in != info.d_sae && w.W_enc.dim() == 2 && w.W_enc.size(0) == info.d_sae && w.W_enc.size(1) == info.d_in) {
    w.W_enc = w.W_enc.t();
    info.orientation = "W_enc stored [d_sae, d_in], transposed; W_dec as stored";
  }
  if (info.d_in != info.d_sae && w.W_dec.dim() == 2 && w.W_dec.size(0) == info.d_in && w.W_dec.size(1) == info.d_sae) {
    w.W_dec = w.W_dec.t();
    info.orientation += "; W_dec stored [d_in, d_sae], transposed";
  }
  if (arch == "gated") {
    w.b_gate = take(*store, {"b_gate"});
    w.r_mag = take(*store, {"r_mag"});
    w.b_mag = take(*store, {"b_mag"});
    for (auto [t, n] : {std::pair{&w.b_gate, "b_gate"}, {&w.r_mag, "r_mag"}, {&w.b_mag, "b_mag"}})
      if (!t->defined()) throw InputError(wpath.string(), std::string("missing tensor ") + n + " (gated SAE)");
  } else {
    w.b_enc = take(*store, {"b_enc"});
    if (!w.b_enc.defined()) throw InputError(wpath.string(), "missing tensor b_enc");
  }
  if (arch == "jumprelu") {
    w.threshold = take(*store, {"threshold"});
    if (!w.threshold.defined()) {
      at::Tensor log_t = take(*store, {"log_threshold"});
      if (!log_t.defined()) throw InputError(wpath.string(), "missing tensor threshold (jumprelu SAE)");
      w.threshold = at::exp(log_t.to(at::kFloat));
      info.notes.push_back("threshold = exp(log_threshold)");
    }
  }
  std::string sf_name;
  at::Tensor sf = take(*store, {"scaling_factor", "finetuning_scaling_factor"}, &sf_name);
  if (sf.defined()) {
    at::Tensor f = sf.to(at::kFloat).reshape({-1});
    if (!at::equal(f, at::ones_like(f))) {
      w.decode_scale = f;
      info.notes.push_back(sf_name + " multiplies the feature activations before decoding (SAELens decode)");
    }
  } else if (cfg.opt_bool("finetuning_scaling_factor").value_or(false)) {
    throw InputError(wpath.string(), "finetuning_scaling_factor is true but the file has no scaling_factor tensor");
  }
  return Sae::from_weights(std::move(info), std::move(w));
}

}  // namespace aquin::sae_detail
