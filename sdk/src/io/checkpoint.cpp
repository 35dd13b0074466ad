#include <aquin/sdk/atomic_file.hpp>
#include <aquin/sdk/checkpoint.hpp>
#include <aquin/sdk/errors.hpp>
#include <aquin/sdk/pt_reader.hpp>
#include <aquin/sdk/safetensors.hpp>

#include <rapidjson/document.h>

#include <cmath>
#include <fstream>
#include <regex>
#include <sstream>

namespace aquin {

namespace fs = std::filesystem;

namespace {

enum class FileKind { Zip, LegacyPickle, Safetensors, Unknown };

FileKind sniff(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  unsigned char b[9] = {};
  in.read(reinterpret_cast<char*>(b), 9);
  std::streamsize n = in.gcount();
  if (n >= 4 && b[0] == 'P' && b[1] == 'K' && b[2] == 3 && b[3] == 4) return FileKind::Zip;
  if (n >= 2 && b[0] == 0x80 && b[1] <= 5) return FileKind::LegacyPickle;
  if (n >= 9 && b[8] == '{') return FileKind::Safetensors;
  if (p.extension() == ".safetensors") return FileKind::Safetensors;
  return FileKind::Unknown;
}

void require_exists(const fs::path& p) {
  std::error_code ec;
  if (!fs::exists(p, ec)) throw InputError(p.string(), "no such file or directory");
}

std::unique_ptr<TensorStore> open_weights_file(const fs::path& p) {
  switch (sniff(p)) {
    case FileKind::Zip:
    case FileKind::LegacyPickle:
      return read_pt(p).tensors;
    case FileKind::Safetensors:
      return open_safetensors(p);
    case FileKind::Unknown:
      break;
  }
  throw InputError(p.string(), "not a safetensors file or a torch.save archive");
}

rapidjson::Document parse_json_file(const fs::path& p) {
  std::string text = read_text_file(p);
  rapidjson::Document d;
  d.Parse(text.c_str(), text.size());
  if (d.HasParseError()) throw InputError(p.string(), "not valid JSON (offset " + std::to_string(d.GetErrorOffset()) + ")");
  if (!d.IsObject()) throw InputError(p.string(), "not a JSON object");
  return d;
}

// PEFT's pattern keys match a module name when the name ends with the key as a regex
// (after a dot or at the start): re.match(rf"(.*\.)?({key})$", name).
bool pattern_matches(const std::string& key, const std::string& module) {
  try {
    return std::regex_match(module, std::regex("(.*\\.)?(" + key + ")"));
  } catch (const std::regex_error&) {
    return module == key || (module.size() > key.size() && module.compare(module.size() - key.size() - 1, key.size() + 1, "." + key) == 0);
  }
}

struct LoraConfig {
  double r = 0;
  double alpha = 0;
  bool rslora = false;
  std::vector<std::pair<std::string, double>> rank_pattern, alpha_pattern;
  std::string source;  // where the numbers came from
};

LoraConfig read_adapter_config(const fs::path& p) {
  auto d = parse_json_file(p);
  LoraConfig c;
  c.source = p.string();
  auto num = [&](const char* k, bool required) -> double {
    auto it = d.FindMember(k);
    if (it == d.MemberEnd()) {
      if (required) throw InputError(p.string(), std::string("missing \"") + k + "\"");
      return 0;
    }
    if (!it->value.IsNumber()) throw InputError(p.string(), std::string("\"") + k + "\" is not a number");
    return it->value.GetDouble();
  };
  if (auto t = d.FindMember("peft_type"); t != d.MemberEnd() && t->value.IsString()) {
    std::string type = t->value.GetString();
    if (type != "LORA") throw InputError(p.string(), "peft_type " + type + " is not supported (only LORA)");
  }
  c.r = num("r", true);
  c.alpha = num("lora_alpha", true);
  if (c.r <= 0) throw InputError(p.string(), "\"r\" must be positive");
  if (auto it = d.FindMember("use_rslora"); it != d.MemberEnd() && it->value.IsBool()) c.rslora = it->value.GetBool();
  for (auto [key, out] : {std::pair{"rank_pattern", &c.rank_pattern}, std::pair{"alpha_pattern", &c.alpha_pattern}}) {
    auto it = d.FindMember(key);
    if (it == d.MemberEnd() || it->value.IsNull()) continue;
    if (!it->value.IsObject()) throw InputError(p.string(), std::string("\"") + key + "\" is not an object");
    for (auto m = it->value.MemberBegin(); m != it->value.MemberEnd(); ++m) {
      if (!m->value.IsNumber())
        throw InputError(p.string(), std::string(key) + " entry '" + m->name.GetString() + "' is not a number");
      out->emplace_back(m->name.GetString(), m->value.GetDouble());
    }
  }
  return c;
}

std::string strip_peft_prefix(std::string n) {
  const std::string p = "base_model.model.";
  if (n.compare(0, p.size(), p) == 0) n = n.substr(p.size());
  return n;
}

// Finds lora_A / lora_B pairs among the store's keys and works out each module's scale.
void collect_lora(Checkpoint& ck, const LoraConfig* cfg) {
  static const std::regex lin(R"((.*)\.lora_(A|B)(?:\.([A-Za-z0-9_\-]+))?\.weight)");
  static const std::regex emb(R"((.*)\.lora_embedding_(A|B)(?:\.([A-Za-z0-9_\-]+))?)");
  static const std::regex saved(R"((.*)\.modules_to_save(?:\.[A-Za-z0-9_\-]+)?\.(weight|bias))");
  std::map<std::string, LoraModule> mods;
  std::smatch m;
  for (const auto& info : ck.tensors->tensors()) {
    bool is_emb = false;
    if (std::regex_match(info.name, m, lin)) {
    } else if (std::regex_match(info.name, m, emb)) {
      is_emb = true;
    } else if (std::regex_match(info.name, m, saved)) {
      ck.full_tensors.push_back(info.name);
      continue;
    } else {
      // Bias or other trainable extras saved with the adapter are full replacement tensors.
      ck.full_tensors.push_back(info.name);
      continue;
    }
    auto& mod = mods[m[1].str()];
    mod.target = m[1].str();
    mod.embedding = is_emb;
    (m[2].str() == "A" ? mod.a_name : mod.b_name) = info.name;
  }
  const std::string where = ck.path.string();
  for (auto& [target, mod] : mods) {
    if (mod.a_name.empty() || mod.b_name.empty())
      throw InputError(where, "LoRA module '" + target + "' has lora_" + (mod.a_name.empty() ? "B" : "A") +
                                  " but no lora_" + (mod.a_name.empty() ? "A" : "B"));
    const TensorInfo* a = ck.tensors->find(mod.a_name);
    const TensorInfo* b = ck.tensors->find(mod.b_name);
    if (a->shape.size() != 2 || b->shape.size() != 2)
      throw InputError(where, "LoRA module '" + target + "': lora_A and lora_B must be 2-D");
    // Linear: A [r, in], B [out, r]. Embedding: A [r, vocab], B [d, r].
    const int64_t r = a->shape[0];
    if (b->shape[1] != r)
      throw InputError(where, "LoRA module '" + target + "': lora_A has rank " + std::to_string(r) + " but lora_B has " +
                                  std::to_string(b->shape[1]) + " columns");
    mod.rank = r;
    const std::string module = strip_peft_prefix(target);
    if (cfg != nullptr) {
      double cr = cfg->r, ca = cfg->alpha;
      for (const auto& [k, v] : cfg->rank_pattern)
        if (pattern_matches(k, module)) { cr = v; break; }
      for (const auto& [k, v] : cfg->alpha_pattern)
        if (pattern_matches(k, module)) { ca = v; break; }
      if (static_cast<int64_t>(cr) != r)
        throw InputError(cfg->source, "rank r=" + std::to_string(static_cast<int64_t>(cr)) + " for '" + module +
                                          "' disagrees with its tensors (lora_A has " + std::to_string(r) + " rows)");
      mod.alpha = ca;
      mod.scale = cfg->rslora ? ca / std::sqrt(static_cast<double>(r)) : ca / static_cast<double>(r);
    } else {
      mod.alpha = static_cast<double>(r);
      mod.scale = 1.0;
    }
    ck.lora.push_back(mod);
  }
  ck.is_lora = !ck.lora.empty();
  if (cfg != nullptr) {
    ck.notes["lora_scale_source"] = cfg->source;
    ck.notes["use_rslora"] = cfg->rslora ? "true" : "false";
  } else if (ck.is_lora) {
    ck.notes["lora_scale_source"] = "none";
    ck.warnings.push_back(ck.path.string() + ": no adapter_config.json or lora_alpha/r entries found; LoRA scale taken as 1.0");
  }
}

std::optional<int64_t> trainer_state_step(const fs::path& dir) {
  fs::path p = dir / "trainer_state.json";
  std::error_code ec;
  if (!fs::exists(p, ec)) return std::nullopt;
  auto d = parse_json_file(p);
  auto it = d.FindMember("global_step");
  if (it == d.MemberEnd() || !it->value.IsInt64()) return std::nullopt;
  return it->value.GetInt64();
}

void set_step_fallbacks(Checkpoint& ck) {
  if (ck.step) return;
  if (fs::is_directory(ck.path)) {
    if (auto s = trainer_state_step(ck.path)) {
      ck.step = s;
      ck.step_source = "trainer_state";
      return;
    }
  }
  if (auto s = step_from_name(ck.path)) {
    ck.step = s;
    ck.step_source = "name";
  }
}

}  // namespace

std::optional<int64_t> step_from_name(const fs::path& path) {
  std::string name = path.filename().string();
  if (name.empty()) name = path.parent_path().filename().string();
  // A number after a step-like word wins ("checkpoint-500", "step_1200", "global_step300");
  // otherwise the last run of digits ("run3-0450.pt" -> 450).
  static const std::regex tagged(R"((?:checkpoint|ckpt|step|iter|iteration|epoch)[-_]?(\d{1,18}))", std::regex::icase);
  std::smatch m;
  std::optional<int64_t> last;
  for (auto it = std::sregex_iterator(name.begin(), name.end(), tagged); it != std::sregex_iterator(); ++it)
    last = std::stoll((*it)[1].str());
  if (last) return last;
  static const std::regex digits(R"((\d+))");
  for (auto it = std::sregex_iterator(name.begin(), name.end(), digits); it != std::sregex_iterator(); ++it) {
    const std::string s = (*it)[1].str();
    if (s.size() <= 18) last = std::stoll(s);
  }
  return last;
}

std::unique_ptr<TensorStore> open_model_weights(const fs::path& path) {
  require_exists(path);
  if (!fs::is_directory(path)) return open_weights_file(path);
  std::error_code ec;
  if (fs::exists(path / "model.safetensors.index.json", ec)) return open_sharded_safetensors(path / "model.safetensors.index.json");
  if (fs::exists(path / "model.safetensors", ec)) return open_safetensors(path / "model.safetensors");
  if (fs::exists(path / "pytorch_model.bin", ec)) return read_pt(path / "pytorch_model.bin").tensors;
  if (fs::exists(path / "pytorch_model.bin.index.json", ec))
    throw InputError(path.string(), "sharded pytorch_model.bin checkpoints are not supported; re-save with safe_serialization=True");
  throw InputError(path.string(), "no model.safetensors, model.safetensors.index.json or pytorch_model.bin in this folder");
}

Checkpoint open_checkpoint(const fs::path& path) {
  require_exists(path);
  Checkpoint ck;
  ck.path = path;
  std::error_code ec;
  if (fs::is_directory(path)) {
    if (fs::exists(path / "adapter_config.json", ec)) {
      LoraConfig cfg = read_adapter_config(path / "adapter_config.json");
      if (fs::exists(path / "adapter_model.safetensors", ec)) ck.tensors = open_safetensors(path / "adapter_model.safetensors");
      else if (fs::exists(path / "adapter_model.bin", ec)) ck.tensors = read_pt(path / "adapter_model.bin").tensors;
      else throw InputError(path.string(), "adapter_config.json found but no adapter_model.safetensors or adapter_model.bin");
      ck.format = "peft-adapter";
      collect_lora(ck, &cfg);
      if (!ck.is_lora) throw InputError(path.string(), "adapter has no lora_A/lora_B tensors");
    } else {
      ck.tensors = open_model_weights(path);
      if (fs::exists(path / "model.safetensors.index.json", ec)) ck.format = "hf-sharded-safetensors";
      else if (fs::exists(path / "model.safetensors", ec)) ck.format = "hf-safetensors";
      else ck.format = "hf-bin";
    }
    set_step_fallbacks(ck);
    return ck;
  }

  const FileKind kind = sniff(path);
  if (kind == FileKind::Zip || kind == FileKind::LegacyPickle) {
    PtCheckpoint pt = read_pt(path);
    ck.tensors = std::move(pt.tensors);
    ck.format = "pt";
    if (pt.step) {
      ck.step = pt.step;
      ck.step_source = "pt";
    }
    bool has_lora = false;
    for (const auto& info : ck.tensors->tensors())
      has_lora = has_lora || info.name.find(".lora_A") != std::string::npos || info.name.find(".lora_embedding_A") != std::string::npos;
    if (has_lora) {
      ck.format = "pt-lora";
      std::optional<LoraConfig> cfg;
      if (pt.scalars.count("lora_alpha") && pt.scalars.count("r")) {
        LoraConfig c;
        c.r = std::stod(pt.scalars["r"]);
        c.alpha = std::stod(pt.scalars["lora_alpha"]);
        c.rslora = pt.scalars.count("use_rslora") && (pt.scalars["use_rslora"] == "true" || pt.scalars["use_rslora"] == "True");
        c.source = path.string() + " (lora_alpha, r entries)";
        cfg = c;
      } else if (fs::exists(path.parent_path() / "adapter_config.json", ec)) {
        cfg = read_adapter_config(path.parent_path() / "adapter_config.json");
      }
      collect_lora(ck, cfg ? &*cfg : nullptr);
    }
  } else if (kind == FileKind::Safetensors) {
    ck.tensors = open_safetensors(path);
    ck.format = "safetensors";
    bool has_lora = false;
    for (const auto& info : ck.tensors->tensors()) has_lora = has_lora || info.name.find(".lora_A") != std::string::npos;
    if (has_lora) {
      ck.format = "peft-adapter";
      std::optional<LoraConfig> cfg;
      if (fs::exists(path.parent_path() / "adapter_config.json", ec)) cfg = read_adapter_config(path.parent_path() / "adapter_config.json");
      collect_lora(ck, cfg ? &*cfg : nullptr);
    }
  } else {
    throw InputError(path.string(), "not a safetensors file, a torch.save archive or a model folder");
  }
  set_step_fallbacks(ck);
  return ck;
}

}  // namespace aquin
