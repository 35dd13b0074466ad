// Splitting a piece at delimiter matches, with Hugging Face's five delimiter behaviours.
#pragma once

#include <string_view>
#include <vector>

#include "tokenizer/components.hpp"
#include "tokenizer/json_section.hpp"
#include "tokenizer/regex.hpp"
#include "tokenizer/unicode.hpp"

namespace aquin::tok {

enum class SplitBehavior {
  Removed,             ///< delimiters dropped
  Isolated,            ///< each delimiter its own piece
  MergedWithPrevious,  ///< delimiter glued to the end of the piece before it
  MergedWithNext,      ///< delimiter glued to the start of the piece after it
  Contiguous,          ///< runs of adjacent delimiters become one piece
};

/// Reads `section[key]` ("Removed", "Isolated", ...); `fallback` when absent.
SplitBehavior read_behavior(const Section& section, const char* key, SplitBehavior fallback);

/// Appends to `out` the non-empty parts of `piece` cut at `matches` (sorted, non-overlapping);
/// with `invert` the matches are the parts to keep and the text between them the delimiters.
void split_piece(const Piece& piece, const std::vector<Span>& matches, SplitBehavior behavior, bool invert,
                 std::vector<Piece>& out);

/// One match per code point for which `pred` is true (adjacent ones are separate matches).
template <class Pred>
void char_matches(std::string_view text, Pred pred, std::vector<Span>& out) {
  for (std::size_t i = 0; i < text.size();) {
    std::size_t start = i;
    if (pred(next_code_point(text, i))) out.emplace_back(start, i);
  }
}

/// Applies `split_one(piece, out)` to every piece in place.
template <class F>
void split_each(std::vector<Piece>& pieces, F split_one) {
  std::vector<Piece> out;
  out.reserve(pieces.size() * 2);
  for (const Piece& p : pieces) split_one(p, out);
  pieces.swap(out);
}

}  // namespace aquin::tok
