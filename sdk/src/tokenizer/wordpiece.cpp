#include "tokenizer/wordpiece.hpp"

#include <aquin/sdk/errors.hpp>

#include <unordered_map>

#include "tokenizer/unicode.hpp"
#include "tokenizer/vocab.hpp"
#include "tokenizer/word_cache.hpp"

namespace aquin::tok {

namespace {

class WordPiece : public Model {
 public:
  WordPiece(std::vector<std::pair<std::string, int32_t>> vocab, const WordPieceOptions& o, const std::string& what)
      : vocab_(std::move(vocab)), o_(o) {
    auto unk = vocab_.find(o_.unk_token);
    if (!unk) throw InputError(what, "WordPiece unknown token \"" + o_.unk_token + "\" is not in the vocabulary");
    unk_id_ = *unk;
    // Continuations indexed without their prefix, so the inner loop looks up a plain substring.
    const std::string& prefix = o_.continuing_subword_prefix;
    vocab_.for_each([&](std::string_view token, int32_t id) {
      if (token.size() >= prefix.size() && token.compare(0, prefix.size(), prefix) == 0)
        continuations_[token.substr(prefix.size())] = id;
    });
    // Where a token string appears twice, the index keeps the id the vocabulary resolves it to.
    for (auto& [rest, id] : continuations_) id = *vocab_.find(prefix + std::string(rest));
  }

  void tokenize(std::string_view word, std::vector<int32_t>& ids) const override {
    if (word.empty()) return;
    if (cache_.lookup(word, ids)) return;
    std::size_t start = ids.size();
    split_word(word, ids);
    cache_.store(word, ids.data() + start, ids.size() - start);
  }

  const Vocab& vocab() const override { return vocab_; }
  int32_t unk_id() const override { return unk_id_; }

 private:
  void split_word(std::string_view word, std::vector<int32_t>& ids) const {
    std::size_t first = ids.size();
    if (count_code_points(word) > o_.max_input_chars_per_word) {
      ids.push_back(unk_id_);
      return;
    }
    for (std::size_t begin = 0; begin < word.size();) {
      std::size_t end = word.size();
      std::optional<int32_t> found;
      while (end > begin) {
        std::string_view sub = word.substr(begin, end - begin);
        if (begin == 0) {
          found = vocab_.find(sub);
        } else {
          auto it = continuations_.find(sub);
          if (it != continuations_.end()) found = it->second;
        }
        if (found) break;
        // Back off by one code point.
        do --end;
        while (end > begin && (static_cast<unsigned char>(word[end]) & 0xC0) == 0x80);
      }
      if (!found) {
        ids.resize(first);
        ids.push_back(unk_id_);
        return;
      }
      ids.push_back(*found);
      begin = end;
    }
  }

  Vocab vocab_;
  WordPieceOptions o_;
  std::unordered_map<std::string_view, int32_t> continuations_;  // views into vocab_
  int32_t unk_id_ = -1;
  WordCache cache_;
};

}  // namespace

std::unique_ptr<Model> make_wordpiece(std::vector<std::pair<std::string, int32_t>> vocab,
                                      const WordPieceOptions& options, const std::string& what) {
  return std::make_unique<WordPiece>(std::move(vocab), options, what);
}

}  // namespace aquin::tok
