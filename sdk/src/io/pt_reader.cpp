// read_pt: torch.save zip archives, read without executing anything from them.
//
// Layout of such an archive (every record under one top-level folder, "archive/" or the file
// stem): <prefix>/data.pkl is the pickled object, <prefix>/data/<key> the raw little-endian
// bytes of each storage, <prefix>/version the format version. torch.save stores every record
// uncompressed and 64-byte aligned, so storages are aliased straight from a memory map.
//
// Two readers look at the zip: libtorch's PyTorchStreamReader (validation, data.pkl with its
// CRC checked, record offsets) and a small central-directory index of our own, because the
// stream reader does not tell whether a record is compressed or how long it is — and both
// must be known before a tensor may alias the record's bytes. The two are cross-checked.

#include <aquin/sdk/errors.hpp>
#include <aquin/sdk/pt_reader.hpp>

#include "io/pickle_vm.hpp"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>
#include <caffe2/serialize/inline_container.h>
#include <caffe2/serialize/read_adapter_interface.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <system_error>
#include <unordered_map>
#include <unordered_set>

namespace aquin {

namespace {

namespace fs = std::filesystem;

// data.pkl of a state dict costs ~150 bytes per tensor; anything near this is not a checkpoint.
constexpr std::uint64_t kMaxPickleBytes = std::uint64_t{512} << 20;
// Dicts nested deeper than this are not state dicts (and recursion must stay bounded).
constexpr int kMaxNesting = 64;

std::uint64_t le(const unsigned char* p, int n) {
  std::uint64_t v = 0;
  for (int k = 0; k < n; ++k) v |= std::uint64_t{p[k]} << (8 * k);
  return v;
}

// ---- zip central directory ------------------------------------------------------------------

struct ZipEntry {
  std::uint16_t method = 0;  // 0 = stored
  std::uint64_t compressed_size = 0;
  std::uint64_t size = 0;  // uncompressed
  std::uint64_t local_header = 0;
};

// The central directory of a zip held in memory, with ZIP64 support (checkpoints over 4 GiB
// need it). Every field is bounds-checked against the mapping.
class ZipIndex {
 public:
  ZipIndex(const MappedFile& file, const std::string& where) : file_(file), where_(where) {
    const unsigned char* d = file.data();
    const std::uint64_t n = file.size();
    // End of central directory: 22 bytes, then a comment of at most 64 KiB.
    std::uint64_t eocd = UINT64_MAX;
    if (n >= 22) {
      const std::uint64_t lowest = n - 22 > 0xffff ? n - 22 - 0xffff : 0;
      for (std::uint64_t p = n - 22 + 1; p-- > lowest;) {
        if (le(d + p, 4) == 0x06054b50 && p + 22 + le(d + p + 20, 2) <= n) {
          eocd = p;
          break;
        }
      }
    }
    if (eocd == UINT64_MAX) {
      fail("truncated or not a zip archive (no end-of-central-directory record)");
    }
    std::uint64_t entries = le(d + eocd + 10, 2);
    std::uint64_t cd_size = le(d + eocd + 12, 4);
    std::uint64_t cd_offset = le(d + eocd + 16, 4);
    if (eocd >= 20 && le(d + eocd - 20, 4) == 0x07064b50) {
      const std::uint64_t z64 = le(d + eocd - 20 + 8, 8);
      if (z64 > n || n - z64 < 56 || le(d + z64, 4) != 0x06064b50) {
        fail("corrupt ZIP64 end-of-central-directory record");
      }
      entries = le(d + z64 + 32, 8);
      cd_size = le(d + z64 + 40, 8);
      cd_offset = le(d + z64 + 48, 8);
    }
    if (cd_offset > n || cd_size > n - cd_offset) fail("central directory past end of file");
    // Each entry takes at least 46 bytes: this bounds the loop and the reservation.
    if (entries > cd_size / 46) fail("central directory shorter than its entry count");
    entries_.reserve(static_cast<std::size_t>(entries));

    std::uint64_t p = cd_offset;
    const std::uint64_t end = cd_offset + cd_size;
    for (std::uint64_t e = 0; e < entries; ++e) {
      if (end - p < 46 || le(d + p, 4) != 0x02014b50) fail("corrupt central directory");
      ZipEntry entry;
      entry.method = static_cast<std::uint16_t>(le(d + p + 10, 2));
      entry.compressed_size = le(d + p + 20, 4);
      entry.size = le(d + p + 24, 4);
      const std::uint64_t name_len = le(d + p + 28, 2);
      const std::uint64_t extra_len = le(d + p + 30, 2);
      const std::uint64_t comment_len = le(d + p + 32, 2);
      entry.local_header = le(d + p + 42, 4);
      if (end - p - 46 < name_len + extra_len + comment_len) fail("corrupt central directory");
      std::string name(reinterpret_cast<const char*>(d + p + 46), name_len);
      // ZIP64 extended information: 8-byte values for each field that was saturated, in order.
      const unsigned char* x = d + p + 46 + name_len;
      const unsigned char* x_end = x + extra_len;
      while (x_end - x >= 4) {
        const std::uint64_t id = le(x, 2);
        const std::uint64_t len = le(x + 2, 2);
        const unsigned char* v = x + 4;
        if (static_cast<std::uint64_t>(x_end - v) < len) fail("corrupt zip extra field");
        if (id == 0x0001) {
          const unsigned char* v_end = v + len;
          for (std::uint64_t* field : {&entry.size, &entry.compressed_size, &entry.local_header}) {
            if (*field != 0xffffffffu) continue;
            if (v_end - v < 8) fail("corrupt ZIP64 extra field");
            *field = le(v, 8);
            v += 8;
          }
        }
        x += 4 + len;
      }
      if (e == 0) first_name_ = name;
      entries_.emplace(std::move(name), entry);  // a duplicate name keeps the first entry
      p += 46 + name_len + extra_len + comment_len;
    }
  }

