#include "tokenizer/decoders.hpp"

#include "tokenizer/byte_level.hpp"
#include "tokenizer/pattern.hpp"
#include "tokenizer/unicode.hpp"

namespace aquin::tok {

namespace {

class ByteLevelDecoder : public Decoder {
 public:
  // Bytes of all tokens first, then one lossy UTF-8 conversion: a character's bytes may be split
  // across tokens. A token outside the byte alphabet (an added token) is copied as it is.
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::string bytes;
    for (const auto& t : tokens)
      if (!unicode_to_bytes(t, bytes)) bytes += t;
    tokens.assign(1, utf8_lossy(bytes));
  }
};

class WordPieceDecoder : public Decoder {
 public:
  WordPieceDecoder(std::string prefix, bool cleanup) : prefix_(std::move(prefix)), cleanup_(cleanup) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (std::size_t i = 0; i < tokens.size(); ++i) {
      std::string& t = tokens[i];
      if (i != 0) {
        if (!prefix_.empty() && t.compare(0, prefix_.size(), prefix_) == 0) t.erase(0, prefix_.size());
        else t.insert(0, " ");
      }
      if (cleanup_) t = cleanup(t);
    }
  }

  // BERT's detokenisation clean-up of spaces before punctuation and contractions.
  static std::string cleanup(const std::string& s) {
    static const std::pair<const char*, const char*> rules[] = {
        {" .", "."},     {" ?", "?"},      {" !", "!"},    {" ,", ","},    {" ' ", "'"},   {" n't", "n't"},
        {" 'm", "'m"},   {" do not", " don't"}, {" 's", "'s"}, {" 've", "'ve"}, {" 're", "'re"}};
    std::string out = s;
    for (const auto& [from, to] : rules) out = Pattern::literal(from).replace_all(out, to);
    return out;
  }

 private:
  std::string prefix_;
  bool cleanup_;
};

class MetaspaceDecoder : public Decoder {
 public:
  MetaspaceDecoder(char32_t replacement, bool prepend) : replacement_(replacement), prepend_(prepend) {}
  // Every replacement char becomes a space, except in the first token when a prefix was prepended
  // at encoding: Hugging Face drops them all there (normally just the one leading "▁").
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (std::size_t i = 0; i < tokens.size(); ++i) {
      bool drop = i == 0 && prepend_;
      tokens[i] = filter_map(
          tokens[i], [&](char32_t c) { return drop && c == replacement_; },
          [&](char32_t c) { return c == replacement_ ? U' ' : c; });
    }
  }

 private:
  char32_t replacement_;
  bool prepend_;
};

class BpeDecoder : public Decoder {
 public:
  explicit BpeDecoder(std::string suffix) : suffix_(std::move(suffix)) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (std::size_t i = 0; i < tokens.size(); ++i)
      tokens[i] = Pattern::literal(suffix_).replace_all(tokens[i], i + 1 == tokens.size() ? "" : " ");
  }

 private:
  std::string suffix_;
};

class ReplaceDecoder : public Decoder {
 public:
  ReplaceDecoder(Pattern p, std::string content) : pattern_(std::move(p)), content_(std::move(content)) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (auto& t : tokens) t = pattern_.replace_all(t, content_);
  }

 private:
  Pattern pattern_;
  std::string content_;
};

class ByteFallbackDecoder : public Decoder {
 public:
  // Runs of <0xNN> tokens become their bytes when those form valid UTF-8, else one U+FFFD each.
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::vector<std::string> out;
    out.reserve(tokens.size());
    std::string run;
    std::size_t run_tokens = 0;
    auto flush = [&] {
      if (run_tokens == 0) return;
      if (!invalid_utf8_at(run)) out.push_back(run);
      else
        for (std::size_t k = 0; k < run_tokens; ++k) out.emplace_back("\xEF\xBF\xBD");
      run.clear();
      run_tokens = 0;
    };
    for (auto& t : tokens) {
      int byte = parse_byte_token(t);
      if (byte >= 0) {
        run.push_back(static_cast<char>(byte));
        ++run_tokens;
      } else {
        flush();
        out.push_back(std::move(t));
      }
    }
    flush();
    tokens.swap(out);
  }

  static int parse_byte_token(const std::string& t) {
    if (t.size() != 6 || t.compare(0, 3, "<0x") != 0 || t[5] != '>') return -1;
    auto hex = [](char c) {
      if (c >= '0' && c <= '9') return c - '0';
      if (c >= 'A' && c <= 'F') return c - 'A' + 10;
      if (c >= 'a' && c <= 'f') return c - 'a' + 10;
      return -1;
    };
    int hi = hex(t[3]), lo = hex(t[4]);
    return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
  }
};

