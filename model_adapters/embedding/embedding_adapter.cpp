// Model adapter for BERT-family encoders used as embedding models (gte-small, bge-small,
// e5-small): reads config.json into the normalised ModelInfo and runs the model through its
// family's forward pass (families/). Weight names are the SDK's "bert" table.
#include "families/bert.hpp"

#include <aquin/sdk/config_json.hpp>
#include <aquin/sdk/plugin.hpp>

namespace {

using namespace aquin;

class EmbeddingAdapter {
 public:
  std::vector<std::string> supported() const { return {"bert"}; }

  bool claims(const rapidjson::Document& cfg) const { return config::get_string(cfg, "model_type") == "bert"; }

  ModelInfo describe(const rapidjson::Document& cfg) const {
    ModelInfo m;
    m.model_type = "bert";
    m.family = "bert";
    m.kind = "embedding";
    m.n_layers = config::get_int(cfg, "num_hidden_layers");
    m.d_model = config::get_int(cfg, "hidden_size");
    m.n_heads = config::get_int(cfg, "num_attention_heads");
    m.n_kv_heads = m.n_heads;
    if (m.n_heads <= 0 || m.d_model % m.n_heads != 0)
      throw InputError("config.json", "hidden_size is not a multiple of num_attention_heads");
    m.d_head = m.d_model / m.n_heads;
    m.d_mlp = config::get_int(cfg, "intermediate_size");
    m.vocab_size = config::get_int(cfg, "vocab_size");
    m.max_positions = config::get_int(cfg, "max_position_embeddings", 512);
    m.norm_eps = config::get_double(cfg, "layer_norm_eps", 1e-12);
    m.norm = "layernorm";
    m.positions = "learned";
    return m;
  }

  std::unique_ptr<LoadedModel> load(const ModelInfo& base, const Checkpoint* overlay) const {
    if (base.model_type == "bert") return bert::load(base, overlay);
    throw InputError(base.path, "model_type '" + base.model_type + "' cannot be run by the embedding adapter");
  }
};

}  // namespace

AQUIN_MODEL_ADAPTER_PLUGIN(EmbeddingAdapter, "embedding", "0.1.0", "BERT-family encoders: mask-weighted mean pool")
