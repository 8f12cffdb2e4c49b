// Tests for the raw-bytes safetensors reader and writer (core/io/safetensors).
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/io/output_path.h"
#include "core/io/safetensors.h"
#include "tests/support/temp_dir.h"

namespace fs = std::filesystem;
using vlmc::test::TempDir;
using namespace vlmc;
using namespace vlmc::io;
using Catch::Contains;

namespace {

// A fresh directory under the system temp dir, removed with everything in it.

// Builds a file image the way the format defines it: 8-byte little-endian
// header length, the header text, then the data buffer.
std::vector<uint8_t> make_file(const std::string& header, const std::vector<uint8_t>& data = {}) {
  std::vector<uint8_t> out;
  const uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<uint8_t>(n >> (8 * i)));
  out.insert(out.end(), header.begin(), header.end());
  out.insert(out.end(), data.begin(), data.end());
  return out;
}

SafetensorsData parse(const std::vector<uint8_t>& file) {
  return parse_safetensors(file.data(), file.size(), "t.safetensors");
}

// Parses a one-tensor file "a" with the given entry JSON and data size.
SafetensorsData parse_entry(const std::string& entry, size_t data_bytes) {
  return parse(make_file("{\"a\":" + entry + "}", std::vector<uint8_t>(data_bytes, 0)));
}

std::vector<uint8_t> pattern(size_t n, unsigned seed) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>(i * 37 + seed * 11 + 5);
  return v;
}

RawTensor raw(DType t, std::vector<int64_t> shape, unsigned seed = 0) {
  int64_t numel = 1;
  for (int64_t d : shape) numel *= d;
  return RawTensor{t, shape, pattern(static_cast<size_t>(numel) * dtype_size(t), seed)};
}

std::vector<uint8_t> slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

}  // namespace

TEST_CASE("safetensors dtype names map both ways", "[io]") {
  for (DType t : kAllDTypes) REQUIRE(dtype_from_safetensors(dtype_to_safetensors(t), "x") == t);
  REQUIRE(dtype_to_safetensors(DType::bf16) == "BF16");
  REQUIRE(dtype_to_safetensors(DType::u8) == "U8");
  REQUIRE_THROWS_WITH(dtype_from_safetensors("BOOL", "m.safetensors"),
                      Catch::StartsWith("m.safetensors: ") && Contains("unsupported dtype 'BOOL'"));
  REQUIRE_THROWS_AS(dtype_from_safetensors("f32", "x"), Error);  // names are case-sensitive
}

TEST_CASE("safetensors round trip of every dtype, scalar, empty tensor and metadata", "[io]") {
  TempDir dir("safetensors");
  SafetensorsData data;
  data.metadata = {{"format", "pt"}, {"note", "h\xc3\xa9llo \"quoted\""}};
  unsigned seed = 0;
  for (DType t : kAllDTypes) data.tensors.emplace_back(std::string("t_") + dtype_name(t), raw(t, {2, 3}, seed++));
  data.tensors.emplace_back("scalar", raw(DType::f32, {}, 9));
  data.tensors.emplace_back("empty", raw(DType::f16, {0, 5}));
  data.tensors.emplace_back("zz_before_aa", raw(DType::u8, {3}, 4));  // file order is not sorted order
  data.tensors.emplace_back("aa", raw(DType::i64, {1, 1, 2}, 5));

  const std::string path = dir.file("model.safetensors");
  write_safetensors(path, data);
  const SafetensorsData back = read_safetensors(path);

  REQUIRE(back.metadata == data.metadata);
  REQUIRE(back.tensors.size() == data.tensors.size());
  for (size_t i = 0; i < data.tensors.size(); ++i) {
    INFO("tensor " << data.tensors[i].first);
    REQUIRE(back.tensors[i].first == data.tensors[i].first);
    REQUIRE(back.tensors[i].second.dtype == data.tensors[i].second.dtype);
    REQUIRE(back.tensors[i].second.shape == data.tensors[i].second.shape);
    REQUIRE(back.tensors[i].second.bytes == data.tensors[i].second.bytes);
  }
  REQUIRE(back.find("scalar")->bytes.size() == 4);
  REQUIRE(back.find("scalar")->shape.empty());
  REQUIRE(back.find("empty")->bytes.empty());
  REQUIRE(back.find("missing") == nullptr);

  // Layout: the header is padded to a multiple of 8 and the data follows it.
  const auto file = slurp(path);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | file[i];
  REQUIRE(n % 8 == 0);
  REQUIRE(file[8] == '{');
  size_t total = 0;
  for (const auto& [name, t] : data.tensors) total += t.bytes.size();
  REQUIRE(file.size() == 8 + n + total);
  REQUIRE(dir.listing() == std::vector<std::string>{"model.safetensors"});  // no temp file left
}

