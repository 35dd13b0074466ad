// Sae::load: finds which layout a folder holds (or which of several SAEs a run folder's --layer
// names) and hands it to that layout's loader; shared helpers for the loaders.
#include "sae/loaders.hpp"

#include <aquin/sdk/atomic_file.hpp>
#include <aquin/sdk/errors.hpp>
#include <aquin/sdk/json.hpp>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <system_error>

namespace aquin::sae_detail {

namespace {
constexpr std::uintmax_t kMaxConfigBytes = 16u << 20;  // a config file larger than this is not a config

bool is_file(const fs::path& p) {
  std::error_code ec;
  return fs::is_regular_file(p, ec);
}

// "layer8_32768_top32" or "layer_8" -> 8; -1 otherwise.
int64_t layer_from_name(const std::string& name) {
  if (name.rfind("layers.", 0) == 0) {
    std::string rest = name.substr(7);
    if (!rest.empty() && rest.size() <= 9 && std::all_of(rest.begin(), rest.end(), ::isdigit)) return std::stoll(rest);
    return -1;
  }
  if (name.rfind("layer", 0) != 0) return -1;
  std::size_t i = 5;
  if (i < name.size() && name[i] == '_') ++i;
  std::size_t s = i;
  while (i < name.size() && std::isdigit(static_cast<unsigned char>(name[i]))) ++i;
  if (i == s || i - s > 9 || (i < name.size() && name[i] != '_')) return -1;
  return std::stoll(name.substr(s, i - s));
}
}  // namespace

JsonFile::JsonFile(const fs::path& path) : path_(path) {
  std::error_code ec;
  if (!fs::exists(path, ec)) throw InputError(path.string(), "no such file");
  if (!fs::is_regular_file(path, ec)) throw InputError(path.string(), "not a regular file");
  if (fs::file_size(path, ec) > kMaxConfigBytes)
    throw InputError(path.string(), "larger than 16 MB, not a configuration file");
  doc_ = json::parse(read_text_file(path), path.string());
  if (!doc_.IsObject()) throw InputError(path.string(), "not a JSON object");
}

const rapidjson::Value* JsonFile::find(const char* key, const rapidjson::Value* obj) const {
  const rapidjson::Value& o = obj ? *obj : doc_;
  if (!o.IsObject()) return nullptr;
  auto it = o.FindMember(key);
  if (it == o.MemberEnd() || it->value.IsNull()) return nullptr;
  return &it->value;
}

std::optional<int64_t> JsonFile::opt_int(const char* key, const rapidjson::Value* obj) const {
  const rapidjson::Value* v = find(key, obj);
  if (!v) return std::nullopt;
  if (v->IsInt64()) return v->GetInt64();
  // Python writes whole floats as 32.0 in some configs.
  if (v->IsDouble() && std::isfinite(v->GetDouble()) && v->GetDouble() == std::floor(v->GetDouble()) &&
      std::fabs(v->GetDouble()) < 9e15)
    return static_cast<int64_t>(v->GetDouble());
  fail(std::string("\"") + key + "\" is not an integer");
}

int64_t JsonFile::req_int(const char* key, const rapidjson::Value* obj) const {
  auto v = opt_int(key, obj);
  if (!v) fail(std::string("missing \"") + key + "\"");
  return *v;
}

std::optional<std::string> JsonFile::opt_str(const char* key, const rapidjson::Value* obj) const {
  const rapidjson::Value* v = find(key, obj);
  if (!v) return std::nullopt;
  if (!v->IsString()) fail(std::string("\"") + key + "\" is not a string");
  return std::string(v->GetString(), v->GetStringLength());
}

std::optional<bool> JsonFile::opt_bool(const char* key, const rapidjson::Value* obj) const {
  const rapidjson::Value* v = find(key, obj);
  if (!v) return std::nullopt;
  if (!v->IsBool()) fail(std::string("\"") + key + "\" is not true or false");
  return v->GetBool();
}

void JsonFile::fail(const std::string& problem) const { throw InputError(path_.string(), problem); }

at::Tensor take(const TensorStore& store, const std::vector<std::string>& names, std::string* found) {
  for (const auto& n : names)
    if (store.find(n)) {
      if (found) *found = n;
      return store.load(n);
    }
  return at::Tensor();
}

std::string resid_post_hook(int64_t layer) { return "blocks." + std::to_string(layer) + ".hook_resid_post"; }

std::optional<std::string> folder_layout(const fs::path& dir) {
  if (is_file(dir / "cfg.json") && is_file(dir / "sae_weights.safetensors")) return "saelens";
  if (is_file(dir / "cfg.json") && is_file(dir / "sae.safetensors")) return "sparsify";
  if (is_file(dir / "meta.json") && is_file(dir / "sae.pt")) return "aquin-hub";
  return std::nullopt;
}

int64_t folder_layer(const fs::path& dir, const std::string& layout) {
  if (layout == "sparsify") return layer_from_name(dir.filename().string());
  if (layout == "aquin-hub") {
    JsonFile meta(dir / "meta.json");
    if (auto l = meta.opt_int("layer")) return *l;
    return layer_from_name(dir.filename().string());
  }
  JsonFile cfg(dir / "cfg.json");
  const rapidjson::Value* md = cfg.find("metadata");
  for (const char* key : {"hook_name", "hook_point"}) {
    if (md && md->IsObject())
      if (auto h = cfg.opt_str(key, md)) return hook_layer(*h);
    if (auto h = cfg.opt_str(key)) return hook_layer(*h);
  }
  return -1;
}

}  // namespace aquin::sae_detail

