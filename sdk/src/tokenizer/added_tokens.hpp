// Added tokens ("added_tokens" of tokenizer.json: BOS/EOS, chat markers, [CLS]...): found in the
// text before anything else runs, so they are never split by the model. Matching follows Hugging
// Face: leftmost match, longest at that position; `single_word` tokens only between non-word
// characters; `lstrip`/`rstrip` swallow the white space beside them; `normalized` tokens are
// matched in the normalized text, the others in the raw text.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "tokenizer/components.hpp"

namespace aquin::tok {

struct AddedToken {
  int32_t id = -1;
  std::string content;
  bool special = false;
  bool single_word = false;
  bool lstrip = false;
  bool rstrip = false;
  bool normalized = false;
};

/// A run of text between added tokens (`id` -1) or an added token (`id` >= 0).
struct Segment {
  std::size_t begin, end;
  int32_t id;
};

class AddedTokens {
 public:
  /// Registers a token; a later one with the same content replaces the earlier.
  void add(const AddedToken& token);
  /// Builds the matchers; `normalizer` (may be null) rewrites the content of normalized tokens.
  void build(const Normalizer* normalizer);

  /// Cuts `text` at the raw tokens (`normalized_set` false) or at the normalized ones.
  void split(std::string_view text, bool normalized_set, std::vector<Segment>& out) const;

  const AddedToken* by_id(int64_t id) const;
  const AddedToken* by_content(std::string_view content) const;
  bool empty() const { return tokens_.empty(); }
  /// One past the largest added id (0 when none).
  int64_t id_bound() const;

 private:
  // A byte trie over the contents of one matching set.
  struct Trie {
    struct Node {
      std::vector<std::pair<unsigned char, int32_t>> next;
      int32_t token = -1;  // index into tokens_ when a content ends here
    };
    std::vector<Node> nodes{Node{}};
    bool first_byte[256] = {};
    void insert(std::string_view key, int32_t token);
    // Longest content starting at text[pos]: (token index, end), or token -1.
    std::pair<int32_t, std::size_t> longest_at(std::string_view text, std::size_t pos) const;
  };

  std::vector<AddedToken> tokens_;
  std::unordered_map<std::string, std::size_t> by_content_;
  std::unordered_map<int32_t, std::size_t> by_id_;
  Trie raw_, normalized_;
};

}  // namespace aquin::tok
