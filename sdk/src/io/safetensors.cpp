#include <aquin/sdk/atomic_file.hpp>
#include <aquin/sdk/errors.hpp>
#include <aquin/sdk/safetensors.hpp>

#include <ATen/ATen.h>
#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <optional>
#include <set>
#include <unordered_map>

namespace aquin {

namespace fs = std::filesystem;

namespace {

// A header bigger than this is not a real model: refuse before allocating for it.
constexpr uint64_t kMaxHeaderBytes = 100ull << 20;

std::optional<DType> parse_dtype(const std::string& s) {
  static const std::unordered_map<std::string, DType> table = {
      {"F64", DType::F64}, {"F32", DType::F32}, {"F16", DType::F16}, {"BF16", DType::BF16},
      {"I64", DType::I64}, {"I32", DType::I32}, {"I16", DType::I16}, {"I8", DType::I8},
      {"U8", DType::U8},   {"BOOL", DType::Bool}};
  auto it = table.find(s);
  if (it == table.end()) return std::nullopt;
  return it->second;
}

struct Entry {
  TensorInfo info;
  uint64_t begin = 0;  // relative to the data section
  uint64_t end = 0;
};

class SafetensorsStore final : public TensorStore {
 public:
  explicit SafetensorsStore(const fs::path& path) : file_(MappedFile::open(path)) { parse(); }

  const std::vector<TensorInfo>& tensors() const override { return infos_; }

  at::Tensor load(const std::string& name) const override {
    const TensorInfo* info = find(name);
    if (info == nullptr) throw InputError(origin(), "no tensor named '" + name + "'");
    const Entry& e = entries_[static_cast<std::size_t>(info - infos_.data())];
    return tensor_from_mapping(file_, data_start_ + e.begin, e.info.dtype, e.info.shape);
  }

  std::string origin() const override { return file_->path().string(); }

  const std::map<std::string, std::string>& metadata() const { return metadata_; }

 private:
  [[noreturn]] void fail(const std::string& problem) const { throw InputError(origin(), problem); }

