// The Sae type: validation and the encode / decode rules of each architecture, written from
// SAELens (saes/standard_sae.py, topk_sae.py, jumprelu_sae.py, gated_sae.py, sae.py's input
// normalisation) and sparsify (sparse_coder.py). Everything computes in fp32.
#include <aquin/sdk/errors.hpp>
#include <aquin/sdk/sae.hpp>

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <utility>

namespace aquin {

namespace {

constexpr double kLayerNormEps = 1e-5;  // SAELens run_time_activation_ln_in
// Rows per chunk so that a dense [rows, d_sae] block stays near 64 MB.
int64_t rows_per_chunk(int64_t d_sae) { return std::max<int64_t>(1, (int64_t{1} << 24) / std::max<int64_t>(1, d_sae)); }

std::string shape_text(const at::Tensor& t) {
  std::string s = "[";
  for (int64_t i = 0; i < t.dim(); ++i) s += (i ? ", " : "") + std::to_string(t.size(i));
  return s + "]";
}

at::Tensor as_f32(const at::Tensor& t) { return t.defined() ? t.to(at::kFloat).contiguous() : t; }

}  // namespace

struct Sae::Impl {
  SaeInfo info;
  SaeWeights w;
  at::Tensor dec_norm;   // [d_sae] ‖W_dec row‖ (topk with rescale_acts_by_decoder_norm)
  at::Tensor W_enc_mag;  // [d_in, d_sae] W_enc with column j scaled by exp(r_mag[j]) (gated)

  // Per-vector normalisation; returns the normalised input and what undoes it.
  struct Normalised {
    at::Tensor x;      // [n, d_in]
    at::Tensor scale;  // [n, 1] or undefined: reconstruction * scale
    at::Tensor shift;  // [n, 1] or undefined: + shift
  };

  Normalised normalise(const at::Tensor& x) const {
    Normalised n;
    if (info.normalize == "constant_norm_rescale") {
      at::Tensor coeff = std::sqrt(static_cast<double>(info.d_in)) / x.norm(2, {1}, true);
      n.x = x * coeff;
      n.scale = coeff.reciprocal();
    } else if (info.normalize == "layer_norm") {
      at::Tensor mu = x.mean({1}, true);
      at::Tensor xc = x - mu;
      at::Tensor sd = xc.std({1}, /*unbiased=*/true, /*keepdim=*/true);
      n.x = xc / (sd + kLayerNormEps);
      n.scale = sd;
      n.shift = mu;
    } else {
      n.x = x;
    }
    if (info.apply_b_dec_to_input) n.x = n.x - w.b_dec;
    return n;
  }

  // Sparse codes of one chunk of normalised inputs; row numbers start at `row0`.
  SparseCodes encode_chunk(const at::Tensor& sae_in, int64_t row0) const {
    const int64_t n = sae_in.size(0);
    SparseCodes c;
    c.n_rows = n;
    if (info.architecture == "topk") {
      at::Tensor pre = at::addmm(w.b_enc, sae_in, w.W_enc);
      if (info.rescale_acts_by_decoder_norm) pre.mul_(dec_norm);
      auto top = pre.topk(info.k, /*dim=*/1, /*largest=*/true, /*sorted=*/true);
      at::Tensor vals = at::relu(std::get<0>(top));
      at::Tensor keep = vals > 0;
      at::Tensor rows = at::arange(row0, row0 + n, at::kLong).unsqueeze(1).expand({n, info.k});
      c.rows = rows.masked_select(keep);
      c.features = std::get<1>(top).masked_select(keep);
      c.values = vals.masked_select(keep);
      return c;
    }
    at::Tensor feats;
    if (info.architecture == "standard") {
      feats = at::relu(at::addmm(w.b_enc, sae_in, w.W_enc));
    } else if (info.architecture == "jumprelu") {
      at::Tensor pre = at::addmm(w.b_enc, sae_in, w.W_enc);
      feats = at::relu(pre) * (pre > w.threshold).to(at::kFloat);
    } else {  // gated
      at::Tensor gate = at::addmm(w.b_gate, sae_in, w.W_enc) > 0;
      feats = at::relu(at::addmm(w.b_mag, sae_in, W_enc_mag)) * gate.to(at::kFloat);
    }
    at::Tensor nz = feats.nonzero();  // [nnz, 2], row-major order
    c.rows = nz.select(1, 0) + row0;
    c.features = nz.select(1, 1).contiguous();
    c.values = feats.index({nz.select(1, 0), nz.select(1, 1)});
    return c;
  }

