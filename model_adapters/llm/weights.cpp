#include "weights.hpp"

#include <aquin/sdk/errors.hpp>

#include <ATen/ATen.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif
#include <regex>
#include <set>
#include <utility>

namespace aquin::llm {

namespace {

std::string shape_text(const std::vector<int64_t>& s) {
  std::string out = "[";
  for (std::size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

// The shape a stored tensor has once rearranged into HF layout; empty when its rank does not fit
// the layout (reported as a shape mismatch by the caller).
std::vector<int64_t> hf_shape(const std::vector<int64_t>& s, SourceLayout layout) {
  switch (layout) {
    case SourceLayout::HF: return s;
    case SourceLayout::TLHeadsIn: return s.size() == 3 ? std::vector<int64_t>{s[0] * s[2], s[1]} : std::vector<int64_t>{};
    case SourceLayout::TLHeadsOut: return s.size() == 3 ? std::vector<int64_t>{s[2], s[0] * s[1]} : std::vector<int64_t>{};
    case SourceLayout::TLHeadBias: return s.size() == 2 ? std::vector<int64_t>{s[0] * s[1]} : std::vector<int64_t>{};
    case SourceLayout::Transposed: return s.size() == 2 ? std::vector<int64_t>{s[1], s[0]} : std::vector<int64_t>{};
  }
  return {};
}

ParamSource source_of(const TensorStore& store, const TensorInfo& info, SourceLayout layout) {
  ParamSource p;
  p.store = &store;
  p.key = info.name;
  p.layout = layout;
  p.shape = hf_shape(info.shape, layout);
  p.dtype = info.dtype;
  p.origin = store.origin();
  return p;
}

// PEFT keeps fully trained modules (modules_to_save) under "<module>.modules_to_save.<adapter>.";
// the weight they replace is the module's own.
std::string strip_modules_to_save(const std::string& name) {
  static const std::regex saved(R"(\.modules_to_save(?:\.[A-Za-z0-9_\-]+)?(\.(?:weight|bias))$)");
  return std::regex_replace(name, saved, "$1");
}

at::Tensor owned_fp32(const TensorStore& store, const std::string& key) {
  return store.load(key).to(at::kFloat, /*non_blocking=*/false, /*copy=*/true).contiguous();
}

}  // namespace

at::Tensor ParamSource::load() const { return to_hf_layout(store->load(key), layout); }

WeightSet::~WeightSet() = default;

WeightSet::WeightSet(const std::filesystem::path& model_path, const std::vector<ExpectedParam>& expected,
                     const Checkpoint* overlay, int64_t n_layers) {
  base_ = open_model_weights(model_path);
  std::map<std::string, const ExpectedParam*> wanted;
  for (const auto& e : expected) wanted[e.name] = &e;

  // Base: the first stored tensor that maps to a canonical name wins (a file holding both an HF
  // and a TransformerLens spelling of one weight is not something savers produce).
  std::map<std::string, ParamSource> found;
  for (const auto& info : base_->tensors()) {
    if (!is_floating(info.dtype)) continue;
    auto c = canonicalize("llama", info.name);
    if (c && wanted.count(c->param)) found.emplace(c->param, source_of(*base_, info, c->layout));
  }
  for (const auto& e : expected) {
    auto it = found.find(e.name);
    if (it == found.end()) {
      if (e.required) throw InputError(base_->origin(), "no tensor for " + e.name + " (shape " + shape_text(e.shape) + ")");
      continue;
    }
    if (it->second.shape != e.shape)
      throw InputError(base_->origin(), "tensor '" + it->second.key + "' (" + e.name + ") has shape " +
                                            shape_text(it->second.shape) + " but the config says " + shape_text(e.shape));
    params_[e.name] = it->second;
  }
  if (overlay == nullptr) return;

  const std::string where = overlay->path.string();
  auto check_layer = [&](const CanonicalParam& c, const std::string& source) {
    if (c.layer && (*c.layer < 0 || *c.layer >= n_layers))
      throw InputError(where, "tensor '" + source + "' belongs to block " + std::to_string(*c.layer) + ", but the model has " +
                                  std::to_string(n_layers) + " blocks");
  };
  // A replacement tensor: must fit the weight it replaces exactly.
  auto replace = [&](const TensorStore& store, const TensorInfo& info) -> bool {
    if (!is_floating(info.dtype)) return false;
    auto c = canonicalize("llama", strip_modules_to_save(info.name));
    if (!c) return false;
    check_layer(*c, info.name);
    auto w = wanted.find(c->param);
    if (w == wanted.end()) return false;  // not a weight this model runs on (rotary caches, zero TL biases...)
    ParamSource s = source_of(store, info, c->layout);
    if (s.shape != w->second->shape)
      throw InputError(where, "tensor '" + info.name + "' (" + c->param + ") has shape " +
                                  (s.shape.empty() ? shape_text(info.shape) + " (stored)" : shape_text(s.shape)) +
                                  " but the base model's is " + shape_text(w->second->shape));
    params_[c->param] = s;
    return true;
  };

  // Merged tensors are read during every forward, long after the caller's Checkpoint may be gone:
  // open our own copy, whose memory maps live with this object.
  const bool needs_store = !overlay->is_lora || !overlay->full_tensors.empty();
  if (needs_store) {
    overlay_.emplace(open_checkpoint(overlay->path));
    const TensorStore& store = *overlay_->tensors;
    if (!overlay->is_lora) {
      std::size_t used = 0;
      for (const auto& info : store.tensors()) used += replace(store, info) ? 1 : 0;
      if (used == 0)
        throw InputError(where, "none of its " + std::to_string(store.tensors().size()) +
                                    " tensors is a weight of this model (names map to no canonical weight of a " +
                                    std::to_string(n_layers) + "-block Llama-family model)");
      return;
    }
    for (const auto& name : overlay->full_tensors) {
      const TensorInfo* info = store.find(name);
      if (info == nullptr) throw InputError(where, "tensor '" + name + "' is no longer in the file (changed on disk?)");
      replace(store, *info);
    }
  }

  // LoRA factors are small: read them now (from the caller's checkpoint) into fp32 copies.
  for (const LoraModule& mod : overlay->lora) {
    auto c = canonicalize("llama", mod.target + ".weight");
    auto w = c ? wanted.find(c->param) : wanted.end();
    if (c) check_layer(*c, mod.target);
    if (w == wanted.end() || !w->second->lora_target || w->second->embedding != mod.embedding)
      throw InputError(where, "LoRA module '" + mod.target + "' targets " + (c ? c->param : mod.target + ".weight") +
                                  ", which this model has no " + (mod.embedding ? "embedding" : "linear layer") + " for");
    if (lora_.count(c->param)) throw InputError(where, "two LoRA modules adapt " + c->param);
    LoraFactors f;
    f.a = owned_fp32(*overlay->tensors, mod.a_name);
    f.b = owned_fp32(*overlay->tensors, mod.b_name);
    f.scale = mod.scale;
    const auto& shape = w->second->shape;  // linear [out, in]; embedding [vocab, d]
    const int64_t out = mod.embedding ? shape[1] : shape[0];
    const int64_t in = mod.embedding ? shape[0] : shape[1];
    if (f.a.dim() != 2 || f.b.dim() != 2 || f.a.size(1) != in || f.b.size(0) != out || f.b.size(1) != f.a.size(0))
      throw InputError(where, "LoRA module '" + mod.target + "': lora_A " + shape_text(f.a.sizes().vec()) + " and lora_B " +
                                  shape_text(f.b.sizes().vec()) + " do not fit " + c->param + " " + shape_text(shape));
    lora_.emplace(c->param, std::move(f));
  }
}

const ParamSource& WeightSet::param(const std::string& canonical) const {
  static const ParamSource absent;
  auto it = params_.find(canonical);
  return it == params_.end() ? absent : it->second;
}

const LoraFactors* WeightSet::lora(const std::string& canonical) const {
  auto it = lora_.find(canonical);
  return it == lora_.end() ? nullptr : &it->second;
}

namespace {

// bf16 -> fp32 is exact: a bf16 value's bits are the high half of the float's. Every bf16 weight
// is widened on every forward, so this is written for memory speed: one thread (a parallel region
// per weight gained nothing measurable on 2 shared cores) and non-temporal stores, which skip
// reading the destination into cache before overwriting it (a third less memory traffic; measured
// 0.48 s -> 0.31 s for the 16 blocks of a Llama-3.2-1B-shaped model). The GEMM that reads the
// result streams a matrix far larger than the cache anyway.
void widen_bf16(const at::Tensor& src, const at::Tensor& dst) {
  const auto* s = static_cast<const uint16_t*>(src.data_ptr());
  auto* d = static_cast<uint32_t*>(dst.data_ptr());
  const int64_t n = src.numel();
  int64_t i = 0;
#if defined(__SSE2__)
  for (; i < n && (reinterpret_cast<std::uintptr_t>(d + i) & 15) != 0; ++i) d[i] = static_cast<uint32_t>(s[i]) << 16;
  const __m128i zero = _mm_setzero_si128();
  for (; i + 8 <= n; i += 8) {
    const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i));
    // Interleaving zeros below each 16-bit value is the shift by 16.
    _mm_stream_si128(reinterpret_cast<__m128i*>(d + i), _mm_unpacklo_epi16(zero, v));
    _mm_stream_si128(reinterpret_cast<__m128i*>(d + i + 4), _mm_unpackhi_epi16(zero, v));
  }
  _mm_sfence();  // the streamed stores are visible before anyone reads the buffer
#endif
  for (; i < n; ++i) d[i] = static_cast<uint32_t>(s[i]) << 16;
}

void convert_into(const at::Tensor& src, at::Tensor dst) {
  if (src.scalar_type() == at::kBFloat16 && dst.scalar_type() == at::kFloat && src.is_contiguous()) widen_bf16(src, dst);
  else dst.copy_(src);
}

}  // namespace

void convert_rows_into(const std::vector<at::Tensor>& parts, const at::Tensor& dst) {
  int64_t at_row = 0;
  for (const auto& p : parts) {
    convert_into(p, dst.narrow(0, at_row, p.size(0)));
    at_row += p.size(0);
  }
}

at::Tensor ConvertedCache::find(const void* source, int64_t part, c10::ScalarType dt) const {
  auto it = kept_.find({source, part, static_cast<int>(dt)});
  return it == kept_.end() ? at::Tensor() : it->second;
}

at::Tensor ConvertedCache::reserve(const void* source, int64_t part, c10::ScalarType dt,
                                   const std::vector<int64_t>& shape) {
  const int64_t bytes = c10::multiply_integers(shape) * static_cast<int64_t>(c10::elementSize(dt));
  if (used_ + bytes > budget_) return at::Tensor();
  at::Tensor t = at::empty(shape, at::TensorOptions().dtype(dt));
  kept_[{source, part, static_cast<int>(dt)}] = t;
  used_ += bytes;
  return t;
}

int64_t converted_cache_budget() {
  if (const char* env = std::getenv("AQUIN_WEIGHT_CACHE_MB")) {
    char* end = nullptr;
    const double mb = std::strtod(env, &end);
    if (end != env && *end == '\0' && mb >= 0 && mb < 1e9) return static_cast<int64_t>(mb * 1048576.0);
    throw InputError("AQUIN_WEIGHT_CACHE_MB", std::string("expected a number of MB, got '") + env + "'");
  }
  std::ifstream meminfo("/proc/meminfo");
  std::string line;
  while (std::getline(meminfo, line)) {
    long long kb = 0;
    if (std::sscanf(line.c_str(), "MemAvailable: %lld kB", &kb) == 1) return static_cast<int64_t>(kb) * 1024 / 2;
  }
  return 0;  // unknown: keep nothing
}

at::Tensor Scratch::reserve(int64_t numel, c10::ScalarType dt) {
  if (!buffer_.defined() || buffer_.scalar_type() != dt || buffer_.numel() < numel)
    buffer_ = at::empty({numel}, at::TensorOptions().dtype(dt));
  return buffer_.narrow(0, 0, numel);
}

at::Tensor Scratch::convert(const at::Tensor& src, c10::ScalarType dt) {
  if (src.scalar_type() == dt && src.is_contiguous()) return src;
  at::Tensor out = reserve(src.numel(), dt).view(src.sizes());
  convert_into(src, out);
  return out;
}

at::Tensor Scratch::stack_rows(const std::vector<at::Tensor>& parts, c10::ScalarType dt) {
  int64_t rows = 0, numel = 0;
  for (const auto& p : parts) {
    rows += p.size(0);
    numel += p.numel();
  }
  at::Tensor out = reserve(numel, dt).view({rows, parts.front().size(1)});
  convert_rows_into(parts, out);
  return out;
}

}  // namespace aquin::llm
