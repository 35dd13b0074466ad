#include "tokenizer/json_section.hpp"

#include <aquin/sdk/errors.hpp>

#include "tokenizer/unicode.hpp"

namespace aquin::tok {

Section::Section(const rapidjson::Value& value, std::string file, std::string where)
    : value_(&value), file_(std::move(file)), where_(std::move(where)) {
  if (!value.IsObject()) fail("expected a JSON object");
}

const rapidjson::Value* Section::get(const char* key) const {
  auto it = value_->FindMember(key);
  if (it == value_->MemberEnd() || it->value.IsNull()) return nullptr;
  return &it->value;
}

std::string Section::type() const {
  const rapidjson::Value* v = get("type");
  if (v == nullptr || !v->IsString()) fail("missing \"type\"");
  return v->GetString();
}

std::string Section::str(const char* key) const {
  auto v = opt_str(key);
  if (!v) fail(std::string("missing \"") + key + "\"");
  return *v;
}

std::optional<std::string> Section::opt_str(const char* key) const {
  const rapidjson::Value* v = get(key);
  if (v == nullptr) return std::nullopt;
  if (!v->IsString()) fail(std::string("\"") + key + "\" is not a string");
  return std::string(v->GetString(), v->GetStringLength());
}

bool Section::flag(const char* key, bool fallback) const { return opt_flag(key).value_or(fallback); }

std::optional<bool> Section::opt_flag(const char* key) const {
  const rapidjson::Value* v = get(key);
  if (v == nullptr) return std::nullopt;
  if (!v->IsBool()) fail(std::string("\"") + key + "\" is not true or false");
  return v->GetBool();
}

int64_t Section::integer(const char* key, std::optional<int64_t> fallback) const {
  const rapidjson::Value* v = get(key);
  if (v == nullptr) {
    if (fallback) return *fallback;
    fail(std::string("missing \"") + key + "\"");
  }
  if (!v->IsInt64() || v->GetInt64() < 0) fail(std::string("\"") + key + "\" is not a non-negative integer");
  return v->GetInt64();
}

char32_t Section::character(const char* key, std::optional<char32_t> fallback) const {
  auto s = opt_str(key);
  if (!s) {
    if (fallback) return *fallback;
    fail(std::string("missing \"") + key + "\"");
  }
  if (s->empty() || invalid_utf8_at(*s) || count_code_points(*s) != 1)
    fail(std::string("\"") + key + "\" must be a single character");
  std::size_t i = 0;
  return next_code_point(*s, i);
}

Section Section::child(const char* key) const {
  const rapidjson::Value* v = get(key);
  if (v == nullptr) fail(std::string("missing \"") + key + "\"");
  return nested(*v, std::string(".") + key);
}

std::vector<Section> Section::children(const char* key) const {
  const rapidjson::Value* v = get(key);
  if (v == nullptr || !v->IsArray()) fail(std::string("\"") + key + "\" is not a list");
  std::vector<Section> out;
  for (rapidjson::SizeType i = 0; i < v->Size(); ++i)
    out.push_back(nested((*v)[i], std::string(".") + key + "[" + std::to_string(i) + "]"));
  return out;
}

Section Section::nested(const rapidjson::Value& v, const std::string& suffix) const {
  // At the root, "model" rather than ".model".
  bool dotted = !suffix.empty() && suffix[0] == '.';
  return Section(v, file_, where_.empty() && dotted ? suffix.substr(1) : where_ + suffix);
}

void Section::fail(const std::string& problem) const {
  throw InputError(file_, where_.empty() ? problem : where_ + ": " + problem);
}

void Section::unsupported(const std::string& type, const std::string& supported) const {
  fail("type \"" + type + "\" is not supported (supported: " + supported + ")");
}

}  // namespace aquin::tok
