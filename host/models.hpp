// Resolving what `--model` names (a catalog slug or a path) to weights on disk, and asking the
// model-adapter plugins to describe it.
#pragma once

#include "registry.hpp"

#include <aquin/sdk/model_info.hpp>

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace aquin::host {

struct CatalogEntry {
  std::string slug, repo, family, kind;
  int64_t sae_layer = -1;
};

/// The catalog: $AQUIN_CATALOG, <exe>/../share/aquin/models.json, or the source tree's.
std::vector<CatalogEntry> load_catalog();
std::filesystem::path catalog_path();

/// The Hugging Face hub cache: $HF_HUB_CACHE, $HF_HOME/hub, $XDG_CACHE_HOME/huggingface/hub or ~/.cache/huggingface/hub.
std::filesystem::path hf_hub_dir();

/// Resolves `model` to a folder holding config.json. Throws InputError listing every place it
/// looked and how to fix it.
std::filesystem::path resolve_model_path(const std::string& model, const std::vector<CatalogEntry>& catalog);

/// Reads <path>/config.json and asks the adapters which one claims it.
ModelInfo describe_model(const std::string& model, const std::filesystem::path& path, const PluginRegistry& reg,
                         const std::vector<CatalogEntry>& catalog);

}  // namespace aquin::host