  /// The first entry's name: its folder is the archive's top-level folder.
  const std::string& first_name() const { return first_name_; }

  const ZipEntry* find(const std::string& name) const {
    auto it = entries_.find(name);
    return it == entries_.end() ? nullptr : &it->second;
  }

  // Where the record's bytes start: after its local header, whose name and extra field
  // lengths may differ from the central directory's (torch pads the local one for alignment).
  std::uint64_t data_offset(const ZipEntry& e, const std::string& name) const {
    const std::uint64_t n = file_.size();
    if (e.local_header > n || n - e.local_header < 30 ||
        le(file_.data() + e.local_header, 4) != 0x04034b50) {
      fail("bad local header for record " + name);
    }
    const std::uint64_t off = e.local_header + 30 + le(file_.data() + e.local_header + 26, 2) +
                              le(file_.data() + e.local_header + 28, 2);
    if (off > n || n - off < e.compressed_size) fail("record " + name + " runs past end of file");
    return off;
  }

 private:
  [[noreturn]] void fail(const std::string& problem) const { throw InputError(where_, problem); }

  const MappedFile& file_;
  std::string where_;
  std::unordered_map<std::string, ZipEntry> entries_;
  std::string first_name_;
};

// Lets PyTorchStreamReader read from our mapping, so that it and the tensors see the same bytes
// (no second open of a file that could change in between).
class MappedReadAdapter final : public caffe2::serialize::ReadAdapterInterface {
 public:
  explicit MappedReadAdapter(std::shared_ptr<const MappedFile> file) : file_(std::move(file)) {}
  size_t size() const override { return file_->size(); }
  size_t read(uint64_t pos, void* buf, size_t n, const char* /*what*/) const override {
    if (pos >= file_->size()) return 0;
    const size_t count = std::min<uint64_t>(n, file_->size() - pos);
    std::memcpy(buf, file_->data() + pos, count);
    return count;
  }

 private:
  std::shared_ptr<const MappedFile> file_;
};

// ---- the store ------------------------------------------------------------------------------

class PtTensorStore final : public TensorStore {
 public:
  PtTensorStore(std::string origin, std::vector<TensorInfo> infos, std::vector<at::Tensor> data)
      : origin_(std::move(origin)), infos_(std::move(infos)), data_(std::move(data)) {
    index_names();
  }
  const std::vector<TensorInfo>& tensors() const override { return infos_; }
  // The tensors already alias the mapping (built while the pickle was read): nothing to read.
  at::Tensor load(const std::string& name) const override {
    const TensorInfo* info = find(name);
    if (info == nullptr) throw InputError(origin_, "no tensor named '" + name + "'");
    return data_[static_cast<std::size_t>(info - infos_.data())];
  }
  std::string origin() const override { return origin_; }

