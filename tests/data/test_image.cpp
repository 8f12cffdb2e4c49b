// JPEG / PNG decoding against PIL 9.4 (tests/golden/images/, written by
// make_golden_images.py): every pixel equal to Image.open(f).convert("RGB"),
// for 4:2:0, progressive, grey and CMYK JPEGs and grey, grey+alpha, palette
// (+tRNS, short palette), RGBA, 16-bit and interlaced PNGs; and every kind of
// bad file refused with a message that names it.
#include <catch2/catch.hpp>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "data/image.h"
#include "tests/support/golden.h"
#include "tests/support/temp_dir.h"

using namespace vlmc;
using namespace vlmc::data;
using Catch::Matchers::Contains;
using vlmc::test::TempDir;

namespace {

const std::string kImageDir = std::string(VLMC_GOLDEN_DIR) + "/images/";

std::vector<uint8_t> read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  REQUIRE(in.good());
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_bytes(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

// Largest |a - b| over the pixels, or 256 when the sizes differ.
int max_pixel_diff(const Image& img, const Tensor& expected) {
  if (expected.shape() != Shape{img.height, img.width, 3}) return 256;
  const std::vector<uint8_t> e = expected.to_vector<uint8_t>();
  int worst = 0;
  for (size_t i = 0; i < e.size(); ++i) worst = std::max(worst, std::abs(int(img.rgb[i]) - int(e[i])));
  return worst;
}

// PNG's chunk CRC (the polynomial of zlib's crc32), to build valid chunks.
uint32_t crc32_of(const uint8_t* p, size_t n) {
  uint32_t c = 0xFFFFFFFFu;
  for (size_t i = 0; i < n; ++i) {
    c ^= p[i];
    for (int k = 0; k < 8; ++k) c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1u)));
  }
  return c ^ 0xFFFFFFFFu;
}

void put_be32(uint8_t* p, uint32_t v) {
  p[0] = uint8_t(v >> 24), p[1] = uint8_t(v >> 16), p[2] = uint8_t(v >> 8), p[3] = uint8_t(v);
}

}  // namespace

TEST_CASE("decoded JPEG and PNG pixels equal PIL's convert(RGB)", "[image]") {
  const test::GoldenFile golden = test::load_golden("images/golden");
  const auto decoded = test::section(golden.tensors, "decode.");
  REQUIRE(decoded.size() == 14);
  for (const auto& [name, expected] : decoded) {
    INFO("image " << name);
    const Image img = load_image(kImageDir + name);
    CHECK(img.width == expected.size(1));
    CHECK(img.height == expected.size(0));
    CHECK(max_pixel_diff(img, expected) == 0);
  }
}

TEST_CASE("the format comes from the magic bytes, not the file name", "[image]") {
  TempDir dir("image");
  const auto jpeg = read_bytes(kImageDir + "photo420.jpg");
  const auto png = read_bytes(kImageDir + "rgb.png");
  CHECK(detect_image_format(jpeg.data(), jpeg.size()) == ImageFormat::jpeg);
  CHECK(detect_image_format(png.data(), png.size()) == ImageFormat::png);
  write_bytes(dir.file("really_a_jpeg.png"), jpeg);
  write_bytes(dir.file("really_a_png.jpg"), png);
  write_bytes(dir.file("no_extension"), jpeg);
  const Image a = load_image(kImageDir + "photo420.jpg");
  const Image b = load_image(kImageDir + "rgb.png");
  CHECK(load_image(dir.file("really_a_jpeg.png")).rgb == a.rgb);
  CHECK(load_image(dir.file("no_extension")).rgb == a.rgb);
  CHECK(load_image(dir.file("really_a_png.jpg")).rgb == b.rgb);
  // From memory, the same pixels.
  CHECK(decode_image(jpeg.data(), jpeg.size(), "buffer").rgb == a.rgb);
}

