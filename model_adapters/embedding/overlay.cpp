// Laying a checkpoint over a base model's weights by canonical name (see overlay.hpp).
#include "overlay.hpp"

#include <aquin/sdk/errors.hpp>
#include <aquin/sdk/names.hpp>

#include <ATen/ATen.h>

#include <regex>

namespace aquin::embedding {

namespace {

std::string shape_text(at::IntArrayRef s) {
  std::string out = "[";
  for (std::size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

std::string shape_text(const std::vector<int64_t>& s) { return shape_text(at::IntArrayRef(s)); }

// PEFT saves modules_to_save copies as "<module>.modules_to_save.<adapter>.weight"; the module
// they replace is "<module>.weight".
std::string without_modules_to_save(const std::string& name) {
  static const std::regex saved(R"((.*)\.modules_to_save(?:\.[A-Za-z0-9_\-]+)?\.(weight|bias))");
  std::smatch m;
  return std::regex_match(name, m, saved) ? m[1].str() + "." + m[2].str() : name;
}

// Canonical name -> store key for every weight of `store`; the first key wins a clash, as in
// weight-diff. Buffers (position_ids) map to nothing and are skipped.
std::unordered_map<std::string, std::string> index_by_canonical(const TensorStore& store, const std::string& family,
                                                                const std::vector<std::string>* only) {
  std::unordered_map<std::string, std::string> out;
  auto add = [&](const std::string& key) {
    if (auto c = canonicalize(family, without_modules_to_save(key))) out.emplace(c->param, key);
  };
  if (only != nullptr) {
    for (const auto& key : *only) add(key);
  } else {
    for (const auto& info : store.tensors()) add(info.name);
  }
  return out;
}

}  // namespace

OverlaidWeights::OverlaidWeights(const ModelInfo& base, const Checkpoint* overlay)
    : base_store_(open_model_weights(base.path)), overlay_(overlay) {
  for (auto& [canonical, key] : index_by_canonical(*base_store_, base.family, nullptr))
    base_.emplace(canonical, Source{base_store_.get(), key});
  if (overlay == nullptr) return;
  const std::string where = overlay->path.string();
  if (!overlay->tensors) throw InputError(where, "checkpoint has no tensors");
  const TensorStore& ck = *overlay->tensors;

  // DoRA rescales each column of W + ΔW by a learned magnitude; running it as plain LoRA would
  // give wrong activations without a word.
  for (const auto& key : overlay->full_tensors)
    if (key.find("lora_magnitude_vector") != std::string::npos)
      throw InputError(where, "'" + key + "' is a DoRA magnitude; DoRA adapters cannot be run yet (LoRA only)");

  // Full tensors: a merged checkpoint's weights, or the extras a LoRA adapter saves whole.
  const std::vector<std::string>* only = overlay->is_lora ? &overlay->full_tensors : nullptr;
  std::size_t matched = 0, total = 0;
  for (auto& [canonical, key] : index_by_canonical(ck, base.family, only)) {
    ++total;
    // Tensors the base model has no counterpart for (a BertForX head such as classifier.*) are
    // not part of this model's forward pass.
    if (base_.count(canonical) == 0) continue;
    replaced_.emplace(canonical, Source{&ck, key});
    ++matched;
  }
  // A checkpoint of another architecture would otherwise run silently as the unchanged base.
  if (!overlay->is_lora && matched == 0)
    throw InputError(where, "none of its " + std::to_string(total) + " tensors is a weight of " + base.model +
                                " (" + base.model_type + "); is it a checkpoint of this model?");

  for (const auto& mod : overlay->lora) {
    auto c = canonicalize(base.family, mod.target + ".weight");
    if (!c || base_.count(c->param) == 0)
      throw InputError(where, "LoRA module '" + mod.target + "' targets " + (c ? c->param : mod.target + ".weight") +
                                  ", which " + base.model + " does not have");
    lora_module_.emplace(c->param, &mod);
  }
}

OverlaidWeights::~OverlaidWeights() = default;

bool OverlaidWeights::has(const std::string& canonical) const { return base_.count(canonical) != 0; }

at::Tensor OverlaidWeights::load_f32(const Source& s) const {
  at::Tensor t = s.store->load(s.name);
  // Only a dtype change copies; fp32 stays an alias of the mapping.
  return t.scalar_type() == at::kFloat ? t : t.to(at::kFloat);
}

at::Tensor OverlaidWeights::get(const std::string& canonical, const std::vector<int64_t>& shape) const {
  auto b = base_.find(canonical);
  if (b == base_.end())
    throw InputError(base_store_->origin(), "the model has no weight " + canonical + " (expected " + shape_text(shape) + ")");
  const TensorInfo* binfo = b->second.store->find(b->second.name);
  if (binfo->shape != shape)
    throw InputError(base_store_->origin(), b->second.name + " has shape " + shape_text(binfo->shape) + ", config.json implies " +
                                                shape_text(shape));
  auto r = replaced_.find(canonical);
  if (r == replaced_.end()) return load_f32(b->second);
  const TensorInfo* rinfo = r->second.store->find(r->second.name);
  if (rinfo->shape != shape)
    throw InputError(overlay_->path.string(), r->second.name + " has shape " + shape_text(rinfo->shape) +
                                                  " but the base model's " + b->second.name + " is " + shape_text(shape));
  return load_f32(r->second);
}

std::optional<LoraDelta> OverlaidWeights::lora(const std::string& canonical, const std::vector<int64_t>& shape,
                                               bool table) const {
  auto m = lora_module_.find(canonical);
  if (m == lora_module_.end()) return std::nullopt;
  const LoraModule& mod = *m->second;
  if (mod.embedding != table)
    throw InputError(overlay_->path.string(), "LoRA module '" + mod.target + "' is " +
                                                  (mod.embedding ? "an embedding (lora_embedding_A/B)" : "a linear (lora_A/B)") +
                                                  " update but " + canonical + " is " +
                                                  (table ? "an embedding table" : "a linear layer's weight"));
  LoraDelta d;
  d.a = load_f32({overlay_->tensors.get(), mod.a_name});
  d.b = load_f32({overlay_->tensors.get(), mod.b_name});
  d.scale = mod.scale;
  d.embedding = mod.embedding;
  d.source = mod.target;
  // Linear: A [r, in], B [out, r] against W [out, in]. Embedding: A [r, vocab], B [d, r] against E [vocab, d].
  const bool fits = shape.size() == 2 && (d.embedding ? (d.a.size(1) == shape[0] && d.b.size(0) == shape[1])
                                                      : (d.a.size(1) == shape[1] && d.b.size(0) == shape[0]));
  if (!fits)
    throw InputError(overlay_->path.string(), "LoRA module '" + mod.target + "' has lora_A " + shape_text(d.a.sizes()) +
                                                  " and lora_B " + shape_text(d.b.sizes()) + ", which do not fit " +
                                                  canonical + " " + shape_text(shape));
  return d;
}

}  // namespace aquin::embedding