 private:
  std::string origin_;
  std::vector<TensorInfo> infos_;
  std::vector<at::Tensor> data_;
};

// ---- turning the unpickled object into a PtCheckpoint ---------------------------------------

using io::PyValue;

// Python's repr for floats is the shortest text that reads back exactly; so is ours.
std::string render_float(double f) {
  if (std::isnan(f)) return "nan";
  if (std::isinf(f)) return f > 0 ? "inf" : "-inf";
  char buf[40];
  for (int prec = 1; prec <= 17; ++prec) {
    std::snprintf(buf, sizeof buf, "%.*g", prec, f);
    if (std::strtod(buf, nullptr) == f) break;
  }
  std::string s = buf;
  if (s.find_first_of(".en") == std::string::npos) s += ".0";  // keep floats visibly floats
  return s;
}

// int, float, bool and str render as text; anything else is not a scalar.
std::optional<std::string> render_scalar(const PyValue& v) {
  switch (v.kind) {
    case PyValue::Kind::Int:
      return std::to_string(v.i);
    case PyValue::Kind::Bool:
      return std::string(v.i != 0 ? "true" : "false");
    case PyValue::Kind::Float:
      return render_float(v.f);
    case PyValue::Kind::Str:
      return v.s;
    default:
      return std::nullopt;
  }
}

// "step" as an int, or as the 0-dim integer tensor some trainers save.
std::optional<std::int64_t> as_step(const PyValue& v) {
  if (v.kind == PyValue::Kind::Int) return v.i;
  if (v.kind == PyValue::Kind::Tensor && v.tensor.numel() == 1 &&
      at::isIntegralType(v.tensor.scalar_type(), /*includeBool=*/false)) {
    return v.tensor.to(at::kLong).item<std::int64_t>();
  }
  return std::nullopt;
}

struct Flattener {
  const std::string& where;
  std::vector<TensorInfo> infos;
  std::vector<at::Tensor> data;
  std::unordered_set<std::string> names;
  std::unordered_set<const PyValue*> seen_dicts;

  // Tensors of `dict` (and of dicts inside it) under `prefix`, keys joined with '.'. Scalars and
  // other values inside a state dict are not tensors and are skipped.
  void add(const PyValue& dict, const std::string& prefix, int depth) {
    if (depth > kMaxNesting) {
      throw InputError(where, "dicts nested deeper than " + std::to_string(kMaxNesting));
    }
    // A dict reached twice is shared or cyclic: no state dict looks like that, and walking it
    // again could take exponential time.
    if (!seen_dicts.insert(&dict).second) {
      throw InputError(where, "state dict contains the same dict twice (shared or cyclic)");
    }
    for (std::size_t n = 0; n < dict.dict_size(); ++n) {
      const PyValue& value = dict.dict_value(n);
      if (value.kind != PyValue::Kind::Tensor && value.kind != PyValue::Kind::Dict) continue;
      const PyValue& key = dict.dict_key(n);
      std::string name;
      if (key.kind == PyValue::Kind::Str) {
        name = key.s;
      } else if (key.kind == PyValue::Kind::Int) {
        name = std::to_string(key.i);  // e.g. optimizer state, keyed by parameter index
      } else {
        throw InputError(where, std::string("state dict key of type ") + io::kind_name(key.kind) +
                                    " (expected str)");
      }
      const std::string full = prefix.empty() ? name : prefix + "." + name;
      if (value.kind == PyValue::Kind::Dict) {
        add(value, full, depth + 1);
        continue;
      }
      if (!names.insert(full).second) {
        throw InputError(where, "two tensors are named '" + full + "' once nested keys are joined");
      }
      TensorInfo info;
      info.name = full;
      info.dtype = value.dtype;
      info.shape.assign(value.tensor.sizes().begin(), value.tensor.sizes().end());
      infos.push_back(std::move(info));
      data.push_back(value.tensor);
    }
  }
};

// Resolves persistent ids to tensors over the mapping, once per storage key.
class StorageResolver {
 public:
  StorageResolver(std::shared_ptr<const MappedFile> file, const ZipIndex& zip,
                  caffe2::serialize::PyTorchStreamReader& reader, std::string prefix,
                  std::string where)
      : file_(std::move(file)),
        zip_(zip),
        reader_(reader),
        prefix_(std::move(prefix)),
        where_(std::move(where)) {}

