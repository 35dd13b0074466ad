// read_pt: the committed fixtures (written by tests/fixtures/make_pt_fixtures.py, checked value by
// value against its expected.json) and archives crafted here with libtorch's own zip writer to
// reach the malformed and hostile cases a fixture file cannot conveniently hold.

#include <aquin/sdk/errors.hpp>
#include <aquin/sdk/pt_reader.hpp>

#include <ATen/ATen.h>
#include <caffe2/serialize/inline_container.h>
#include <gtest/gtest.h>
#include <rapidjson/document.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <unistd.h>
#include <vector>

namespace {

namespace fs = std::filesystem;
using namespace std::string_literals;  // "...\x00..."s keeps embedded NULs
using aquin::InputError;
using aquin::PtCheckpoint;
using aquin::read_pt;

const fs::path kPtDir = fs::path(AQUIN_TEST_DATA_DIR) / "pt";

const rapidjson::Document& expected() {
  static const rapidjson::Document doc = [] {
    std::ifstream in(kPtDir / "expected.json");
    std::stringstream text;
    text << in.rdbuf();
    rapidjson::Document d;
    d.Parse(text.str().c_str());
    if (d.HasParseError() || !d.IsObject()) throw std::runtime_error("bad expected.json");
    return d;
  }();
  return doc;
}

// The message of the InputError that `f` throws ("" and a test failure when it throws none).
template <class F>
std::string input_error(F&& f) {
  try {
    f();
  } catch (const InputError& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected an InputError";
  return "";
}

#define EXPECT_CONTAINS(haystack, needle) \
  EXPECT_NE(std::string(haystack).find(needle), std::string::npos) << (haystack)

std::pair<double, double> checksums(const at::Tensor& t) {
  const at::Tensor d = t.to(at::kDouble);
  return {d.sum().item<double>(), (d * d).sum().item<double>()};
}

// Compares everything read_pt returned for `fixture` with what Python saw when writing it.
void check_fixture(const std::string& fixture) {
  SCOPED_TRACE(fixture);
  const PtCheckpoint ck = read_pt(kPtDir / fixture);
  const rapidjson::Value& want = expected()[fixture.c_str()];

  if (want["step"].IsNull()) {
    EXPECT_FALSE(ck.step.has_value());
  } else {
    ASSERT_TRUE(ck.step.has_value());
    EXPECT_EQ(*ck.step, want["step"].GetInt64());
  }
  EXPECT_EQ(ck.state_dict_key, want["state_dict_key"].GetString());
  std::map<std::string, std::string> scalars;
  for (const auto& m : want["scalars"].GetObject())
    scalars[m.name.GetString()] = m.value.GetString();
  EXPECT_EQ(ck.scalars, scalars);

  ASSERT_TRUE(ck.tensors);
  const auto& infos = ck.tensors->tensors();
  const auto& tensors = want["tensors"].GetArray();
  ASSERT_EQ(infos.size(), tensors.Size());
  for (rapidjson::SizeType i = 0; i < tensors.Size(); ++i) {
    const rapidjson::Value& w = tensors[i];
    const std::string name = w["name"].GetString();
    SCOPED_TRACE(name);
    EXPECT_EQ(infos[i].name, name);  // file order is kept
    EXPECT_STREQ(aquin::dtype_name(infos[i].dtype), w["dtype"].GetString());
    std::vector<int64_t> shape;
    for (const auto& s : w["shape"].GetArray()) shape.push_back(s.GetInt64());
    EXPECT_EQ(infos[i].shape, shape);

    ASSERT_EQ(ck.tensors->find(name), &infos[i]);
    const at::Tensor t = ck.tensors->load(name);
    EXPECT_EQ(t.scalar_type(), aquin::to_scalar_type(infos[i].dtype));
    EXPECT_EQ(t.sizes().vec(), shape);
    const auto [sum, sumsq] = checksums(t);
    const double want_sum = w["sum"].GetDouble();
    const double want_sumsq = w["sumsq"].GetDouble();
    // Only the summation order may differ from Python's.
    EXPECT_NEAR(sum, want_sum, 1e-9 * (1.0 + std::fabs(want_sumsq)));
    EXPECT_NEAR(sumsq, want_sumsq, 1e-9 * (1.0 + std::fabs(want_sumsq)));
  }
}

TEST(PtReader, StepAndStateDictWithMixedFloatTypes) {
  check_fixture("step_state_dict.pt");
  const PtCheckpoint ck = read_pt(kPtDir / "step_state_dict.pt");
  EXPECT_EQ(ck.step, 1200);
  EXPECT_EQ(ck.state_dict_key, "state_dict");
  EXPECT_EQ(ck.tensors->origin(), (kPtDir / "step_state_dict.pt").string());
  const auto* q = ck.tensors->find("model.layers.0.self_attn.q_proj.weight");
  ASSERT_NE(q, nullptr);
  EXPECT_EQ(q->dtype, aquin::DType::BF16);
  EXPECT_EQ(ck.tensors->find("model.layers.0.mlp.down_proj.weight")->dtype, aquin::DType::F16);
  EXPECT_EQ(ck.tensors->find("model.norm.weight")->dtype, aquin::DType::F32);
  // Tied weights are one storage in the file and stay one in memory.
  const at::Tensor embed = ck.tensors->load("model.embed_tokens.weight");
  const at::Tensor head = ck.tensors->load("lm_head.weight");
  EXPECT_EQ(embed.data_ptr(), head.data_ptr());
  EXPECT_EQ(ck.tensors->find("no.such.tensor"), nullptr);
  EXPECT_CONTAINS(input_error([&] { ck.tensors->load("no.such.tensor"); }), "no.such.tensor");
}

TEST(PtReader, BareStateDictWithEveryDtype) {
  check_fixture("bare_state_dict.pt");
  const PtCheckpoint ck = read_pt(kPtDir / "bare_state_dict.pt");
  EXPECT_EQ(ck.state_dict_key, "");
  const at::Tensor counter = ck.tensors->load("bn.num_batches_tracked");
  EXPECT_EQ(counter.dim(), 0);
  EXPECT_EQ(counter.item<int64_t>(), 42);
  EXPECT_EQ(ck.tensors->load("i64")[3].item<int64_t>(), int64_t{1} << 40);
  EXPECT_EQ(ck.tensors->load("u8")[1].item<uint8_t>(), 255);
}

TEST(PtReader, ViewsShareOneStorage) {
  check_fixture("views.pt");
  const PtCheckpoint ck = read_pt(kPtDir / "views.pt");
  const at::Tensor base = ck.tensors->load("base");
  for (const auto& m : expected()["views.pt"]["views"].GetObject()) {
    const std::string name = m.name.GetString();
    SCOPED_TRACE(name);
    const at::Tensor t = ck.tensors->load(name);
    EXPECT_TRUE(t.is_alias_of(base));  // a view, not a copy
    EXPECT_EQ(t.storage_offset(), m.value["storage_offset"].GetInt64());
    std::vector<int64_t> stride;
    for (const auto& s : m.value["stride"].GetArray()) stride.push_back(s.GetInt64());
    EXPECT_EQ(t.strides().vec(), stride);
    EXPECT_EQ(t.is_contiguous(), m.value["is_contiguous"].GetBool());
  }
  EXPECT_TRUE(at::equal(ck.tensors->load("transposed"), base.t()));
  EXPECT_TRUE(at::equal(ck.tensors->load("slice"), base.slice(0, 2, 5)));
  EXPECT_TRUE(at::equal(ck.tensors->load("column"), base.select(1, 1)));
  EXPECT_TRUE(at::equal(ck.tensors->load("strided"), base.slice(0, 1, 6, 2).slice(1, 0, 4, 3)));
}

// Python's zipfile does not align records: a float32 storage at an odd offset is copied once,
// and the views still share that one copy.
TEST(PtReader, UnalignedStoragesAreCopiedOnce) {
  check_fixture("unaligned.pt");
  const PtCheckpoint ck = read_pt(kPtDir / "unaligned.pt");
  const at::Tensor base = ck.tensors->load("base");
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(base.data_ptr()) % alignof(float), 0u);
  EXPECT_TRUE(ck.tensors->load("transposed").is_alias_of(base));
  EXPECT_TRUE(at::equal(ck.tensors->load("transposed"), base.t()));
}

// Whether [p, p + n) lies inside a mapping of `file` (Linux: /proc/self/maps).
bool inside_mapping_of(const void* p, std::size_t n, const fs::path& file) {
  const std::string want = fs::canonical(file).string();
  std::ifstream maps("/proc/self/maps");
  std::string line;
  const auto addr = reinterpret_cast<std::uintptr_t>(p);
  while (std::getline(maps, line)) {
    std::istringstream in(line);
    std::string range, perms, offset, dev, inode, path;
    in >> range >> perms >> offset >> dev >> inode >> path;
    if (path != want) continue;
    const auto dash = range.find('-');
    const std::uintptr_t lo = std::stoull(range.substr(0, dash), nullptr, 16);
    const std::uintptr_t hi = std::stoull(range.substr(dash + 1), nullptr, 16);
    if (addr >= lo && addr + n <= hi) return true;
  }
  return false;
}

TEST(PtReader, TensorsAliasTheFileMapping) {
  const fs::path file = kPtDir / "step_state_dict.pt";
  const PtCheckpoint ck = read_pt(file);
  for (const auto& info : ck.tensors->tensors()) {
    const at::Tensor t = ck.tensors->load(info.name);
    EXPECT_TRUE(inside_mapping_of(t.data_ptr(), t.nbytes(), file)) << info.name << " was copied";
  }
}

TEST(PtReader, LoraKeysAndTopLevelScalars) {
  check_fixture("lora_state_dict.pt");
  const PtCheckpoint ck = read_pt(kPtDir / "lora_state_dict.pt");
  EXPECT_EQ(ck.scalars.at("lora_alpha"), "16");
  EXPECT_EQ(ck.scalars.at("r"), "4");
  EXPECT_EQ(ck.scalars.at("lora_dropout"), "0.05");
  EXPECT_EQ(ck.scalars.count("layers_to_transform"), 0u);  // a list is not a scalar
  EXPECT_NE(ck.tensors->find("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"),
            nullptr);
}

TEST(PtReader, NestedDictsAreFlattenedWithDots) {
  check_fixture("nested.pt");
  const PtCheckpoint ck = read_pt(kPtDir / "nested.pt");
  EXPECT_EQ(ck.state_dict_key, "model");
  EXPECT_EQ(ck.scalars.at("epoch"), "3");
  EXPECT_NE(ck.tensors->find("encoder.layers.0.b"), nullptr);
}

TEST(PtReader, TensorsOutliveTheCheckpoint) {
  at::Tensor t;
  double want = 0;
  {
    const PtCheckpoint ck = read_pt(kPtDir / "step_state_dict.pt");
    t = ck.tensors->load("model.layers.0.mlp.up_proj.weight");
    want = checksums(t).first;
  }
  EXPECT_EQ(checksums(t).first, want);  // the mapping lives on in the tensor
}

TEST(PtReader, LegacyFormatIsRefusedWithTheWayOut) {
  const std::string msg = input_error([] { read_pt(kPtDir / "legacy.pt"); });
  EXPECT_CONTAINS(msg, (kPtDir / "legacy.pt").string());
  EXPECT_CONTAINS(msg, "legacy");
  EXPECT_CONTAINS(msg, "torch.save(obj, path)");
  EXPECT_CONTAINS(msg, "_use_new_zipfile_serialization=True");
}

TEST(PtReader, CodeInThePickleIsRefusedByName) {
  const std::string marker = expected()["evil"]["marker"].GetString();
  for (const char* fixture : {"evil_global.pt", "evil_stack_global.pt"}) {
    SCOPED_TRACE(fixture);
    fs::remove(marker);
    const std::string msg = input_error([&] { read_pt(kPtDir / fixture); });
    EXPECT_CONTAINS(msg, std::string("'") + expected()["evil"][fixture].GetString() + "'");
    EXPECT_CONTAINS(msg, "executes no code");
    EXPECT_FALSE(fs::exists(marker)) << "the pickle's command ran";
  }
}

TEST(PtReader, TruncatedArchive) {
  const std::string msg = input_error([] { read_pt(kPtDir / "truncated.pt"); });
  EXPECT_CONTAINS(msg, "truncated.pt");
}

TEST(PtReader, MissingFileIsNamed) {
  const fs::path missing = kPtDir / "does_not_exist.pt";
  const std::string msg = input_error([&] { read_pt(missing); });
  EXPECT_CONTAINS(msg, missing.string());
}

// ---- crafted archives -----------------------------------------------------------------------

class PtCrafted : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("aquin_pt_reader_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  fs::path write_file(const std::string& name, const std::string& bytes) {
    const fs::path p = dir_ / name;
    std::ofstream(p, std::ios::binary)
        .write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    return p;
  }

