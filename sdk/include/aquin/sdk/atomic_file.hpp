// Atomic file output: write to a temporary file beside the target, fsync, rename.
#pragma once

#include <boost/config.hpp>
#include <filesystem>
#include <string>

namespace aquin {

/// Writes `content` to `path` atomically (no partial file is ever visible at `path`).
/// Creates missing parent folders. Throws InputError("<path>: <reason>") on failure.
BOOST_SYMBOL_VISIBLE void write_file_atomic(const std::filesystem::path& path, const std::string& content);

/// Reads a whole (small) file. Throws InputError("<path>: <reason>").
BOOST_SYMBOL_VISIBLE std::string read_text_file(const std::filesystem::path& path);

}  // namespace aquin
