// Aquin's hub layout (Aquinlabs/llama-3.2-1b-sae, Aquinlabs/gte-small-sae): layer{N}_{d_sae}_top{k}/
// with meta.json (model_slug, layer, d_model, d_sae, k, arch) and sae.pt. The .pt is read by the
// project's own reader (nothing in it is executed). Its tensor names are not documented, so the
// usual names are accepted and matrices are oriented by their shapes against d_model; the
// orientation found is recorded. Encoding is the TopK rule of Gao et al. (2024), as sparsify and
// OpenAI's autoencoders use it: the decoder bias is subtracted from the input first.
#include "sae/loaders.hpp"

#include <aquin/sdk/errors.hpp>
#include <aquin/sdk/pt_reader.hpp>

#include <ATen/ATen.h>

namespace aquin::sae_detail {

namespace {

std::string shape_of(const at::Tensor& t) {
  std::string s = "[";
  for (int64_t i = 0; i < t.dim(); ++i) s += (i ? ", " : "") + std::to_string(t.size(i));
  return s + "]";
}

// Orients a stored matrix to [rows, cols]. `linear_layout` says which way a square matrix is read:
// nn.Linear stores [out, in], SAELens-style names store [in, out].
at::Tensor orient(const at::Tensor& t, const std::string& name, int64_t rows, int64_t cols, bool linear_layout,
                  const std::string& file, std::string& note) {
  if (t.dim() != 2) throw InputError(file, name + " has shape " + shape_of(t) + ", expected a matrix");
  const bool as_is = t.size(0) == rows && t.size(1) == cols;
  const bool transposed = t.size(0) == cols && t.size(1) == rows;
  if (as_is && transposed) {  // square: the name decides
    note += name + " " + shape_of(t) + (linear_layout ? " read as nn.Linear [out, in], transposed" : " as stored") + "; ";
    return linear_layout ? t.t() : t;
  }
  if (as_is) {
    note += name + " " + shape_of(t) + " as stored; ";
    return t;
  }
  if (transposed) {
    note += name + " " + shape_of(t) + " transposed; ";
    return t.t();
  }
  throw InputError(file, name + " has shape " + shape_of(t) + ", expected [" + std::to_string(rows) + ", " +
                             std::to_string(cols) + "] or its transpose");
}

}  // namespace

Sae load_aquin_hub(const fs::path& dir) {
  JsonFile meta(dir / "meta.json");
  const fs::path wpath = dir / "sae.pt";
  SaeInfo info;
  info.path = dir.string();
  info.config_file = meta.path().string();
  info.weights_file = wpath.string();
  info.format = "aquin-hub";
  info.d_in = meta.req_int("d_model");
  info.d_sae = meta.req_int("d_sae");
  info.layer = meta.req_int("layer");
  if (info.layer < 0) meta.fail("\"layer\" must not be negative");
  info.hook = resid_post_hook(info.layer);
  info.model = meta.opt_str("model_slug").value_or("");
  std::string arch = meta.opt_str("arch").value_or("topk");
  for (auto& c : arch) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (arch == "topk" || arch == "top-k" || arch == "top_k") {
    info.architecture = "topk";
    info.k = meta.req_int("k");
  } else if (arch == "relu" || arch == "standard") {
    info.architecture = "standard";
  } else {
    meta.fail("arch '" + arch + "' is not supported (topk, relu)");
  }
  info.apply_b_dec_to_input = true;

  PtCheckpoint pt = read_pt(wpath);
  const TensorStore& st = *pt.tensors;
  std::string enc_name, dec_name, benc_name, bdec_name;
  at::Tensor enc = take(st, {"W_enc", "encoder.weight", "enc.weight", "W_e"}, &enc_name);
  at::Tensor dec = take(st, {"W_dec", "decoder.weight", "dec.weight", "W_d"}, &dec_name);
  at::Tensor b_enc = take(st, {"b_enc", "encoder.bias", "latent_bias", "enc.bias", "b_e"}, &benc_name);
  at::Tensor b_dec = take(st, {"b_dec", "pre_bias", "b_pre", "decoder.bias", "dec.bias", "b_d"}, &bdec_name);
  std::string names;
  for (const auto& t : st.tensors()) names += (names.empty() ? "" : ", ") + t.name;
  if (!enc.defined()) throw InputError(wpath.string(), "no encoder matrix (W_enc or encoder.weight); tensors: " + names);
  if (!dec.defined()) throw InputError(wpath.string(), "no decoder matrix (W_dec or decoder.weight); tensors: " + names);
  if (!b_dec.defined()) throw InputError(wpath.string(), "no decoder bias (b_dec, pre_bias or decoder.bias); tensors: " + names);
  if (!b_enc.defined()) b_enc = at::zeros({info.d_sae}, at::kFloat), benc_name = "(none: zeros)";
  info.dtype = dtype_name(st.find(enc_name)->dtype);

  std::string note;
  SaeWeights w;
  const bool enc_linear = enc_name.find(".weight") != std::string::npos;
  const bool dec_linear = dec_name.find(".weight") != std::string::npos;
  w.W_enc = orient(enc, enc_name, info.d_in, info.d_sae, enc_linear, wpath.string(), note);
  w.W_dec = orient(dec, dec_name, info.d_sae, info.d_in, dec_linear, wpath.string(), note);
  w.b_enc = b_enc;
  w.b_dec = b_dec;
  note += "b_enc = " + benc_name + ", b_dec = " + bdec_name;
  info.orientation = note;
  return Sae::from_weights(std::move(info), std::move(w));
}

}  // namespace aquin::sae_detail