  // A zip laid out as torch.save lays it out (folder = file stem), written by libtorch's writer.
  fs::path write_archive(const std::string& name, const std::string& pickle,
                         const std::map<std::string, std::string>& storages = {},
                         bool compress_storages = false) {
    const fs::path p = dir_ / name;
    caffe2::serialize::PyTorchStreamWriter writer(p.string());
    if (!pickle.empty()) writer.writeRecord("data.pkl", pickle.data(), pickle.size());
    for (const auto& [key, bytes] : storages) {
      writer.writeRecord("data/" + key, bytes.data(), bytes.size(), compress_storages);
    }
    writer.writeEndOfFile();
    return p;
  }

  fs::path dir_;
};

// Pickle spelling helpers (protocol 2 opcodes, as torch.save writes them).
std::string le32(uint32_t v) {
  std::string s(4, '\0');
  for (int k = 0; k < 4; ++k) s[k] = static_cast<char>((v >> (8 * k)) & 0xff);
  return s;
}
std::string str(const std::string& s) { return "X" + le32(static_cast<uint32_t>(s.size())) + s; }
std::string int64(int64_t v) {  // LONG1 with 8 bytes: any int64
  std::string s = "\x8a\x08";
  for (int k = 0; k < 8; ++k) s += static_cast<char>((static_cast<uint64_t>(v) >> (8 * k)) & 0xff);
  return s;
}
std::string global(const std::string& module, const std::string& name) {
  return "c" + module + "\n" + name + "\n";
}
std::string ints(const std::vector<int64_t>& v) {
  std::string s = "(";
  for (int64_t x : v) s += int64(x);
  return s + "t";
}
std::string tensor(const std::string& key, const std::string& storage_type, int64_t numel,
                   int64_t offset, const std::vector<int64_t>& sizes,
                   const std::vector<int64_t>& strides) {
  return global("torch._utils", "_rebuild_tensor_v2") + "((" + str("storage") +
         global("torch", storage_type) + str(key) + str("cpu") + int64(numel) + "tQ" +
         int64(offset) + ints(sizes) + ints(strides) + "\x89" +
         global("collections", "OrderedDict") + ")RtR";
}
std::string dict(const std::vector<std::pair<std::string, std::string>>& items) {
  std::string s = "}(";
  for (const auto& [k, v] : items) s += str(k) + v;
  return s + "u";
}
std::string pickle(const std::string& body) { return "\x80\x02" + body + "."; }
std::string floats(const std::vector<float>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(float));
}

