// The `pattern` of tokenizer.json's Split, Replace (normalizer and decoder): {"String": "..."}, a
// literal, or {"Regex": "..."}, a regular expression.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "tokenizer/json_section.hpp"
#include "tokenizer/regex.hpp"

namespace aquin::tok {

class Pattern {
 public:
  /// Reads `section[key]`; throws when it is neither form.
  static Pattern from_json(const Section& section, const char* key = "pattern");
  static Pattern literal(std::string text);
  static Pattern regex(const std::string& pattern, const std::string& what);

  /// Appends every non-overlapping match, left to right (an empty literal matches nothing).
  void find_all(std::string_view text, std::vector<Span>& out) const;
  /// `text` with every match replaced by `with`.
  std::string replace_all(std::string_view text, std::string_view with) const;

 private:
  std::string literal_;
  std::shared_ptr<const Regex> regex_;  // shared: components are copied into sequences
};

}  // namespace aquin::tok
