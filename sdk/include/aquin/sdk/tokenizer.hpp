// Text tokenizers for the model adapters: the Hugging Face `tokenizer.json` pipeline (normalizer,
// pre-tokenizer, model, added tokens, post-processor, decoder) for
//   - byte-level BPE (GPT-2, Llama 3, Qwen2): regex pre-tokenizer, bytes mapped to printable chars;
//   - SentencePiece-style BPE (Llama 2, Mistral): "▁" for spaces, <0xNN> byte fallback;
//   - WordPiece (BERT family): BERT normaliser, "##" continuations;
// and the older "slow" files: `vocab.txt` (BERT) and `vocab.json` + `merges.txt` (GPT-2).
//
// The ids are the ones Hugging Face `tokenizers` produces for the same files. Every loader error is
// an InputError("<file>: <problem>"); a component type this implementation does not know (a
// Unigram model, a Precompiled normalizer, ...) is refused by name rather than approximated.
#pragma once

#include <boost/config.hpp>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace aquin {

/// What `Tokenizer::encode` returns for one text.
struct Encoding {
  /// Token ids in order, the post-processor template's special tokens included.
  std::vector<int64_t> ids;
  /// The vocabulary string of each id, as the tokenizer stores it: byte-level tokens in their
  /// mapped form ("Ġworld"), SentencePiece pieces with "▁", WordPiece continuations with "##".
  std::vector<std::string> tokens;
  /// 1 where the post-processor template added the token ([CLS], <s>, ...), else 0. Special tokens
  /// written in the text itself are 0 here, as in Hugging Face's `special_tokens_mask`.
  std::vector<uint8_t> special_tokens_mask;
  /// True when `max_length` cut tokens off the end of the text.
  bool truncated = false;
};

/// A loaded tokenizer. Immutable after loading: `encode` and `decode` are safe to call from
/// several threads at once (the per-word cache inside is locked).
class BOOST_SYMBOL_VISIBLE Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  /// Loads the tokenizer of a model folder: `tokenizer.json` if present, else `vocab.txt` (BERT
  /// WordPiece), else `vocab.json` + `merges.txt` (GPT-2 byte-level BPE). `tokenizer_config.json`
  /// and `special_tokens_map.json`, when present, name the BOS/EOS/PAD tokens and (for `vocab.txt`)
  /// `do_lower_case`, `strip_accents` and `tokenize_chinese_chars`. Throws
  /// InputError("<dir>: no tokenizer ...") naming the files it looked for.
  static std::unique_ptr<Tokenizer> from_folder(const std::filesystem::path& model_dir);

  /// Loads a Hugging Face `tokenizer.json` alone (no sibling files are read).
  static std::unique_ptr<Tokenizer> from_tokenizer_json(const std::filesystem::path& path);

  /// A BERT WordPiece tokenizer from a bare `vocab.txt` (one token per line, id = line number)
  /// with the BERT defaults: clean text, split CJK ideographs, strip accents when lower-casing,
  /// [CLS] $A [SEP]. `lowercase` = false gives the cased variant (accents kept).
  static std::unique_ptr<Tokenizer> from_vocab_txt(const std::filesystem::path& vocab_txt,
                                                   bool lowercase = true);

  /// A GPT-2 byte-level BPE tokenizer from the slow files (`vocab.json`: token -> id;
  /// `merges.txt`: one "a b" merge a line by rank, an optional "#version" first line).
  /// `<|endoftext|>` is its special token (BOS and EOS); no template tokens are added.
  static std::unique_ptr<Tokenizer> from_gpt2_files(const std::filesystem::path& vocab_json,
                                                    const std::filesystem::path& merges_txt,
                                                    bool add_prefix_space = false);

  /// Tokenizes `text` (UTF-8; invalid UTF-8 throws InputError("text: ...") with the byte offset).
  /// Special tokens written in the text (e.g. "<|eot_id|>") become their ids. With
  /// `add_special_tokens` the post-processor template adds its tokens (BOS, [CLS]/[SEP]).
  /// `max_length` > 0 keeps at most that many ids in all: the text's tokens are cut from the end,
  /// the template's are kept, and `truncated` is set; a `max_length` smaller than the template's
  /// own token count throws InputError.
  virtual Encoding encode(const std::string& text, bool add_special_tokens = true,
                          std::size_t max_length = 0) const = 0;

  /// Turns ids back into text through the tokenizer's decoder. With `skip_special` the special
  /// added tokens (BOS, EOS, [CLS], ...) are left out. Ids the tokenizer does not know are
  /// skipped, as Hugging Face does (a model's embedding matrix is often padded past the vocabulary).
  virtual std::string decode(const std::vector<int64_t>& ids, bool skip_special = true) const = 0;

  /// One past the largest id the tokenizer can produce (model vocabulary and added tokens).
  virtual int64_t vocab_size() const = 0;

  /// The id of a token string (added tokens first, then the model vocabulary), or nullopt.
  virtual std::optional<int64_t> token_id(const std::string& token) const = 0;

  /// The token string of an id, or nullopt when the id is unknown.
  virtual std::optional<std::string> id_to_token(int64_t id) const = 0;

  /// True when `id` is a special added token (skipped by `decode(ids, true)`).
  virtual bool is_special(int64_t id) const = 0;

  /// The beginning-of-sequence token: `bos_token` of tokenizer_config.json when known, else the
  /// special token the template puts before the text (<s>, <|begin_of_text|>, [CLS]), else a
  /// well-known name in the vocabulary (<s>, <|begin_of_text|>, <bos>, <|endoftext|>); nullopt if none.
  virtual std::optional<int64_t> bos_id() const;
  /// The end-of-sequence token: `eos_token` of tokenizer_config.json, else the special token the
  /// template puts after the text ([SEP], </s>), else a well-known name (</s>, <|end_of_text|>,
  /// <eos>, <|endoftext|>); nullopt if none.
  virtual std::optional<int64_t> eos_id() const;
  /// The padding token: `pad_token` of tokenizer_config.json, else [PAD], <pad> or <|pad|> when in
  /// the vocabulary; nullopt if none (Llama and GPT-2 have none: pad with any id and mask it).
  virtual std::optional<int64_t> pad_id() const;
  /// The unknown token of the model ([UNK], <unk>), or nullopt (byte-level BPE has none).
  virtual std::optional<int64_t> unk_id() const;

  /// "bpe-byte-level", "bpe-sentencepiece" (BPE with "▁" and/or byte fallback), "bpe" (any other
  /// BPE) or "wordpiece".
  virtual std::string kind() const = 0;
};

}  // namespace aquin
