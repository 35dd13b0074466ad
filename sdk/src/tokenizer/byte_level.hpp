// GPT-2's byte-level alphabet: every byte is shown as a printable code point (printable Latin-1
// bytes as themselves, the others as U+0100 upwards: ' ' -> 'Ġ', '\n' -> 'Ċ'), so that a BPE
// vocabulary of strings covers every byte sequence.
#pragma once

#include <string>
#include <string_view>

namespace aquin::tok {

/// The split regex of GPT-2's ByteLevel pre-tokenizer (also its slow tokenizer's `pat`).
extern const char* const kGpt2SplitPattern;

/// Each byte of `bytes` replaced by the UTF-8 of its printable code point.
std::string bytes_to_unicode(std::string_view bytes);

/// The inverse for one token: appends the bytes its code points stand for. Returns false (and
/// appends nothing) when a code point is outside the alphabet, e.g. an added token like
/// "<|eot_id|>"'s own text, which the caller then copies as it is.
bool unicode_to_bytes(std::string_view token, std::string& out);

}  // namespace aquin::tok