TEST_F(PtCrafted, HandWrittenPickleReads) {
  // Also shows that the folder name does not matter: here it is the stem "hand".
  const auto p = write_archive(
      "hand.pt",
      pickle(dict({{"step", int64(7)},
                   {"model", dict({{"w", tensor("0", "FloatStorage", 6, 0, {2, 3}, {3, 1})}})}})),
      {{"0", floats({1, 2, 3, 4, 5, 6})}});
  const PtCheckpoint ck = read_pt(p);
  EXPECT_EQ(ck.step, 7);
  EXPECT_EQ(ck.state_dict_key, "model");
  const at::Tensor w = ck.tensors->load("w");
  EXPECT_EQ(w.sizes().vec(), (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(w[1][2].item<float>(), 6.0f);
}

TEST_F(PtCrafted, Protocol4OpcodesRead) {
  // FRAME, MEMOIZE, SHORT_BINUNICODE, STACK_GLOBAL, NEWOBJ, BINFLOAT and a short LONG1.
  std::string body = "\x95" + std::string(8, '\0');  // FRAME: a read-ahead hint
  body += "}\x94(";                                  // top-level dict (memo 0), MARK
  body += "\x8c\x01w\x94";
  body += "\x8c\x0ctorch._utils\x94\x8c\x12_rebuild_tensor_v2\x94\x93\x94";
  // SHORT_BINUNICODE strings, as protocol 4 writes them ("\x8c" + one length byte + text).
  auto s8 = [](const std::string& text) { return "\x8c"s + static_cast<char>(text.size()) + text; };
  body += "((" + str("storage") + s8("torch") + s8("FloatStorage") + "\x93";  // the storage type
  body += str("0") + str("cpu") + "K\x03tQ";            // key, location, numel; BINPERSID
  body += "K\x01"s + "(K\x02t" + "K\x01\x85" + "\x89";  // offset 1, size (2,), stride (1,), False
  body += s8("collections") + s8("OrderedDict") + "\x93)\x81";  // hooks: OrderedDict via NEWOBJ
  body += "tR";
  body += "\x8c\x02lrG" + std::string("\x3f\xb9\x99\x99\x99\x99\x99\x9a", 8);  // 0.1
  body += "\x8c\x03neg" + std::string("\x8a\x02\x00\xff", 4);                  // -256
  body += "u";
  const auto p = write_archive("p4.pt", "\x80\x04" + body + ".", {{"0", floats({1, 2, 3})}});
  const PtCheckpoint ck = read_pt(p);
  const at::Tensor w = ck.tensors->load("w");  // offset 1, size 2 over [1, 2, 3]
  EXPECT_EQ(w.sizes().vec(), (std::vector<int64_t>{2}));
  EXPECT_EQ(w[0].item<float>(), 2.0f);
  EXPECT_EQ(w[1].item<float>(), 3.0f);
  EXPECT_EQ(ck.scalars.at("lr"), "0.1");
  EXPECT_EQ(ck.scalars.at("neg"), "-256");
}

TEST_F(PtCrafted, MissingStorageRecord) {
  const auto p =
      write_archive("a.pt", pickle(dict({{"w", tensor("7", "FloatStorage", 2, 0, {2}, {1})}})),
                    {{"0", floats({1, 2})}});
  EXPECT_CONTAINS(input_error([&] { read_pt(p); }), "data/7");
}

TEST_F(PtCrafted, StorageRecordTooShort) {
  const auto p =
      write_archive("a.pt", pickle(dict({{"w", tensor("0", "FloatStorage", 6, 0, {6}, {1})}})),
                    {{"0", floats({1, 2})}});
  EXPECT_CONTAINS(input_error([&] { read_pt(p); }), "holds 8 bytes");
}

TEST_F(PtCrafted, ViewPastItsStorage) {
  // 3x3 with stride 3 reaches element 8 of a 6-element storage.
  const auto p = write_archive(
      "a.pt", pickle(dict({{"w", tensor("0", "FloatStorage", 6, 0, {3, 3}, {3, 1})}})),
      {{"0", floats({1, 2, 3, 4, 5, 6})}});
  EXPECT_CONTAINS(input_error([&] { read_pt(p); }), "reaches element 8");
  // An offset alone can do it too.
  const auto q =
      write_archive("b.pt", pickle(dict({{"w", tensor("0", "FloatStorage", 6, 5, {2}, {1})}})),
                    {{"0", floats({1, 2, 3, 4, 5, 6})}});
  EXPECT_CONTAINS(input_error([&] { read_pt(q); }), "reaches element 6");
}

TEST_F(PtCrafted, SizesThatOverflow) {
  const int64_t big = int64_t{1} << 40;
  const auto p = write_archive(
      "a.pt", pickle(dict({{"w", tensor("0", "FloatStorage", 6, 0, {big, big}, {big, 1})}})),
      {{"0", floats({1, 2, 3, 4, 5, 6})}});
  EXPECT_CONTAINS(input_error([&] { read_pt(p); }), "overflow");
  const auto q = write_archive(
      "b.pt", pickle(dict({{"w", tensor("0", "FloatStorage", int64_t{1} << 62, 0, {1}, {1})}})),
      {{"0", floats({1})}});
  EXPECT_CONTAINS(input_error([&] { read_pt(q); }), "holds 4 bytes");
  const auto r =
      write_archive("c.pt", pickle(dict({{"w", tensor("0", "FloatStorage", 6, 0, {-1}, {1})}})),
                    {{"0", floats({1, 2, 3, 4, 5, 6})}});
  EXPECT_CONTAINS(input_error([&] { read_pt(r); }), "negative");
}

TEST_F(PtCrafted, CompressedStorageIsRefused) {
  const auto p = write_archive(
      "a.pt", pickle(dict({{"w", tensor("0", "FloatStorage", 1024, 0, {1024}, {1})}})),
      {{"0", floats(std::vector<float>(1024, 0.0f))}}, /*compress=*/true);
  EXPECT_CONTAINS(input_error([&] { read_pt(p); }), "compressed");
}

TEST_F(PtCrafted, BoolStorageMustHoldZeroOrOne) {
  const auto p =
      write_archive("a.pt", pickle(dict({{"w", tensor("0", "BoolStorage", 3, 0, {3}, {1})}})),
                    {{"0", std::string("\x01\x02\x00", 3)}});
  EXPECT_CONTAINS(input_error([&] { read_pt(p); }), "bool");
}

TEST_F(PtCrafted, OtherGlobalsAndCallPathsAreRefusedByName) {
  // An unknown torch helper in tensor position.
  const auto p = write_archive(
      "a.pt",
      pickle(dict({{"w", global("torch._utils", "_rebuild_device_tensor_from_numpy") + ")R"}})));
  EXPECT_CONTAINS(input_error([&] { read_pt(p); }),
                  "'torch._utils._rebuild_device_tensor_from_numpy'");
  // INST names its class inline.
  const auto q = write_archive("b.pt", pickle("(" + str("id") + "ios\nsystem\n"));
  EXPECT_CONTAINS(input_error([&] { read_pt(q); }), "'os.system'");
  // The extension registry is a way to name globals by number.
  const auto r = write_archive("c.pt", pickle("\x82\x01)R"));
  EXPECT_CONTAINS(input_error([&] { read_pt(r); }), "extension code 1");
  // Allowed globals cannot be called with arbitrary meaning: a storage type is not callable.
  const auto s = write_archive("d.pt", pickle(global("torch", "FloatStorage") + ")R"));
  EXPECT_CONTAINS(input_error([&] { read_pt(s); }), "cannot call torch.FloatStorage");
}

TEST_F(PtCrafted, MalformedPickles) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"\x80\x02}", "truncated"},                           // no STOP
      {"\x80\x02.", "stack underflow"},                     // STOP on nothing
      {"\x80\x02\xff.", "unsupported pickle opcode 0xff"},  // unknown opcode
      {"\x80\x02X\xff\xff\xff\xff"
       "abc.",
       "runs past the end"},                                  // huge length
      {"\x80\x02h\x05.", "memo key 5"},                       // memo never stored
      {"\x80\x02](" + str("a") + "u.", "SETITEMS"},           // odd items / non-dict
      {"\x80\x02]}\x86}(]" + str("x") + "u.", "unhashable"},  // list as a key
      {"\x80\x02" + str("a") + "(\x85.", "stack underflow"},  // pop past a MARK
      {"\x80\x09}.", "protocol 9"},
      {"\x80\x02" + std::string("\x8a\x09") + std::string(9, '\x7f') + ".", "64 bits"},
      {"\x80\x02" + str("x") + "b.", "stack underflow"},
      {"\x80\x02" + str("x") + "N" + "b.", "BUILD on a str"},
      {"\x80\x02" + global("collections", "OrderedDict") + "(K\x01K\x02tR.", "arguments"},
      {"\x80\x02]" + std::string("Q."), "persistent id"},
  };
  int n = 0;
  for (const auto& [bytes, needle] : cases) {
    SCOPED_TRACE(needle);
    const auto p = write_archive("m" + std::to_string(n++) + ".pt", bytes);
    const std::string msg = input_error([&] { read_pt(p); });
    EXPECT_CONTAINS(msg, needle);
    EXPECT_CONTAINS(msg, p.string());
  }
}

