// safetensors reader/writer: byte-identical output to huggingface/safetensors' writer (fixture
// from tools/make_safetensors_reference.py), round trips per dtype, exact float conversions on
// write, and one test per rejected malformation (each error names the file and the tensor).
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "core/dtype.h"
#include "io/safetensors.h"
#include "io_test_util.h"

namespace sft {
namespace {

using test::expect_error;
using test::safetensors_bytes;
using test::TempDir;

const std::string kFixtures = std::string(SFT_SOURCE_DIR) + "/tests/io/fixtures/";

std::string bytes_of(const SafetensorsTensorInfo& t) {
  return std::string(reinterpret_cast<const char*>(t.data), size_t(t.nbytes()));
}
template <typename T>
std::string bytes_of(const std::vector<T>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(T));
}

// Byte equality without dumping megabytes on failure: sizes and the first differing offset.
::testing::AssertionResult same_bytes(const std::string& got, const std::string& want) {
  if (got == want) return ::testing::AssertionSuccess();
  size_t i = 0;
  while (i < got.size() && i < want.size() && got[i] == want[i]) ++i;
  return ::testing::AssertionFailure() << "sizes " << got.size() << " vs " << want.size()
                                       << ", first difference at byte " << i;
}

// The tensors of tools/make_safetensors_reference.py, recomputed.
struct ReferenceTensors {
  std::vector<float> w, empty;
  std::vector<uint16_t> bias, norm;
  std::vector<int64_t> positions{1, -2, 3000000000};
  std::vector<int32_t> count{7};
  ReferenceTensors() {
    for (int i = 0; i < 15; ++i) w.push_back(float(i) * 0.25f - 1.0f);
    for (int i = 0; i < 4; ++i) bias.push_back(f32_to_bf16(float(i) * 0.5f));
    for (int i = 0; i < 4; ++i) norm.push_back(f32_to_f16(float(i) - 1.5f));
  }
  std::vector<SafetensorsWriteItem> items() const {
    return {{"model.b.weight", w.data(), "F32", {3, 5}}, {"model.a.bias", bias.data(), "BF16", {4}},
            {"Z.norm", norm.data(), "F16", {2, 2}},      {"positions", positions.data(), "I64", {3}},
            {"count", count.data(), "I32", {}},          {"empty", empty.data(), "F32", {0, 4}}};
  }
};

TEST(SafetensorsWrite, MatchesReferenceWriterBytes) {
  TempDir dir;
  const std::string ours = dir.file("ours.safetensors");
  write_safetensors(ours, ReferenceTensors().items());
  EXPECT_TRUE(same_bytes(test::read_bytes(ours), test::read_bytes(kFixtures + "reference_writer.safetensors")));
  EXPECT_FALSE(std::filesystem::exists(ours + ".tmp"));
}

TEST(SafetensorsRead, ReadsReferenceWriterFile) {
  const ReferenceTensors ref;
  SafetensorsFile f(kFixtures + "reference_writer.safetensors");
  ASSERT_EQ(f.tensors().size(), 6u);
  EXPECT_EQ(f.metadata().at("format"), "pt");
  EXPECT_EQ(f.at("model.b.weight").dtype, "F32");
  EXPECT_EQ(f.at("model.b.weight").shape_str(), "(3, 5)");
  EXPECT_TRUE(same_bytes(bytes_of(f.at("model.b.weight")), bytes_of(ref.w)));
  EXPECT_TRUE(same_bytes(bytes_of(f.at("model.a.bias")), bytes_of(ref.bias)));
  EXPECT_TRUE(same_bytes(bytes_of(f.at("Z.norm")), bytes_of(ref.norm)));
  EXPECT_TRUE(same_bytes(bytes_of(f.at("positions")), bytes_of(ref.positions)));
  EXPECT_EQ(f.at("count").shape_str(), "()");
  EXPECT_TRUE(same_bytes(bytes_of(f.at("count")), bytes_of(ref.count)));
  EXPECT_EQ(f.at("empty").nbytes(), 0u);
  EXPECT_EQ(f.find("nope"), nullptr);
  expect_error([&] { f.at("nope"); }, {"reference_writer.safetensors", "no tensor 'nope'"});
}

// Writes tensors of one dtype with odd shapes, reads them back, compares every byte.
template <typename T>
void round_trip(const std::string& dtype, const std::function<T(int)>& value) {
  TempDir dir;
  const std::vector<std::vector<int64_t>> shapes = {{7, 3}, {5}, {}, {2, 3, 4}, {0, 5}, {1, 1, 1, 9}};
  std::vector<std::vector<T>> data;
  std::vector<SafetensorsWriteItem> items;
  for (size_t i = 0; i < shapes.size(); ++i) {
    int64_t n = 1;
    for (int64_t d : shapes[i]) n *= d;
    std::vector<T> v;
    for (int64_t k = 0; k < n; ++k) v.push_back(value(int(k * 31 + i)));
    data.push_back(std::move(v));
  }
  for (size_t i = 0; i < shapes.size(); ++i)
    items.push_back({"t" + std::to_string(i), data[i].data(), dtype, shapes[i]});
  const std::string path = dir.file("rt.safetensors");
  write_safetensors(path, items, {{"note", "round \"trip\""}});
  SafetensorsFile f(path);
  EXPECT_EQ(f.metadata().at("format"), "pt");
  EXPECT_EQ(f.metadata().at("note"), "round \"trip\"");
  ASSERT_EQ(f.tensors().size(), shapes.size());
  for (size_t i = 0; i < shapes.size(); ++i) {
    const SafetensorsTensorInfo& t = f.at("t" + std::to_string(i));
    EXPECT_EQ(t.dtype, dtype);
    EXPECT_EQ(t.shape, shapes[i]);
    EXPECT_TRUE(same_bytes(bytes_of(t), bytes_of(data[i]))) << t.name;
    EXPECT_EQ(reinterpret_cast<uintptr_t>(t.data) % sizeof(T), 0u) << "tensor data not aligned";
  }
  uint64_t n = 0;
  std::memcpy(&n, test::read_bytes(path).data(), 8);
  EXPECT_EQ(n % 8, 0u);
}

TEST(SafetensorsRoundTrip, F32) { round_trip<float>("F32", [](int i) { return float(i) * 1.7e-3f - 0.3f; }); }
TEST(SafetensorsRoundTrip, BF16) { round_trip<uint16_t>("BF16", [](int i) { return uint16_t(i * 977 + 5); }); }
TEST(SafetensorsRoundTrip, F16) { round_trip<uint16_t>("F16", [](int i) { return uint16_t(i * 613 + 1); }); }
TEST(SafetensorsRoundTrip, I32) { round_trip<int32_t>("I32", [](int i) { return -i * 100003; }); }
TEST(SafetensorsRoundTrip, I64) { round_trip<int64_t>("I64", [](int i) { return int64_t(i) << 40; }); }

// Every non-NaN bf16/f16 bit pattern (for bf16: the normal ones, or only the subnormals) through
// fp32 and back.
void half_round_trip(DType dt, bool bf16_subnormals) {
  TempDir dir;
  std::vector<uint16_t> finite;
  for (uint32_t b = 0; b < 65536; ++b) {
    const float x = dt == DType::bf16 ? bf16_to_f32(uint16_t(b)) : f16_to_f32(uint16_t(b));
    const bool subnormal = (b & 0x7f80) == 0 && (b & 0x7f) != 0;
    if (!std::isnan(x) && (dt != DType::bf16 || subnormal == bf16_subnormals)) finite.push_back(uint16_t(b));
  }
  std::vector<float> master(finite.size());
  convert_to_f32(finite.data(), dt, master.data(), finite.size());
  const std::string path = dir.file("conv.safetensors");
  write_safetensors(path, {{"x", master.data(), "F32", {int64_t(master.size())}}}, {}, dt);
  SafetensorsFile f(path);
  EXPECT_EQ(f.at("x").dtype, dtype_name(dt));
  EXPECT_TRUE(same_bytes(bytes_of(f.at("x")), bytes_of(finite))) << dtype_name(dt);
}

// bf16/f16 -> fp32 -> the same dtype is bit-exact (what load -> fp32 master -> save relies on).
TEST(SafetensorsRoundTrip, HalfThroughF32IsExact) {
  half_round_trip(DType::bf16, false);
  half_round_trip(DType::f16, false);
}

// bf16 subnormals survive too, as with torch's .to(torch.bfloat16) (vcvtneps2bf16 would flush
// them to zero; core/dtype_avx512.cpp must not use it).
TEST(SafetensorsRoundTrip, Bf16SubnormalsThroughF32AreExact) { half_round_trip(DType::bf16, true); }

// f32 -> bf16/f16 on write rounds like core/dtype.h; widening to f32; integers untouched.
TEST(SafetensorsRoundTrip, ConvertOnWrite) {
  TempDir dir;
  // Rounding of values that are not representable, and the widening direction.
  std::vector<float> x = {1.0f + 1.0f / 512, 3.14159265f, -1e-30f, 65504.0f, 1e6f};
  std::vector<uint16_t> bf(x.size()), hf(x.size());
  for (size_t i = 0; i < x.size(); ++i) bf[i] = f32_to_bf16(x[i]), hf[i] = f32_to_f16(x[i]);
  write_safetensors(dir.file("b.safetensors"), {{"x", x.data(), "F32", {5}}}, {}, DType::bf16);
  write_safetensors(dir.file("h.safetensors"), {{"x", x.data(), "F32", {5}}}, {}, DType::f16);
  write_safetensors(dir.file("w.safetensors"), {{"x", bf.data(), "BF16", {5}}, {"i", bf.data(), "I32", {0}}}, {},
                    DType::f32);
  EXPECT_TRUE(same_bytes(bytes_of(SafetensorsFile(dir.file("b.safetensors")).at("x")), bytes_of(bf)));
  EXPECT_TRUE(same_bytes(bytes_of(SafetensorsFile(dir.file("h.safetensors")).at("x")), bytes_of(hf)));
  SafetensorsFile w(dir.file("w.safetensors"));
  std::vector<float> widened(x.size());
  convert_to_f32(bf.data(), DType::bf16, widened.data(), x.size());
  EXPECT_EQ(w.at("x").dtype, "F32");
  EXPECT_EQ(w.at("i").dtype, "I32");  // integers are never converted
  EXPECT_TRUE(same_bytes(bytes_of(w.at("x")), bytes_of(widened)));
}

TEST(SafetensorsWrite, RejectsBadInput) {
  TempDir dir;
  const std::string p = dir.file("bad.safetensors");
  float x[2] = {1, 2};
  expect_error([&] { write_safetensors(p, {{"a", x, "F32", {2}}, {"a", x, "F32", {2}}}); },
               {"bad.safetensors", "duplicate tensor name 'a'"});
  expect_error([&] { write_safetensors(p, {{"a", x, "F64", {1}}}); }, {"tensor 'a'", "cannot write dtype 'F64'"});
  expect_error([&] { write_safetensors(p, {{"a", x, "F32", {-2}}}); }, {"tensor 'a'", "negative"});
  EXPECT_FALSE(std::filesystem::exists(p));
  EXPECT_FALSE(std::filesystem::exists(p + ".tmp"));
}

// ---------------------------------------------------------------- malformed files

struct BadFile : ::testing::Test {
  TempDir dir;
  std::string path = dir.file("bad.safetensors");
  void open_expect(const std::string& bytes, std::initializer_list<std::string> fragments) {
    test::write_bytes(path, bytes);
    std::vector<std::string> all(fragments);
    all.push_back(path);
    try {
      SafetensorsFile f(path);
      ADD_FAILURE() << "accepted a bad file; expected error with '" << *fragments.begin() << "'";
    } catch (const Error& e) {
      const std::string msg = e.what();
      EXPECT_TRUE(msg.starts_with("[safetensors] ")) << msg;
      EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
      for (const std::string& f : all) EXPECT_NE(msg.find(f), std::string::npos) << "'" << f << "' not in: " << msg;
    }
  }
  static std::string entry(const std::string& name, const std::string& dtype, const std::string& shape,
                           const std::string& offsets) {
    return "\"" + name + "\":{\"dtype\":\"" + dtype + "\",\"shape\":" + shape + ",\"data_offsets\":" + offsets + "}";
  }
};

TEST_F(BadFile, TooShort) {
  open_expect("", {"0 bytes", "shorter than the 8-byte header length"});
  open_expect("abcde", {"5 bytes", "shorter than the 8-byte header length"});
}

TEST_F(BadFile, HeaderLength) {
  open_expect(safetensors_bytes("{}", "", 200'000'000), {"header length 200000000", "limit of 100000000"});
  open_expect(safetensors_bytes("{}", "", 1000), {"header length 1000 exceeds the file size (2 bytes"});
  open_expect(safetensors_bytes("{}", "", UINT64_MAX - 1), {"header length 18446744073709551614"});
}

TEST_F(BadFile, HeaderNotJsonObject) {
  open_expect(safetensors_bytes("", ""), {"header does not start with '{'"});
  open_expect(safetensors_bytes(" {}", ""), {"header does not start with '{'"});
  open_expect(safetensors_bytes("[1,2]", ""), {"header does not start with '{'"});
  open_expect(safetensors_bytes("{", ""), {"header is not valid JSON"});
  open_expect(safetensors_bytes("{}}", ""), {"header is not valid JSON"});
  open_expect(safetensors_bytes("{\"a\":1,}", ""), {"header is not valid JSON", "line 1"});
  open_expect(safetensors_bytes("{\"\xff\":1}", ""), {"header is not valid JSON"});
  open_expect(safetensors_bytes(std::string("{}\0", 3), ""), {"header is not valid JSON"});
}

TEST_F(BadFile, DuplicateKey) {
  const std::string e = entry("w", "F32", "[1]", "[0,4]");
  open_expect(safetensors_bytes("{" + e + "," + entry("w", "F32", "[1]", "[4,8]") + "}", std::string(8, '\0')),
              {"duplicate key \"w\""});
  open_expect(safetensors_bytes("{\"w\":{\"dtype\":\"F32\",\"dtype\":\"I32\",\"shape\":[1],\"data_offsets\":[0,4]}}",
                                std::string(4, '\0')),
              {"duplicate key \"dtype\""});
}

TEST_F(BadFile, EntryFields) {
  const std::string d4(4, '\0');
  open_expect(safetensors_bytes("{\"w\":3}", ""), {"tensor 'w'", "entry is 3 (an integer), expected an object"});
  open_expect(safetensors_bytes("{\"w\":{\"shape\":[1],\"data_offsets\":[0,4]}}", d4), {"tensor 'w'", "missing 'dtype'"});
  open_expect(safetensors_bytes("{\"w\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", d4), {"tensor 'w'", "missing 'shape'"});
  open_expect(safetensors_bytes("{\"w\":{\"dtype\":\"F32\",\"shape\":[1]}}", d4), {"tensor 'w'", "missing 'data_offsets'"});
  open_expect(safetensors_bytes("{\"w\":{\"dtype\":5,\"shape\":[1],\"data_offsets\":[0,4]}}", d4),
              {"tensor 'w'", "dtype is 5 (an integer), expected a string"});
  open_expect(safetensors_bytes("{" + entry("w", "F33", "[1]", "[0,4]") + "}", d4), {"tensor 'w'", "unknown dtype 'F33'"});
  open_expect(safetensors_bytes("{" + entry("w", "F32", "\"x\"", "[0,4]") + "}", d4),
              {"tensor 'w'", "shape is \"x\" (a string), expected an array"});
  open_expect(safetensors_bytes("{" + entry("w", "F32", "[2.5]", "[0,4]") + "}", d4),
              {"tensor 'w'", "shape entry 2.5 (a float) is not an integer"});
  open_expect(safetensors_bytes("{" + entry("w", "F32", "[1]", "[0]") + "}", d4),
              {"tensor 'w'", "data_offsets is [0], expected [BEGIN, END]"});
  open_expect(safetensors_bytes("{" + entry("w", "F32", "[1]", "[\"0\",4]") + "}", d4), {"tensor 'w'", "data_offsets"});
  open_expect(safetensors_bytes("{" + entry("w", "F32", "[1]", "[0,-4]") + "}", d4), {"tensor 'w'", "data_offsets"});
}

TEST_F(BadFile, ShapeNegativeOrOverflowing) {
  open_expect(safetensors_bytes("{" + entry("w", "F32", "[-1,4]", "[0,16]") + "}", std::string(16, '\0')),
              {"tensor 'w'", "shape entry -1 is negative or too large"});
  open_expect(safetensors_bytes("{" + entry("w", "I32", "[2,18446744073709551614]", "[0,16]") + "}", std::string(16, '\0')),
              {"tensor 'w'", "shape entry 18446744073709551614 is negative or too large"});
  open_expect(safetensors_bytes("{" + entry("w", "I32", "[2,9223372036854775807]", "[0,16]") + "}", std::string(16, '\0')),
              {"tensor 'w'", "overflows the byte count"});
  open_expect(safetensors_bytes("{" + entry("w", "F4", "[3]", "[0,1]") + "}", std::string(1, '\0')),
              {"tensor 'w'", "do not fill whole bytes"});
}

TEST_F(BadFile, WrongByteCount) {
  open_expect(safetensors_bytes("{" + entry("w", "F32", "[2,2]", "[0,12]") + "}", std::string(12, '\0')),
              {"tensor 'w'", "data_offsets [0, 12] span 12 bytes, expected 16 for F32 (2, 2)"});
  open_expect(safetensors_bytes("{" + entry("w", "BF16", "[3]", "[0,8]") + "}", std::string(8, '\0')),
              {"tensor 'w'", "span 8 bytes, expected 6"});
}

TEST_F(BadFile, OffsetsOutOfOrderOrOutsideBuffer) {
  open_expect(safetensors_bytes("{" + entry("w", "F32", "[0]", "[16,0]") + "}", std::string(16, '\0')),
              {"tensor 'w'", "data_offsets [16, 0] begin is after end"});
  open_expect(safetensors_bytes("{" + entry("w", "F32", "[4]", "[0,16]") + "}", std::string(8, '\0')),
              {"tensor 'w'", "end 16 is beyond the data buffer (8 bytes)"});
  open_expect(safetensors_bytes("{" + entry("w", "F32", "[1]", "[18446744073709551612,18446744073709551616]") + "}",
                                std::string(4, '\0')),
              {"tensor 'w'", "data_offsets"});
  open_expect(safetensors_bytes("{" + entry("w", "F32", "[1]", "[4294967296,4294967300]") + "}", std::string(4, '\0')),
              {"tensor 'w'", "beyond the data buffer (4 bytes)"});
}

TEST_F(BadFile, OverlapHoleStartTrailing) {
  const std::string d24(24, '\0');
  open_expect(safetensors_bytes("{" + entry("a", "F32", "[4]", "[0,16]") + "," + entry("b", "F32", "[4]", "[8,24]") + "}", d24),
              {"tensor 'b' (data_offsets [8, 24]) overlaps tensor 'a' ([0, 16])"});
  open_expect(safetensors_bytes("{" + entry("a", "F32", "[2]", "[0,8]") + "," + entry("b", "F32", "[2]", "[16,24]") + "}", d24),
              {"hole of 8 bytes before tensor 'b'", "'a' ends at 8"});
  open_expect(safetensors_bytes("{" + entry("a", "F32", "[2]", "[8,16]") + "}", std::string(16, '\0')),
              {"does not start at 0", "tensor 'a' begins at 8"});
  open_expect(safetensors_bytes("{" + entry("a", "F32", "[2]", "[0,8]") + "}", std::string(12, '\0')),
              {"4 trailing bytes after the last tensor"});
  open_expect(safetensors_bytes("{}", "polyglot"), {"8 trailing bytes"});
  // Same offsets twice (the reference's "json attack").
  open_expect(safetensors_bytes("{" + entry("a", "F32", "[4]", "[0,16]") + "," + entry("b", "F32", "[4]", "[0,16]") + "}",
                                std::string(16, '\0')),
              {"overlaps"});
}

TEST_F(BadFile, Metadata) {
  open_expect(safetensors_bytes("{\"__metadata__\":{\"format\":1}}", ""), {"__metadata__ 'format' is 1", "expected a string"});
  open_expect(safetensors_bytes("{\"__metadata__\":\"pt\"}", ""), {"__metadata__ is \"pt\"", "expected an object"});
  open_expect(safetensors_bytes("{\"__metadata__\":{\"a\":{}}}", ""), {"__metadata__ 'a'"});
}

TEST_F(BadFile, NotAFile) {
  expect_error([&] { SafetensorsFile f(dir.file("missing.safetensors")); }, {"missing.safetensors", "cannot open"});
  expect_error([&] { SafetensorsFile f(dir.path.string()); }, {"not a regular file"});
}

TEST(SafetensorsRead, AcceptsEdgeCases) {
  TempDir dir;
  const std::string p = dir.file("ok.safetensors");
  // Zero-size tensors at the same offset, a 0-rank tensor, trailing whitespace padding of any kind.
  test::write_bytes(p, safetensors_bytes("{\"s\":{\"dtype\":\"I32\",\"shape\":[],\"data_offsets\":[0,4]},"
                                         "\"e\":{\"dtype\":\"F32\",\"shape\":[2,0],\"data_offsets\":[4,4]},"
                                         "\"z\":{\"dtype\":\"BOOL\",\"shape\":[0],\"data_offsets\":[4,4]}} \t\r\n",
                                         std::string("\x07\0\0\0", 4)));
  SafetensorsFile f(p);
  EXPECT_EQ(f.tensors().size(), 3u);
  EXPECT_EQ(f.at("s").numel(), 1);
  EXPECT_EQ(f.at("e").numel(), 0);
  EXPECT_TRUE(f.metadata().empty());
  test::write_bytes(p, safetensors_bytes("{}", ""));
  EXPECT_TRUE(SafetensorsFile(p).tensors().empty());
}

// Every truncation and many single-byte corruptions of a valid file: an sft::Error or a valid
// file, never a crash or an out-of-bounds read (run under ASan).
TEST(SafetensorsRead, CorruptionNeverCrashes) {
  TempDir dir;
  const std::string good = dir.file("good.safetensors"), bad = dir.file("bad.safetensors");
  write_safetensors(good, ReferenceTensors().items());
  const std::string bytes = test::read_bytes(good);
  int errors = 0, accepted = 0;
  auto try_open = [&](const std::string& b) {
    test::write_bytes(bad, b);
    try {
      SafetensorsFile f(bad);
      for (const auto& t : f.tensors()) EXPECT_LE(t.end, b.size());
      ++accepted;
    } catch (const Error&) {
      ++errors;
    }
  };
  for (size_t n = 0; n < bytes.size(); ++n) try_open(bytes.substr(0, n));
  EXPECT_EQ(accepted, 0);
  for (size_t i = 0; i < bytes.size(); i += 3)
    for (char c : {'\0', '"', '9', '}', ' ', '\xff'}) {
      std::string b = bytes;
      b[i] = c;
      try_open(b);
    }
  EXPECT_GT(errors, 100);
}

TEST(JsonStrict, ParsesAndRejectsDuplicates) {
  std::string err;
  auto j = parse_json_strict(R"({"a": [1, {"b": 2, "c": [3.5, null]}], "d": "x"}  )", &err);
  ASSERT_TRUE(j.has_value()) << err;
  EXPECT_EQ((*j)["a"][1]["c"][0].get<double>(), 3.5);
  EXPECT_EQ((*j)["d"], "x");
  EXPECT_FALSE(parse_json_strict(R"({"a": {"b": 1, "b": 2}})", &err));
  EXPECT_EQ(err, "duplicate key \"b\"");
  EXPECT_FALSE(parse_json_strict(R"({"a": 1} x)", &err));
  EXPECT_NE(err.find("parse error"), std::string::npos) << err;
  EXPECT_TRUE(parse_json_strict(R"([{"a": 1}, {"a": 2}])", &err));  // same key in sibling objects is fine
}

}  // namespace
}  // namespace sft
