#include "tokenizer/byte_level.hpp"

#include <array>

#include "tokenizer/unicode.hpp"

namespace aquin::tok {

const char* const kGpt2SplitPattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

namespace {

struct Tables {
  std::array<std::string, 256> encoded;  // byte -> UTF-8 of its code point
  std::array<int, 324> decoded;          // code point -> byte, -1 outside the alphabet (max is U+0143)
  Tables() {
    decoded.fill(-1);
    char32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      char32_t cp = printable ? static_cast<char32_t>(b) : next++;
      append_utf8(encoded[static_cast<std::size_t>(b)], cp);
      decoded[cp] = b;
    }
  }
};

const Tables& tables() {
  static const Tables t;
  return t;
}

}  // namespace

std::string bytes_to_unicode(std::string_view bytes) {
  const Tables& t = tables();
  std::string out;
  out.reserve(bytes.size() * 2);
  for (char c : bytes) out += t.encoded[static_cast<unsigned char>(c)];
  return out;
}

bool unicode_to_bytes(std::string_view token, std::string& out) {
  const Tables& t = tables();
  std::size_t mark = out.size();
  for (std::size_t i = 0; i < token.size();) {
    char32_t cp = next_code_point(token, i);
    if (cp >= t.decoded.size() || t.decoded[cp] < 0) {
      out.resize(mark);
      return false;
    }
    out.push_back(static_cast<char>(t.decoded[cp]));
  }
  return true;
}

}  // namespace aquin::tok