TEST_F(PtCrafted, TopLevelMustBeADict) {
  const auto p = write_archive("a.pt", pickle("]"));
  EXPECT_CONTAINS(input_error([&] { read_pt(p); }), "holds a list");
}

TEST_F(PtCrafted, FlattenedNamesMustBeUnique) {
  const std::string t = tensor("0", "FloatStorage", 2, 0, {2}, {1});
  const auto p = write_archive("a.pt", pickle(dict({{"a.b", t}, {"a", dict({{"b", t}})}})),
                               {{"0", floats({1, 2})}});
  EXPECT_CONTAINS(input_error([&] { read_pt(p); }), "'a.b'");
  // Python replaces the value of a repeated key in place: so does the VM.
  const auto q = write_archive(
      "b.pt",
      pickle(dict({{"w", "N"}, {"v", t}, {"w", tensor("0", "FloatStorage", 2, 1, {1}, {1})}})),
      {{"0", floats({1, 2})}});
  const PtCheckpoint ck = read_pt(q);
  ASSERT_EQ(ck.tensors->tensors().size(), 2u);
  EXPECT_EQ(ck.tensors->tensors()[0].name, "w");
  EXPECT_EQ(ck.tensors->load("w").item<float>(), 2.0f);
  // A tensor under a key that is not a string or an int.
  const auto r = write_archive("c.pt", pickle("}N" + t + "s"), {{"0", floats({1, 2})}});
  EXPECT_CONTAINS(input_error([&] { read_pt(r); }), "key of type None");
}

