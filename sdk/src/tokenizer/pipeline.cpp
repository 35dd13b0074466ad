#include "tokenizer/pipeline.hpp"

#include <aquin/sdk/errors.hpp>

#include <initializer_list>

#include "tokenizer/unicode.hpp"
#include "tokenizer/vocab.hpp"

namespace aquin::tok {

namespace {

class PipelineTokenizer : public Tokenizer {
 public:
  explicit PipelineTokenizer(PipelineParts parts) : p_(std::move(parts)) {
    p_.added.build(p_.normalizer.get());
    const std::vector<int32_t> none;
    std::vector<int32_t> lead = p_.post_processor ? p_.post_processor->leading_ids() : none;
    std::vector<int32_t> trail = p_.post_processor ? p_.post_processor->trailing_ids() : none;
    bos_ = resolve(p_.names.bos, lead.empty() ? std::nullopt : std::optional<int64_t>(lead.front()),
                   {"<s>", "<|begin_of_text|>", "<bos>", "<|endoftext|>"});
    eos_ = resolve(p_.names.eos, trail.empty() ? std::nullopt : std::optional<int64_t>(trail.back()),
                   {"</s>", "<|end_of_text|>", "<eos>", "<|endoftext|>"});
    pad_ = resolve(p_.names.pad, std::nullopt, {"[PAD]", "<pad>", "<|pad|>"});
    if (p_.model->unk_id() >= 0) unk_ = p_.model->unk_id();
  }

  Encoding encode(const std::string& text, bool add_special_tokens, std::size_t max_length) const override {
    if (auto bad = invalid_utf8_at(text)) throw InputError("text", "not valid UTF-8 at byte " + std::to_string(*bad));
    std::vector<int32_t> ids;
    ids.reserve(text.size() / 3 + 4);
    std::vector<Segment> raw, normalized;
    std::vector<Piece> pieces;
    p_.added.split(text, false, raw);
    for (const Segment& seg : raw) {
      if (seg.id >= 0) {
        ids.push_back(seg.id);
        continue;
      }
      // Normalizers run on each stretch between raw added tokens, as in Hugging Face (so
      // Llama 2's Prepend("▁") also applies after a special token in the text).
      std::string norm = text.substr(seg.begin, seg.end - seg.begin);
      if (p_.normalizer) p_.normalizer->normalize(norm);
      normalized.clear();
      p_.added.split(norm, true, normalized);
      for (const Segment& part : normalized) {
        if (part.id >= 0) {
          ids.push_back(part.id);
          continue;
        }
        pieces.clear();
        pieces.push_back(Piece{norm.substr(part.begin, part.end - part.begin), seg.begin == 0 && part.begin == 0});
        if (p_.pre_tokenizer) p_.pre_tokenizer->pre_tokenize(pieces);
        for (const Piece& word : pieces) p_.model->tokenize(word.text, ids);
      }
    }

    Encoding enc;
    std::size_t added = add_special_tokens && p_.post_processor ? p_.post_processor->added_count() : 0;
    if (max_length > 0) {
      if (max_length < added)
        throw InputError("max_length", std::to_string(max_length) + " is less than the " + std::to_string(added) +
                                           " special tokens the template adds");
      if (ids.size() > max_length - added) {
        ids.resize(max_length - added);
        enc.truncated = true;
      }
    }
    std::vector<uint8_t> special(ids.size(), 0);
    if (add_special_tokens && p_.post_processor) p_.post_processor->apply(ids, special);
    enc.ids.assign(ids.begin(), ids.end());
    enc.special_tokens_mask = std::move(special);
    enc.tokens.reserve(ids.size());
    for (int32_t id : ids) enc.tokens.push_back(id_to_token(id).value_or(std::string()));
    return enc;
  }

  std::string decode(const std::vector<int64_t>& ids, bool skip_special) const override {
    std::vector<std::string> tokens;
    tokens.reserve(ids.size());
    for (int64_t id : ids) {
      if (const AddedToken* t = p_.added.by_id(id)) {
        if (!(skip_special && t->special)) tokens.push_back(t->content);
      } else if (const std::string* s = p_.model->vocab().token(id)) {
        // A vocabulary string equal to a special added token counts as that token.
        const AddedToken* same = skip_special ? p_.added.by_content(*s) : nullptr;
        if (same == nullptr || !same->special) tokens.push_back(*s);
      }
    }
    if (!p_.decoder) {
      std::string out;
      for (std::size_t i = 0; i < tokens.size(); ++i) out += (i ? " " : "") + tokens[i];
      return out;
    }
    p_.decoder->decode_chain(tokens);
    std::string out;
    for (const auto& t : tokens) out += t;
    return out;
  }

  int64_t vocab_size() const override { return std::max(p_.model->vocab().id_bound(), p_.added.id_bound()); }

  std::optional<int64_t> token_id(const std::string& token) const override {
    if (const AddedToken* t = p_.added.by_content(token)) return t->id;
    if (auto id = p_.model->vocab().find(token)) return *id;
    return std::nullopt;
  }

  std::optional<std::string> id_to_token(int64_t id) const override {
    if (const AddedToken* t = p_.added.by_id(id)) return t->content;
    if (const std::string* s = p_.model->vocab().token(id)) return *s;
    return std::nullopt;
  }

  bool is_special(int64_t id) const override {
    const AddedToken* t = p_.added.by_id(id);
    return t != nullptr && t->special;
  }

  std::optional<int64_t> bos_id() const override { return bos_; }
  std::optional<int64_t> eos_id() const override { return eos_; }
  std::optional<int64_t> pad_id() const override { return pad_; }
  std::optional<int64_t> unk_id() const override { return unk_; }
  std::string kind() const override { return p_.kind; }

 private:
  // tokenizer_config.json's choice when it made one, else the template's token, else the first
  // well-known name present.
  std::optional<int64_t> resolve(const SpecialName& name, std::optional<int64_t> from_template,
                                 std::initializer_list<const char*> known) const {
    if (name.given) {
      if (!name.value) return std::nullopt;
      if (auto id = token_id(*name.value)) return id;
    }
    if (from_template) return from_template;
    for (const char* k : known)
      if (auto id = token_id(k)) return id;
    return std::nullopt;
  }

  PipelineParts p_;
  std::optional<int64_t> bos_, eos_, pad_, unk_;
};

}  // namespace

std::unique_ptr<Tokenizer> make_pipeline_tokenizer(PipelineParts parts) {
  if (!parts.model) throw std::logic_error("tokenizer pipeline without a model");
  return std::make_unique<PipelineTokenizer>(std::move(parts));
}

}  // namespace aquin::tok
