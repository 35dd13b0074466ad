// The one Tokenizer implementation: a pipeline of the components a loader assembled.
#pragma once

#include <aquin/sdk/tokenizer.hpp>

#include <memory>
#include <optional>
#include <string>

#include "tokenizer/added_tokens.hpp"
#include "tokenizer/components.hpp"

namespace aquin::tok {

/// A special-token name from tokenizer_config.json: absent (`given` false: use the defaults),
/// explicitly null (`given`, no value: the model has none), or a token string.
struct SpecialName {
  bool given = false;
  std::optional<std::string> value;
};

struct SpecialNames {
  SpecialName bos, eos, pad;
};

struct PipelineParts {
  std::unique_ptr<Normalizer> normalizer;        // may be null
  std::unique_ptr<PreTokenizer> pre_tokenizer;   // may be null
  std::unique_ptr<Model> model;                  // required
  AddedTokens added;
  std::unique_ptr<PostProcessor> post_processor; // may be null
  std::unique_ptr<Decoder> decoder;              // may be null: tokens joined with spaces
  std::string kind;
  SpecialNames names;
};

/// Builds the tokenizer (the added-token matchers are built here, after the normalizer is known).
std::unique_ptr<Tokenizer> make_pipeline_tokenizer(PipelineParts parts);

}  // namespace aquin::tok