TEST_F(PtCrafted, DeepAndCyclicStructuresFailCleanly) {
  // 200000 dicts, each inside the previous one, built with a constant-size stack: memo 0 holds
  // the innermost dict; each step sets a new dict inside it and makes that the innermost.
  std::string deep = "\x80\x02}q\x00"s;
  for (int k = 0; k < 200000; ++k) deep += "h\x00"s + str("k") + "}q\x00s0"s;
  const auto p = write_archive("deep.pt", deep + ".");
  EXPECT_CONTAINS(input_error([&] { read_pt(p); }), "nested deeper");

  // {"a": <itself>}
  const auto q = write_archive("cycle.pt", pickle("}q\x00"s + str("a") + "h\x00s"s));
  EXPECT_CONTAINS(input_error([&] { read_pt(q); }), "same dict twice");

  // A key of 2^20 leaves, ((x, x), (x, x)) ..., from 20 DUP+TUPLE2: must not be expanded.
  std::string doubling = "}N";
  for (int k = 0; k < 20; ++k) doubling += "2\x86";
  const auto r = write_archive("doubling.pt", pickle(doubling + "Ns"));
  EXPECT_CONTAINS(input_error([&] { read_pt(r); }), "dict key");

  // A million and one pushes.
  const auto s = write_archive("stack.pt", pickle(std::string((1 << 20) + 1, 'N')));
  EXPECT_CONTAINS(input_error([&] { read_pt(s); }), "stack deeper");
}

