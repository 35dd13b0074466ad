#include <aquin/sdk/names.hpp>

#include <ATen/ATen.h>

#include <regex>
#include <vector>

namespace aquin {

const char* kind_name(ParamKind k) {
  switch (k) {
    case ParamKind::Q: return "q";
    case ParamKind::K: return "k";
    case ParamKind::V: return "v";
    case ParamKind::O: return "o";
    case ParamKind::MlpGate: return "mlp_gate";
    case ParamKind::MlpUp: return "mlp_up";
    case ParamKind::MlpDown: return "mlp_down";
    case ParamKind::Embed: return "embed";
    case ParamKind::Unembed: return "unembed";
    case ParamKind::Norm: return "norm";
    case ParamKind::Other: return "other";
  }
  return "other";
}

namespace {

bool starts_with(const std::string& s, const std::string& p) { return s.compare(0, p.size(), p) == 0; }
bool ends_with(const std::string& s, const std::string& p) {
  return s.size() >= p.size() && s.compare(s.size() - p.size(), p.size(), p) == 0;
}

// Wrapper prefixes added by PEFT, task heads and DataParallel; stripped before matching.
std::string strip_prefixes(std::string n) {
  for (bool again = true; again;) {
    again = false;
    for (const char* p : {"module.", "base_model.model.", "_orig_mod."}) {
      if (starts_with(n, p)) {
        n = n.substr(std::string(p).size());
        again = true;
      }
    }
  }
  return n;
}

// One rule of a family's name table: a pattern over the (prefix-stripped) source name whose
// first group, when present, is the layer index.
struct Rule {
  std::regex pattern;
  std::string canonical;  // "{L}" replaced by the layer
  ParamKind kind;
  SourceLayout layout = SourceLayout::HF;
};

std::vector<Rule> llama_rules() {
  const std::string L = R"((?:model\.)?layers\.(\d+)\.)";
  const std::string TL = R"(blocks\.(\d+)\.)";
  std::vector<Rule> r = {
      {std::regex(R"((?:model\.)?embed_tokens\.weight)"), "embed.weight", ParamKind::Embed},
      {std::regex(R"(lm_head\.weight)"), "unembed.weight", ParamKind::Unembed},
      {std::regex(R"((?:model\.)?norm\.weight)"), "ln_final.weight", ParamKind::Norm},
      {std::regex(L + R"(input_layernorm\.weight)"), "blocks.{L}.ln1.weight", ParamKind::Norm},
      {std::regex(L + R"(post_attention_layernorm\.weight)"), "blocks.{L}.ln2.weight", ParamKind::Norm},
      {std::regex(L + R"(self_attn\.q_proj\.(weight|bias))"), "blocks.{L}.attn.q.{P}", ParamKind::Q},
      {std::regex(L + R"(self_attn\.k_proj\.(weight|bias))"), "blocks.{L}.attn.k.{P}", ParamKind::K},
      {std::regex(L + R"(self_attn\.v_proj\.(weight|bias))"), "blocks.{L}.attn.v.{P}", ParamKind::V},
      {std::regex(L + R"(self_attn\.o_proj\.(weight|bias))"), "blocks.{L}.attn.o.{P}", ParamKind::O},
      {std::regex(L + R"(mlp\.gate_proj\.weight)"), "blocks.{L}.mlp.gate.weight", ParamKind::MlpGate},
      {std::regex(L + R"(mlp\.up_proj\.weight)"), "blocks.{L}.mlp.up.weight", ParamKind::MlpUp},
      {std::regex(L + R"(mlp\.down_proj\.weight)"), "blocks.{L}.mlp.down.weight", ParamKind::MlpDown},
      // TransformerLens state dicts (HookedTransformer.state_dict()).
      {std::regex(R"(embed\.W_E)"), "embed.weight", ParamKind::Embed},
      {std::regex(R"(unembed\.W_U)"), "unembed.weight", ParamKind::Unembed, SourceLayout::Transposed},
      {std::regex(R"(ln_final\.w)"), "ln_final.weight", ParamKind::Norm},
      {std::regex(TL + R"(ln1\.w)"), "blocks.{L}.ln1.weight", ParamKind::Norm},
      {std::regex(TL + R"(ln2\.w)"), "blocks.{L}.ln2.weight", ParamKind::Norm},
      {std::regex(TL + R"(attn\.W_Q)"), "blocks.{L}.attn.q.weight", ParamKind::Q, SourceLayout::TLHeadsIn},
      {std::regex(TL + R"(attn\._?W_K)"), "blocks.{L}.attn.k.weight", ParamKind::K, SourceLayout::TLHeadsIn},
      {std::regex(TL + R"(attn\._?W_V)"), "blocks.{L}.attn.v.weight", ParamKind::V, SourceLayout::TLHeadsIn},
      {std::regex(TL + R"(attn\.W_O)"), "blocks.{L}.attn.o.weight", ParamKind::O, SourceLayout::TLHeadsOut},
      {std::regex(TL + R"(attn\.b_Q)"), "blocks.{L}.attn.q.bias", ParamKind::Q, SourceLayout::TLHeadBias},
      {std::regex(TL + R"(attn\._?b_K)"), "blocks.{L}.attn.k.bias", ParamKind::K, SourceLayout::TLHeadBias},
      {std::regex(TL + R"(attn\._?b_V)"), "blocks.{L}.attn.v.bias", ParamKind::V, SourceLayout::TLHeadBias},
      {std::regex(TL + R"(attn\.b_O)"), "blocks.{L}.attn.o.bias", ParamKind::O},
      {std::regex(TL + R"(mlp\.W_gate)"), "blocks.{L}.mlp.gate.weight", ParamKind::MlpGate, SourceLayout::Transposed},
      {std::regex(TL + R"(mlp\.W_in)"), "blocks.{L}.mlp.up.weight", ParamKind::MlpUp, SourceLayout::Transposed},
      {std::regex(TL + R"(mlp\.W_out)"), "blocks.{L}.mlp.down.weight", ParamKind::MlpDown, SourceLayout::Transposed},
      {std::regex(TL + R"(mlp\.b_in)"), "blocks.{L}.mlp.up.bias", ParamKind::MlpUp},
      {std::regex(TL + R"(mlp\.b_out)"), "blocks.{L}.mlp.down.bias", ParamKind::MlpDown},
      {std::regex(R"(unembed\.b_U)"), "unembed.bias", ParamKind::Unembed},
  };
  return r;
}

std::vector<Rule> bert_rules() {
  const std::string L = R"((?:bert\.)?encoder\.layer\.(\d+)\.)";
  const std::string E = R"((?:bert\.)?embeddings\.)";
  const std::string P = R"((weight|bias|gamma|beta))";
  return {
      {std::regex(E + R"(word_embeddings\.weight)"), "embed.word.weight", ParamKind::Embed},
      {std::regex(E + R"(position_embeddings\.weight)"), "embed.position.weight", ParamKind::Embed},
      {std::regex(E + R"(token_type_embeddings\.weight)"), "embed.token_type.weight", ParamKind::Embed},
      {std::regex(E + R"(LayerNorm\.)" + P), "embed.ln.{P}", ParamKind::Norm},
      {std::regex(L + R"(attention\.self\.query\.)" + P), "blocks.{L}.attn.q.{P}", ParamKind::Q},
      {std::regex(L + R"(attention\.self\.key\.)" + P), "blocks.{L}.attn.k.{P}", ParamKind::K},
      {std::regex(L + R"(attention\.self\.value\.)" + P), "blocks.{L}.attn.v.{P}", ParamKind::V},
      {std::regex(L + R"(attention\.output\.dense\.)" + P), "blocks.{L}.attn.o.{P}", ParamKind::O},
      {std::regex(L + R"(attention\.output\.LayerNorm\.)" + P), "blocks.{L}.ln1.{P}", ParamKind::Norm},
      {std::regex(L + R"(intermediate\.dense\.)" + P), "blocks.{L}.mlp.up.{P}", ParamKind::MlpUp},
      {std::regex(L + R"(output\.dense\.)" + P), "blocks.{L}.mlp.down.{P}", ParamKind::MlpDown},
      {std::regex(L + R"(output\.LayerNorm\.)" + P), "blocks.{L}.ln2.{P}", ParamKind::Norm},
      {std::regex(R"((?:bert\.)?pooler\.dense\.)" + P), "pooler.{P}", ParamKind::Other},
  };
}

const std::vector<Rule>& rules_for(const std::string& family) {
  static const std::vector<Rule> llama = llama_rules();
  static const std::vector<Rule> bert = bert_rules();
  return family == "bert" ? bert : llama;
}

bool is_buffer(const std::string& n) {
  for (const char* suffix : {"rotary_emb.inv_freq", ".IGNORE", ".mask", "rotary_sin", "rotary_cos",
                             "embeddings.position_ids", "hook_dummy"})
    if (ends_with(n, suffix)) return true;
  return false;
}

std::string normalise_param(const std::string& p) {
  if (p == "gamma") return "weight";
  if (p == "beta") return "bias";
  return p;
}

}  // namespace

std::optional<CanonicalParam> canonicalize(const std::string& family, const std::string& source_name) {
  const std::string name = strip_prefixes(source_name);
  if (is_buffer(name)) return std::nullopt;
  std::smatch m;
  for (const auto& rule : rules_for(family)) {
    if (!std::regex_match(name, m, rule.pattern)) continue;
    CanonicalParam out;
    out.kind = rule.kind;
    out.layout = rule.layout;
    std::string c = rule.canonical;
    std::size_t next_group = 1;
    if (auto pos = c.find("{L}"); pos != std::string::npos) {
      out.layer = std::stoi(m[next_group].str());
      c.replace(pos, 3, m[next_group].str());
      ++next_group;
    }
    if (auto pos = c.find("{P}"); pos != std::string::npos) c.replace(pos, 3, normalise_param(m[next_group].str()));
    out.param = c;
    return out;
  }
  CanonicalParam other;
  other.param = name;
  other.kind = ParamKind::Other;
  static const std::regex any_layer(R"((?:^|\.)(?:layers|layer|blocks|h)\.(\d+)\.)");
  if (std::regex_search(name, m, any_layer)) other.layer = std::stoi(m[1].str());
  return other;
}

at::Tensor to_hf_layout(const at::Tensor& t, SourceLayout layout) {
  switch (layout) {
    case SourceLayout::HF:
      return t;
    case SourceLayout::TLHeadsIn:  // [n, d_model, d_head] -> [n * d_head, d_model]
      return t.permute({0, 2, 1}).reshape({t.size(0) * t.size(2), t.size(1)});
    case SourceLayout::TLHeadsOut:  // [n, d_head, d_model] -> [d_model, n * d_head]
      return t.reshape({t.size(0) * t.size(1), t.size(2)}).t();
    case SourceLayout::TLHeadBias:
      return t.reshape({-1});
    case SourceLayout::Transposed:
      return t.t();
  }
  return t;
}

}  // namespace aquin
