// Normalizers of tokenizer.json: BertNormalizer, Lowercase, Strip, StripAccents, NFC/NFD/NFKC/NFKD,
// Replace, Prepend, ByteLevel and Sequence. Precompiled (SentencePiece's compiled charsmap) and
// Nmt are refused by name.
#pragma once

#include <memory>
#include <optional>

#include "tokenizer/components.hpp"
#include "tokenizer/json_section.hpp"

namespace aquin::tok {

struct BertNormalizerOptions {
  bool clean_text = true;            ///< drop control chars, turn every white space into ' '
  bool handle_chinese_chars = true;  ///< put spaces around CJK ideographs
  std::optional<bool> strip_accents; ///< NFD then drop Mn; nullopt: follow `lowercase`
  bool lowercase = true;
};

std::unique_ptr<Normalizer> make_bert_normalizer(const BertNormalizerOptions& options);

/// Builds the normalizer that `section` describes (its "type" chooses).
std::unique_ptr<Normalizer> make_normalizer(const Section& section);

}  // namespace aquin::tok
