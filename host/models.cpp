#include "models.hpp"

#include <aquin/sdk/atomic_file.hpp>
#include <aquin/sdk/errors.hpp>
#include <aquin/sdk/json.hpp>

#include <boost/dll/runtime_symbol_info.hpp>


#include <algorithm>
#include <cstdlib>

namespace aquin::host {

namespace fs = std::filesystem;

fs::path catalog_path() {
  if (const char* env = std::getenv("AQUIN_CATALOG")) return env;
  std::error_code ec;
  fs::path exe = boost::dll::program_location(ec).string();
  if (!ec) {
    fs::path installed = exe.parent_path().parent_path() / "share" / "aquin" / "models.json";
    std::error_code e;
    if (fs::exists(installed, e)) return installed;
  }
#ifdef AQUIN_SOURCE_CATALOG
  return AQUIN_SOURCE_CATALOG;
#else
  return "models.json";
#endif
}

std::vector<CatalogEntry> load_catalog() {
  const fs::path p = catalog_path();
  auto d = json::parse(read_text_file(p), p.string());
  std::vector<CatalogEntry> out;
  auto it = d.FindMember("models");
  if (!d.IsObject() || it == d.MemberEnd() || !it->value.IsArray()) throw InputError(p.string(), "missing \"models\" array");
  for (const auto& m : it->value.GetArray()) {
    if (!m.IsObject() || !m.HasMember("slug") || !m["slug"].IsString() || !m.HasMember("repo") || !m["repo"].IsString())
      throw InputError(p.string(), "each model needs \"slug\" and \"repo\" strings");
    CatalogEntry e;
    e.slug = m["slug"].GetString();
    e.repo = m["repo"].GetString();
    if (m.HasMember("family") && m["family"].IsString()) e.family = m["family"].GetString();
    if (m.HasMember("kind") && m["kind"].IsString()) e.kind = m["kind"].GetString();
    if (m.HasMember("sae_layer") && m["sae_layer"].IsInt64()) e.sae_layer = m["sae_layer"].GetInt64();
    out.push_back(e);
  }
  return out;
}

fs::path hf_hub_dir() {
  if (const char* c = std::getenv("HF_HUB_CACHE")) return c;
  if (const char* h = std::getenv("HF_HOME")) return fs::path(h) / "hub";
  if (const char* x = std::getenv("XDG_CACHE_HOME")) return fs::path(x) / "huggingface" / "hub";
  const char* home = std::getenv("HOME");
  return fs::path(home ? home : "/root") / ".cache" / "huggingface" / "hub";
}

namespace {

// The snapshot refs/main points at, else the most recently modified snapshot with a config.json.
std::optional<fs::path> hf_snapshot(const fs::path& repo_dir) {
  std::error_code ec;
  fs::path ref = repo_dir / "refs" / "main";
  if (fs::exists(ref, ec)) {
    std::string rev = read_text_file(ref);
    while (!rev.empty() && (rev.back() == '\n' || rev.back() == ' ')) rev.pop_back();
    fs::path snap = repo_dir / "snapshots" / rev;
    if (fs::exists(snap / "config.json", ec)) return snap;
  }
  std::optional<fs::path> best;
  fs::file_time_type best_time{};
  if (!fs::is_directory(repo_dir / "snapshots", ec)) return std::nullopt;
  for (const auto& e : fs::directory_iterator(repo_dir / "snapshots", ec)) {
    if (!fs::exists(e.path() / "config.json", ec)) continue;
    auto t = fs::last_write_time(e.path(), ec);
    if (!best || t > best_time) {
      best = e.path();
      best_time = t;
    }
  }
  return best;
}

}  // namespace

fs::path resolve_model_path(const std::string& model, const std::vector<CatalogEntry>& catalog) {
  std::error_code ec;
  std::vector<std::string> looked;
  if (fs::exists(model, ec)) {
    fs::path p = fs::absolute(model);
    if (fs::is_directory(p) && !fs::exists(p / "config.json", ec))
      throw InputError(p.string(), "no config.json in this folder (a Hugging Face model folder is expected)");
    if (!fs::is_directory(p)) throw InputError(p.string(), "a model is a folder with config.json and weights, not a file");
    return p;
  }
  looked.push_back("path '" + model + "' (does not exist)");
  auto it = std::find_if(catalog.begin(), catalog.end(), [&](const CatalogEntry& e) { return e.slug == model; });
  std::vector<std::string> candidates_repo;
  if (it != catalog.end()) candidates_repo.push_back(it->repo);
  else if (model.find('/') != std::string::npos && model.find('/') == model.rfind('/')) candidates_repo.push_back(model);

  if (const char* models = std::getenv("AQUIN_MODELS")) {
    fs::path p = fs::path(models) / model;
    if (fs::exists(p / "config.json", ec)) return fs::absolute(p);
    looked.push_back("$AQUIN_MODELS/" + model + " = " + p.string());
  } else {
    looked.push_back("$AQUIN_MODELS/" + model + " ($AQUIN_MODELS is not set)");
  }
  for (const auto& repo : candidates_repo) {
    const std::string dir = "models--" + repo.substr(0, repo.find('/')) + "--" + repo.substr(repo.find('/') + 1);
    fs::path repo_dir = hf_hub_dir() / dir;
    if (auto snap = hf_snapshot(repo_dir)) return *snap;
    looked.push_back("Hugging Face cache " + (repo_dir / "snapshots").string() + "/<rev>/");
  }
  std::string msg = "cannot find model '" + model + "'";
  if (it == catalog.end() && candidates_repo.empty()) msg += " (not a catalog slug: see " + catalog_path().string() + ")";
  msg += "; looked at: ";
  for (std::size_t i = 0; i < looked.size(); ++i) msg += (i ? "; " : "") + looked[i];
  msg += ". Fix: pass a folder with config.json, set AQUIN_MODELS to a folder holding '" + model +
         "/', or put the model in the Hugging Face cache (HF_HOME)";
  throw InputError(msg);
}

ModelInfo describe_model(const std::string& model, const fs::path& path, const PluginRegistry& reg,
                         const std::vector<CatalogEntry>& catalog) {
  const fs::path cfg_path = path / "config.json";
  const std::string text = read_text_file(cfg_path);
  json::parse(text, cfg_path.string());  // a clear error for bad JSON before any adapter sees it
  std::vector<std::string> supported;
  for (const PluginEntry* a : reg.adapters()) {
    bool yes = false;
    Status st = a->adapter->claims(text, yes);
    if (!st.ok()) throw InputError(cfg_path.string(), st.message);
    std::vector<std::string> s;
    if (a->adapter->supported(s).ok())
      for (const auto& t : s) supported.push_back(t + " (" + a->name + ")");
    if (!yes) continue;
    ModelInfo info;
    st = a->adapter->describe(text, info);
    if (!st.ok()) throw InputError(cfg_path.string(), st.message);
    info.model = model;
    info.path = path.string();
    info.adapter = a->name;
    for (const auto& e : catalog)
      if (e.slug == model) info.default_sae_layer = e.sae_layer;
    return info;
  }
  std::string list;
  for (const auto& s : supported) list += (list.empty() ? "" : ", ") + s;
  auto d = json::parse(text, cfg_path.string());
  std::string type = d.IsObject() && d.HasMember("model_type") && d["model_type"].IsString() ? d["model_type"].GetString() : "(none)";
  throw InputError(cfg_path.string(), "model_type '" + type + "' is not supported; supported: " +
                                          (list.empty() ? "none (no model-adapter plugins found)" : list) +
                                          "; a model-adapter plugin adds a family");
}

}  // namespace aquin::host
