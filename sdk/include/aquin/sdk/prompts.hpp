// Probe prompts for commands that run models: a JSON array or a JSONL file of strings or
// {"instruction", "response"} rows, or a built-in set.
#pragma once

#include <boost/config.hpp>
#include <filesystem>
#include <string>
#include <vector>

namespace aquin {

/// Reads prompts from `path`. Throws InputError("<path>: line N: <problem>") for a malformed row,
/// an empty prompt, or an empty file.
BOOST_SYMBOL_VISIBLE std::vector<std::string> read_prompts(const std::filesystem::path& path);

/// Short, varied prompts used when the user gives none.
BOOST_SYMBOL_VISIBLE std::vector<std::string> builtin_prompts();

}  // namespace aquin