TEST_F(PtCrafted, NotTorchSaveArchives) {
  std::mt19937 rng(42);
  std::string noise(4096, '\0');
  for (char& c : noise) c = static_cast<char>(rng() & 0xff);
  noise[0] = 'Z';
  EXPECT_CONTAINS(input_error([&] { read_pt(write_file("noise.bin", noise)); }), "not a zip");
  // Random bytes after a zip signature.
  EXPECT_CONTAINS(input_error([&] { read_pt(write_file("zipnoise.pt", "PK\x03\x04" + noise)); }),
                  "zipnoise.pt");
  EXPECT_CONTAINS(input_error([&] { read_pt(write_file("empty.pt", "")); }), "empty");
  EXPECT_CONTAINS(input_error([&] { read_pt(dir_); }), "not a regular file");
  // A zip without data.pkl; and one that looks like torch.jit.save output.
  EXPECT_CONTAINS(input_error([&] { read_pt(write_archive("nopkl.pt", "")); }), "without data.pkl");
  const fs::path ts = dir_ / "script.pt";
  {
    caffe2::serialize::PyTorchStreamWriter writer(ts.string());
    writer.writeRecord("constants.pkl", "\x80\x02).", 4);
    writer.writeRecord("code/__torch__.py", "x", 1);
    writer.writeEndOfFile();
  }
  EXPECT_CONTAINS(input_error([&] { read_pt(ts); }), "TorchScript");
}

