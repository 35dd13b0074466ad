#include "tokenizer/pre_tokenizers.hpp"

#include "tokenizer/byte_level.hpp"
#include "tokenizer/pattern.hpp"
#include "tokenizer/split.hpp"
#include "tokenizer/unicode.hpp"

namespace aquin::tok {

namespace {

const Regex& gpt2_regex() {
  static const Regex re(kGpt2SplitPattern, "ByteLevel pre-tokenizer");
  return re;
}

class ByteLevelPre : public PreTokenizer {
 public:
  ByteLevelPre(bool add_prefix_space, bool use_regex) : add_prefix_space_(add_prefix_space), use_regex_(use_regex) {}
  void pre_tokenize(std::vector<Piece>& pieces) const override {
    std::vector<Span> spans;
    split_each(pieces, [&](const Piece& p, std::vector<Piece>& out) {
      Piece src = p;
      // Hugging Face tests for a plain ' ' only, not any white space.
      if (add_prefix_space_ && (src.text.empty() || src.text[0] != ' ')) src.text.insert(0, " ");
      std::size_t first = out.size();
      if (use_regex_) {
        spans.clear();
        gpt2_regex().find_all(src.text, spans);
        split_piece(src, spans, SplitBehavior::Isolated, false, out);
      } else if (!src.text.empty()) {
        out.push_back(std::move(src));
      }
      for (std::size_t i = first; i < out.size(); ++i) out[i].text = bytes_to_unicode(out[i].text);
    });
  }

 private:
  bool add_prefix_space_, use_regex_;
};

class SplitPre : public PreTokenizer {
 public:
  SplitPre(Pattern pattern, SplitBehavior behavior, bool invert)
      : pattern_(std::move(pattern)), behavior_(behavior), invert_(invert) {}
  void pre_tokenize(std::vector<Piece>& pieces) const override {
    std::vector<Span> spans;
    split_each(pieces, [&](const Piece& p, std::vector<Piece>& out) {
      spans.clear();
      pattern_.find_all(p.text, spans);
      split_piece(p, spans, behavior_, invert_, out);
    });
  }

 private:
  Pattern pattern_;
  SplitBehavior behavior_;
  bool invert_;
};

// Splits at code points chosen by a predicate (white space, punctuation, digits, a delimiter).
template <class Pred>
class CharSplitPre : public PreTokenizer {
 public:
  CharSplitPre(Pred pred, SplitBehavior behavior) : pred_(pred), behavior_(behavior) {}
  void pre_tokenize(std::vector<Piece>& pieces) const override {
    std::vector<Span> spans;
    split_each(pieces, [&](const Piece& p, std::vector<Piece>& out) {
      spans.clear();
      char_matches(p.text, pred_, spans);
      split_piece(p, spans, behavior_, false, out);
    });
  }

 private:
  Pred pred_;
  SplitBehavior behavior_;
};

template <class Pred>
std::unique_ptr<PreTokenizer> char_split(Pred pred, SplitBehavior behavior) {
  return std::make_unique<CharSplitPre<Pred>>(pred, behavior);
}

class SequencePre : public PreTokenizer {
 public:
  explicit SequencePre(std::vector<std::unique_ptr<PreTokenizer>> parts) : parts_(std::move(parts)) {}
  void pre_tokenize(std::vector<Piece>& pieces) const override {
    for (const auto& p : parts_) p->pre_tokenize(pieces);
  }

 private:
  std::vector<std::unique_ptr<PreTokenizer>> parts_;
};

enum class PrependScheme { Always, First, Never };

class MetaspacePre : public PreTokenizer {
 public:
  MetaspacePre(char32_t replacement, PrependScheme scheme, bool split) : scheme_(scheme), split_(split) {
    append_utf8(rep_, replacement);
    replacement_ = replacement;
  }
  void pre_tokenize(std::vector<Piece>& pieces) const override {
    const Pattern space = Pattern::literal(" ");
    std::vector<Span> spans;
    split_each(pieces, [&](const Piece& p, std::vector<Piece>& out) {
      Piece src{space.replace_all(p.text, rep_), p.at_origin};
      bool starts = src.text.compare(0, rep_.size(), rep_) == 0;
      // "first" prepends only to the piece that starts the text, not to one after an added token.
      if (!starts && (scheme_ == PrependScheme::Always || (scheme_ == PrependScheme::First && p.at_origin)))
        src.text.insert(0, rep_);
      if (!split_) {
        if (!src.text.empty()) out.push_back(std::move(src));
        return;
      }
      spans.clear();
      char_matches(src.text, [this](char32_t c) { return c == replacement_; }, spans);
      split_piece(src, spans, SplitBehavior::MergedWithNext, false, out);
    });
  }