  // Σ value·scale·W_dec[feature] + b_dec for rows [0, n); codes' rows relative to `row0`.
  at::Tensor decode_rows(const SparseCodes& c, int64_t n, int64_t row0) const {
    at::Tensor out = w.b_dec.unsqueeze(0).expand({n, info.d_in}).clone();
    const int64_t nnz = c.values.defined() ? c.values.numel() : 0;
    if (nnz == 0) return out;
    // Gather a bounded number of W_dec rows at a time (about 16 MB).
    const int64_t step = std::max<int64_t>(1, (int64_t{1} << 22) / info.d_in);
    for (int64_t s = 0; s < nnz; s += step) {
      const int64_t m = std::min(step, nnz - s);
      at::Tensor f = c.features.narrow(0, s, m);
      at::Tensor v = c.values.narrow(0, s, m);
      if (w.decode_scale.defined()) v = v * w.decode_scale.index_select(0, f);
      if (info.rescale_acts_by_decoder_norm) v = v / dec_norm.index_select(0, f);
      out.index_add_(0, c.rows.narrow(0, s, m) - row0, w.W_dec.index_select(0, f) * v.unsqueeze(1));
    }
    return out;
  }
};

namespace {

// Problems of the configuration name its file; problems of a tensor name the weights file.
void require_cfg(bool ok, const SaeInfo& info, const std::string& problem) {
  if (!ok)
    throw InputError(!info.config_file.empty() ? info.config_file : info.path.empty() ? std::string("SAE") : info.path,
                     problem);
}
void require(bool ok, const SaeInfo& info, const std::string& problem) {
  if (!ok)
    throw InputError(!info.weights_file.empty() ? info.weights_file : info.path.empty() ? std::string("SAE") : info.path,
                     problem);
}

void check_vector(const at::Tensor& t, const char* name, int64_t n, const SaeInfo& info) {
  require(t.defined(), info, std::string("missing tensor ") + name);
  require(t.dim() == 1 && t.size(0) == n, info,
          std::string(name) + " has shape " + shape_text(t) + ", expected [" + std::to_string(n) + "]");
}

void check_finite(const at::Tensor& t, const char* name, const SaeInfo& info) {
  if (!t.defined()) return;
  require(at::isfinite(t).all().item<bool>(), info, std::string(name) + " holds NaN or Inf values");
}

}  // namespace

int64_t hook_layer(const std::string& hook) {
  if (hook.rfind("blocks.", 0) != 0) return -1;
  std::size_t i = 7, start = 7;
  while (i < hook.size() && std::isdigit(static_cast<unsigned char>(hook[i]))) ++i;
  if (i == start || i > start + 9 || i >= hook.size() || hook[i] != '.') return -1;
  return std::stoll(hook.substr(start, i - start));
}

Sae Sae::from_weights(SaeInfo info, SaeWeights w) {
  static const std::vector<std::string> archs = {"standard", "topk", "jumprelu", "gated"};
  static const std::vector<std::string> norms = {"none", "constant_norm_rescale", "layer_norm"};
  require_cfg(std::find(archs.begin(), archs.end(), info.architecture) != archs.end(), info,
          "architecture '" + info.architecture + "' is not supported (standard, topk, jumprelu, gated)");
  require_cfg(std::find(norms.begin(), norms.end(), info.normalize) != norms.end(), info,
          "normalize_activations '" + info.normalize +
              "' is not supported (none, expected_average_only_in, constant_norm_rescale, layer_norm)");
  require_cfg(info.d_in > 0 && info.d_sae > 0, info, "d_in and d_sae must be positive");
  const int64_t d_in = info.d_in, d_sae = info.d_sae;
  w.W_enc = as_f32(w.W_enc);
  w.W_dec = as_f32(w.W_dec);
  w.b_enc = as_f32(w.b_enc);
  w.b_dec = as_f32(w.b_dec);
  w.threshold = as_f32(w.threshold);
  w.b_gate = as_f32(w.b_gate);
  w.r_mag = as_f32(w.r_mag);
  w.b_mag = as_f32(w.b_mag);
  w.decode_scale = as_f32(w.decode_scale);
  w.W_skip = as_f32(w.W_skip);
  require(w.W_enc.defined(), info, "missing tensor W_enc");
  require(w.W_dec.defined(), info, "missing tensor W_dec");
  require(w.W_enc.dim() == 2 && w.W_enc.size(0) == d_in && w.W_enc.size(1) == d_sae, info,
          "W_enc has shape " + shape_text(w.W_enc) + ", expected [d_in, d_sae] = [" + std::to_string(d_in) + ", " +
              std::to_string(d_sae) + "]");
  require(w.W_dec.dim() == 2 && w.W_dec.size(0) == d_sae && w.W_dec.size(1) == d_in, info,
          "W_dec has shape " + shape_text(w.W_dec) + ", expected [d_sae, d_in] = [" + std::to_string(d_sae) + ", " +
              std::to_string(d_in) + "]");
  check_vector(w.b_dec, "b_dec", d_in, info);
  if (info.architecture == "gated") {
    check_vector(w.b_gate, "b_gate", d_sae, info);
    check_vector(w.r_mag, "r_mag", d_sae, info);
    check_vector(w.b_mag, "b_mag", d_sae, info);
  } else {
    check_vector(w.b_enc, "b_enc", d_sae, info);
  }
  if (info.architecture == "jumprelu") check_vector(w.threshold, "threshold", d_sae, info);
  if (info.architecture == "topk") {
    require_cfg(info.k >= 1 && info.k <= d_sae, info,
            "k = " + std::to_string(info.k) + " must be between 1 and d_sae (" + std::to_string(d_sae) + ")");
  } else {
    info.k = 0;
    info.rescale_acts_by_decoder_norm = false;
  }
  if (w.decode_scale.defined()) check_vector(w.decode_scale, "scaling_factor", d_sae, info);
  if (w.W_skip.defined())
    require(w.W_skip.dim() == 2 && w.W_skip.size(0) == d_in && w.W_skip.size(1) == d_in, info,
            "W_skip has shape " + shape_text(w.W_skip) + ", expected [d_in, d_in]");
  for (auto& [t, name] : std::vector<std::pair<at::Tensor*, const char*>>{
           {&w.W_enc, "W_enc"}, {&w.W_dec, "W_dec"}, {&w.b_enc, "b_enc"}, {&w.b_dec, "b_dec"},
           {&w.threshold, "threshold"}, {&w.b_gate, "b_gate"}, {&w.r_mag, "r_mag"}, {&w.b_mag, "b_mag"},
           {&w.decode_scale, "scaling_factor"}, {&w.W_skip, "W_skip"}})
    check_finite(*t, name, info);
  if (info.layer < 0) info.layer = hook_layer(info.hook);

  auto impl = std::make_shared<Impl>();
  impl->info = std::move(info);
  impl->w = std::move(w);
  if (impl->info.rescale_acts_by_decoder_norm) {
    impl->dec_norm = impl->w.W_dec.norm(2, {1});
    require((impl->dec_norm > 0).all().item<bool>(), impl->info,
            "a W_dec row has zero norm (rescale_acts_by_decoder_norm divides by it)");
  }
  if (impl->info.architecture == "gated") impl->W_enc_mag = impl->w.W_enc * at::exp(impl->w.r_mag).unsqueeze(0);
  Sae s;
  s.impl_ = std::move(impl);
  return s;
}

const SaeInfo& Sae::info() const { return impl_->info; }
const SaeWeights& Sae::weights() const { return impl_->w; }

SaeOutput Sae::run(const at::Tensor& x_in, bool reconstruct) const {
  const Impl& im = *impl_;
  if (x_in.dim() != 2 || x_in.size(1) != im.info.d_in)
    throw InputError("SAE encode", "expected vectors [N, " + std::to_string(im.info.d_in) + "], got " + shape_text(x_in));
  at::NoGradGuard no_grad;
  at::Tensor x = x_in.to(at::kFloat).contiguous();
  const int64_t n = x.size(0);
  const int64_t chunk = rows_per_chunk(im.info.d_sae);
  std::vector<at::Tensor> rows, feats, vals, recon;
  for (int64_t s = 0; s < n; s += chunk) {
    const int64_t m = std::min(chunk, n - s);
    at::Tensor xc = x.narrow(0, s, m);
    Impl::Normalised nx = im.normalise(xc);
    SparseCodes c = im.encode_chunk(nx.x, s);
    if (reconstruct) {
      at::Tensor r = im.decode_rows(c, m, s);
      if (im.w.W_skip.defined()) r.add_(at::mm(xc, im.w.W_skip.t()));
      if (nx.scale.defined()) r.mul_(nx.scale);
      if (nx.shift.defined()) r.add_(nx.shift);
      recon.push_back(r);
    }
    rows.push_back(c.rows);
    feats.push_back(c.features);
    vals.push_back(c.values);
  }
  SaeOutput out;
  out.codes.n_rows = n;
  if (rows.empty()) {
    out.codes.rows = at::empty({0}, at::kLong);
    out.codes.features = at::empty({0}, at::kLong);
    out.codes.values = at::empty({0}, at::kFloat);
    if (reconstruct) out.reconstruction = at::empty({0, im.info.d_in}, at::kFloat);
    return out;
  }
  out.codes.rows = rows.size() == 1 ? rows[0] : at::cat(rows);
  out.codes.features = feats.size() == 1 ? feats[0] : at::cat(feats);
  out.codes.values = vals.size() == 1 ? vals[0] : at::cat(vals);
  if (reconstruct) out.reconstruction = recon.size() == 1 ? recon[0] : at::cat(recon);
  return out;
}

SparseCodes Sae::encode(const at::Tensor& x) const { return run(x, false).codes; }

at::Tensor Sae::encode_dense(const at::Tensor& x) const { return codes_to_dense(encode(x), impl_->info.d_sae); }

at::Tensor Sae::decode(const SparseCodes& codes) const {
  at::NoGradGuard no_grad;
  return impl_->decode_rows(codes, codes.n_rows, 0);
}

std::string Sae::encode_rule() const {
  const SaeInfo& i = impl_->info;
  std::string x = i.normalize == "constant_norm_rescale" ? "x·sqrt(d_in)/‖x‖"
                  : i.normalize == "layer_norm"          ? "LN(x)"
                                                         : "x";
  if (i.apply_b_dec_to_input) x = "(" + x + " - b_dec)";
  if (i.architecture == "standard") return "ReLU(" + x + " W_enc + b_enc)";
  if (i.architecture == "jumprelu") return "JumpReLU(" + x + " W_enc + b_enc; threshold)";
  if (i.architecture == "gated")
    return "1[" + x + " W_enc + b_gate > 0] · ReLU(" + x + " (W_enc·exp(r_mag)) + b_mag)";
  std::string pre = x + " W_enc + b_enc";
  if (i.rescale_acts_by_decoder_norm) pre = "(" + pre + ")·‖W_dec row‖";
  return "ReLU(TopK(k=" + std::to_string(i.k) + ", " + pre + "))";
}

at::Tensor codes_to_dense(const SparseCodes& codes, int64_t d_sae) {
  at::Tensor out = at::zeros({codes.n_rows, d_sae}, at::kFloat);
  if (codes.values.defined() && codes.values.numel() > 0)
    out.index_put_({codes.rows, codes.features}, codes.values);
  return out;
}

}  // namespace aquin
