// Reading one object of tokenizer.json with errors that name the file and where in it:
// "tokenizer.json: pre_tokenizer.pretokenizers[1]: missing \"pattern\"".
#pragma once

#include <rapidjson/document.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace aquin::tok {

class Section {
 public:
  /// `value` must outlive the Section; `file` and `where` are for messages only.
  Section(const rapidjson::Value& value, std::string file, std::string where);

  const rapidjson::Value& value() const { return *value_; }
  const std::string& file() const { return file_; }
  const std::string& where() const { return where_; }

  /// The member, or null when absent or JSON null.
  const rapidjson::Value* get(const char* key) const;
  /// The "type" string; throws when missing.
  std::string type() const;
  /// A required string member.
  std::string str(const char* key) const;
  /// An optional string member (absent or null -> nullopt; another type throws).
  std::optional<std::string> opt_str(const char* key) const;
  /// A boolean member, `fallback` when absent or null.
  bool flag(const char* key, bool fallback) const;
  /// An optional boolean member.
  std::optional<bool> opt_flag(const char* key) const;
  /// A non-negative integer member, `fallback` when absent (nullopt fallback: required).
  int64_t integer(const char* key, std::optional<int64_t> fallback = std::nullopt) const;
  /// A member that is a single character (Metaspace's replacement, Strip's content).
  char32_t character(const char* key, std::optional<char32_t> fallback = std::nullopt) const;

  /// The object at `key` (required) or at array element `index` of `key`, as a Section.
  Section child(const char* key) const;
  std::vector<Section> children(const char* key) const;
  Section nested(const rapidjson::Value& v, const std::string& suffix) const;

  /// Throws InputError("<file>: <where>: <problem>").
  [[noreturn]] void fail(const std::string& problem) const;
  /// Throws InputError naming the unsupported `type` of this component and the supported ones.
  [[noreturn]] void unsupported(const std::string& type, const std::string& supported) const;

 private:
  const rapidjson::Value* value_;
  std::string file_;
  std::string where_;
};

}  // namespace aquin::tok
