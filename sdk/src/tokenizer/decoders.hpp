// Decoders of tokenizer.json: ByteLevel, Metaspace, WordPiece, BPEDecoder, Replace, ByteFallback,
// Fuse, Strip and Sequence (CTC is refused by name).
#pragma once

#include <memory>

#include "tokenizer/components.hpp"
#include "tokenizer/json_section.hpp"

namespace aquin::tok {

std::unique_ptr<Decoder> make_byte_level_decoder();
std::unique_ptr<Decoder> make_wordpiece_decoder(std::string prefix, bool cleanup);

/// Builds the decoder `section` describes.
std::unique_ptr<Decoder> make_decoder(const Section& section);

}  // namespace aquin::tok
