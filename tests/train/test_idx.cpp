// IDX reader: the real Fashion-MNIST files, and every kind of corrupt file
// (built here with zlib in a temporary directory) rejected with a message that
// names the file and the problem.
#include <unistd.h>
#include <zlib.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <vector>

#include "train/idx.h"
#include "tests/support/memory_use.h"
#include "tests/support/temp_dir.h"

using namespace vlmc;
using namespace vlmc::train;
namespace fs = std::filesystem;
using vlmc::test::TempDir;

namespace {


void put_be32(std::vector<uint8_t>& out, uint32_t v) {
  for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<uint8_t>(v >> shift));
}

std::vector<uint8_t> idx_bytes(uint32_t magic, const std::vector<uint32_t>& dims, size_t payload,
                               uint8_t fill = 1) {
  std::vector<uint8_t> out;
  put_be32(out, magic);
  for (uint32_t d : dims) put_be32(out, d);
  out.insert(out.end(), payload, fill);
  return out;
}

void write_gz(const std::string& path, const std::vector<uint8_t>& bytes) {
  gzFile f = gzopen(path.c_str(), "wb");
  REQUIRE(f != nullptr);
  if (!bytes.empty()) REQUIRE(gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size())) > 0);
  REQUIRE(gzclose(f) == Z_OK);
}

void write_raw(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

}  // namespace

TEST_CASE("idx: reads small valid image and label files", "[data][idx]") {
  TempDir dir("idx");
  std::vector<uint8_t> images = idx_bytes(0x00000803, {2, 28, 28}, 0);
  for (int i = 0; i < 2 * 784; ++i) images.push_back(static_cast<uint8_t>(i % 251));
  write_gz(dir.file("img.gz"), images);
  std::vector<uint8_t> labels = idx_bytes(0x00000801, {3}, 0);
  labels.insert(labels.end(), {9, 0, 4});
  write_gz(dir.file("lab.gz"), labels);

  const Tensor img = read_idx_images(dir.file("img.gz"));
  CHECK(img.dtype() == DType::u8);
  CHECK(img.shape() == Shape{2, 28, 28});
  const auto pix = img.to_vector<int64_t>();
  CHECK(pix[0] == 0);
  CHECK(pix[300] == 300 % 251);
  CHECK(pix[2 * 784 - 1] == (2 * 784 - 1) % 251);

  const Tensor lab = read_idx_labels(dir.file("lab.gz"));
  CHECK(lab.dtype() == DType::i64);
  CHECK(lab.to_vector<int64_t>() == std::vector<int64_t>{9, 0, 4});
}

TEST_CASE("idx: corrupt files are errors naming the file and the problem", "[data][idx]") {
  TempDir dir("idx");
  const std::string p = dir.file("bad.gz");
  SECTION("bad magic (labels file read as images)") {
    write_gz(p, idx_bytes(0x00000801, {2}, 2));
    REQUIRE_THROWS_WITH(read_idx_images(p), Catch::Contains(p) && Catch::Contains("bad magic 0x801") &&
                                                Catch::Contains("expected 0x803"));
  }
  SECTION("bad magic (element type)") {
    write_gz(p, idx_bytes(0x00000d01, {2}, 8));
    REQUIRE_THROWS_WITH(read_idx_labels(p), Catch::Contains("bad magic 0xd01"));
  }
  SECTION("truncated payload") {
    write_gz(p, idx_bytes(0x00000803, {3, 28, 28}, 3 * 784 - 5));
    REQUIRE_THROWS_WITH(read_idx_images(p), Catch::Contains(p) && Catch::Contains("truncated") &&
                                                Catch::Contains("[3,28,28]"));
  }
  SECTION("truncated header") {
    write_gz(p, idx_bytes(0x00000803, {3}, 0));
    REQUIRE_THROWS_WITH(read_idx_images(p), Catch::Contains("truncated header"));
  }
  SECTION("too short for a header") {
    write_gz(p, {0, 0});
    REQUIRE_THROWS_WITH(read_idx_labels(p), Catch::Contains("too short"));
  }
  SECTION("trailing data") {
    write_gz(p, idx_bytes(0x00000801, {4}, 4 + 7, 2));
    REQUIRE_THROWS_WITH(read_idx_labels(p), Catch::Contains(p) && Catch::Contains("7 trailing bytes"));
  }
  SECTION("wrong image dims") {
    write_gz(p, idx_bytes(0x00000803, {2, 27, 28}, 2 * 27 * 28));
    REQUIRE_THROWS_WITH(read_idx_images(p), Catch::Contains("27x28") && Catch::Contains("28x28"));
  }
  SECTION("label out of range") {
    std::vector<uint8_t> bytes = idx_bytes(0x00000801, {3}, 0);
    bytes.insert(bytes.end(), {1, 10, 2});
    write_gz(p, bytes);
    REQUIRE_THROWS_WITH(read_idx_labels(p), Catch::Contains("label 10 at index 1"));
  }
  SECTION("not gzip") {
    write_raw(p, idx_bytes(0x00000801, {2}, 2));
    REQUIRE_THROWS_WITH(read_idx_labels(p), Catch::Contains(p) && Catch::Contains("not a gzip file"));
  }
  SECTION("cut-off gzip stream") {
    write_gz(p, idx_bytes(0x00000803, {4, 28, 28}, 4 * 784, 7));
    const auto size = fs::file_size(p);
    fs::resize_file(p, size / 2);
    REQUIRE_THROWS_WITH(read_idx_images(p), Catch::Contains(p) && Catch::Contains("corrupt gzip"));
  }
  SECTION("missing file") {
    REQUIRE_THROWS_WITH(read_idx_labels(dir.file("nope.gz")), Catch::Contains("no such file"));
  }
}

