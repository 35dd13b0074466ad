// A model vocabulary: token string <-> id, looked up by string_view so the hot loops of BPE and
// WordPiece never allocate a key.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace aquin::tok {

/// Ids past this are refused by the loaders: the id-indexed table would be sized by the largest id,
/// and real vocabularies stay far below it (Gemma's 256k is among the largest).
constexpr int64_t kMaxTokenId = int64_t{1} << 24;

class Vocab {
 public:
  Vocab() = default;
  /// `entries` in file order; a token listed twice keeps its last id (as a Python dict would),
  /// an id listed twice keeps its last token. Ids must be non-negative.
  explicit Vocab(std::vector<std::pair<std::string, int32_t>> entries);

  // The index holds views into tokens_ (a move would keep the heap buffers of long strings but
  // not the inline ones of short strings), so a Vocab stays where it was built.
  Vocab(const Vocab&) = delete;
  Vocab& operator=(const Vocab&) = delete;

  std::optional<int32_t> find(std::string_view token) const {
    auto it = index_.find(token);
    if (it == index_.end()) return std::nullopt;
    return it->second;
  }
  /// The token of `id`, or null when no token has that id.
  const std::string* token(int64_t id) const {
    if (id < 0 || id >= static_cast<int64_t>(tokens_.size()) || !present_[static_cast<std::size_t>(id)]) return nullptr;
    return &tokens_[static_cast<std::size_t>(id)];
  }
  /// One past the largest id.
  int64_t id_bound() const { return static_cast<int64_t>(tokens_.size()); }
  std::size_t count() const { return index_.size(); }
  /// Every (token, id), in id order.
  template <class F>
  void for_each(F f) const {
    for (std::size_t i = 0; i < tokens_.size(); ++i)
      if (present_[i]) f(std::string_view(tokens_[i]), static_cast<int32_t>(i));
  }

 private:
  std::vector<std::string> tokens_;
  std::vector<bool> present_;
  std::unordered_map<std::string_view, int32_t> index_;
};

}  // namespace aquin::tok