TEST_CASE("safetensors round trip of an empty file", "[io]") {
  TempDir dir("safetensors");
  write_safetensors(dir.file("e.safetensors"), SafetensorsData{});
  const auto back = read_safetensors(dir.file("e.safetensors"));
  REQUIRE(back.tensors.empty());
  REQUIRE(back.metadata.empty());
}

TEST_CASE("safetensors parses a hand-built reference buffer", "[io]") {
  // Two F32 values 1.0 and 2.0, little-endian, then one U8 scalar.
  const std::vector<uint8_t> bytes = {0x00, 0x00, 0x80, 0x3f, 0x00, 0x00, 0x00, 0x40, 0x07};
  const auto file = make_file(
      R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
      R"("__metadata__":{"format":"pt"},)"
      R"("b":{"dtype":"U8","shape":[],"data_offsets":[8,9]}}   )",  // trailing spaces are allowed
      bytes);
  const auto d = parse(file);
  REQUIRE(d.metadata == std::map<std::string, std::string>{{"format", "pt"}});
  REQUIRE(d.tensors.size() == 2);
  REQUIRE(d.tensors[0].first == "a");
  REQUIRE(d.tensors[1].first == "b");
  const RawTensor* a = d.find("a");
  REQUIRE(a != nullptr);
  REQUIRE(a->dtype == DType::f32);
  REQUIRE(a->shape == std::vector<int64_t>{2});
  float v[2];
  std::memcpy(v, a->bytes.data(), 8);
  REQUIRE(v[0] == 1.0f);
  REQUIRE(v[1] == 2.0f);
  REQUIRE(d.find("b")->bytes == std::vector<uint8_t>{0x07});
}

TEST_CASE("safetensors keeps header order even when offsets run the other way", "[io]") {
  const auto d = parse(make_file(R"({"z":{"dtype":"U8","shape":[2],"data_offsets":[2,4]},)"
                                 R"("a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}})",
                                 {1, 2, 3, 4}));
  REQUIRE(d.tensors[0].first == "z");
  REQUIRE(d.tensors[0].second.bytes == std::vector<uint8_t>{3, 4});
  REQUIRE(d.tensors[1].second.bytes == std::vector<uint8_t>{1, 2});
}

TEST_CASE("safetensors accepts zero-element tensors", "[io]") {
  // Huge dims multiplied by a zero dim hold zero elements, not an overflow.
  const auto d = parse(make_file(R"({"e":{"dtype":"F64","shape":[4611686018427387904,4611686018427387904,0],)"
                                 R"("data_offsets":[0,0]},"u":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},)"
                                 R"("f":{"dtype":"F32","shape":[0],"data_offsets":[1,1]}})",
                                 {9}));
  REQUIRE(d.find("e")->bytes.empty());
  REQUIRE(d.find("f")->bytes.empty());
  REQUIRE(d.find("u")->bytes == std::vector<uint8_t>{9});
}

TEST_CASE("safetensors rejects malformed framing", "[io]") {
  REQUIRE_THROWS_WITH(parse({1, 2, 3}), Catch::StartsWith("t.safetensors: ") && Contains("3 bytes, too short"));

  auto f = make_file("{}");
  f[0] = 200;  // claims 200 header bytes, has 2
  REQUIRE_THROWS_WITH(parse(f), Contains("header length 200 runs past the end of the 10-byte file"));

  f = make_file("{}");
  f[3] = 0x10;  // 268435456 + 2 bytes: beyond the 100 MB cap, checked before the file size
  REQUIRE_THROWS_WITH(parse(f), Contains("exceeds the 100000000-byte limit"));
  std::fill(f.begin(), f.begin() + 8, 0xff);  // 2^64-1 must not wrap anywhere
  REQUIRE_THROWS_WITH(parse(f), Contains("exceeds"));

  REQUIRE_THROWS_WITH(parse(make_file("")), Contains("header must be a JSON object starting with '{'"));
  REQUIRE_THROWS_WITH(parse(make_file(" {}")), Contains("starting with '{'"));
  REQUIRE_THROWS_WITH(parse(make_file("[]")), Contains("starting with '{'"));
  REQUIRE(parse(make_file("{}    ")).tensors.empty());
}