 private:
  std::string rep_;
  char32_t replacement_;
  PrependScheme scheme_;
  bool split_;
};

// BERT's pre-tokenizer: split at white space (removed), then isolate each punctuation char. One
// pass does both, with the same result as the two splits in sequence.
class BertPre : public PreTokenizer {
 public:
  void pre_tokenize(std::vector<Piece>& pieces) const override {
    split_each(pieces, [](const Piece& p, std::vector<Piece>& out) {
      const std::string& t = p.text;
      constexpr std::size_t kNone = std::string::npos;
      std::size_t word = kNone;
      auto emit = [&](std::size_t begin, std::size_t end) {
        out.push_back(Piece{t.substr(begin, end - begin), p.at_origin && begin == 0});
      };
      for (std::size_t i = 0; i < t.size();) {
        std::size_t start = i;
        auto b = static_cast<unsigned char>(t[i]);
        char32_t c = b < 0x80 ? (++i, b) : next_code_point(t, i);
        bool space = is_white_space(c);
        if (space || is_bert_punctuation(c)) {
          if (word != kNone) emit(word, start);
          word = kNone;
          if (!space) emit(start, i);
        } else if (word == kNone) {
          word = start;
        }
      }
      if (word != kNone) emit(word, t.size());
    });
  }
};

const Regex& whitespace_regex() {
  static const Regex re(R"(\w+|[^\w\s]+)", "Whitespace pre-tokenizer");
  return re;
}

class WhitespacePre : public PreTokenizer {
 public:
  // Words and punctuation runs are kept; the white space between them (the inverted matches) goes.
  void pre_tokenize(std::vector<Piece>& pieces) const override {
    std::vector<Span> spans;
    split_each(pieces, [&](const Piece& p, std::vector<Piece>& out) {
      spans.clear();
      whitespace_regex().find_all(p.text, spans);
      split_piece(p, spans, SplitBehavior::Removed, true, out);
    });
  }
};

}  // namespace

std::unique_ptr<PreTokenizer> make_byte_level_pre_tokenizer(bool add_prefix_space, bool use_regex) {
  return std::make_unique<ByteLevelPre>(add_prefix_space, use_regex);
}

std::unique_ptr<PreTokenizer> make_bert_pre_tokenizer() { return std::make_unique<BertPre>(); }

std::unique_ptr<PreTokenizer> make_pre_tokenizer(const Section& s) {
  std::string type = s.type();
  if (type == "ByteLevel") return make_byte_level_pre_tokenizer(s.flag("add_prefix_space", true), s.flag("use_regex", true));
  if (type == "Split") {
    return std::make_unique<SplitPre>(Pattern::from_json(s), read_behavior(s, "behavior", SplitBehavior::Removed),
                                      s.flag("invert", false));
  }
  if (type == "Metaspace") {
    char32_t rep = s.character("replacement", U'\u2581');
    PrependScheme scheme = PrependScheme::Always;
    if (auto name = s.opt_str("prepend_scheme")) {
      if (*name == "always") scheme = PrependScheme::Always;
      else if (*name == "first") scheme = PrependScheme::First;
      else if (*name == "never") scheme = PrependScheme::Never;
      else s.fail("\"prepend_scheme\" \"" + *name + "\" is not one of always, first, never");
    } else if (auto legacy = s.opt_flag("add_prefix_space")) {  // files written before prepend_scheme
      scheme = *legacy ? PrependScheme::Always : PrependScheme::Never;
    }
    return std::make_unique<MetaspacePre>(rep, scheme, s.flag("split", true));
  }
  if (type == "BertPreTokenizer") return make_bert_pre_tokenizer();
  if (type == "Whitespace") return std::make_unique<WhitespacePre>();
  if (type == "WhitespaceSplit") return char_split(is_white_space, SplitBehavior::Removed);
  if (type == "Punctuation")
    return char_split(is_bert_punctuation, read_behavior(s, "behavior", SplitBehavior::Isolated));
  if (type == "Digits") {
    bool individual = s.flag("individual_digits", false);
    return char_split(is_numeric, individual ? SplitBehavior::Isolated : SplitBehavior::Contiguous);
  }
  if (type == "CharDelimiterSplit") {
    char32_t d = s.character("delimiter");
    return char_split([d](char32_t c) { return c == d; }, SplitBehavior::Removed);
  }
  if (type == "Sequence") {
    std::vector<std::unique_ptr<PreTokenizer>> parts;
    for (const Section& child : s.children("pretokenizers")) parts.push_back(make_pre_tokenizer(child));
    return std::make_unique<SequencePre>(std::move(parts));
  }
  s.unsupported(type,
                "ByteLevel, Split, Metaspace, BertPreTokenizer, Whitespace, WhitespaceSplit, Punctuation, "
                "Digits, CharDelimiterSplit, Sequence");
}

bool pre_tokenizer_has(const Section& s, const char* type) {
  std::string t = s.type();
  if (t == type) return true;
  if (t == "Sequence") {
    for (const Section& child : s.children("pretokenizers"))
      if (pre_tokenizer_has(child, type)) return true;
  }
  return false;
}

}  // namespace aquin::tok