  at::Tensor operator()(const io::StorageRequest& req) {
    auto cached = cache_.find(req.key);
    if (cached != cache_.end()) {
      const at::Tensor& t = cached->second;
      if (t.scalar_type() != to_scalar_type(req.dtype) || t.numel() != req.numel) {
        fail("storage '" + req.key + "' is used with two different types or sizes");
      }
      return t;
    }
    const std::string record = "data/" + req.key;
    const ZipEntry* entry = zip_.find(prefix_ + record);
    if (entry == nullptr || !reader_.hasRecord(record))
      fail("storage record " + record + " is missing");
    if (entry->method != 0 || entry->compressed_size != entry->size) {
      fail("storage record " + record + " is compressed (zip method " +
           std::to_string(entry->method) + "); aquin maps storages in place, as torch.save " +
           "writes them: re-save the checkpoint with torch.save");
    }
    const std::uint64_t esize = dtype_size(req.dtype);
    std::uint64_t bytes = 0;
    if (__builtin_mul_overflow(static_cast<std::uint64_t>(req.numel), esize, &bytes) ||
        entry->size < bytes) {
      fail("storage record " + record + " holds " + std::to_string(entry->size) +
           " bytes, but its " + std::to_string(req.numel) + " " + dtype_name(req.dtype) +
           " elements need " + (bytes ? std::to_string(bytes) : std::string("more")));
    }
    const std::uint64_t offset = zip_.data_offset(*entry, prefix_ + record);
    // Two readings of the zip must agree before any tensor points into it.
    if (reader_.getRecordOffset(record) != offset) {
      fail("zip headers disagree about where record " + record + " starts");
    }
    if (req.dtype == DType::Bool) {
      // A bool that is neither 0 nor 1 is undefined behaviour for every kernel that reads it.
      const unsigned char* p = file_->data() + offset;
      for (std::uint64_t k = 0; k < bytes; ++k) {
        if (p[k] > 1) fail("bool storage " + record + " holds a byte other than 0 or 1");
      }
    }
    at::Tensor t =
        tensor_from_mapping(file_, static_cast<std::size_t>(offset), req.dtype, {req.numel});
    cache_.emplace(req.key, t);
    return t;
  }

 private:
  [[noreturn]] void fail(const std::string& problem) const { throw InputError(where_, problem); }

