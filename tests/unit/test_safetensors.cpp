#include "test_helpers.hpp"

#include <aquin/sdk/errors.hpp>
#include <aquin/sdk/safetensors.hpp>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

using namespace aquin;
using aquin::test::TempDir;

namespace {

std::string error_of(const std::filesystem::path& p) {
  try {
    open_safetensors(p);
  } catch (const InputError& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(Safetensors, ReadsFixtureWrittenByPython) {
  auto store = open_safetensors(aquin::test::data_dir() / "models/tiny-llama/model.safetensors");
  ASSERT_EQ(store->tensors().size(), 21u);
  const TensorInfo* q = store->find("model.layers.0.self_attn.q_proj.weight");
  ASSERT_NE(q, nullptr);
  EXPECT_EQ(q->dtype, DType::F32);
  EXPECT_EQ(q->shape, (std::vector<int64_t>{32, 32}));
  at::Tensor t = store->load("model.layers.0.self_attn.k_proj.weight");
  EXPECT_EQ(t.sizes(), (at::IntArrayRef{16, 32}));
  EXPECT_EQ(store->find("nope"), nullptr);
  EXPECT_EQ(safetensors_metadata(aquin::test::data_dir() / "models/tiny-llama/model.safetensors").at("format"), "pt");
}

TEST(Safetensors, RoundTripsEveryDtype) {
  TempDir dir;
  std::vector<std::pair<std::string, at::Tensor>> ts = {
      {"f32", at::randn({3, 5})},
      {"bf16", at::randn({4, 2}).to(at::kBFloat16)},
      {"f16", at::randn({7}).to(at::kHalf)},
      {"f64", at::randn({2, 2}, at::kDouble)},
      {"i64", at::arange(6, at::kLong).reshape({2, 3})},
      {"u8", at::arange(5, at::kByte)},
      {"scalar", at::scalar_tensor(3.5)},
      {"empty", at::empty({0, 4})},
      {"strided", at::randn({4, 6}).t()},
  };
  write_safetensors(dir / "x.safetensors", ts, {{"format", "pt"}});
  auto store = open_safetensors(dir / "x.safetensors");
  ASSERT_EQ(store->tensors().size(), ts.size());
  for (const auto& [name, t] : ts) {
    at::Tensor got = store->load(name);
    EXPECT_EQ(got.scalar_type(), t.scalar_type()) << name;
    EXPECT_TRUE(at::equal(got, t.contiguous())) << name;
  }
  // The header is padded to 8 bytes as the spec says.
  std::string bytes = aquin::test::read_bytes(dir / "x.safetensors");
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<unsigned char>(bytes[i]);
  EXPECT_EQ(n % 8, 0u);
}

TEST(Safetensors, MisalignedDataIsCopiedNotMisread) {
  TempDir dir;
  // Header of odd length: the F32 data starts at an address that is not 4-aligned.
  std::string header = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  float v[2] = {1.5f, -2.25f};
  std::string data(reinterpret_cast<const char*>(v), 8);
  aquin::test::write_bytes(dir / "m.safetensors", aquin::test::safetensors_bytes(header, data));
  at::Tensor t = open_safetensors(dir / "m.safetensors")->load("a");
  EXPECT_FLOAT_EQ(t[0].item<float>(), 1.5f);
  EXPECT_FLOAT_EQ(t[1].item<float>(), -2.25f);
}

TEST(SafetensorsErrors, MissingFile) {
  std::string e = error_of("/nonexistent/x.safetensors");
  EXPECT_NE(e.find("/nonexistent/x.safetensors"), std::string::npos);
  EXPECT_NE(e.find("No such file"), std::string::npos) << e;
}

TEST(SafetensorsErrors, TruncatedFile) {
  TempDir dir;
  std::string full = aquin::test::read_bytes(aquin::test::data_dir() / "models/tiny-llama/model.safetensors");
  aquin::test::write_bytes(dir / "t.safetensors", full.substr(0, full.size() / 2));
  std::string e = error_of(dir / "t.safetensors");
  EXPECT_NE(e.find("t.safetensors"), std::string::npos);
  EXPECT_NE(e.find("out of range"), std::string::npos) << e;
  aquin::test::write_bytes(dir / "tiny.safetensors", "abc");
  EXPECT_NE(error_of(dir / "tiny.safetensors").find("too short"), std::string::npos);
}

TEST(SafetensorsErrors, HeaderLengthPastEnd) {
  TempDir dir;
  std::string bytes = aquin::test::safetensors_bytes(R"({})", "");
  bytes[0] = static_cast<char>(0xff);
  bytes[3] = static_cast<char>(0x7f);
  aquin::test::write_bytes(dir / "h.safetensors", bytes);
  std::string e = error_of(dir / "h.safetensors");
  EXPECT_NE(e.find("header length"), std::string::npos) << e;
  EXPECT_NE(e.find("past end of file"), std::string::npos) << e;
}

TEST(SafetensorsErrors, OffsetsOutOfRange) {
  TempDir dir;
  aquin::test::write_bytes(dir / "o.safetensors", aquin::test::safetensors_bytes(
      R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", std::string(8, '\0')));
  EXPECT_NE(error_of(dir / "o.safetensors").find("out of range"), std::string::npos);
}

TEST(SafetensorsErrors, OffsetsOverlap) {
  TempDir dir;
  aquin::test::write_bytes(dir / "v.safetensors", aquin::test::safetensors_bytes(
      R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})",
      std::string(16, '\0')));
  std::string e = error_of(dir / "v.safetensors");
  EXPECT_NE(e.find("overlap"), std::string::npos) << e;
}

TEST(SafetensorsErrors, SizeDisagreesWithShape) {
  TempDir dir;
  aquin::test::write_bytes(dir / "s.safetensors", aquin::test::safetensors_bytes(
      R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,16]}})", std::string(16, '\0')));
  EXPECT_NE(error_of(dir / "s.safetensors").find("need 12"), std::string::npos);
}

TEST(SafetensorsErrors, UnknownDtype) {
  TempDir dir;
  aquin::test::write_bytes(dir / "d.safetensors", aquin::test::safetensors_bytes(
      R"({"a":{"dtype":"F8_E9M9","shape":[2],"data_offsets":[0,2]}})", std::string(2, '\0')));
  std::string e = error_of(dir / "d.safetensors");
  EXPECT_NE(e.find("unknown dtype 'F8_E9M9'"), std::string::npos) << e;
}

TEST(SafetensorsErrors, BadJsonAndNegativeShape) {
  TempDir dir;
  aquin::test::write_bytes(dir / "j.safetensors", aquin::test::safetensors_bytes(R"({"a":)", ""));
  EXPECT_NE(error_of(dir / "j.safetensors").find("not valid JSON"), std::string::npos);
  aquin::test::write_bytes(dir / "n.safetensors", aquin::test::safetensors_bytes(
      R"({"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", std::string(4, '\0')));
  EXPECT_NE(error_of(dir / "n.safetensors").find("shape"), std::string::npos);
  aquin::test::write_bytes(dir / "o.safetensors", aquin::test::safetensors_bytes(
      R"({"a":{"dtype":"F32","shape":[4294967296,4294967296,4294967296],"data_offsets":[0,4]}})", std::string(4, '\0')));
  EXPECT_NE(error_of(dir / "o.safetensors").find("overflow"), std::string::npos);
}

TEST(SafetensorsSharded, ReadsIndexAndChecksCoverage) {
  auto store = open_sharded_safetensors(aquin::test::data_dir() / "ckpt/llama-ft-bf16-sharded/model.safetensors.index.json");
  EXPECT_EQ(store->tensors().size(), 21u);
  EXPECT_EQ(store->find("lm_head.weight")->dtype, DType::BF16);
  EXPECT_EQ(store->load("model.norm.weight").numel(), 32);

  TempDir dir;
  std::filesystem::copy(aquin::test::data_dir() / "ckpt/llama-ft-bf16-sharded", dir.path() / "m");
  std::filesystem::remove(dir.path() / "m" / "model-00002-of-00002.safetensors");
  try {
    open_sharded_safetensors(dir.path() / "m" / "model.safetensors.index.json");
    FAIL() << "expected an error";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("model-00002-of-00002.safetensors"), std::string::npos) << e.what();
  }
}