TEST_CASE("safetensors rejects headers that are not UTF-8 JSON", "[io]") {
  REQUIRE_THROWS_WITH(parse(make_file("{\"a\xff\":1}")), Contains("header is not valid UTF-8"));
  REQUIRE_THROWS_WITH(parse(make_file("{\"\xed\xa0\x80\":1}")), Contains("not valid UTF-8"));  // surrogate
  REQUIRE_THROWS_WITH(parse(make_file("{\"\xc0\xaf\":1}")), Contains("not valid UTF-8"));      // overlong
  REQUIRE_THROWS_WITH(parse(make_file("{\"a\":")), Contains("t.safetensors: header is not valid JSON"));
  REQUIRE_THROWS_WITH(parse(make_file("{} x")), Contains("not valid JSON"));
  REQUIRE_THROWS_WITH(parse(make_file("{\"a\":{},}")), Contains("not valid JSON"));
  REQUIRE_THROWS_WITH(parse(make_file("{/*c*/}")), Contains("not valid JSON"));
  REQUIRE_THROWS_AS(parse(make_file("{\"\\ud800\":1}")), Error);  // lone surrogate escape
  std::string deep = "{\"__metadata__\":" + std::string(100, '[') + std::string(100, ']') + "}";
  REQUIRE_THROWS_WITH(parse(make_file(deep)), Contains("nests deeper than"));
}

TEST_CASE("safetensors rejects malformed tensor entries", "[io]") {
  const std::string ok_tail = R"("shape":[2],"data_offsets":[0,8]})";
  REQUIRE_THROWS_WITH(parse_entry("3", 0), Contains("tensor 'a' entry must be an object, got 3"));
  REQUIRE_THROWS_WITH(parse_entry(R"({"shape":[2],"data_offsets":[0,8]})", 8),
                      Contains("tensor 'a' is missing \"dtype\""));
  REQUIRE_THROWS_WITH(parse_entry(R"({"dtype":"F32","data_offsets":[0,8]})", 8),
                      Contains("tensor 'a' is missing \"shape\""));
  REQUIRE_THROWS_WITH(parse_entry(R"({"dtype":"F32","shape":[2]})", 8),
                      Contains("tensor 'a' is missing \"data_offsets\""));
  REQUIRE_THROWS_WITH(parse_entry(R"({"dtype":"F32","extra":1,)" + ok_tail, 8),
                      Contains("tensor 'a' has unexpected key 'extra'"));

  SECTION("dtype") {
    REQUIRE_THROWS_WITH(parse_entry(R"({"dtype":4,)" + ok_tail, 8), Contains("tensor 'a' dtype must be a string"));
    REQUIRE_THROWS_WITH(parse_entry(R"({"dtype":"F8_E4M3",)" + ok_tail, 8),
                        Contains("tensor 'a' has unsupported dtype 'F8_E4M3'"));
    REQUIRE_THROWS_WITH(parse_entry(R"({"dtype":"BOOL",)" + ok_tail, 8),
                        Contains("tensor 'a' has unsupported dtype 'BOOL'"));
  }
  SECTION("shape") {
    const std::string pre = R"({"dtype":"U8","data_offsets":[0,2],"shape":)";
    REQUIRE_THROWS_WITH(parse_entry(pre + "2}", 2), Contains("tensor 'a' shape must be an array"));
    REQUIRE_THROWS_WITH(parse_entry(pre + "[-2]}", 2), Contains("tensor 'a' shape[0] is -2, not a non-negative"));
    REQUIRE_THROWS_WITH(parse_entry(pre + "[1,2.0]}", 2), Contains("shape[1] is 2.0, not a non-negative integer"));
    REQUIRE_THROWS_WITH(parse_entry(pre + "[\"2\"]}", 2), Contains("shape[0] is \"2\""));
    REQUIRE_THROWS_WITH(parse_entry(pre + "[18446744073709551615]}", 2), Contains("does not fit in int64"));
    REQUIRE_THROWS_WITH(parse_entry(pre + "[1e400]}", 2), Contains("not valid JSON") && Contains("overflow"));
  }
  SECTION("data_offsets") {
    const std::string pre = R"({"dtype":"U8","shape":[2],"data_offsets":)";
    REQUIRE_THROWS_WITH(parse_entry(pre + "[0]}", 2), Contains("tensor 'a' data_offsets must be an array of two"));
    REQUIRE_THROWS_WITH(parse_entry(pre + "[0,1,2]}", 2), Contains("data_offsets must be an array of two"));
    REQUIRE_THROWS_WITH(parse_entry(pre + "\"0,2\"}", 2), Contains("data_offsets must be an array of two"));
    REQUIRE_THROWS_WITH(parse_entry(pre + "[-1,1]}", 2), Contains("data_offsets must be an array of two non-neg"));
    REQUIRE_THROWS_WITH(parse_entry(pre + "[0,2.5]}", 2), Contains("data_offsets must be an array of two"));
    REQUIRE_THROWS_WITH(parse_entry(pre + "[2,0]}", 2), Contains("tensor 'a' data_offsets [2,0] begin after"));
    REQUIRE_THROWS_WITH(parse_entry(pre + "[0,2]}", 1), Contains("tensor 'a' data_offsets [0,2] end past the 1-byte"));
    REQUIRE_THROWS_WITH(parse_entry(pre + "[0,18446744073709551615]}", 2), Contains("end past"));
  }
  SECTION("byte count") {
    REQUIRE_THROWS_WITH(parse(make_file(R"({"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,12]}})",
                                        std::vector<uint8_t>(12))),
                        Catch::Equals("t.safetensors: tensor 'w' data_offsets [0,12] hold 12 bytes but shape "
                                      "[2,3] of F32 needs 24"));
    REQUIRE_THROWS_WITH(parse_entry(R"({"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,0]})", 0),
                        Contains("tensor 'a' shape [4294967296,4294967296] of F32 needs more bytes than fit"));
    // numel fits but numel * 8 does not.
    REQUIRE_THROWS_WITH(parse_entry(R"({"dtype":"I64","shape":[4611686018427387904],"data_offsets":[0,0]})", 0),
                        Contains("needs more bytes than fit in 64 bits"));
  }
}

