// The "slow" tokenizer files that predate tokenizer.json: BERT's vocab.txt and GPT-2's
// vocab.json + merges.txt, assembled into the pipelines Hugging Face's converters build from them.
#include <aquin/sdk/atomic_file.hpp>
#include <aquin/sdk/errors.hpp>
#include <aquin/sdk/json.hpp>

#include "tokenizer/bpe.hpp"
#include "tokenizer/decoders.hpp"
#include "tokenizer/loaders.hpp"
#include "tokenizer/normalizers.hpp"
#include "tokenizer/post_processors.hpp"
#include "tokenizer/pre_tokenizers.hpp"
#include "tokenizer/unicode.hpp"
#include "tokenizer/vocab.hpp"
#include "tokenizer/wordpiece.hpp"

namespace aquin::tok {

namespace {

std::vector<std::string> read_lines(const std::filesystem::path& path) {
  std::string text = read_text_file(path);
  if (auto bad = invalid_utf8_at(text))
    throw InputError(path.string(), "not valid UTF-8 at byte " + std::to_string(*bad));
  std::vector<std::string> lines;
  std::size_t begin = 0;
  while (begin < text.size()) {
    std::size_t end = text.find('\n', begin);
    if (end == std::string::npos) end = text.size();
    std::string line = text.substr(begin, end - begin);
    // A vocabulary saved on Windows: a token never ends in '\r'.
    if (!line.empty() && line.back() == '\r') line.pop_back();
    lines.push_back(std::move(line));
    begin = end + 1;
  }
  return lines;
}

void add_config_tokens(AddedTokens& added, const FolderConfig& config) {
  for (const AddedToken& t : config.added_tokens) added.add(t);
}

}  // namespace

std::unique_ptr<Tokenizer> load_vocab_txt(const std::filesystem::path& path, const VocabTxtOptions& options,
                                          const FolderConfig& config) {
  std::vector<std::string> lines = read_lines(path);
  std::vector<std::pair<std::string, int32_t>> vocab;
  vocab.reserve(lines.size());
  for (std::size_t i = 0; i < lines.size(); ++i) vocab.emplace_back(lines[i], static_cast<int32_t>(i));
  if (vocab.empty()) throw InputError(path.string(), "empty vocabulary");
  auto find = [&](const std::string& token) -> std::optional<int32_t> {
    std::optional<int32_t> id;
    for (const auto& [t, i] : vocab)
      if (t == token) id = i;  // the last occurrence, as a Python dict built line by line keeps
    return id;
  };

  PipelineParts parts;
  parts.names = config.names;
  parts.kind = "wordpiece";
  BertNormalizerOptions n;
  n.lowercase = options.lowercase;
  n.strip_accents = options.strip_accents;
  n.handle_chinese_chars = options.handle_chinese_chars;
  parts.normalizer = make_bert_normalizer(n);
  parts.pre_tokenizer = make_bert_pre_tokenizer();
  parts.decoder = make_wordpiece_decoder("##", true);
  // BERT's special tokens are split out of the text, never lower-cased or cut into pieces.
  for (const char* name : {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"}) {
    if (auto id = find(name)) {
      AddedToken t;
      t.id = *id;
      t.content = name;
      t.special = true;
      parts.added.add(t);
    }
  }
  add_config_tokens(parts.added, config);
  auto cls = find("[CLS]"), sep = find("[SEP]");
  if (cls && sep) parts.post_processor = make_template({*cls}, {*sep});
  parts.model = make_wordpiece(std::move(vocab), WordPieceOptions{}, path.string());
  return make_pipeline_tokenizer(std::move(parts));
}

std::unique_ptr<Tokenizer> load_gpt2_files(const std::filesystem::path& vocab_json,
                                           const std::filesystem::path& merges_txt, bool add_prefix_space,
                                           const FolderConfig& config) {
  rapidjson::Document doc = json::parse(read_text_file(vocab_json), vocab_json.string());
  if (!doc.IsObject()) throw InputError(vocab_json.string(), "expected an object of token: id");
  std::vector<std::pair<std::string, int32_t>> vocab;
  vocab.reserve(doc.MemberCount());
  bool has_eot = false;
  int32_t eot = -1;
  for (auto it = doc.MemberBegin(); it != doc.MemberEnd(); ++it) {
    if (!it->value.IsInt() || it->value.GetInt() < 0 || it->value.GetInt() >= kMaxTokenId)
      throw InputError(vocab_json.string(), std::string("\"") + it->name.GetString() + "\" has no id in [0, 2^24)");
    std::string token(it->name.GetString(), it->name.GetStringLength());
    if (token == "<|endoftext|>") has_eot = true, eot = it->value.GetInt();
    vocab.emplace_back(std::move(token), it->value.GetInt());
  }

  std::vector<std::pair<std::string, std::string>> merges;
  std::vector<std::string> lines = read_lines(merges_txt);
  for (std::size_t i = 0; i < lines.size(); ++i) {
    const std::string& line = lines[i];
    if (line.empty() || (i == 0 && line.rfind("#version", 0) == 0)) continue;
    std::size_t space = line.find(' ');
    if (space == std::string::npos || space == 0 || space + 1 >= line.size() || line.find(' ', space + 1) != std::string::npos)
      throw InputError(merges_txt.string(), "line " + std::to_string(i + 1) + " is not two tokens separated by one space");
    merges.emplace_back(line.substr(0, space), line.substr(space + 1));
  }

  PipelineParts parts;
  parts.names = config.names;
  parts.kind = "bpe-byte-level";
  parts.pre_tokenizer = make_byte_level_pre_tokenizer(add_prefix_space, true);
  parts.decoder = make_byte_level_decoder();
  if (has_eot) {
    AddedToken t;
    t.id = eot;
    t.content = "<|endoftext|>";
    t.special = true;
    parts.added.add(t);
  }
  add_config_tokens(parts.added, config);
  parts.model = make_bpe(std::move(vocab), merges, BpeOptions{}, merges_txt.string());
  return make_pipeline_tokenizer(std::move(parts));
}

}  // namespace aquin::tok
