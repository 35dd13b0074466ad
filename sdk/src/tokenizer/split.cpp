#include "tokenizer/split.hpp"

#include <algorithm>

namespace aquin::tok {

SplitBehavior read_behavior(const Section& section, const char* key, SplitBehavior fallback) {
  auto name = section.opt_str(key);
  if (!name) return fallback;
  if (*name == "Removed") return SplitBehavior::Removed;
  if (*name == "Isolated") return SplitBehavior::Isolated;
  if (*name == "MergedWithPrevious") return SplitBehavior::MergedWithPrevious;
  if (*name == "MergedWithNext") return SplitBehavior::MergedWithNext;
  if (*name == "Contiguous") return SplitBehavior::Contiguous;
  section.fail("\"" + std::string(key) + "\" \"" + *name +
               "\" is not one of Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous");
}

void split_piece(const Piece& piece, const std::vector<Span>& matches, SplitBehavior behavior, bool invert,
                 std::vector<Piece>& out) {
  const std::string& text = piece.text;
  if (text.empty()) return;
  struct Part {
    std::size_t begin, end;
    bool delimiter;
  };
  // The whole text as alternating parts: gaps and matches.
  std::vector<Part> parts;
  parts.reserve(matches.size() * 2 + 1);
  std::size_t prev = 0;
  for (const Span& m : matches) {
    if (m.first > prev) parts.push_back({prev, m.first, invert});
    parts.push_back({m.first, m.second, !invert});
    prev = m.second;
  }
  if (prev < text.size()) parts.push_back({prev, text.size(), invert});

  // Keep-ranges after applying the behaviour; `drop` marks removed delimiters.
  std::vector<Part> kept;
  kept.reserve(parts.size());
  switch (behavior) {
    case SplitBehavior::Removed:
      for (const Part& p : parts)
        if (!p.delimiter) kept.push_back(p);
      break;
    case SplitBehavior::Isolated:
      kept = parts;
      break;
    case SplitBehavior::Contiguous: {
      // Like kinds merge; only delimiters can be adjacent, unless `invert` made them the kept parts.
      bool previous_delim = false;
      for (const Part& p : parts) {
        if (!kept.empty() && p.delimiter == previous_delim) kept.back().end = p.end;
        else kept.push_back(p);
        previous_delim = p.delimiter;
      }
      break;
    }
    case SplitBehavior::MergedWithPrevious: {
      bool previous_delim = false;
      for (const Part& p : parts) {
        if (!kept.empty() && p.delimiter && !previous_delim) kept.back().end = p.end;
        else kept.push_back(p);
        previous_delim = p.delimiter;
      }
      break;
    }
    case SplitBehavior::MergedWithNext: {
      bool previous_delim = false;  // walking backwards: "previous" is the part to the right
      for (auto it = parts.rbegin(); it != parts.rend(); ++it) {
        if (!kept.empty() && it->delimiter && !previous_delim) kept.back().begin = it->begin;
        else kept.push_back(*it);
        previous_delim = it->delimiter;
      }
      std::reverse(kept.begin(), kept.end());
      break;
    }
  }
  for (const Part& p : kept) {
    if (p.end <= p.begin) continue;
    out.push_back(Piece{text.substr(p.begin, p.end - p.begin), piece.at_origin && p.begin == 0});
  }
}

}  // namespace aquin::tok
