#include "sae_catalog.hpp"

#include "models.hpp"

#include <aquin/sdk/atomic_file.hpp>
#include <aquin/sdk/errors.hpp>
#include <aquin/sdk/json.hpp>

#include <boost/dll/runtime_symbol_info.hpp>

#include <cstdlib>

namespace aquin::host {

namespace fs = std::filesystem;

namespace {

fs::path sae_catalog_path() {
  if (const char* env = std::getenv("AQUIN_SAE_CATALOG")) return env;
  std::error_code ec;
  fs::path exe = boost::dll::program_location(ec).string();
  if (!ec) {
    fs::path installed = exe.parent_path().parent_path() / "share" / "aquin" / "saes.json";
    std::error_code e;
    if (fs::exists(installed, e)) return installed;
  }
#ifdef AQUIN_SOURCE_SAE_CATALOG
  return AQUIN_SOURCE_SAE_CATALOG;
#else
  return "saes.json";
#endif
}

std::string fill(std::string s, int64_t layer) {
  const std::string key = "{layer}";
  for (std::size_t at = s.find(key); at != std::string::npos; at = s.find(key))
    s.replace(at, key.size(), std::to_string(layer));
  return s;
}

std::string files_of(const std::string& layout) {
  if (layout == "aquin-hub") return "meta.json and sae.pt";
  if (layout == "sparsify") return "cfg.json and sae.safetensors";
  return "cfg.json and sae_weights.safetensors";
}

bool has_sae_files(const fs::path& dir) {
  std::error_code ec;
  return (fs::is_regular_file(dir / "cfg.json", ec) &&
          (fs::is_regular_file(dir / "sae_weights.safetensors", ec) || fs::is_regular_file(dir / "sae.safetensors", ec))) ||
         (fs::is_regular_file(dir / "meta.json", ec) && fs::is_regular_file(dir / "sae.pt", ec));
}

}  // namespace

std::vector<SaeCatalogEntry> load_sae_catalog() {
  const fs::path p = sae_catalog_path();
  auto d = json::parse(read_text_file(p), p.string());
  auto it = d.FindMember("saes");
  if (!d.IsObject() || it == d.MemberEnd() || !it->value.IsArray()) throw InputError(p.string(), "missing \"saes\" array");
  std::vector<SaeCatalogEntry> out;
  for (const auto& m : it->value.GetArray()) {
    auto s = [&](const char* k) { return m.IsObject() && m.HasMember(k) && m[k].IsString() ? std::string(m[k].GetString()) : std::string(); };
    auto i = [&](const char* k) -> std::optional<int64_t> {
      if (m.IsObject() && m.HasMember(k) && m[k].IsInt64()) return m[k].GetInt64();
      return std::nullopt;
    };
    SaeCatalogEntry e;
    e.slug = s("slug");
    e.model = s("model");
    e.repo = s("repo");
    e.subfolder = s("subfolder");
    e.layout = s("layout");
    e.hook = s("hook");
    e.source = s("source");
    e.d_sae = i("d_sae");
    e.k = i("k");
    if (e.slug.empty() || e.repo.empty() || e.repo.find('/') == std::string::npos)
      throw InputError(p.string(), "each SAE needs a \"slug\" and a \"repo\" of the form org/name");
    if (m.HasMember("layers") && m["layers"].IsArray() && m["layers"].Size() == 2 && m["layers"][0].IsInt64() &&
        m["layers"][1].IsInt64()) {
      e.layer_lo = m["layers"][0].GetInt64();
      e.layer_hi = m["layers"][1].GetInt64();
    }
    out.push_back(e);
  }
  return out;
}

std::optional<SaeSlug> match_sae_slug(const std::string& slug, const std::vector<SaeCatalogEntry>& catalog) {
  for (const auto& e : catalog) {
    const auto at = e.slug.find("{layer}");
    if (at == std::string::npos) {
      if (slug == e.slug) return SaeSlug{e, slug, e.subfolder, e.hook, -1};
      continue;
    }
    const std::string pre = e.slug.substr(0, at), post = e.slug.substr(at + 7);
    if (slug.size() <= pre.size() + post.size() || slug.compare(0, pre.size(), pre) != 0 ||
        slug.compare(slug.size() - post.size(), post.size(), post) != 0)
      continue;
    const std::string num = slug.substr(pre.size(), slug.size() - pre.size() - post.size());
    if (num.empty() || num.size() > 6 || num.find_first_not_of("0123456789") != std::string::npos) continue;
    const int64_t layer = std::stoll(num);
    if (layer < e.layer_lo || layer > e.layer_hi)
      throw InputError("SAE '" + slug + "'", "layer " + num + " is outside the release's layers " +
                                                 std::to_string(e.layer_lo) + ".." + std::to_string(e.layer_hi));
    return SaeSlug{e, slug, fill(e.subfolder, layer), fill(e.hook, layer), layer};
  }
  return std::nullopt;
}

fs::path resolve_sae(const std::string& what, const std::vector<SaeCatalogEntry>& catalog) {
  std::error_code ec;
  if (fs::exists(what, ec)) return fs::absolute(what);
  auto m = match_sae_slug(what, catalog);
  if (!m) {
    std::string slugs;
    for (const auto& e : catalog) slugs += (slugs.empty() ? "" : ", ") + e.slug;
    throw InputError("SAE '" + what + "'", "no such folder, and not a catalog slug (" + slugs + ")");
  }
  std::vector<std::string> looked;
  if (const char* saes = std::getenv("AQUIN_SAES")) {
    fs::path p = fs::path(saes) / m->slug;
    if (has_sae_files(p)) return fs::absolute(p);
    looked.push_back(p.string() + "/");
  } else {
    looked.push_back("$AQUIN_SAES/" + m->slug + "/ ($AQUIN_SAES is not set)");
  }
  const std::string& repo = m->entry.repo;
  const fs::path repo_dir = hf_hub_dir() / ("models--" + repo.substr(0, repo.find('/')) + "--" + repo.substr(repo.find('/') + 1));
  // refs/main first, then any snapshot holding the subfolder.
  std::vector<fs::path> snaps;
  if (fs::exists(repo_dir / "refs" / "main", ec)) {
    std::string rev = read_text_file(repo_dir / "refs" / "main");
    while (!rev.empty() && (rev.back() == '\n' || rev.back() == ' ')) rev.pop_back();
    snaps.push_back(repo_dir / "snapshots" / rev);
  }
  for (const auto& e : fs::directory_iterator(repo_dir / "snapshots", ec)) snaps.push_back(e.path());
  for (const auto& s : snaps)
    if (has_sae_files(s / m->subfolder)) return s / m->subfolder;
  looked.push_back((repo_dir / "snapshots").string() + "/<rev>/" + m->subfolder + "/");
  std::string msg = "SAE '" + what + "' (" + repo + ", " + m->subfolder + "/) is not on this machine; looked at ";
  for (std::size_t i = 0; i < looked.size(); ++i) msg += (i ? " and " : "") + looked[i];
  msg += ". Put " + files_of(m->entry.layout) + " from " + repo + "/" + m->subfolder + "/ in $AQUIN_SAES/" + m->slug +
         "/, or download the repository into the Hugging Face cache";
  throw InputError(msg);
}

}  // namespace aquin::host
