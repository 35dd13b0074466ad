// The stages of the tokenizer pipeline, in the order Hugging Face `tokenizers` runs them:
// added tokens are split out, each remaining piece is normalized, pre-tokenized into words, each
// word is tokenized by the model; the post-processor adds template tokens; the decoder undoes it.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace aquin::tok {

class Vocab;

/// Rewrites text before it is split (lower-casing, accent stripping, "▁" for spaces, NFC...).
class Normalizer {
 public:
  virtual ~Normalizer() = default;
  virtual void normalize(std::string& text) const = 0;
};

/// A piece of text on its way to the model. `at_origin` is true when the piece starts at byte 0
/// of the text given to encode (Metaspace's prepend_scheme "first" needs it).
struct Piece {
  std::string text;
  bool at_origin = false;
};

/// Splits pieces into words (and may rewrite them: ByteLevel maps bytes, Metaspace adds "▁").
class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  /// Replaces `pieces` with the split result; empty pieces are dropped.
  virtual void pre_tokenize(std::vector<Piece>& pieces) const = 0;
};

/// Turns one word into ids.
class Model {
 public:
  virtual ~Model() = default;
  virtual void tokenize(std::string_view word, std::vector<int32_t>& ids) const = 0;
  virtual const Vocab& vocab() const = 0;
  /// The unknown token's id, or -1.
  virtual int32_t unk_id() const = 0;
};

/// Adds the template's special tokens around the text's ids.
class PostProcessor {
 public:
  virtual ~PostProcessor() = default;
  /// How many ids `apply` adds to a single sequence.
  virtual std::size_t added_count() const = 0;
  /// Adds them; `special` gets 1 for each added id, 0 for the text's.
  virtual void apply(std::vector<int32_t>& ids, std::vector<uint8_t>& special) const = 0;
  /// The special tokens placed before and after the text (for BOS/EOS defaults), if any.
  virtual std::vector<int32_t> leading_ids() const = 0;
  virtual std::vector<int32_t> trailing_ids() const = 0;
};

/// Turns token strings back into text pieces; the decoded text is their concatenation.
class Decoder {
 public:
  virtual ~Decoder() = default;
  virtual void decode_chain(std::vector<std::string>& tokens) const = 0;
};

}  // namespace aquin::tok
