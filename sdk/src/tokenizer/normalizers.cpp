#include "tokenizer/normalizers.hpp"

#include "tokenizer/byte_level.hpp"
#include "tokenizer/pattern.hpp"
#include "tokenizer/unicode.hpp"

namespace aquin::tok {

namespace {

class BertNormalizer : public Normalizer {
 public:
  explicit BertNormalizer(const BertNormalizerOptions& o) : o_(o) {}

  // ASCII bytes are handled inline; each run of non-ASCII code points goes through the general
  // steps. That is exact because every step is per code point except NFD's reordering of
  // combining marks, which never crosses an ASCII character (canonical class 0).
  void normalize(std::string& text) const override {
    std::string out;
    out.reserve(text.size() + 16);
    for (std::size_t i = 0; i < text.size();) {
      auto b = static_cast<unsigned char>(text[i]);
      if (b >= 0x80) {
        std::size_t j = i;
        while (j < text.size() && static_cast<unsigned char>(text[j]) >= 0x80) ++j;
        out += normalize_run(std::string_view(text).substr(i, j - i));
        i = j;
        continue;
      }
      ++i;
      if (o_.clean_text) {
        // Controls go (\v and \f too: they are Cc before they are space); \t \n \r become ' '.
        if (b == '\t' || b == '\n' || b == '\r') b = ' ';
        else if (b < 0x20 || b == 0x7F) continue;
      }
      if (o_.lowercase && b >= 'A' && b <= 'Z') b = static_cast<unsigned char>(b + 32);
      out.push_back(static_cast<char>(b));
    }
    text.swap(out);
  }

 private:
  // Same order as Hugging Face: clean, CJK, strip accents, lower-case.
  std::string normalize_run(std::string_view run) const {
    std::string text(run);
    if (o_.clean_text) {
      text = filter_map(
          text, [](char32_t c) { return c == 0 || c == 0xFFFD || is_bert_control(c); },
          [](char32_t c) { return is_white_space(c) ? U' ' : c; });
    }
    if (o_.handle_chinese_chars) {
      std::string out;
      out.reserve(text.size() + 8);
      for (std::size_t i = 0; i < text.size();) {
        std::size_t start = i;
        char32_t c = next_code_point(text, i);
        bool cjk = is_cjk_ideograph(c);
        if (cjk) out.push_back(' ');
        out.append(text, start, i - start);
        if (cjk) out.push_back(' ');
      }
      text = std::move(out);
    }
    if (o_.strip_accents.value_or(o_.lowercase)) {
      text = filter_map(normalize_form(text, NormalForm::NFD), is_nonspacing_mark, [](char32_t c) { return c; });
    }
    if (o_.lowercase) text = to_lower(text);
    return text;
  }

  BertNormalizerOptions o_;
};

class Lowercase : public Normalizer {
 public:
  void normalize(std::string& text) const override { text = to_lower(text); }
};

class StripAccents : public Normalizer {
 public:
  // Only removes Mn marks; Hugging Face expects an NFD/NFKD normalizer before it.
  void normalize(std::string& text) const override {
    text = filter_map(text, is_nonspacing_mark, [](char32_t c) { return c; });
  }
};

class Strip : public Normalizer {
 public:
  Strip(bool left, bool right) : left_(left), right_(right) {}
  void normalize(std::string& text) const override {
    std::size_t begin = 0, end = text.size();
    if (left_) {
      while (begin < end) {
        std::size_t i = begin;
        if (!is_white_space(next_code_point(text, i))) break;
        begin = i;
      }
    }
    if (right_) {
      while (end > begin) {
        std::size_t start = end - 1;
        while (start > begin && (static_cast<unsigned char>(text[start]) & 0xC0) == 0x80) --start;
        std::size_t i = start;
        if (!is_white_space(next_code_point(text, i))) break;
        end = start;
      }
    }
    text = text.substr(begin, end - begin);
  }

 private:
  bool left_, right_;
};

class UnicodeForm : public Normalizer {
 public:
  explicit UnicodeForm(NormalForm f) : form_(f) {}
  void normalize(std::string& text) const override { text = normalize_form(text, form_); }

 private:
  NormalForm form_;
};

class Replace : public Normalizer {
 public:
  Replace(Pattern p, std::string content) : pattern_(std::move(p)), content_(std::move(content)) {}
  void normalize(std::string& text) const override { text = pattern_.replace_all(text, content_); }

 private:
  Pattern pattern_;
  std::string content_;
};

class Prepend : public Normalizer {
 public:
  explicit Prepend(std::string s) : prefix_(std::move(s)) {}
  // Hugging Face leaves an empty string empty (nothing to attach the prefix to).
  void normalize(std::string& text) const override {
    if (!text.empty()) text.insert(0, prefix_);
  }

 private:
  std::string prefix_;
};

class ByteLevelNormalizer : public Normalizer {
 public:
  void normalize(std::string& text) const override { text = bytes_to_unicode(text); }
};

class SequenceNormalizer : public Normalizer {
 public:
  explicit SequenceNormalizer(std::vector<std::unique_ptr<Normalizer>> parts) : parts_(std::move(parts)) {}
  void normalize(std::string& text) const override {
    for (const auto& n : parts_) n->normalize(text);
  }

 private:
  std::vector<std::unique_ptr<Normalizer>> parts_;
};

}  // namespace

std::unique_ptr<Normalizer> make_bert_normalizer(const BertNormalizerOptions& options) {
  return std::make_unique<BertNormalizer>(options);
}

std::unique_ptr<Normalizer> make_normalizer(const Section& s) {
  std::string type = s.type();
  if (type == "BertNormalizer") {
    BertNormalizerOptions o;
    o.clean_text = s.flag("clean_text", true);
    o.handle_chinese_chars = s.flag("handle_chinese_chars", true);
    o.strip_accents = s.opt_flag("strip_accents");
    o.lowercase = s.flag("lowercase", true);
    return make_bert_normalizer(o);
  }
  if (type == "Lowercase") return std::make_unique<Lowercase>();
  if (type == "StripAccents") return std::make_unique<StripAccents>();
  if (type == "Strip") return std::make_unique<Strip>(s.flag("strip_left", true), s.flag("strip_right", true));
  if (type == "NFC") return std::make_unique<UnicodeForm>(NormalForm::NFC);
  if (type == "NFD") return std::make_unique<UnicodeForm>(NormalForm::NFD);
  if (type == "NFKC") return std::make_unique<UnicodeForm>(NormalForm::NFKC);
  if (type == "NFKD") return std::make_unique<UnicodeForm>(NormalForm::NFKD);
  if (type == "Replace") return std::make_unique<Replace>(Pattern::from_json(s), s.str("content"));
  if (type == "Prepend") return std::make_unique<Prepend>(s.str("prepend"));
  if (type == "ByteLevel") return std::make_unique<ByteLevelNormalizer>();
  if (type == "Sequence") {
    std::vector<std::unique_ptr<Normalizer>> parts;
    for (const Section& child : s.children("normalizers")) parts.push_back(make_normalizer(child));
    return std::make_unique<SequenceNormalizer>(std::move(parts));
  }
  s.unsupported(type,
                "BertNormalizer, Lowercase, Strip, StripAccents, NFC, NFD, NFKC, NFKD, Replace, Prepend, "
                "ByteLevel, Sequence");
}

}  // namespace aquin::tok
