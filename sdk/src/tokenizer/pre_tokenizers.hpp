// Pre-tokenizers of tokenizer.json: ByteLevel, Split, Metaspace, BertPreTokenizer, Whitespace,
// WhitespaceSplit, Punctuation, Digits, CharDelimiterSplit and Sequence.
#pragma once

#include <memory>

#include "tokenizer/components.hpp"
#include "tokenizer/json_section.hpp"

namespace aquin::tok {

std::unique_ptr<PreTokenizer> make_byte_level_pre_tokenizer(bool add_prefix_space, bool use_regex);
std::unique_ptr<PreTokenizer> make_bert_pre_tokenizer();

/// Builds the pre-tokenizer that `section` describes (its "type" chooses).
std::unique_ptr<PreTokenizer> make_pre_tokenizer(const Section& section);

/// True when `section` is, or is a Sequence containing, a pre-tokenizer of type `type`.
bool pre_tokenizer_has(const Section& section, const char* type);

}  // namespace aquin::tok
