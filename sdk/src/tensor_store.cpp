#include <aquin/sdk/errors.hpp>
#include <aquin/sdk/tensor_store.hpp>

#include <ATen/ATen.h>

#include <algorithm>
#include <map>
#include <mutex>
#include <c10/util/accumulate.h>
#include <cstdint>
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

namespace aquin {

const char* dtype_name(DType d) {
  switch (d) {
    case DType::F64: return "F64";
    case DType::F32: return "F32";
    case DType::F16: return "F16";
    case DType::BF16: return "BF16";
    case DType::I64: return "I64";
    case DType::I32: return "I32";
    case DType::I16: return "I16";
    case DType::I8: return "I8";
    case DType::U8: return "U8";
    case DType::Bool: return "BOOL";
  }
  return "?";
}

std::size_t dtype_size(DType d) {
  switch (d) {
    case DType::F64: case DType::I64: return 8;
    case DType::F32: case DType::I32: return 4;
    case DType::F16: case DType::BF16: case DType::I16: return 2;
    case DType::I8: case DType::U8: case DType::Bool: return 1;
  }
  return 0;
}

c10::ScalarType to_scalar_type(DType d) {
  switch (d) {
    case DType::F64: return at::kDouble;
    case DType::F32: return at::kFloat;
    case DType::F16: return at::kHalf;
    case DType::BF16: return at::kBFloat16;
    case DType::I64: return at::kLong;
    case DType::I32: return at::kInt;
    case DType::I16: return at::kShort;
    case DType::I8: return at::kChar;
    case DType::U8: return at::kByte;
    case DType::Bool: return at::kBool;
  }
  return at::kFloat;
}

bool is_floating(DType d) {
  return d == DType::F64 || d == DType::F32 || d == DType::F16 || d == DType::BF16;
}

int64_t TensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t s : shape) n *= s;
  return n;
}

void TensorStore::index_names() {
  const auto& all = tensors();
  sorted_names_.clear();
  sorted_names_.reserve(all.size());
  for (std::size_t i = 0; i < all.size(); ++i) sorted_names_.emplace_back(all[i].name, i);
  std::sort(sorted_names_.begin(), sorted_names_.end());
}

const TensorInfo* TensorStore::find(const std::string& name) const {
  auto it = std::lower_bound(sorted_names_.begin(), sorted_names_.end(), name,
                             [](const auto& p, const std::string& n) { return p.first < n; });
  if (it == sorted_names_.end() || it->first != name) return nullptr;
  return &tensors()[it->second];
}

namespace {

// Live mappings, so release_mapped_pages() can tell a mapped tensor from a heap one (madvise on
// anonymous memory would zero it).
std::mutex& mappings_mutex() {
  static std::mutex m;
  return m;
}
std::map<std::uintptr_t, std::size_t>& mappings() {
  static std::map<std::uintptr_t, std::size_t> m;
  return m;
}

void drop_pages(std::uintptr_t addr, std::size_t nbytes) {
  const auto page = static_cast<std::uintptr_t>(::sysconf(_SC_PAGESIZE));
  const std::uintptr_t begin = (addr + page - 1) / page * page;
  const std::uintptr_t end = (addr + nbytes) / page * page;
  if (end > begin) ::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_DONTNEED);
}

}  // namespace

void release_mapped_pages(const at::Tensor& t) {
  if (!t.defined() || !t.is_contiguous() || t.numel() == 0) return;
  const auto addr = reinterpret_cast<std::uintptr_t>(t.data_ptr());
  const std::size_t nbytes = t.nbytes();
  std::lock_guard<std::mutex> lock(mappings_mutex());
  auto it = mappings().upper_bound(addr);
  if (it == mappings().begin()) return;
  --it;
  if (addr + nbytes > it->first + it->second) return;
  drop_pages(addr, nbytes);
}

std::shared_ptr<const MappedFile> MappedFile::open(const std::filesystem::path& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw InputError(path.string(), std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    int e = errno;
    ::close(fd);
    throw InputError(path.string(), std::strerror(e));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    throw InputError(path.string(), "not a regular file");
  }
  std::shared_ptr<MappedFile> f(new MappedFile());
  f->path_ = path;
  f->size_ = static_cast<std::size_t>(st.st_size);
  if (f->size_ > 0) {
    void* p = ::mmap(nullptr, f->size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      int e = errno;
      ::close(fd);
      throw InputError(path.string(), std::string("cannot map: ") + std::strerror(e));
    }
    f->data_ = static_cast<const unsigned char*>(p);
    std::lock_guard<std::mutex> lock(mappings_mutex());
    mappings()[reinterpret_cast<std::uintptr_t>(p)] = f->size_;
  }
  ::close(fd);
  return f;
}

MappedFile::~MappedFile() {
  if (data_ == nullptr) return;
  {
    std::lock_guard<std::mutex> lock(mappings_mutex());
    mappings().erase(reinterpret_cast<std::uintptr_t>(data_));
  }
  ::munmap(const_cast<unsigned char*>(data_), size_);
}

at::Tensor tensor_from_mapping(const std::shared_ptr<const MappedFile>& file, std::size_t offset,
                               DType dtype, const std::vector<int64_t>& shape) {
  auto keep = file;  // the deleter owns a reference: the map outlives every alias
  void* ptr = const_cast<unsigned char*>(file->data() + offset);
  auto opts = at::TensorOptions().dtype(to_scalar_type(dtype)).device(at::kCPU);
  const std::size_t esize = dtype_size(dtype);
  if (offset % esize != 0) {
    // Misaligned data (legal in safetensors): copy so kernels never see an unaligned pointer.
    at::Tensor out = at::empty(shape, opts);
    std::memcpy(out.data_ptr(), ptr, static_cast<std::size_t>(out.numel()) * esize);
    return out;
  }
  const std::size_t nbytes = static_cast<std::size_t>(c10::multiply_integers(shape)) * esize;
  // When the last alias dies, drop its pages from this process's resident set (they stay in the
  // page cache): streaming a model tensor by tensor then never holds the whole file resident.
  return at::from_blob(
      ptr, shape,
      [keep, ptr, nbytes](void*) mutable {
        drop_pages(reinterpret_cast<std::uintptr_t>(ptr), nbytes);
        keep.reset();
      },
      opts);
}

}  // namespace aquin