TEST_CASE("bad image files are refused with the file named", "[image]") {
  TempDir dir("image");
  const auto jpeg = read_bytes(kImageDir + "photo420.jpg");
  const auto png = read_bytes(kImageDir + "rgb.png");

  SECTION("a text file") {
    const std::string path = dir.write("notes.jpg", "hello, I am not an image\n");
    CHECK_THROWS_WITH(load_image(path), Contains(path) && Contains("not a JPEG or PNG"));
  }
  SECTION("a GIF is named as such") {
    const std::string path = dir.write("anim.png", "GIF89a\x01\x00\x01\x00");
    CHECK_THROWS_WITH(load_image(path), Contains(path) && Contains("GIF"));
  }
  SECTION("an empty file") {
    const std::string path = dir.write("empty.png", "");
    CHECK_THROWS_WITH(load_image(path), Contains(path) && Contains("empty"));
  }
  SECTION("a missing file") {
    const std::string path = dir.file("absent.jpg");
    CHECK_THROWS_WITH(load_image(path), Contains(path) && Contains("cannot open"));
  }
  SECTION("a directory") {
    CHECK_THROWS_WITH(load_image(dir.path.string()), Contains(dir.path.string()) && Contains("directory"));
  }
  SECTION("a truncated PNG, cut anywhere") {
    for (size_t cut : {size_t{8}, size_t{20}, size_t{40}, png.size() / 2, png.size() - 40}) {
      INFO("cut at " << cut << " of " << png.size());
      const std::string path = dir.file("cut" + std::to_string(cut) + ".png");
      write_bytes(path, std::vector<uint8_t>(png.begin(), png.begin() + static_cast<std::ptrdiff_t>(cut)));
      CHECK_THROWS_WITH(load_image(path), Contains(path) && Contains("truncated"));
    }
  }
  SECTION("a truncated JPEG, cut anywhere") {
    for (size_t cut : {size_t{3}, size_t{100}, jpeg.size() / 2, jpeg.size() - 2}) {
      INFO("cut at " << cut << " of " << jpeg.size());
      const std::string path = dir.file("cut" + std::to_string(cut) + ".jpg");
      write_bytes(path, std::vector<uint8_t>(jpeg.begin(), jpeg.begin() + static_cast<std::ptrdiff_t>(cut)));
      CHECK_THROWS_WITH(load_image(path), Contains(path) && (Contains("truncated") || Contains("bad JPEG")));
    }
  }
  SECTION("a PNG cut after its pixel data opens, as PIL opens it") {
    // IEND is the last 12 bytes. (PIL also opens a file cut inside the last
    // IDAT's CRC or zlib checksum; libpng refuses those: docs/images.md.)
    const Image full = load_image(kImageDir + "rgb.png");
    CHECK(decode_image(png.data(), png.size() - 12, "cut.png").rgb == full.rgb);
    CHECK_THROWS_WITH(decode_image(png.data(), png.size() - 13, "cut.png"), Contains("truncated"));
  }
  SECTION("a PNG with a corrupt chunk (CRC mismatch)") {
    auto bad = png;
    bad[bad.size() / 2] ^= 0x5A;  // inside IDAT
    const std::string path = dir.file("corrupt.png");
    write_bytes(path, bad);
    CHECK_THROWS_WITH(load_image(path), Contains(path) && Contains("bad PNG"));
  }
  SECTION("a JPEG with a corrupt header") {
    auto bad = jpeg;
    // The first marker after SOI (APP0) becomes an invalid one with a huge length.
    bad[2] = 0xFF, bad[3] = 0xC8, bad[4] = 0x00, bad[5] = 0x01;
    const std::string path = dir.file("corrupt.jpg");
    write_bytes(path, bad);
    CHECK_THROWS_WITH(load_image(path), Contains(path) && Contains("bad JPEG"));
  }
  SECTION("a PNG claiming 100000 x 100000 pixels is refused before allocating") {
    auto big = png;
    put_be32(big.data() + 16, 100000);  // IHDR width, height
    put_be32(big.data() + 20, 100000);
    put_be32(big.data() + 29, crc32_of(big.data() + 12, 17));  // IHDR's CRC over type + data
    const std::string path = dir.file("huge.png");
    write_bytes(path, big);
    CHECK_THROWS_WITH(load_image(path), Contains(path) && Contains("100000x100000") && Contains("2^28"));
  }
  SECTION("a JPEG claiming 60000 x 60000 pixels is refused before allocating") {
    auto big = jpeg;
    size_t sof = 2;  // walk the markers to the frame header
    while (sof + 9 < big.size() && !(big[sof] == 0xFF && big[sof + 1] == 0xC0))
      sof += 2 + (size_t(big[sof + 2]) << 8 | big[sof + 3]);
    REQUIRE(sof + 9 < big.size());
    big[sof + 5] = 0xEA, big[sof + 6] = 0x60;  // height 60000
    big[sof + 7] = 0xEA, big[sof + 8] = 0x60;  // width 60000
    const std::string path = dir.file("huge.jpg");
    write_bytes(path, big);
    CHECK_THROWS_WITH(load_image(path), Contains(path) && Contains("60000x60000") && Contains("2^28"));
  }
  SECTION("decode_image names its source") {
    const std::vector<uint8_t> text = {'a', 'b', 'c'};
    CHECK_THROWS_WITH(decode_image(text.data(), text.size(), "upload #3"), Contains("upload #3"));
  }
}

TEST_CASE("Image holds HWC RGB bytes", "[image]") {
  Image img(3, 2, 10, 20, 30);
  CHECK(img.rgb.size() == 18);
  img.pixel(1, 2)[1] = 99;
  CHECK(img.rgb[(1 * 3 + 2) * 3 + 1] == 99);
  CHECK(img.pixel(0, 0)[2] == 30);
  CHECK_THROWS_WITH(Image(-1, 2), Contains("bad size"));
}