  void parse() {
    const std::size_t size = file_->size();
    if (size < 8) fail("too short for a safetensors file (" + std::to_string(size) + " bytes)");
    uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = (n << 8) | file_->data()[i];
    if (n > size - 8)
      fail("header length " + std::to_string(n) + " past end of file (" + std::to_string(size) +
           " bytes): truncated or not safetensors");
    if (n > kMaxHeaderBytes) fail("header length " + std::to_string(n) + " is implausibly large");
    data_start_ = 8 + n;
    const uint64_t data_size = size - data_start_;

    rapidjson::Document doc;
    doc.Parse(reinterpret_cast<const char*>(file_->data() + 8), static_cast<std::size_t>(n));
    // The spec pads the header with spaces; RapidJSON accepts trailing whitespace.
    if (doc.HasParseError()) fail("header is not valid JSON (offset " + std::to_string(doc.GetErrorOffset()) + ")");
    if (!doc.IsObject()) fail("header is not a JSON object");

    for (auto it = doc.MemberBegin(); it != doc.MemberEnd(); ++it) {
      std::string name(it->name.GetString(), it->name.GetStringLength());
      if (name == "__metadata__") {
        if (!it->value.IsObject()) fail("__metadata__ is not an object");
        for (auto m = it->value.MemberBegin(); m != it->value.MemberEnd(); ++m) {
          if (!m->value.IsString()) fail("__metadata__ value '" + std::string(m->name.GetString()) + "' is not a string");
          metadata_[m->name.GetString()] = m->value.GetString();
        }
        continue;
      }
      const auto& v = it->value;
      if (!v.IsObject()) fail("tensor '" + name + "': entry is not an object");
      auto dt = v.FindMember("dtype");
      auto sh = v.FindMember("shape");
      auto off = v.FindMember("data_offsets");
      if (dt == v.MemberEnd() || !dt->value.IsString()) fail("tensor '" + name + "': missing dtype");
      if (sh == v.MemberEnd() || !sh->value.IsArray()) fail("tensor '" + name + "': missing shape");
      if (off == v.MemberEnd() || !off->value.IsArray() || off->value.Size() != 2 ||
          !off->value[0].IsUint64() || !off->value[1].IsUint64())
        fail("tensor '" + name + "': data_offsets must be two non-negative integers");
      auto dtype = parse_dtype(dt->value.GetString());
      if (!dtype) fail("tensor '" + name + "': unknown dtype '" + std::string(dt->value.GetString()) + "'");
      Entry e;
      e.info.name = name;
      e.info.dtype = *dtype;
      uint64_t numel = 1;
      for (const auto& d : sh->value.GetArray()) {
        if (!d.IsUint64()) fail("tensor '" + name + "': shape has a non-integer or negative dimension");
        uint64_t dim = d.GetUint64();
        if (dim > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) ||
            (dim != 0 && numel > std::numeric_limits<uint64_t>::max() / dim))
          fail("tensor '" + name + "': shape overflows");
        numel *= dim;
        e.info.shape.push_back(static_cast<int64_t>(dim));
      }
      e.begin = off->value[0].GetUint64();
      e.end = off->value[1].GetUint64();
      const uint64_t esize = dtype_size(*dtype);
      if (numel > std::numeric_limits<uint64_t>::max() / esize) fail("tensor '" + name + "': byte size overflows");
      if (e.end < e.begin) fail("tensor '" + name + "': data_offsets end before begin");
      if (e.end > data_size)
        fail("tensor '" + name + "': data_offsets [" + std::to_string(e.begin) + ", " + std::to_string(e.end) +
             "] out of range (data section is " + std::to_string(data_size) + " bytes)");
      if (e.end - e.begin != numel * esize)
        fail("tensor '" + name + "': data_offsets span " + std::to_string(e.end - e.begin) +
             " bytes but shape and dtype need " + std::to_string(numel * esize));
      entries_.push_back(std::move(e));
    }
    // Overlap check: sorted by begin, each must end before the next begins.
    std::vector<const Entry*> order;
    for (const auto& e : entries_) order.push_back(&e);
    std::sort(order.begin(), order.end(), [](const Entry* a, const Entry* b) { return a->begin < b->begin; });
    const Entry* furthest = nullptr;  // the non-empty entry reaching furthest so far
    for (const Entry* e : order) {
      if (e->end == e->begin) continue;
      if (furthest != nullptr && e->begin < furthest->end)
        fail("tensors '" + furthest->info.name + "' and '" + e->info.name + "' overlap in the data section");
      if (furthest == nullptr || e->end > furthest->end) furthest = e;
    }
    // Keep file order (by offset): it is the order writers use and readers expect.
    std::sort(entries_.begin(), entries_.end(), [](const Entry& a, const Entry& b) { return a.begin < b.begin; });
    for (const auto& e : entries_) infos_.push_back(e.info);
    index_names();
  }

  std::shared_ptr<const MappedFile> file_;
  uint64_t data_start_ = 0;
  std::vector<Entry> entries_;
  std::vector<TensorInfo> infos_;
  std::map<std::string, std::string> metadata_;
};

// Several safetensors shards seen as one store.
class ShardedStore final : public TensorStore {
 public:
  explicit ShardedStore(const fs::path& index_json) : index_(index_json) {
    rapidjson::Document doc;
    std::string text = read_text_file(index_json);
    doc.Parse(text.c_str(), text.size());
    if (doc.HasParseError() || !doc.IsObject()) throw InputError(index_json.string(), "not valid JSON");
    auto wm = doc.FindMember("weight_map");
    if (wm == doc.MemberEnd() || !wm->value.IsObject()) throw InputError(index_json.string(), "missing \"weight_map\" object");
    std::map<std::string, std::size_t> shard_of_file;
    std::vector<std::pair<std::string, std::string>> wanted;  // tensor -> shard file
    for (auto it = wm->value.MemberBegin(); it != wm->value.MemberEnd(); ++it) {
      if (!it->value.IsString()) throw InputError(index_json.string(), "weight_map value for '" + std::string(it->name.GetString()) + "' is not a file name");
      std::string file = it->value.GetString();
      if (file.find('/') != std::string::npos || file == ".." )
        throw InputError(index_json.string(), "weight_map names a shard outside the folder: '" + file + "'");
      wanted.emplace_back(it->name.GetString(), file);
      if (!shard_of_file.count(file)) {
        shard_of_file[file] = shards_.size();
        fs::path p = index_json.parent_path() / file;
        std::error_code ec;
        if (!fs::exists(p, ec)) throw InputError(index_json.string(), "shard '" + file + "' named in weight_map is missing");
        shards_.push_back(open_safetensors(p));
      }
    }
    std::set<std::string> seen;
    for (const auto& [tensor, file] : wanted) {
      std::size_t s = shard_of_file[file];
      const TensorInfo* info = shards_[s]->find(tensor);
      if (info == nullptr) throw InputError(index_json.string(), "tensor '" + tensor + "' is not in its shard '" + file + "'");
      seen.insert(tensor);
      infos_.push_back(*info);
      where_.push_back(s);
    }
    for (const auto& shard : shards_)
      for (const auto& info : shard->tensors())
        if (!seen.count(info.name))
          throw InputError(index_json.string(), "tensor '" + info.name + "' of shard '" + fs::path(shard->origin()).filename().string() + "' is missing from weight_map");
    index_names();
  }

