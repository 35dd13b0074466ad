#include "tokenizer/added_tokens.hpp"

#include <algorithm>

#include "tokenizer/unicode.hpp"

namespace aquin::tok {

namespace {

// The code point that ends at `end` (exclusive) / starts at `begin`, for the single_word test.
char32_t code_point_before(std::string_view s, std::size_t end) {
  std::size_t start = end - 1;
  while (start > 0 && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80) --start;
  return next_code_point(s, start);
}

char32_t code_point_at(std::string_view s, std::size_t begin) { return next_code_point(s, begin); }

}  // namespace

void AddedTokens::add(const AddedToken& token) {
  auto it = by_content_.find(token.content);
  if (it != by_content_.end()) {
    by_id_.erase(tokens_[it->second].id);
    tokens_[it->second] = token;
    by_id_[token.id] = it->second;
    return;
  }
  by_content_[token.content] = tokens_.size();
  by_id_[token.id] = tokens_.size();
  tokens_.push_back(token);
}

void AddedTokens::build(const Normalizer* normalizer) {
  raw_ = Trie{};
  normalized_ = Trie{};
  for (std::size_t i = 0; i < tokens_.size(); ++i) {
    const AddedToken& t = tokens_[i];
    if (t.content.empty()) continue;
    if (t.normalized && normalizer != nullptr) {
      std::string key = t.content;
      normalizer->normalize(key);
      if (!key.empty()) normalized_.insert(key, static_cast<int32_t>(i));
    } else if (t.normalized) {
      normalized_.insert(t.content, static_cast<int32_t>(i));
    } else {
      raw_.insert(t.content, static_cast<int32_t>(i));
    }
  }
}

void AddedTokens::Trie::insert(std::string_view key, int32_t token) {
  int32_t node = 0;
  for (char ch : key) {
    auto c = static_cast<unsigned char>(ch);
    auto& next = nodes[static_cast<std::size_t>(node)].next;
    auto it = std::find_if(next.begin(), next.end(), [c](const auto& e) { return e.first == c; });
    if (it != next.end()) {
      node = it->second;
    } else {
      int32_t fresh = static_cast<int32_t>(nodes.size());
      next.emplace_back(c, fresh);
      nodes.emplace_back();  // invalidates `next`, which is not used again this iteration
      node = fresh;
    }
  }
  nodes[static_cast<std::size_t>(node)].token = token;
  first_byte[static_cast<unsigned char>(key[0])] = true;
}

std::pair<int32_t, std::size_t> AddedTokens::Trie::longest_at(std::string_view text, std::size_t pos) const {
  std::pair<int32_t, std::size_t> best{-1, pos};
  int32_t node = 0;
  for (std::size_t i = pos; i < text.size(); ++i) {
    auto c = static_cast<unsigned char>(text[i]);
    const auto& next = nodes[static_cast<std::size_t>(node)].next;
    auto it = std::find_if(next.begin(), next.end(), [c](const auto& e) { return e.first == c; });
    if (it == next.end()) break;
    node = it->second;
    if (nodes[static_cast<std::size_t>(node)].token >= 0) best = {nodes[static_cast<std::size_t>(node)].token, i + 1};
  }
  return best;
}

void AddedTokens::split(std::string_view text, bool normalized_set, std::vector<Segment>& out) const {
  const Trie& trie = normalized_set ? normalized_ : raw_;
  std::size_t done = 0;  // end of the last emitted segment
  std::size_t pos = 0;   // where the search resumes (past any match, kept or discarded)
  if (trie.nodes[0].next.empty()) pos = text.size();
  while (pos < text.size()) {
    if (!trie.first_byte[static_cast<unsigned char>(text[pos])]) {
      ++pos;
      continue;
    }
    auto [index, stop] = trie.longest_at(text, pos);
    if (index < 0) {
      ++pos;
      continue;
    }
    std::size_t start = pos;
    pos = stop;
    const AddedToken& t = tokens_[static_cast<std::size_t>(index)];
    if (t.single_word) {
      bool word_before = start > 0 && is_word_char(code_point_before(text, start));
      bool word_after = stop < text.size() && is_word_char(code_point_at(text, stop));
      if (word_before || word_after) continue;
    }
    if (t.lstrip) {
      // White space before the token joins it, but not white space an earlier match already took.
      std::size_t s = start;
      while (s > done) {
        std::size_t prev = s - 1;
        while (prev > 0 && (static_cast<unsigned char>(text[prev]) & 0xC0) == 0x80) --prev;
        std::size_t probe = prev;
        if (!is_white_space(next_code_point(text, probe))) break;
        s = prev;
      }
      start = s;
    }
    if (t.rstrip) {
      while (stop < text.size()) {
        std::size_t probe = stop;
        if (!is_white_space(next_code_point(text, probe))) break;
        stop = probe;
      }
      pos = stop;
    }
    if (start > done) out.push_back(Segment{done, start, -1});
    out.push_back(Segment{start, stop, t.id});
    done = stop;
  }
  if (done < text.size()) out.push_back(Segment{done, text.size(), -1});
}

const AddedToken* AddedTokens::by_id(int64_t id) const {
  auto it = by_id_.find(static_cast<int32_t>(id));
  return it == by_id_.end() ? nullptr : &tokens_[it->second];
}

const AddedToken* AddedTokens::by_content(std::string_view content) const {
  auto it = by_content_.find(std::string(content));
  return it == by_content_.end() ? nullptr : &tokens_[it->second];
}

int64_t AddedTokens::id_bound() const {
  int64_t bound = 0;
  for (const auto& t : tokens_) bound = std::max<int64_t>(bound, t.id + 1);
  return bound;
}

}  // namespace aquin::tok
