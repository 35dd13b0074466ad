// tokenizer_config.json and special_tokens_map.json: the transformers-side settings that
// tokenizer.json does not hold (which token is BOS/EOS/PAD; how a vocab.txt was meant to be used).
#include <aquin/sdk/atomic_file.hpp>
#include <aquin/sdk/json.hpp>

#include <cstdlib>

#include "tokenizer/json_section.hpp"
#include "tokenizer/loaders.hpp"

namespace aquin::tok {

namespace {

// "bos_token": "<s>" | {"content": "<s>", ...} | null.
void read_name(const Section& s, const char* key, SpecialName& out) {
  if (out.given) return;  // tokenizer_config.json, read first, wins
  auto it = s.value().FindMember(key);
  if (it == s.value().MemberEnd()) return;
  const rapidjson::Value& v = it->value;
  out.given = true;
  if (v.IsString()) out.value = v.GetString();
  else if (v.IsObject() && v.HasMember("content") && v["content"].IsString()) out.value = v["content"].GetString();
  else if (!v.IsNull()) s.fail(std::string("\"") + key + "\" is neither a string, {\"content\": ...} nor null");
}

void read_file(const std::filesystem::path& path, FolderConfig& cfg, bool full) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) return;
  rapidjson::Document doc = json::parse(read_text_file(path), path.string());
  Section s(doc, path.string(), "");
  read_name(s, "bos_token", cfg.names.bos);
  read_name(s, "eos_token", cfg.names.eos);
  read_name(s, "pad_token", cfg.names.pad);
  if (!full) return;
  cfg.do_lower_case = s.opt_flag("do_lower_case");
  cfg.strip_accents = s.opt_flag("strip_accents");
  cfg.tokenize_chinese_chars = s.opt_flag("tokenize_chinese_chars");
  cfg.add_prefix_space = s.opt_flag("add_prefix_space");
  // "added_tokens_decoder": {"0": {"content": "[PAD]", "special": true, ...}, ...}
  if (const rapidjson::Value* added = s.get("added_tokens_decoder")) {
    if (!added->IsObject()) s.fail("\"added_tokens_decoder\" is not an object");
    for (auto it = added->MemberBegin(); it != added->MemberEnd(); ++it) {
      Section t = s.nested(it->value, std::string(".added_tokens_decoder.") + it->name.GetString());
      char* end = nullptr;
      long id = std::strtol(it->name.GetString(), &end, 10);
      if (end == it->name.GetString() || *end != '\0' || id < 0) t.fail("key is not a token id");
      cfg.added_tokens.push_back(read_added_token(t, static_cast<int32_t>(id)));
    }
  }
}

}  // namespace

AddedToken read_added_token(const Section& t, int32_t id) {
  AddedToken a;
  a.id = id;
  a.content = t.str("content");
  a.special = t.flag("special", false);
  a.single_word = t.flag("single_word", false);
  a.lstrip = t.flag("lstrip", false);
  a.rstrip = t.flag("rstrip", false);
  a.normalized = t.flag("normalized", !a.special);
  return a;
}

FolderConfig read_folder_config(const std::filesystem::path& dir) {
  FolderConfig cfg;
  read_file(dir / "tokenizer_config.json", cfg, true);
  read_file(dir / "special_tokens_map.json", cfg, false);
  return cfg;
}

}  // namespace aquin::tok
