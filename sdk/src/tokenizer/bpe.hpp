// Byte-pair encoding as Hugging Face's BPE model runs it: a word starts as one symbol per code
// point (unknown ones become <0xNN> byte tokens with byte_fallback, else the unknown token, fused
// into one with fuse_unk), then the adjacent pair of lowest merge rank is merged until none is
// left. Serves byte-level BPE (GPT-2, Llama 3, Qwen2) and SentencePiece-style BPE (Llama 2).
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "tokenizer/components.hpp"

namespace aquin::tok {

struct BpeOptions {
  std::optional<std::string> unk_token;
  std::string continuing_subword_prefix;  ///< prepended to every symbol but a word's first ("" = none)
  std::string end_of_word_suffix;         ///< appended to a word's last symbol ("" = none)
  bool fuse_unk = false;                  ///< consecutive unknown symbols become one unknown token
  bool byte_fallback = false;             ///< unknown code points become their <0xNN> byte tokens
  bool ignore_merges = false;             ///< a word found whole in the vocabulary is one token (Llama 3)
};

/// Builds the model. Merges are by rank (list order); a merge whose parts or result are not in
/// the vocabulary throws InputError("<what>: merge N ..."), as Hugging Face refuses it too.
std::unique_ptr<Model> make_bpe(std::vector<std::pair<std::string, int32_t>> vocab,
                                const std::vector<std::pair<std::string, std::string>>& merges,
                                const BpeOptions& options, const std::string& what);

}  // namespace aquin::tok