  const std::vector<TensorInfo>& tensors() const override { return infos_; }
  at::Tensor load(const std::string& name) const override {
    const TensorInfo* info = find(name);
    if (info == nullptr) throw InputError(origin(), "no tensor named '" + name + "'");
    return shards_[where_[static_cast<std::size_t>(info - infos_.data())]]->load(name);
  }
  std::string origin() const override { return index_.parent_path().string(); }

 private:
  fs::path index_;
  std::vector<std::unique_ptr<TensorStore>> shards_;
  std::vector<TensorInfo> infos_;
  std::vector<std::size_t> where_;
};

std::optional<DType> from_scalar_type(c10::ScalarType t) {
  for (DType d : {DType::F64, DType::F32, DType::F16, DType::BF16, DType::I64, DType::I32, DType::I16,
                  DType::I8, DType::U8, DType::Bool})
    if (to_scalar_type(d) == t) return d;
  return std::nullopt;
}

}  // namespace

std::unique_ptr<TensorStore> open_safetensors(const fs::path& path) {
  return std::make_unique<SafetensorsStore>(path);
}

std::unique_ptr<TensorStore> open_sharded_safetensors(const fs::path& index_json) {
  return std::make_unique<ShardedStore>(index_json);
}

std::map<std::string, std::string> safetensors_metadata(const fs::path& path) {
  return SafetensorsStore(path).metadata();
}

void write_safetensors(const fs::path& path, const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  rapidjson::StringBuffer sb;
  rapidjson::Writer<rapidjson::StringBuffer> w(sb);
  w.StartObject();
  if (!metadata.empty()) {
    w.Key("__metadata__");
    w.StartObject();
    for (const auto& [k, v] : metadata) {
      w.Key(k.c_str(), static_cast<rapidjson::SizeType>(k.size()));
      w.String(v);
    }
    w.EndObject();
  }
  std::vector<at::Tensor> contiguous;
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    auto dt = from_scalar_type(t.scalar_type());
    if (!dt) throw InputError(path.string(), "tensor '" + name + "' has a dtype safetensors cannot store");
    at::Tensor c = t.to(at::kCPU).contiguous();
    uint64_t bytes = static_cast<uint64_t>(c.numel()) * dtype_size(*dt);
    w.Key(name.c_str(), static_cast<rapidjson::SizeType>(name.size()));
    w.StartObject();
    w.Key("dtype");
    w.String(dtype_name(*dt));
    w.Key("shape");
    w.StartArray();
    for (int64_t s : c.sizes()) w.Uint64(static_cast<uint64_t>(s));
    w.EndArray();
    w.Key("data_offsets");
    w.StartArray();
    w.Uint64(offset);
    w.Uint64(offset + bytes);
    w.EndArray();
    w.EndObject();
    offset += bytes;
    contiguous.push_back(std::move(c));
  }
  w.EndObject();
  std::string header = sb.GetString();
  while (header.size() % 8 != 0) header.push_back(' ');
  std::string out;
  out.reserve(8 + header.size() + offset);
  uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((n >> (8 * i)) & 0xff));
  out += header;
  for (const auto& c : contiguous)
    out.append(static_cast<const char*>(c.data_ptr()), static_cast<std::size_t>(c.nbytes()));
  write_file_atomic(path, out);
}

}  // namespace aquin
