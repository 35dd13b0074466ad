// Model adapter for decoder-only LLMs of the Llama family (llama, mistral, qwen2): reads
// config.json into the normalised ModelInfo and runs the model through families/llama.cpp.
// Weight names are the SDK's "llama" table.
#include "families/llama.hpp"

#include <aquin/sdk/config_json.hpp>
#include <aquin/sdk/plugin.hpp>

#include <algorithm>

namespace {

using namespace aquin;

class LlmAdapter {
 public:
  std::vector<std::string> supported() const { return {"llama", "mistral", "qwen2"}; }

  bool claims(const rapidjson::Document& cfg) const {
    const std::string t = config::get_string(cfg, "model_type");
    auto s = supported();
    return std::find(s.begin(), s.end(), t) != s.end();
  }

  ModelInfo describe(const rapidjson::Document& cfg) const {
    ModelInfo m;
    m.model_type = config::get_string(cfg, "model_type");
    m.family = "llama";
    m.kind = "llm";
    m.n_layers = config::get_int(cfg, "num_hidden_layers");
    m.d_model = config::get_int(cfg, "hidden_size");
    m.n_heads = config::get_int(cfg, "num_attention_heads");
    m.n_kv_heads = config::get_int(cfg, "num_key_value_heads", m.n_heads);
    if (m.n_heads <= 0) throw InputError("config.json", "num_attention_heads must be positive");
    // An explicit head_dim (Mistral, Qwen3-style configs) need not divide hidden_size.
    if (!cfg.HasMember("head_dim") || cfg["head_dim"].IsNull()) {
      if (m.d_model % m.n_heads != 0)
        throw InputError("config.json", "hidden_size is not a multiple of num_attention_heads");
    }
    m.d_head = config::get_int(cfg, "head_dim", m.d_model / m.n_heads);
    m.d_mlp = config::get_int(cfg, "intermediate_size");
    m.vocab_size = config::get_int(cfg, "vocab_size");
    m.max_positions = config::get_int(cfg, "max_position_embeddings", 0);
    m.tied_embeddings = config::get_bool(cfg, "tie_word_embeddings", false);
    m.norm_eps = config::get_double(cfg, "rms_norm_eps", 1e-6);
    m.norm = "rmsnorm";
    m.positions = "rope";
    return m;
  }

  std::unique_ptr<LoadedModel> load(const ModelInfo& base, const Checkpoint* overlay) const {
    return llm::load_llama(base, overlay);
  }
};

}  // namespace

AQUIN_MODEL_ADAPTER_PLUGIN(LlmAdapter, "llm", "0.1.0", "Llama-family decoder LLMs (llama, mistral, qwen2): residual stream")