  std::shared_ptr<const MappedFile> file_;
  const ZipIndex& zip_;
  caffe2::serialize::PyTorchStreamReader& reader_;
  std::string prefix_;
  std::string where_;
  std::unordered_map<std::string, at::Tensor> cache_;
};

// The text of a c10::Error on one line, without its backtrace or TORCH_CHECK's plea for
// better messages (which would read as ours).
std::string first_line(const char* text) {
  std::string s(text);
  s = s.substr(0, s.find('\n'));
  s = s.substr(0, s.find("  (Could this error message be improved?"));
  return s;
}

// Turns the unpickled top-level object into a PtCheckpoint (see pt_reader.hpp for the rules).
PtCheckpoint to_checkpoint(const PyValue& root, const std::string& where) {
  if (!root.is_dict()) {
    throw InputError(where, std::string("holds a ") + io::kind_name(root.kind) +
                                ", not a dict (a state dict, or {\"state_dict\": ...})");
  }
  PtCheckpoint ck;
  const PyValue* state_dict = &root;
  for (const char* key : {"state_dict", "model_state_dict", "model", "module"}) {
    const PyValue* v = root.dict_get(key);
    if (v != nullptr && v->is_dict()) {
      state_dict = v;
      ck.state_dict_key = key;
      break;
    }
  }
  std::string step_key;
  for (const char* key : {"step", "global_step"}) {
    const PyValue* v = root.dict_get(key);
    if (v == nullptr) continue;
    if (auto step = as_step(*v)) {
      ck.step = step;
      step_key = key;
      break;
    }
  }

  Flattener flat{where, {}, {}, {}, {}};
  flat.add(*state_dict, "", 0);

  for (std::size_t n = 0; n < root.dict_size(); ++n) {
    const PyValue& key = root.dict_key(n);
    if (key.kind != PyValue::Kind::Str || key.s == step_key || key.s == ck.state_dict_key) continue;
    if (auto text = render_scalar(root.dict_value(n))) ck.scalars[key.s] = *text;
  }
  ck.tensors = std::make_unique<PtTensorStore>(where, std::move(flat.infos), std::move(flat.data));
  return ck;
}

PtCheckpoint read_archive(const std::shared_ptr<const MappedFile>& file, const std::string& where) {
  ZipIndex zip(*file, where);
  caffe2::serialize::PyTorchStreamReader reader(std::make_shared<MappedReadAdapter>(file));

  // PyTorchStreamReader names records relative to the top-level folder ("archive/", or the
  // stem of the file torch.save wrote), which it takes from the first entry; our index keeps
  // full names, so take the folder the same way.
  const std::string prefix = zip.first_name().substr(0, zip.first_name().find('/') + 1);
  if (!reader.hasRecord("data.pkl")) {
    const std::vector<std::string> records = reader.getAllRecords();
    const bool torchscript = std::any_of(records.begin(), records.end(), [](const std::string& r) {
      return r == "constants.pkl" || r.rfind("code/", 0) == 0;
    });
    throw InputError(where, torchscript
                                ? "is a TorchScript archive (torch.jit.save), not a torch.save "
                                  "checkpoint: save the model's state_dict() with torch.save"
                                : "zip archive without data.pkl: not a torch.save checkpoint");
  }
  const ZipEntry* pickle = zip.find(prefix + "data.pkl");
  if (pickle == nullptr) throw InputError(where, "zip headers disagree about data.pkl");
  if (pickle->size > kMaxPickleBytes) {
    throw InputError(where, "data.pkl is " + std::to_string(pickle->size) +
                                " bytes, too large for a checkpoint's pickle");
  }
  // Written by PyTorch >= 2.1; older archives are little-endian, like every machine aquin runs on.
  if (reader.hasRecord("byteorder")) {
    auto [ptr, size] = reader.getRecord("byteorder");
    const std::string order(static_cast<const char*>(ptr.get()), size);
    if (order != "little") {
      throw InputError(where, "storages are in '" + order + "' byte order; aquin reads little");
    }
  }

  auto [pkl, pkl_size] = reader.getRecord("data.pkl");  // decompressed and CRC-checked
  StorageResolver resolver(file, zip, reader, prefix, where);
  io::PickleVM vm(where, [&resolver](const io::StorageRequest& req) { return resolver(req); });
  const PyValue& root = vm.run(static_cast<const unsigned char*>(pkl.get()), pkl_size);
  return to_checkpoint(root, where);
}

}  // namespace

PtCheckpoint read_pt(const std::filesystem::path& path) {
  const std::string where = path.string();
  std::error_code ec;
  if (!fs::exists(path, ec) && !ec) throw InputError(where, "no such file");
  const std::shared_ptr<const MappedFile> file = MappedFile::open(path);
  const unsigned char* d = file->data();
  if (file->size() == 0) throw InputError(where, "empty file, not a torch.save archive");
  if (d[0] == 0x80) {
    // Pickle protocol 2+ starts with PROTO; the legacy torch.save format is a run of pickles.
    throw InputError(where,
                     "is a legacy (non-zip) torch.save pickle, which aquin does not read; re-save "
                     "it with PyTorch >= 1.6: torch.save(obj, path) with the default "
                     "_use_new_zipfile_serialization=True");
  }
  if (file->size() < 4 || std::memcmp(d, "PK\x03\x04", 4) != 0) {
    throw InputError(where, "not a torch.save archive (not a zip file)");
  }
  try {
    return read_archive(file, where);
  } catch (const InputError&) {
    throw;
  } catch (const c10::Error& e) {
    // PyTorchStreamReader reports bad zips this way; an ATen check would too.
    throw InputError(where,
                     "not a valid torch.save archive: " + first_line(e.what_without_backtrace()));
  } catch (const std::invalid_argument& e) {  // the version record is parsed with std::stoull
    throw InputError(where, std::string("not a valid torch.save archive: ") + e.what());
  } catch (const std::out_of_range& e) {
    throw InputError(where, std::string("not a valid torch.save archive: ") + e.what());
  }
}

}  // namespace aquin
