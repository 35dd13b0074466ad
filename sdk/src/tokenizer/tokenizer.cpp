// Tokenizer's factories: which files a model folder holds decides the loader.
#include <aquin/sdk/errors.hpp>
#include <aquin/sdk/tokenizer.hpp>

#include "tokenizer/loaders.hpp"

namespace aquin {

namespace fs = std::filesystem;

std::unique_ptr<Tokenizer> Tokenizer::from_folder(const fs::path& model_dir) {
  std::error_code ec;
  if (!fs::is_directory(model_dir, ec)) throw InputError(model_dir.string(), "not a folder");
  auto has = [&](const char* name) { return fs::is_regular_file(model_dir / name, ec); };
  bool json = has("tokenizer.json"), vocab_txt = has("vocab.txt"), gpt2 = has("vocab.json") && has("merges.txt");
  if (!json && !vocab_txt && !gpt2)
    throw InputError(model_dir.string(),
                     "no tokenizer found (looked for tokenizer.json, vocab.txt, vocab.json + merges.txt)");
  tok::FolderConfig cfg = tok::read_folder_config(model_dir);
  if (json) return tok::load_tokenizer_json(model_dir / "tokenizer.json", cfg.names);
  if (vocab_txt) {
    tok::VocabTxtOptions o;
    o.lowercase = cfg.do_lower_case.value_or(true);
    o.strip_accents = cfg.strip_accents;
    o.handle_chinese_chars = cfg.tokenize_chinese_chars.value_or(true);
    return tok::load_vocab_txt(model_dir / "vocab.txt", o, cfg);
  }
  return tok::load_gpt2_files(model_dir / "vocab.json", model_dir / "merges.txt", cfg.add_prefix_space.value_or(false),
                              cfg);
}

std::unique_ptr<Tokenizer> Tokenizer::from_tokenizer_json(const fs::path& path) {
  return tok::load_tokenizer_json(path, tok::SpecialNames{});
}

std::unique_ptr<Tokenizer> Tokenizer::from_vocab_txt(const fs::path& vocab_txt, bool lowercase) {
  tok::VocabTxtOptions o;
  o.lowercase = lowercase;
  return tok::load_vocab_txt(vocab_txt, o, tok::FolderConfig{});
}

std::unique_ptr<Tokenizer> Tokenizer::from_gpt2_files(const fs::path& vocab_json, const fs::path& merges_txt,
                                                      bool add_prefix_space) {
  return tok::load_gpt2_files(vocab_json, merges_txt, add_prefix_space, tok::FolderConfig{});
}

std::optional<int64_t> Tokenizer::bos_id() const { return std::nullopt; }
std::optional<int64_t> Tokenizer::eos_id() const { return std::nullopt; }
std::optional<int64_t> Tokenizer::pad_id() const { return std::nullopt; }
std::optional<int64_t> Tokenizer::unk_id() const { return std::nullopt; }

}  // namespace aquin
