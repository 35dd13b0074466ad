// The normalised description of a model that a model adapter produces from `config.json`.
#pragma once

#include <cstdint>
#include <string>

namespace aquin {

struct ModelInfo {
  std::string model;       ///< what the user named: a catalog slug or a path
  std::string path;        ///< resolved folder (or file) holding the weights
  std::string family;      ///< weight-name family: "llama" (llama, mistral, qwen2) or "bert"
  std::string kind;        ///< "llm" or "embedding"
  std::string model_type;  ///< config.json's model_type
  std::string adapter;     ///< name of the model-adapter plugin that claimed it
  int64_t n_layers = 0;
  int64_t d_model = 0;
  int64_t n_heads = 0;
  int64_t n_kv_heads = 0;
  int64_t d_head = 0;
  int64_t d_mlp = 0;
  int64_t vocab_size = 0;
  int64_t max_positions = 0;
  bool tied_embeddings = false;
  double norm_eps = 0.0;
  std::string norm;       ///< "rmsnorm" or "layernorm"
  std::string positions;  ///< "rope" or "learned"
  int64_t default_sae_layer = -1;  ///< from the catalog, -1 when unknown
};

}  // namespace aquin
