// sparsify (EleutherAI): a hookpoint folder ("layers.8", "layers.13.mlp") with cfg.json and
// sae.safetensors. Encoding (SparseCoder.encode / fused_encoder): ReLU((x - b_dec) encoderᵀ + bias),
// then the k largest. SAELens' TopK takes the k largest pre-activations and applies ReLU after;
// the two give the same non-zero features, so both run through the one topk rule.
#include "sae/loaders.hpp"

#include <aquin/sdk/errors.hpp>
#include <aquin/sdk/safetensors.hpp>

#include <ATen/ATen.h>

namespace aquin::sae_detail {

namespace {
// "layers.8" is the output of block 8; any other hookpoint keeps sparsify's name, and the model
// check refuses it with the hooks the model does offer.
std::string hook_of(const std::string& hookpoint) {
  if (hookpoint.rfind("layers.", 0) == 0) {
    std::string rest = hookpoint.substr(7);
    if (!rest.empty() && rest.size() <= 9 && std::all_of(rest.begin(), rest.end(), ::isdigit))
      return resid_post_hook(std::stoll(rest));
  }
  return hookpoint;
}
}  // namespace

Sae load_sparsify(const fs::path& dir) {
  JsonFile cfg(dir / "cfg.json");
  const fs::path wpath = dir / "sae.safetensors";
  SaeInfo info;
  info.path = dir.string();
  info.config_file = cfg.path().string();
  info.weights_file = wpath.string();
  info.format = "sparsify";
  info.architecture = "topk";
  info.apply_b_dec_to_input = true;
  const std::string act = cfg.opt_str("activation").value_or("topk");
  if (act != "topk") cfg.fail("activation '" + act + "' is not supported (topk)");
  if (cfg.opt_bool("transcode").value_or(false)) cfg.fail("a transcoder (transcode: true) is not an SAE of one hook");
  for (const char* key : {"embed_skip", "gram_lookup"})
    if (cfg.opt_bool(key).value_or(false)) cfg.fail(std::string(key) + " is not supported");
  info.d_in = cfg.req_int("d_in");
  int64_t latents = cfg.opt_int("num_latents").value_or(0);
  if (latents == 0) {
    const int64_t ef = cfg.opt_int("expansion_factor").value_or(0);
    if (ef <= 0 || info.d_in > (int64_t{1} << 40) / ef)
      cfg.fail("num_latents is 0 and expansion_factor is missing or out of range");
    latents = ef * info.d_in;
  }
  info.d_sae = latents;
  info.k = cfg.req_int("k");
  const std::string hookpoint = dir.filename().string();
  info.hook = hook_of(hookpoint);
  info.layer = hook_layer(info.hook);
  if (info.layer < 0 && hookpoint.rfind("layers.", 0) == 0) {  // "layers.13.mlp": a module of block 13
    const std::string num = hookpoint.substr(7, hookpoint.find('.', 7) - 7);
    if (!num.empty() && num.size() <= 9 && std::all_of(num.begin(), num.end(), ::isdigit)) info.layer = std::stoll(num);
  }
  if (info.hook != hookpoint) info.notes.push_back("sparsify hookpoint " + hookpoint + " = " + info.hook);
  if (cfg.opt_bool("multi_topk").value_or(false))
    info.notes.push_back("multi_topk only changes training; inference keeps the top k");

  auto store = open_safetensors(wpath);
  SaeWeights w;
  at::Tensor enc = take(*store, {"encoder.weight"});
  if (!enc.defined()) throw InputError(wpath.string(), "missing tensor encoder.weight");
  if (enc.dim() != 2 || enc.size(0) != info.d_sae || enc.size(1) != info.d_in)
    throw InputError(wpath.string(), "encoder.weight has shape [" + std::to_string(enc.dim() > 0 ? enc.size(0) : 0) + ", " +
                                         std::to_string(enc.dim() > 1 ? enc.size(1) : 0) + "], expected [" +
                                         std::to_string(info.d_sae) + ", " + std::to_string(info.d_in) + "]");
  info.dtype = dtype_name(store->find("encoder.weight")->dtype);
  w.W_enc = enc.t();
  w.b_enc = take(*store, {"encoder.bias"});
  if (!w.b_enc.defined()) throw InputError(wpath.string(), "missing tensor encoder.bias");
  w.W_dec = take(*store, {"W_dec"});
  if (!w.W_dec.defined()) throw InputError(wpath.string(), "missing tensor W_dec");
  w.b_dec = take(*store, {"b_dec"});
  if (!w.b_dec.defined()) throw InputError(wpath.string(), "missing tensor b_dec");
  if (cfg.opt_bool("skip_connection").value_or(false)) {
    w.W_skip = take(*store, {"W_skip"});
    if (!w.W_skip.defined()) throw InputError(wpath.string(), "skip_connection is true but W_skip is missing");
    info.notes.push_back("skip connection: the reconstruction adds x · W_skipᵀ");
  }
  info.orientation = "encoder.weight [d_sae, d_in] transposed to W_enc; W_dec [d_sae, d_in] as stored";
  return Sae::from_weights(std::move(info), std::move(w));
}

}  // namespace aquin::sae_detail