namespace aquin {

using namespace sae_detail;

std::vector<int64_t> Sae::layers_in(const std::filesystem::path& path_in) {
  std::error_code ec;
  fs::path path = fs::is_regular_file(path_in, ec) ? path_in.parent_path() : path_in;
  if (auto layout = folder_layout(path)) return {folder_layer(path, *layout)};
  std::vector<int64_t> out;
  for (const auto& e : fs::directory_iterator(path, ec)) {
    std::error_code e2;
    if (!e.is_directory(e2)) continue;
    if (auto layout = folder_layout(e.path())) out.push_back(folder_layer(e.path(), *layout));
  }
  std::sort(out.begin(), out.end());
  return out;
}

Sae Sae::load(const std::filesystem::path& path_in, std::optional<int64_t> layer) {
  std::error_code ec;
  fs::path path = path_in;
  if (!fs::exists(path, ec)) throw InputError(path.string(), "no such file or folder");
  if (fs::is_regular_file(path, ec)) path = path.parent_path().empty() ? fs::path(".") : path.parent_path();
  if (!fs::is_directory(path, ec)) throw InputError(path.string(), "an SAE is a folder (cfg.json + weights, or meta.json + sae.pt)");

  auto load_one = [&](const fs::path& dir, const std::string& layout) {
    Sae s = layout == "saelens" ? load_saelens(dir) : layout == "sparsify" ? load_sparsify(dir) : load_aquin_hub(dir);
    if (layer && s.info().layer != *layer)
      throw InputError(dir.string(), "--layer " + std::to_string(*layer) + " disagrees with the SAE's hook " +
                                         s.info().hook);
    return s;
  };
  if (auto layout = folder_layout(path)) return load_one(path, *layout);

  // A folder of several SAEs: a sparsify run, an aquin hub repository, a folder of SAELens SAEs.
  struct Candidate {
    fs::path dir;
    std::string layout;
    int64_t layer;
  };
  std::vector<Candidate> found;
  for (const auto& e : fs::directory_iterator(path, ec)) {
    std::error_code e2;
    if (!e.is_directory(e2)) continue;
    if (auto layout = folder_layout(e.path())) found.push_back({e.path(), *layout, folder_layer(e.path(), *layout)});
  }
  std::sort(found.begin(), found.end(), [](const Candidate& a, const Candidate& b) { return a.dir < b.dir; });
  if (found.empty())
    throw InputError(path.string(), "no SAE here: expected cfg.json + sae_weights.safetensors (SAELens), cfg.json + "
                                    "sae.safetensors (sparsify) or meta.json + sae.pt (aquin), or sub-folders with them");
  auto names = [&] {
    std::string s;
    for (const auto& c : found) s += (s.empty() ? "" : ", ") + c.dir.filename().string();
    return s;
  };
  if (!layer) {
    if (found.size() == 1) return load_one(found[0].dir, found[0].layout);
    throw InputError(path.string(), "holds " + std::to_string(found.size()) + " SAEs (" + names() + "); pass --layer L");
  }
  std::vector<const Candidate*> match;
  for (const auto& c : found)
    if (c.layer == *layer) match.push_back(&c);
  // A sparsify run keeps "layers.8" beside "layers.8.mlp": the residual stream one wins.
  if (match.size() > 1) {
    std::vector<const Candidate*> exact;
    for (const auto* c : match)
      if (c->dir.filename() == "layers." + std::to_string(*layer) || c->layout != "sparsify") exact.push_back(c);
    if (exact.size() == 1) match = exact;
  }
  if (match.empty())
    throw InputError(path.string(), "no SAE for layer " + std::to_string(*layer) + " here (found: " + names() + ")");
  if (match.size() > 1) {
    std::string s;
    for (const auto* c : match) s += (s.empty() ? "" : ", ") + c->dir.filename().string();
    throw InputError(path.string(), "several SAEs for layer " + std::to_string(*layer) + " (" + s + "): pass the folder of one");
  }
  return load_one(match[0]->dir, match[0]->layout);
}

}  // namespace aquin
