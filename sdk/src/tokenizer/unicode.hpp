// UTF-8 and Unicode character classes as Hugging Face `tokenizers` (Rust's char methods and its
// regex crate) define them, so that every component splits and filters where the reference does.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace aquin::tok {

/// Byte length of the UTF-8 sequence that starts with `lead` (1 for a stray continuation byte,
/// so loops over unchecked text always advance).
inline std::size_t utf8_len(unsigned char lead) {
  if (lead < 0x80) return 1;
  if ((lead >> 5) == 0x6) return 2;
  if ((lead >> 4) == 0xE) return 3;
  if ((lead >> 3) == 0x1E) return 4;
  return 1;
}

/// The code point at s[i] of valid UTF-8; advances i past it.
char32_t next_code_point(std::string_view s, std::size_t& i);

/// Appends the UTF-8 encoding of `cp`.
void append_utf8(std::string& out, char32_t cp);

/// Byte offset of the first byte that is not part of well-formed UTF-8 (overlong forms,
/// surrogates and values past U+10FFFF included), or nullopt when `s` is valid.
std::optional<std::size_t> invalid_utf8_at(std::string_view s);

/// `bytes` as UTF-8 with each maximal ill-formed subsequence replaced by U+FFFD, as Rust's
/// String::from_utf8_lossy does.
std::string utf8_lossy(std::string_view bytes);

/// Number of code points in valid UTF-8.
std::size_t count_code_points(std::string_view s);

/// Unicode White_Space (Rust's char::is_whitespace, the regex crate's \s).
bool is_white_space(char32_t c);
/// BERT's control test: categories Cc, Cf, Cs, Co, Cn, except \t \n \r (which count as space).
bool is_bert_control(char32_t c);
/// BERT's punctuation: any ASCII punctuation (so $ + < = > ^ ` | ~ too) or a Unicode P* category.
bool is_bert_punctuation(char32_t c);
/// The CJK ideograph blocks BERT isolates (`handle_chinese_chars`).
bool is_cjk_ideograph(char32_t c);
/// Category Mn (what `strip_accents` removes after NFD).
bool is_nonspacing_mark(char32_t c);
/// The regex \w of Hugging Face's added-token `single_word` test: letters, marks, decimal and
/// letter numbers, connector punctuation, ZWJ/ZWNJ.
bool is_word_char(char32_t c);
/// Rust's char::is_numeric: categories Nd, Nl, No.
bool is_numeric(char32_t c);

/// Lower-cases each code point with its full mapping (Rust's char::to_lowercase): the simple
/// mapping everywhere but U+0130, which becomes "i" + U+0307.
std::string to_lower(std::string_view s);

enum class NormalForm { NFC, NFD, NFKC, NFKD };
/// Unicode normalisation of valid UTF-8.
std::string normalize_form(std::string_view s, NormalForm form);

/// Removes every code point for which `drop(cp)` is true; rewrites the rest with `map(cp)`.
template <class Drop, class Map>
std::string filter_map(std::string_view s, Drop drop, Map map) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size();) {
    char32_t c = next_code_point(s, i);
    if (!drop(c)) append_utf8(out, map(c));
  }
  return out;
}

}  // namespace aquin::tok