TEST_CASE("safetensors rejects duplicate keys", "[io]") {
  const std::string e = R"({"dtype":"U8","shape":[1],"data_offsets":[0,1]})";
  REQUIRE_THROWS_WITH(parse(make_file("{\"a\":" + e + ",\"a\":" + e + "}", {1})),
                      Contains("duplicate key 'a' in header"));
  REQUIRE_THROWS_WITH(parse(make_file(R"({"a":{"dtype":"U8","dtype":"U8","shape":[1],"data_offsets":[0,1]}})", {1})),
                      Contains("duplicate key 'dtype' in entry 'a'"));
  REQUIRE_THROWS_WITH(parse(make_file(R"({"__metadata__":{"k":"1","k":"2"}})")),
                      Contains("duplicate key 'k' in entry '__metadata__'"));
}

TEST_CASE("safetensors rejects data buffers the tensors do not tile exactly", "[io]") {
  auto two = [](const std::string& a, const std::string& b, size_t n) {
    return parse(make_file(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":)" + a +
                               R"(},"b":{"dtype":"U8","shape":[4],"data_offsets":)" + b + "}}",
                           std::vector<uint8_t>(n)));
  };
  REQUIRE_THROWS_WITH(two("[0,4]", "[2,6]", 6),
                      Contains("tensor 'b' data_offsets [2,6] overlap tensor 'a' data_offsets [0,4]"));
  REQUIRE_THROWS_WITH(two("[0,4]", "[0,4]", 4), Contains("overlap"));
  REQUIRE_THROWS_WITH(two("[0,4]", "[6,10]", 10), Contains("hole: bytes [4,6) before tensor 'b'"));
  REQUIRE_THROWS_WITH(two("[2,6]", "[6,10]", 10), Contains("hole: bytes [0,2) before tensor 'a'"));
  REQUIRE_THROWS_WITH(two("[0,4]", "[4,8]", 11), Contains("3 trailing bytes after the last tensor"));
  REQUIRE_THROWS_WITH(parse(make_file("{}", {0})), Contains("1 trailing bytes"));
  REQUIRE(two("[4,8]", "[0,4]", 8).tensors.size() == 2);
}

TEST_CASE("safetensors rejects malformed __metadata__", "[io]") {
  REQUIRE_THROWS_WITH(parse(make_file(R"({"__metadata__":["x"]})")),
                      Contains("__metadata__ must be an object of string to string, got array"));
  REQUIRE_THROWS_WITH(parse(make_file(R"({"__metadata__":null})")), Contains("__metadata__ must be an object"));
  REQUIRE_THROWS_WITH(parse(make_file(R"({"__metadata__":{"epoch":3}})")),
                      Contains("__metadata__ value for key 'epoch' must be a string, got 3"));
  REQUIRE_THROWS_WITH(parse(make_file(R"({"__metadata__":{"o":{}}})")), Contains("got object"));
}

