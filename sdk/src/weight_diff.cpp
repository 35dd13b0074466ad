#include <aquin/sdk/errors.hpp>
#include <aquin/sdk/linalg.hpp>
#include <aquin/sdk/weight_diff.hpp>

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <unordered_map>

namespace aquin {

namespace {

// Tensors are processed in row chunks of at most this many elements, so that converting a
// 128256 x 2048 bf16 embedding to fp32 never needs more than one fp32 copy of the delta.
constexpr int64_t kChunkElements = int64_t{1} << 23;

struct Side {
  std::string source;
  SourceLayout layout = SourceLayout::HF;
  const TensorInfo* info = nullptr;
};

// canonical name -> where it lives, in store order.
struct CanonicalIndex {
  std::vector<std::string> order;
  std::unordered_map<std::string, Side> sides;
};

CanonicalIndex index_store(const TensorStore& store, const std::string& family, const std::vector<std::string>* only,
                           std::vector<std::string>& warnings) {
  CanonicalIndex idx;
  auto add = [&](const TensorInfo& info) {
    auto c = canonicalize(family, info.name);
    if (!c) return;
    auto [it, inserted] = idx.sides.emplace(c->param, Side{info.name, c->layout, &info});
    if (!inserted) {
      warnings.push_back(store.origin() + ": '" + info.name + "' and '" + it->second.source + "' both map to " +
                         c->param + "; using '" + it->second.source + "'");
      return;
    }
    idx.order.push_back(c->param);
  };
  if (only != nullptr) {
    for (const auto& n : *only)
      if (const TensorInfo* info = store.find(n)) add(*info);
  } else {
    for (const auto& info : store.tensors()) add(info);
  }
  return idx;
}

std::vector<int64_t> hf_shape(const Side& s) {
  const auto& sh = s.info->shape;
  switch (s.layout) {
    case SourceLayout::HF: return sh;
    case SourceLayout::TLHeadsIn:
      if (sh.size() == 3) return {sh[0] * sh[2], sh[1]};
      break;
    case SourceLayout::TLHeadsOut:
      if (sh.size() == 3) return {sh[2], sh[0] * sh[1]};
      break;
    case SourceLayout::TLHeadBias:
      if (sh.size() == 2) return {sh[0] * sh[1]};
      break;
    case SourceLayout::Transposed:
      if (sh.size() == 2) return {sh[1], sh[0]};
      break;
  }
  return {};  // a TransformerLens tensor of the wrong rank: reported as a shape mismatch
}

at::Tensor load_hf(const TensorStore& store, const Side& s) {
  at::Tensor t = store.load(s.source);
  return to_hf_layout(t, s.layout);
}

std::string shape_text(const std::vector<int64_t>& s) {
  std::string out = "[";
  for (std::size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

double sq(double x) { return x * x; }

// Σ x² in fp64. Row norms in fp32 first (each row is short, so fp32 accumulation is accurate to
// ~1e-9 relative), then the rows summed in fp64: as fast as a plain fp32 norm, which over tens of
// millions of elements is off by 1e-3.
double sum_squares(const at::Tensor& x) {
  if (x.numel() == 0) return 0.0;
  at::Tensor rows = x.dim() >= 2 ? x.reshape({-1, x.size(-1)}) : x.reshape({1, -1});
  return at::linalg_vector_norm(rows, 2, {1}).to(at::kDouble).square().sum().item<double>();
}

// Σ ulp(v)² over half-precision values, read from the stored bits: the exponent field alone fixes
// the spacing (bf16: 2^(e-127-7), f16: 2^(e-15-10)). Zeros and subnormals (exponent field 0) have a
// negligible spacing and are skipped. 0 for other dtypes.
double half_rounding_sum_sq(const at::Tensor& stored, DType dtype) {
  if ((dtype != DType::BF16 && dtype != DType::F16) || stored.numel() == 0) return 0.0;
  const bool bf16 = dtype == DType::BF16;
  at::Tensor bits = stored.contiguous().view(at::kShort).reshape({-1});
  at::Tensor exponent = at::bitwise_and(at::bitwise_right_shift(bits, bf16 ? 7 : 10), bf16 ? 0xFF : 0x1F);
  at::Tensor counts = at::bincount(exponent.to(at::kLong), {}, bf16 ? 256 : 32);
  const auto* n = counts.data_ptr<int64_t>();
  double s = 0;
  for (int64_t e = 1; e < counts.numel(); ++e) {
    if (n[e] == 0) continue;
    const double ulp = bf16 ? std::ldexp(1.0, static_cast<int>(e) - 127 - 7) : std::ldexp(1.0, static_cast<int>(e) - 15 - 10);
    s += static_cast<double>(n[e]) * ulp * ulp;
  }
  return s;
}

int64_t count_non_finite(const at::Tensor& t) {
  if (at::isfinite(t).all().item<bool>()) return 0;
  return t.numel() - at::isfinite(t).sum().item<int64_t>();
}

// Accumulates, chunk by chunk: ‖base‖², ‖Δ‖², max|Δ|, the checkpoint's rounding floor, and NaN/Inf.
struct PairStats {
  double base_sq = 0, delta_sq = 0, max_abs = 0, floor_sq = 0;
  int64_t non_finite = 0;
};

double max_abs_of(const at::Tensor& x) {
  if (x.numel() == 0) return 0.0;
  auto [lo, hi] = at::aminmax(x);
  return std::max(std::abs(lo.item<double>()), std::abs(hi.item<double>()));
}

// Returns ΔW = c - b in fp32 (HF layout, contiguous). The stored chunks are released as soon as
// they are consumed, so a 128256 x 2048 embedding never has both sources resident at once.
// Without `base_norm_wanted` ‖base‖² is left at 0 (the caller has it cached); NaN/Inf in the base
// still show, since they make ΔW non-finite too.
at::Tensor delta_in_chunks(const at::Tensor& b_in, const at::Tensor& c_in, DType c_dtype, bool base_norm_wanted,
                           PairStats& st) {
  at::Tensor b = b_in.dim() == 0 ? b_in.reshape({1}) : b_in;
  at::Tensor c = c_in.dim() == 0 ? c_in.reshape({1}) : c_in;
  at::Tensor delta = at::empty(b.sizes(), at::TensorOptions().dtype(at::kFloat));
  const int64_t rows = b.size(0);
  const int64_t row_elems = rows == 0 ? 1 : std::max<int64_t>(1, b.numel() / rows);
  const int64_t step = std::max<int64_t>(1, kChunkElements / row_elems);
  for (int64_t r0 = 0; r0 < rows; r0 += step) {
    const int64_t n = std::min(step, rows - r0);
    at::Tensor b_raw = b.narrow(0, r0, n), c_raw = c.narrow(0, r0, n);
    at::Tensor bc = b_raw.to(at::kFloat);
    at::Tensor cc = c_raw.to(at::kFloat);
    at::Tensor dc = delta.narrow(0, r0, n);
    at::sub_out(dc, cc, bc);
    const double bsq = base_norm_wanted ? sum_squares(bc) : 0.0, dsq = sum_squares(dc);
    // NaN/Inf anywhere make these sums non-finite: count exactly only then.
    if (!std::isfinite(bsq) || !std::isfinite(dsq)) st.non_finite += count_non_finite(bc) + count_non_finite(cc);
    st.base_sq += bsq;
    st.delta_sq += dsq;
    st.max_abs = std::max(st.max_abs, max_abs_of(dc));
    st.floor_sq += half_rounding_sum_sq(c_raw, c_dtype);
    release_mapped_pages(b_raw);
    release_mapped_pages(c_raw);
  }
  return b_in.dim() == 0 ? delta.reshape({}) : delta;
}

// Spectral figures of a 2-D delta: ‖ΔW‖_2 and the stable rank.
void add_spectrum(MatrixDiff& m, const at::Tensor& delta, const WeightDiffOptions& opts) {
  if (!opts.spectra || delta.dim() != 2 || !(m.delta_norm > 0)) return;
  SpectralEstimate est = spectral_norm(delta, opts.spectral_rel_tol);
  m.spectral_norm = est.sigma_max;
  m.spectral_rel_error = est.rel_error_bound;
  if (est.sigma_max > 0) m.stable_rank = sq(m.delta_norm) / sq(est.sigma_max);
}

// ‖W_base‖_F from the caller's cache (WeightDiffOptions::base_norms), when it has it.
std::optional<double> cached_base_norm(const WeightDiffOptions& opts, const std::string& base_name) {
  if (opts.base_norms == nullptr) return std::nullopt;
  auto it = opts.base_norms->norms.find(base_name);
  if (it == opts.base_norms->norms.end()) return std::nullopt;
  return it->second;
}

void remember_base_norm(const WeightDiffOptions& opts, const std::string& base_name, double norm) {
  if (opts.base_norms != nullptr && std::isfinite(norm)) opts.base_norms->norms.emplace(base_name, norm);
}

void finish_relative(MatrixDiff& m) {
  if (m.base_norm > 0) m.relative = m.delta_norm / m.base_norm;
  if (m.noise_floor > 0) m.below_noise_floor = m.delta_norm <= m.noise_floor;
}

void mark_non_finite(MatrixDiff& m, int64_t count, std::vector<std::string>& warnings, const std::string& origin) {
  m.non_finite = count;
  m.status = "non_finite";
  m.detail = std::to_string(count) + " NaN/Inf values";
  m.delta_norm = m.relative = m.max_abs_delta = MatrixDiff::kNaN;
  warnings.push_back(origin + ": " + m.param + " has " + m.detail + "; its figures are not computed");
}

MatrixDiff compare_pair(const TensorStore& base, const Side& bs, const TensorStore& ck, const Side& cs,
                        const std::string& param, const CanonicalParam& meta, const WeightDiffOptions& opts,
                        std::vector<std::string>& warnings) {
  MatrixDiff m;
  m.param = param;
  m.layer = meta.layer;
  m.kind = meta.kind;
  m.source_name = cs.source;
  m.base_source_name = bs.source;
  m.base_dtype = dtype_name(bs.info->dtype);
  m.checkpoint_dtype = dtype_name(cs.info->dtype);
  const auto b_shape = hf_shape(bs), c_shape = hf_shape(cs);
  m.shape = b_shape;
  if (b_shape.empty() != bs.info->shape.empty() || c_shape.empty() != cs.info->shape.empty() || b_shape != c_shape) {
    m.status = "shape_mismatch";
    m.detail = "base " + shape_text(bs.info->shape) + " vs checkpoint " + shape_text(cs.info->shape);
    warnings.push_back(ck.origin() + ": " + param + " shape mismatch: " + m.detail);
    return m;
  }
  if (!is_floating(bs.info->dtype) || !is_floating(cs.info->dtype)) {
    m.status = "ok";
    m.detail = "integer tensor: compared for equality only";
    at::Tensor eq = at::eq(load_hf(base, bs), load_hf(ck, cs));
    m.delta_norm = eq.all().item<bool>() ? 0.0 : MatrixDiff::kNaN;
    return m;
  }
  PairStats st;
  const std::optional<double> cached = cached_base_norm(opts, bs.source);
  at::Tensor delta = delta_in_chunks(load_hf(base, bs), load_hf(ck, cs), cs.info->dtype, !cached, st);
  m.base_norm = cached ? *cached : std::sqrt(st.base_sq);
  if (!cached) remember_base_norm(opts, bs.source, m.base_norm);
  if (st.non_finite > 0) {
    mark_non_finite(m, st.non_finite, warnings, ck.origin());
    return m;
  }
  m.delta_norm = std::sqrt(st.delta_sq);
  m.max_abs_delta = st.max_abs;
  if (cs.info->dtype == DType::BF16 || cs.info->dtype == DType::F16) m.noise_floor = std::sqrt(st.floor_sq / 12.0);
  finish_relative(m);
  add_spectrum(m, delta, opts);
  return m;
}

// ‖W‖_F of a base tensor, streamed in chunks; counts NaN/Inf.
double chunked_norm(const at::Tensor& t_in, int64_t& non_finite) {
  at::Tensor t = t_in.dim() == 0 ? t_in.reshape({1}) : t_in;
  const int64_t rows = t.size(0);
  const int64_t row_elems = rows == 0 ? 1 : std::max<int64_t>(1, t.numel() / rows);
  const int64_t step = std::max<int64_t>(1, kChunkElements / row_elems);
  double s = 0;
  for (int64_t r0 = 0; r0 < rows; r0 += step) {
    at::Tensor c = t.narrow(0, r0, std::min(step, rows - r0)).to(at::kFloat);
    non_finite += count_non_finite(c);
    s += sum_squares(c);
  }
  return std::sqrt(s);
}

MatrixDiff compare_lora(const TensorStore& base, const CanonicalIndex& base_idx, const Checkpoint& ck,
                        const LoraModule& mod, const std::string& family, const WeightDiffOptions& opts,
                        std::vector<std::string>& warnings) {
  MatrixDiff m;
  m.lora = true;
  m.lora_rank = mod.rank;
  m.lora_scale = mod.scale;
  m.source_name = mod.target;
  std::string module = mod.target;
  const std::string peft = "base_model.model.";
  if (module.compare(0, peft.size(), peft) == 0) module = module.substr(peft.size());
  auto meta = canonicalize(family, module + ".weight");
  m.param = meta ? meta->param : module + ".weight";
  if (meta) {
    m.layer = meta->layer;
    m.kind = meta->kind;
  }
  const TensorInfo* a_info = ck.tensors->find(mod.a_name);
  const TensorInfo* b_info = ck.tensors->find(mod.b_name);
  m.checkpoint_dtype = dtype_name(a_info->dtype);
  // HF layout of ΔW: linear [out, in] = [B rows, A cols]; embedding (B@A)ᵀ = [vocab, d] = [A cols, B rows].
  m.shape = mod.embedding ? std::vector<int64_t>{a_info->shape[1], b_info->shape[0]}
                          : std::vector<int64_t>{b_info->shape[0], a_info->shape[1]};
  auto it = base_idx.sides.find(m.param);
  if (it == base_idx.sides.end()) {
    m.status = "missing_in_base";
    m.detail = "the adapter targets a weight the base model does not have";
    warnings.push_back(ck.path.string() + ": LoRA module '" + mod.target + "' targets " + m.param + ", which the base model lacks");
    return m;
  }
  const Side& bs = it->second;
  m.base_source_name = bs.source;
  m.base_dtype = dtype_name(bs.info->dtype);
  if (hf_shape(bs) != m.shape) {
    m.status = "shape_mismatch";
    m.detail = "base " + shape_text(hf_shape(bs)) + " vs LoRA update " + shape_text(m.shape);
    warnings.push_back(ck.path.string() + ": " + m.param + " shape mismatch: " + m.detail);
    return m;
  }
  int64_t non_finite = 0;
  // The cache spares reading the base tensor at all: an adapter's ΔW does not involve it.
  if (auto cached = cached_base_norm(opts, bs.source)) {
    m.base_norm = *cached;
  } else {
    m.base_norm = chunked_norm(load_hf(base, bs), non_finite);
    if (non_finite == 0) remember_base_norm(opts, bs.source, m.base_norm);
  }
  at::Tensor A = ck.tensors->load(mod.a_name).to(at::kFloat);
  at::Tensor B = ck.tensors->load(mod.b_name).to(at::kFloat);
  non_finite += count_non_finite(A) + count_non_finite(B);
  if (non_finite > 0) {
    mark_non_finite(m, non_finite, warnings, ck.path.string());
    return m;
  }
  SpectralEstimate est = lora_spectral_norm(B, A, mod.scale);
  m.delta_norm = est.frobenius;
  m.spectral_norm = est.sigma_max;
  m.spectral_rel_error = est.rel_error_bound;
  if (est.sigma_max > 0) m.stable_rank = sq(est.frobenius) / sq(est.sigma_max);
  if (!opts.lora_max_abs) {
    finish_relative(m);
    return m;
  }
  // max |ΔW| needs the entries: form B@A a block of rows at a time, never the whole matrix.
  const int64_t rows = B.size(0);
  const int64_t step = std::max<int64_t>(1, kChunkElements / std::max<int64_t>(1, A.size(1)));
  double max_abs = 0;
  for (int64_t r0 = 0; r0 < rows; r0 += step) {
    at::Tensor blk = at::mm(B.narrow(0, r0, std::min(step, rows - r0)), A);
    if (blk.numel() > 0) max_abs = std::max(max_abs, blk.abs().max().item<double>());
  }
  m.max_abs_delta = max_abs * std::abs(mod.scale);
  finish_relative(m);
  return m;
}

}  // namespace

double rounding_noise_floor(const at::Tensor& values, DType dtype) {
  if (dtype != DType::BF16 && dtype != DType::F16) return 0.0;
  return std::sqrt(half_rounding_sum_sq(values.to(to_scalar_type(dtype)), dtype) / 12.0) ;
}

WeightDiff compute_weight_diff(const TensorStore& base, const Checkpoint& ckpt, const std::string& family,
                               const WeightDiffOptions& opts) {
  WeightDiff out;
  if (opts.base_norms != nullptr && opts.base_norms->origin != base.origin()) {
    opts.base_norms->norms.clear();
    opts.base_norms->origin = base.origin();
  }
  CanonicalIndex base_idx = index_store(base, family, nullptr, out.warnings);
  const TensorStore& ck = *ckpt.tensors;

  std::size_t total = 0, done = 0;
  auto tick = [&](const std::string& p) {
    ++done;
    if (opts.progress) opts.progress(done, total, p);
  };

  if (ckpt.is_lora) {
    CanonicalIndex full_idx = index_store(ck, family, &ckpt.full_tensors, out.warnings);
    total = ckpt.lora.size() + full_idx.order.size();
    // Report adapted modules in the base model's order.
    std::unordered_map<std::string, std::size_t> rank_of;
    for (std::size_t i = 0; i < base_idx.order.size(); ++i) rank_of[base_idx.order[i]] = i;
    for (const auto& mod : ckpt.lora) {
      out.matrices.push_back(compare_lora(base, base_idx, ckpt, mod, family, opts, out.warnings));
      tick(out.matrices.back().param);
    }
    for (const auto& p : full_idx.order) {
      auto bit = base_idx.sides.find(p);
      auto meta = canonicalize(family, full_idx.sides[p].source);
      if (bit == base_idx.sides.end()) {
        MatrixDiff m;
        m.param = p;
        m.source_name = full_idx.sides[p].source;
        m.layer = meta->layer;
        m.kind = meta->kind;
        m.shape = hf_shape(full_idx.sides[p]);
        m.status = "missing_in_base";
        m.detail = "the adapter saves a tensor the base model does not have";
        out.warnings.push_back(ckpt.path.string() + ": " + m.source_name + " has no counterpart in the base model");
        out.matrices.push_back(m);
      } else {
        out.matrices.push_back(compare_pair(base, bit->second, ck, full_idx.sides[p], p, *meta, opts, out.warnings));
      }
      tick(p);
    }
    std::stable_sort(out.matrices.begin(), out.matrices.end(), [&](const MatrixDiff& a, const MatrixDiff& b) {
      auto ra = rank_of.count(a.param) ? rank_of[a.param] : rank_of.size();
      auto rb = rank_of.count(b.param) ? rank_of[b.param] : rank_of.size();
      return ra < rb;
    });
  } else {
    CanonicalIndex ck_idx = index_store(ck, family, nullptr, out.warnings);
    total = base_idx.order.size();
    for (const auto& p : ck_idx.order) total += base_idx.sides.count(p) ? 0 : 1;
    std::vector<std::string> missing_in_ckpt, missing_in_base;
    for (const auto& p : base_idx.order) {
      const Side& bs = base_idx.sides[p];
      auto meta = canonicalize(family, bs.source);
      auto cit = ck_idx.sides.find(p);
      if (cit == ck_idx.sides.end()) {
        MatrixDiff m;
        m.param = p;
        m.base_source_name = bs.source;
        m.layer = meta->layer;
        m.kind = meta->kind;
        m.shape = hf_shape(bs);
        m.base_dtype = dtype_name(bs.info->dtype);
        m.status = "missing_in_checkpoint";
        m.detail = "present in the base model only";
        missing_in_ckpt.push_back(p);
        out.matrices.push_back(m);
      } else {
        out.matrices.push_back(compare_pair(base, bs, ck, cit->second, p, *meta, opts, out.warnings));
      }
      tick(p);
    }
    for (const auto& p : ck_idx.order) {
      if (base_idx.sides.count(p)) continue;
      const Side& cs = ck_idx.sides[p];
      auto meta = canonicalize(family, cs.source);
      MatrixDiff m;
      m.param = p;
      m.source_name = cs.source;
      m.layer = meta->layer;
      m.kind = meta->kind;
      m.shape = hf_shape(cs);
      m.checkpoint_dtype = dtype_name(cs.info->dtype);
      m.status = "missing_in_base";
      m.detail = "present in the checkpoint only";
      missing_in_base.push_back(p);
      out.matrices.push_back(m);
      tick(p);
    }
    auto list = [](const std::vector<std::string>& v) {
      std::string s;
      for (std::size_t i = 0; i < v.size() && i < 5; ++i) s += (i ? ", " : "") + v[i];
      if (v.size() > 5) s += ", … (" + std::to_string(v.size() - 5) + " more)";
      return s;
    };
    if (!missing_in_ckpt.empty())
      out.warnings.push_back(ck.origin() + ": " + std::to_string(missing_in_ckpt.size()) +
                             " base tensor(s) missing from the checkpoint: " + list(missing_in_ckpt));
    if (!missing_in_base.empty())
      out.warnings.push_back(ck.origin() + ": " + std::to_string(missing_in_base.size()) +
                             " checkpoint tensor(s) not in the base model: " + list(missing_in_base));
  }
  double bsq = 0, dsq = 0;
  for (const auto& m : out.matrices) {
    if (m.status != "ok" || std::isnan(m.delta_norm)) continue;
    bsq += sq(m.base_norm);
    dsq += sq(m.delta_norm);
  }
  out.total_base_norm = std::sqrt(bsq);
  out.total_delta_norm = std::sqrt(dsq);
  return out;
}

std::string broken_tensors_message(const WeightDiff& wd) {
  const MatrixDiff* first = nullptr;
  int count = 0;
  for (const auto& m : wd.matrices) {
    if (m.status != "shape_mismatch" && m.status != "non_finite") continue;
    if (first == nullptr) first = &m;
    ++count;
  }
  if (first == nullptr) return "";
  std::string msg = first->status == "shape_mismatch" ? "shape mismatch with the base model: " : "non-finite weights: ";
  msg += first->param + " " + first->detail;
  if (count > 1) msg += " (and " + std::to_string(count - 1) + " more)";
  return msg;
}

}  // namespace aquin
