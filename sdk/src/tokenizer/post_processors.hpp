// Post-processors of tokenizer.json: TemplateProcessing ("[CLS] $A [SEP]", "<|begin_of_text|> $A"),
// BertProcessing, RobertaProcessing, ByteLevel (offsets only: nothing to do without offsets) and
// Sequence. Only the single-sequence template is used (aquin encodes one text at a time).
#pragma once

#include <memory>

#include "tokenizer/components.hpp"
#include "tokenizer/json_section.hpp"

namespace aquin::tok {

/// A template from its parts: special ids before the text and after it.
std::unique_ptr<PostProcessor> make_template(std::vector<int32_t> before, std::vector<int32_t> after);

/// Builds the post-processor `section` describes.
std::unique_ptr<PostProcessor> make_post_processor(const Section& section);

}  // namespace aquin::tok
