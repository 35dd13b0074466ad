// One loader per SAE layout on disk (sae.hpp lists them); Sae::load (sae_folder.cpp) picks one.
#pragma once

#include <aquin/sdk/sae.hpp>
#include <aquin/sdk/tensor_store.hpp>

#include <rapidjson/document.h>

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace aquin::sae_detail {

namespace fs = std::filesystem;

/// SAELens v6 or <= 5: cfg.json + sae_weights.safetensors.
Sae load_saelens(const fs::path& dir);
/// sparsify: cfg.json + sae.safetensors in a hookpoint folder.
Sae load_sparsify(const fs::path& dir);
/// Aquin's hub layout: meta.json + sae.pt.
Sae load_aquin_hub(const fs::path& dir);

/// Which loader a folder needs ("saelens", "sparsify", "aquin-hub"), or nullopt when it holds no SAE.
std::optional<std::string> folder_layout(const fs::path& dir);
/// The layer of the SAE in `dir` read cheaply (config files and names only), -1 when unknown.
int64_t folder_layer(const fs::path& dir, const std::string& layout);

/// A JSON object read from a file, with typed field reads whose errors name the file.
class JsonFile {
 public:
  explicit JsonFile(const fs::path& path);
  const fs::path& path() const { return path_; }
  const rapidjson::Value& root() const { return doc_; }
  /// The member `key` of `obj` (the root by default), or nullptr when absent or null.
  const rapidjson::Value* find(const char* key, const rapidjson::Value* obj = nullptr) const;
  std::optional<int64_t> opt_int(const char* key, const rapidjson::Value* obj = nullptr) const;
  int64_t req_int(const char* key, const rapidjson::Value* obj = nullptr) const;
  std::optional<std::string> opt_str(const char* key, const rapidjson::Value* obj = nullptr) const;
  std::optional<bool> opt_bool(const char* key, const rapidjson::Value* obj = nullptr) const;
  [[noreturn]] void fail(const std::string& problem) const;

 private:
  fs::path path_;
  rapidjson::Document doc_;
};

/// A tensor of `store` by the first of `names` present (nullopt-like undefined tensor when none),
/// with the name found written to `found`.
at::Tensor take(const TensorStore& store, const std::vector<std::string>& names, std::string* found = nullptr);

/// "blocks.{layer}.hook_resid_post".
std::string resid_post_hook(int64_t layer);

}  // namespace aquin::sae_detail