// Random damage to a real pickle must end in success or an InputError: never a crash or another
// exception type. (The storages stay intact; the zip is re-written so its CRCs match.)
TEST_F(PtCrafted, MutatedPicklesNeverCrash) {
  caffe2::serialize::PyTorchStreamReader reader((kPtDir / "step_state_dict.pt").string());
  auto [pkl_ptr, pkl_size] = reader.getRecord("data.pkl");
  const std::string original(static_cast<const char*>(pkl_ptr.get()), pkl_size);
  std::map<std::string, std::string> storages;
  for (const std::string& rec : reader.getAllRecords()) {
    if (rec.rfind("data/", 0) != 0) continue;
    auto [ptr, size] = reader.getRecord(rec);
    storages[rec.substr(5)] = std::string(static_cast<const char*>(ptr.get()), size);
  }
  std::mt19937 rng(7);
  int ok = 0;
  int refused = 0;
  for (int iter = 0; iter < 300; ++iter) {
    std::string bytes = original;
    const int kind = static_cast<int>(rng() % 3);
    if (kind == 0) {
      bytes.resize(rng() % bytes.size());
    } else {
      for (int k = 0, n = 1 + static_cast<int>(rng() % 4); k < n; ++k) {
        bytes[rng() % bytes.size()] =
            static_cast<char>(kind == 1 ? rng() & 0xff : bytes[rng() % bytes.size()]);
      }
    }
    const auto p = write_archive("fuzz.pt", bytes, storages);
    try {
      const PtCheckpoint ck = read_pt(p);
      for (const auto& info : ck.tensors->tensors()) checksums(ck.tensors->load(info.name));
      ++ok;
    } catch (const InputError&) {
      ++refused;
    }
  }
  EXPECT_EQ(ok + refused, 300);
  EXPECT_GT(refused, 0);
}

}  // namespace
