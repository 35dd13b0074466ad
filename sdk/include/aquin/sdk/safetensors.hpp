// safetensors: reading (memory-mapped, every header field bounds-checked) and writing.
// Format: u64 little-endian header length N, N bytes of JSON header, then the data section.
#pragma once

#include <aquin/sdk/tensor_store.hpp>

#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace aquin {

/// Opens one .safetensors file. Throws InputError("<path>: <problem>") on any malformed header:
/// header length past the end of the file, invalid JSON, unknown dtype, negative/overflowing shape,
/// data_offsets out of range, overlapping, or not matching the shape's byte size.
BOOST_SYMBOL_VISIBLE std::unique_ptr<TensorStore> open_safetensors(const std::filesystem::path& path);

/// Opens a sharded model through its `model.safetensors.index.json`: every shard the weight map
/// names is opened and checked; a key the index names but its shard lacks is an error, and so is
/// a key found in two shards.
BOOST_SYMBOL_VISIBLE std::unique_ptr<TensorStore> open_sharded_safetensors(
    const std::filesystem::path& index_json);

/// The "__metadata__" map of a safetensors file (empty when absent).
BOOST_SYMBOL_VISIBLE std::map<std::string, std::string> safetensors_metadata(
    const std::filesystem::path& path);

/// Writes tensors (any supported dtype, made contiguous) to `path` atomically: a temporary file
/// in the same folder, then rename. Throws InputError when the folder is not writable.
BOOST_SYMBOL_VISIBLE void write_safetensors(
    const std::filesystem::path& path, const std::vector<std::pair<std::string, at::Tensor>>& tensors,
    const std::map<std::string, std::string>& metadata = {});

}  // namespace aquin
