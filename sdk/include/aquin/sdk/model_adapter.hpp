// The model-adapter interface: a plugin per model family kind (llm, embedding) that claims a
// model from its config.json and describes it in normalised terms (DESIGN.md §4).
//
// A plugin author writes a class with
//     bool claims(const rapidjson::Document& config) const;
//     ModelInfo describe(const rapidjson::Document& config) const;   // may throw InputError
//     std::vector<std::string> supported() const;
//     std::unique_ptr<LoadedModel> load(const ModelInfo& base, const Checkpoint* overlay) const;
// and registers it with AQUIN_MODEL_ADAPTER_PLUGIN (plugin.hpp).
#pragma once

#include <aquin/sdk/model_info.hpp>
#include <aquin/sdk/model_runtime.hpp>
#include <aquin/sdk/status.hpp>

#include <boost/config.hpp>
#include <memory>
#include <string>
#include <vector>

namespace aquin {

class BOOST_SYMBOL_VISIBLE ModelAdapterApi {
 public:
  virtual ~ModelAdapterApi() = default;
  /// Sets `out` to whether this adapter handles the model whose config.json text is given.
  virtual Status claims(const std::string& config_json, bool& out) noexcept = 0;
  /// Fills the normalised description (family, kind, sizes) from config.json text.
  virtual Status describe(const std::string& config_json, ModelInfo& out) noexcept = 0;
  /// The model_type values this adapter supports, for error messages.
  virtual Status supported(std::vector<std::string>& out) noexcept = 0;
  /// Loads the model described by `base` (base.path holds config.json and the weights), with
  /// `overlay` (a merged checkpoint or a LoRA adapter; may be null) applied. The weights stay
  /// memory-mapped where they can.
  virtual Status load(const ModelInfo& base, const Checkpoint* overlay, std::unique_ptr<LoadedModel>& out) noexcept = 0;
};

}  // namespace aquin
