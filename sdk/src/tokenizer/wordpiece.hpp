// WordPiece as BERT runs it: greedy longest match from the left, continuation pieces spelled
// with a prefix ("##"); a word with any unmatchable rest, or longer than max_input_chars_per_word
// code points, becomes the single unknown token.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "tokenizer/components.hpp"

namespace aquin::tok {

struct WordPieceOptions {
  std::string unk_token = "[UNK]";
  std::string continuing_subword_prefix = "##";
  std::size_t max_input_chars_per_word = 100;
};

/// Throws InputError("<what>: ...") when the unknown token is not in the vocabulary.
std::unique_ptr<Model> make_wordpiece(std::vector<std::pair<std::string, int32_t>> vocab,
                                      const WordPieceOptions& options, const std::string& what);

}  // namespace aquin::tok