TEST_CASE("safetensors read errors name the path", "[io]") {
  TempDir dir("safetensors");
  const std::string missing = dir.file("nope.safetensors");
  REQUIRE_THROWS_WITH(read_safetensors(missing), Contains(missing + ": cannot open: No such file or directory"));
  REQUIRE_THROWS_WITH(read_safetensors(dir.path.string()), Catch::StartsWith(dir.path.string() + ": "));

  const std::string bad = dir.file("bad.safetensors");
  std::ofstream(bad, std::ios::binary) << "abc";
  REQUIRE_THROWS_WITH(read_safetensors(bad), Contains(bad + ": file is 3 bytes, too short"));
}

TEST_CASE("safetensors writer validates tensors before touching the file", "[io]") {
  TempDir dir("safetensors");
  const std::string path = dir.file("w.safetensors");
  SafetensorsData d;
  d.tensors.emplace_back("ok", raw(DType::u8, {2}));
  d.tensors.emplace_back("short", RawTensor{DType::f32, {3}, std::vector<uint8_t>(8)});
  REQUIRE_THROWS_WITH(write_safetensors(path, d),
                      Contains(path + ": tensor 'short' has 8 bytes but shape [3] of F32 needs 12"));
  REQUIRE(dir.listing().empty());

  d.tensors[1] = {"ok", raw(DType::u8, {1})};
  REQUIRE_THROWS_WITH(write_safetensors(path, d), Contains("duplicate tensor name 'ok'"));
  d.tensors[1] = {"__metadata__", raw(DType::u8, {1})};
  REQUIRE_THROWS_WITH(write_safetensors(path, d), Contains("'__metadata__' is reserved"));
  d.tensors[1] = {"neg", RawTensor{DType::u8, {-1}, {}}};
  REQUIRE_THROWS_WITH(write_safetensors(path, d), Contains("tensor 'neg' has negative dim"));
  d.tensors[1] = {"bad\xff", raw(DType::u8, {1})};
  REQUIRE_THROWS_WITH(write_safetensors(path, d), Contains("is not valid UTF-8"));
  REQUIRE(dir.listing().empty());
}

TEST_CASE("safetensors failed writes leave no file behind", "[io]") {
  TempDir dir("safetensors");
  SafetensorsData d;
  d.tensors.emplace_back("x", raw(DType::f32, {4}));

  const std::string no_dir = dir.file("missing_dir/w.safetensors");
  REQUIRE_THROWS_WITH(write_safetensors(no_dir, d),
                      Catch::StartsWith("write_safetensors: cannot create temporary file") && Contains(no_dir));
  REQUIRE(dir.listing().empty());

  // The target is a directory: refused before any temporary file is made
  // (io::check_output_path), so nothing is left behind.
  fs::create_directory(dir.path / "occupied");
  const std::string occupied = dir.file("occupied");
  REQUIRE_THROWS_WITH(write_safetensors(occupied, d), Contains("'" + occupied + "' is a directory, not a regular file"));
  REQUIRE(dir.listing() == std::vector<std::string>{"occupied"});

  // A failed write leaves a previous file intact.
  const std::string path = dir.file("keep.safetensors");
  write_safetensors(path, d);
  SafetensorsData bad;
  bad.tensors.emplace_back("y", RawTensor{DType::f32, {4}, {}});
  REQUIRE_THROWS_AS(write_safetensors(path, bad), Error);
  REQUIRE(read_safetensors(path).find("x")->bytes == d.tensors[0].second.bytes);
}

TEST_CASE("safetensors write replaces an existing file", "[io]") {
  TempDir dir("safetensors");
  const std::string path = dir.file("m.safetensors");
  SafetensorsData big;
  big.tensors.emplace_back("big", raw(DType::f64, {64, 8}));
  big.metadata = {{"v", "1"}};
  write_safetensors(path, big);
  const auto big_size = fs::file_size(path);

  SafetensorsData small;
  small.tensors.emplace_back("small", raw(DType::i32, {2}, 3));
  write_safetensors(path, small);
  const auto back = read_safetensors(path);
  REQUIRE(back.tensors.size() == 1);
  REQUIRE(back.find("big") == nullptr);
  REQUIRE(back.find("small")->bytes == small.tensors[0].second.bytes);
  REQUIRE(back.metadata.empty());
  REQUIRE(fs::file_size(path) < big_size);
  REQUIRE(dir.listing() == std::vector<std::string>{"m.safetensors"});
}