class FuseDecoder : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::string all;
    for (const auto& t : tokens) all += t;
    tokens.assign(1, std::move(all));
  }
};

class StripDecoder : public Decoder {
 public:
  StripDecoder(char32_t content, std::size_t start, std::size_t stop) : content_(content), start_(start), stop_(stop) {}
  // Up to `start` leading and `stop` trailing `content` chars come off each token.
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (auto& t : tokens) {
      std::u32string cps;
      for (std::size_t i = 0; i < t.size();) cps.push_back(next_code_point(t, i));
      std::size_t begin = 0, end = cps.size();
      while (begin < start_ && begin < end && cps[begin] == content_) ++begin;
      for (std::size_t k = 0; k < stop_ && end > begin && cps[end - 1] == content_; ++k) --end;
      std::string out;
      for (std::size_t i = begin; i < end; ++i) append_utf8(out, cps[i]);
      t = std::move(out);
    }
  }

 private:
  char32_t content_;
  std::size_t start_, stop_;
};

class SequenceDecoder : public Decoder {
 public:
  explicit SequenceDecoder(std::vector<std::unique_ptr<Decoder>> parts) : parts_(std::move(parts)) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (const auto& d : parts_) d->decode_chain(tokens);
  }

 private:
  std::vector<std::unique_ptr<Decoder>> parts_;
};

}  // namespace

std::unique_ptr<Decoder> make_byte_level_decoder() { return std::make_unique<ByteLevelDecoder>(); }

std::unique_ptr<Decoder> make_wordpiece_decoder(std::string prefix, bool cleanup) {
  return std::make_unique<WordPieceDecoder>(std::move(prefix), cleanup);
}

std::unique_ptr<Decoder> make_decoder(const Section& s) {
  std::string type = s.type();
  if (type == "ByteLevel") return make_byte_level_decoder();
  if (type == "WordPiece") return make_wordpiece_decoder(s.opt_str("prefix").value_or("##"), s.flag("cleanup", true));
  if (type == "Metaspace") {
    bool prepend = true;
    if (auto scheme = s.opt_str("prepend_scheme")) prepend = *scheme != "never";
    else prepend = s.flag("add_prefix_space", true);
    return std::make_unique<MetaspaceDecoder>(s.character("replacement", U'\u2581'), prepend);
  }
  if (type == "BPEDecoder") return std::make_unique<BpeDecoder>(s.opt_str("suffix").value_or("</w>"));
  if (type == "Replace") return std::make_unique<ReplaceDecoder>(Pattern::from_json(s), s.str("content"));
  if (type == "ByteFallback") return std::make_unique<ByteFallbackDecoder>();
  if (type == "Fuse") return std::make_unique<FuseDecoder>();
  if (type == "Strip") {
    return std::make_unique<StripDecoder>(s.character("content"), static_cast<std::size_t>(s.integer("start", 0)),
                                          static_cast<std::size_t>(s.integer("stop", 0)));
  }
  if (type == "Sequence") {
    std::vector<std::unique_ptr<Decoder>> parts;
    for (const Section& child : s.children("decoders")) parts.push_back(make_decoder(child));
    return std::make_unique<SequenceDecoder>(std::move(parts));
  }
  s.unsupported(type, "ByteLevel, Metaspace, WordPiece, BPEDecoder, Replace, ByteFallback, Fuse, Strip, Sequence");
}

}  // namespace aquin::tok
