// Resolving what `aquin load sae` names (a catalog slug such as llama-3.2-1b-l8, or a path) to an
// SAE folder on disk, without any network.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace aquin::host {

struct SaeCatalogEntry {
  std::string slug;       ///< may hold {layer}
  int64_t layer_lo = 0, layer_hi = -1;  ///< range of {layer} (inclusive); empty when the slug has none
  std::string model, repo, subfolder, layout, hook, source;
  std::optional<int64_t> d_sae, k;
};

/// The SAE catalog: $AQUIN_SAE_CATALOG, <exe>/../share/aquin/saes.json, or the source tree's.
std::vector<SaeCatalogEntry> load_sae_catalog();

/// A slug matched against the catalog, with {layer} filled in.
struct SaeSlug {
  SaeCatalogEntry entry;
  std::string slug, subfolder, hook;
  int64_t layer = -1;
};
std::optional<SaeSlug> match_sae_slug(const std::string& slug, const std::vector<SaeCatalogEntry>& catalog);

/// The folder for `what` (an existing path, or a catalog slug found in $AQUIN_SAES/<slug>/ or the
/// Hugging Face cache). Throws InputError saying exactly which files to put where.
std::filesystem::path resolve_sae(const std::string& what, const std::vector<SaeCatalogEntry>& catalog);

}  // namespace aquin::host
