// The loaders behind Tokenizer::from_* (tokenizer.cpp): one per file layout.
#pragma once

#include <aquin/sdk/tokenizer.hpp>

#include <filesystem>
#include <memory>
#include <optional>
#include <vector>

#include "tokenizer/added_tokens.hpp"
#include "tokenizer/pipeline.hpp"

namespace aquin::tok {

/// What tokenizer_config.json / special_tokens_map.json say (all optional).
struct FolderConfig {
  SpecialNames names;
  std::optional<bool> do_lower_case;
  std::optional<bool> strip_accents;
  std::optional<bool> tokenize_chinese_chars;
  std::optional<bool> add_prefix_space;
  std::vector<AddedToken> added_tokens;  ///< `added_tokens_decoder`, for the slow layouts
};

class Section;

/// One added token as both tokenizer.json's `added_tokens` and tokenizer_config.json's
/// `added_tokens_decoder` write it (content, special, single_word, lstrip, rstrip, normalized;
/// normalized defaults to !special), with the id given.
AddedToken read_added_token(const Section& t, int32_t id);

/// Reads the config files of `dir` that exist; a malformed one throws InputError("<file>: ...").
FolderConfig read_folder_config(const std::filesystem::path& dir);

std::unique_ptr<Tokenizer> load_tokenizer_json(const std::filesystem::path& path, const SpecialNames& names);

struct VocabTxtOptions {
  bool lowercase = true;
  std::optional<bool> strip_accents;  ///< nullopt: follow lowercase
  bool handle_chinese_chars = true;
};
std::unique_ptr<Tokenizer> load_vocab_txt(const std::filesystem::path& path, const VocabTxtOptions& options,
                                          const FolderConfig& config);

std::unique_ptr<Tokenizer> load_gpt2_files(const std::filesystem::path& vocab_json,
                                           const std::filesystem::path& merges_txt, bool add_prefix_space,
                                           const FolderConfig& config);

}  // namespace aquin::tok
