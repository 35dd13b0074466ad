// A compiled PCRE2 pattern in UTF + UCP mode (so \p{L}, \p{N}, \s and \w are Unicode-aware, as in
// the Oniguruma engine Hugging Face uses), JIT-compiled when the library has a JIT.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace aquin::tok {

/// A match: [first, second) byte offsets.
using Span = std::pair<std::size_t, std::size_t>;

class Regex {
 public:
  /// Compiles `pattern`; throws InputError("<what>: invalid regex ...: <PCRE2 message> at offset N").
  Regex(const std::string& pattern, const std::string& what);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  /// Appends every non-overlapping match in valid UTF-8 `text`, left to right. An empty match
  /// moves the search on by one code point, as Oniguruma's find_iter does.
  void find_all(std::string_view text, std::vector<Span>& out) const;

  const std::string& pattern() const { return pattern_; }

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::string pattern_;
};

}  // namespace aquin::tok
