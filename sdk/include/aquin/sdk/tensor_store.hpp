// A read-only, name-addressed collection of tensors: one safetensors file, a sharded HF model,
// the state dict inside a torch.save archive. Readers are lazy: listing is cheap, load() reads
// (or maps) one tensor at a time so callers can stream a model one tensor pair at a time.
#pragma once

#include <ATen/core/Tensor.h>

#include <boost/config.hpp>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

namespace aquin {

/// Storage dtypes aquin understands. Names follow safetensors ("F32", "BF16", ...).
enum class DType { F64, F32, F16, BF16, I64, I32, I16, I8, U8, Bool };

/// "F32", "BF16", ...
BOOST_SYMBOL_VISIBLE const char* dtype_name(DType d);
/// Bytes per element.
BOOST_SYMBOL_VISIBLE std::size_t dtype_size(DType d);
/// The matching ATen scalar type.
BOOST_SYMBOL_VISIBLE c10::ScalarType to_scalar_type(DType d);
/// Whether the dtype is a floating-point one (F64/F32/F16/BF16).
BOOST_SYMBOL_VISIBLE bool is_floating(DType d);

/// What a store knows about one tensor without reading its data.
struct TensorInfo {
  std::string name;            ///< the key exactly as stored in the file
  DType dtype = DType::F32;    ///< storage dtype
  std::vector<int64_t> shape;  ///< empty for a scalar
  int64_t numel() const;
};

/// A read-only set of named tensors.
class BOOST_SYMBOL_VISIBLE TensorStore {
 public:
  virtual ~TensorStore() = default;
  /// Every tensor, in file order. The reference stays valid for the store's lifetime.
  virtual const std::vector<TensorInfo>& tensors() const = 0;
  /// The tensor's info, or nullptr when the store has no such key.
  const TensorInfo* find(const std::string& name) const;
  /// The tensor in its storage dtype. The result may alias a read-only memory map (it keeps the
  /// map alive); never write into it. Throws InputError (naming the file) when it cannot be read.
  virtual at::Tensor load(const std::string& name) const = 0;
  /// Where the tensors come from (a file or a directory), for messages.
  virtual std::string origin() const = 0;

 protected:
  /// Stores build a name -> index map once; find() uses it.
  void index_names();

 private:
  std::vector<std::pair<std::string, std::size_t>> sorted_names_;
};

/// A memory-mapped read-only file. Mapping lifetime is shared by every tensor that aliases it.
class BOOST_SYMBOL_VISIBLE MappedFile {
 public:
  /// Maps the whole file. Throws InputError("<path>: <reason>") when it cannot.
  static std::shared_ptr<const MappedFile> open(const std::filesystem::path& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  const unsigned char* data() const { return data_; }
  std::size_t size() const { return size_; }
  const std::filesystem::path& path() const { return path_; }

 private:
  MappedFile() = default;
  const unsigned char* data_ = nullptr;
  std::size_t size_ = 0;
  std::filesystem::path path_;
};

/// A tensor that aliases [offset, offset + numel * dtype_size) of `file`, keeping the file mapped.
/// Bounds must already have been checked by the caller.
BOOST_SYMBOL_VISIBLE at::Tensor tensor_from_mapping(const std::shared_ptr<const MappedFile>& file,
                                                    std::size_t offset, DType dtype,
                                                    const std::vector<int64_t>& shape);

/// Drops the pages under a contiguous tensor that aliases a MappedFile from this process's
/// resident set (they stay in the page cache and fault back in if touched again). A no-op for
/// tensors that do not alias a live mapping, so it is safe to call on any tensor. Streaming code
/// calls it on each chunk it has finished with, so a large tensor is never wholly resident.
BOOST_SYMBOL_VISIBLE void release_mapped_pages(const at::Tensor& t);

}  // namespace aquin