// A stream that inflates far beyond its header's dims (a gzip bomb, or the
// wrong file) is refused from the header and a small buffer: the reader once
// inflated everything first, holding up to 1 GiB before looking at the magic.
TEST_CASE("idx: memory is bounded by the declared dims, not by the stream", "[data][idx]") {
  TempDir dir("idx");
  const std::string p = dir.file("bomb.gz");
  constexpr size_t kTrailing = size_t{256} << 20;
  {
    // 4 labels, then 256 MiB of zeros: about 256 KB of gzip.
    const std::vector<uint8_t> head = idx_bytes(0x00000801, {4}, 4, 2);
    gzFile f = gzopen(p.c_str(), "wb1");
    REQUIRE(f != nullptr);
    REQUIRE(gzwrite(f, head.data(), static_cast<unsigned>(head.size())) > 0);
    const std::vector<uint8_t> zeros(size_t{1} << 20, 0);
    for (size_t done = 0; done < kTrailing; done += zeros.size())
      REQUIRE(gzwrite(f, zeros.data(), static_cast<unsigned>(zeros.size())) > 0);
    REQUIRE(gzclose(f) == Z_OK);
  }
  const bool measurable = vlmc::test::kMemoryMeasurable && vlmc::test::reset_peak_rss();
  const double before = vlmc::test::current_rss_bytes();
  REQUIRE_THROWS_WITH(read_idx_labels(p),
                      Catch::Contains(p) && Catch::Contains(std::to_string(kTrailing) + " trailing bytes"));
  if (measurable) {
    const double grew = vlmc::test::peak_rss_bytes() - before;
    INFO("peak RSS grew by " << grew / 1048576 << " MiB reading a 256 MiB stream");
    CHECK(grew < 32.0 * 1048576);
  } else {
    WARN("resident memory is not measurable here (AddressSanitizer, or clear_refs refused)");
  }

  // A wrong magic is reported from the first four bytes, even when the stream
  // breaks further on.
  std::vector<uint8_t> wrong = idx_bytes(0x00000802, {64, 28, 28}, 0);
  uint32_t state = 12345;  // an LCG: 50 KB that deflate cannot shrink, so the cut
  for (int i = 0; i < 64 * 784; ++i) {  // lands far past zlib's first buffers
    state = state * 1664525u + 1013904223u;
    wrong.push_back(static_cast<uint8_t>(state >> 24));
  }
  write_gz(p, wrong);
  fs::resize_file(p, fs::file_size(p) / 2);
  REQUIRE_THROWS_WITH(read_idx_images(p), Catch::Contains(p) && Catch::Contains("bad magic 0x802"));
}

TEST_CASE("idx: locating files in a directory without the package", "[data][idx]") {
  TempDir dir("idx");
  REQUIRE_THROWS_WITH(locate_fashion_mnist(Split::train, dir.path.string()),
                      Catch::Contains("train-images-idx3-ubyte.gz") &&
                          Catch::Contains("install") && Catch::Contains("dataset-fashion-mnist"));
  // Mismatched counts between the images and labels of a split.
  std::vector<uint8_t> images = idx_bytes(0x00000803, {2, 28, 28}, 2 * 784);
  write_gz(dir.file("t10k-images-idx3-ubyte.gz"), images);
  write_gz(dir.file("t10k-labels-idx1-ubyte.gz"), idx_bytes(0x00000801, {3}, 3));
  REQUIRE_THROWS_WITH(load_fashion_mnist(Split::test, dir.path.string()),
                      Catch::Contains("2 images but") && Catch::Contains("3 labels"));
}

TEST_CASE("idx: the installed Fashion-MNIST files", "[data][idx]") {
  // The package is a build dependency (scripts/install-deps.sh).
  const FashionMnist train = load_fashion_mnist(Split::train);
  CHECK(train.images.shape() == Shape{60000, 28, 28});
  CHECK(train.labels.shape() == Shape{60000});
  const auto labels = train.labels.to_vector<int64_t>();
  CHECK(std::vector<int64_t>(labels.begin(), labels.begin() + 5) == std::vector<int64_t>{9, 0, 0, 3, 0});
  std::vector<int64_t> per_class(10, 0);
  for (int64_t l : labels) per_class[static_cast<size_t>(l)]++;
  for (int64_t n : per_class) CHECK(n == 6000);  // Fashion-MNIST is balanced
  const auto first = train.images.narrow(0, 0, 1).to_vector<int64_t>();
  CHECK(std::accumulate(first.begin(), first.end(), int64_t{0}) == 76247);

  const FashionMnist test = load_fashion_mnist(Split::test);
  CHECK(test.images.shape() == Shape{10000, 28, 28});
  const auto tl = test.labels.to_vector<int64_t>();
  CHECK(std::vector<int64_t>(tl.begin(), tl.begin() + 5) == std::vector<int64_t>{9, 2, 1, 1, 6});
}