TEST_CASE("safetensors: the header is checked before the data is read, and only regular files are read", "[io]") {
  TempDir dir("safetensors_bounded");
  // A 1 TiB sparse file whose length prefix is nonsense: it once was read
  // whole (or failed to reserve 1 TiB) before its first 8 bytes were checked.
  const std::string huge = (dir.path / "huge.safetensors").string();
  {
    std::ofstream f(huge, std::ios::binary);
    f << "\xff\xff\xff\xff\xff\xff\xff\x7f";
  }
  std::filesystem::resize_file(huge, uint64_t(1) << 40);
  CHECK_THROWS_WITH(vlmc::io::read_safetensors(huge), Catch::Contains("header length") &&
                                                          Catch::Contains("exceeds the 100000000-byte limit"));
  // A header that claims more data than the file holds: refused from the header alone.
  const std::string short_data = (dir.path / "short.safetensors").string();
  {
    const std::string header = R"({"w":{"dtype":"F32","shape":[1024,1024],"data_offsets":[0,4194304]}})";
    std::ofstream f(short_data, std::ios::binary);
    const uint64_t n = header.size();
    f.write(reinterpret_cast<const char*>(&n), 8);
    f << header << "abcd";
  }
  CHECK_THROWS_WITH(vlmc::io::read_safetensors(short_data), Catch::Contains("'w'"));
  CHECK_THROWS_WITH(vlmc::io::read_safetensors("/dev/zero"), Catch::Contains("/dev/zero: is not a regular file"));
  CHECK_THROWS_WITH(vlmc::io::read_safetensors(dir.path.string()), Catch::Contains("is a directory"));
}

TEST_CASE("SafetensorsFile reads one tensor at a time, and a file truncated after opening is an error", "[io]") {
  TempDir dir("safetensors_lazy");
  const std::string path = (dir.path / "two.safetensors").string();
  SafetensorsData data;
  data.tensors.push_back({"a", RawTensor{DType::f32, {2}, std::vector<uint8_t>(8, 1)}});
  data.tensors.push_back({"b", RawTensor{DType::u8, {3}, {7, 8, 9}}});
  write_safetensors(path, data);
  const SafetensorsFile file(path);
  REQUIRE(file.entries().size() == 2);
  REQUIRE(file.find("c") == nullptr);
  const TensorEntry* b = file.find("b");
  REQUIRE(b != nullptr);
  CHECK(b->shape == std::vector<int64_t>{3});
  uint8_t got[3] = {};
  file.read(*b, got);
  CHECK((got[0] == 7 && got[1] == 8 && got[2] == 9));
  std::filesystem::resize_file(path, std::filesystem::file_size(path) - 2);
  CHECK_THROWS_WITH(file.read(*b, got), Contains("tensor 'b'") && Contains("ended early"));
}

TEST_CASE("writers refuse to replace a symlink, a FIFO or a directory, and an empty path", "[io]") {
  TempDir dir("safetensors_targets");
  vlmc::io::SafetensorsData data;
  data.tensors.push_back({"x", vlmc::io::RawTensor{vlmc::DType::f32, {1}, {0, 0, 128, 63}}});
  const std::string target = (dir.path / "real.safetensors").string();
  vlmc::io::write_safetensors(target, data);  // a missing path and a regular file are fine
  vlmc::io::write_safetensors(target, data);
  const std::string link = (dir.path / "link.safetensors").string();
  std::filesystem::create_symlink(target, link);
  CHECK_THROWS_WITH(vlmc::io::write_safetensors(link, data),
                    Catch::Contains("is a symbolic link, not a regular file: refusing to replace it"));
  CHECK(std::filesystem::is_symlink(link));  // untouched
  const std::string fifo = (dir.path / "fifo").string();
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  CHECK_THROWS_WITH(vlmc::io::write_safetensors(fifo, data), Catch::Contains("is a FIFO"));
  CHECK(std::filesystem::is_fifo(fifo));
  CHECK_THROWS_WITH(vlmc::io::write_safetensors(dir.path.string(), data), Catch::Contains("is a directory"));
  CHECK_THROWS_WITH(vlmc::io::write_safetensors("", data), Catch::Contains("the output path is empty"));
  CHECK_THROWS_WITH(vlmc::io::check_output_path(fifo, "connector run: --out"),
                    Catch::StartsWith("connector run: --out: output '"));
}
