// Loss-curve plots: the PNG encoder is checked by a small independent decoder
// written here (signature, chunk CRCs, IHDR, inflate, un-filter all five PNG
// filters) that must give back exactly the input pixels; the renderer by
// looking at pixels where a known line must be and where nothing may be.
#include <unistd.h>
#include <zlib.h>

#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <string>
#include <vector>

#include "core/error.h"
#include "train/plot.h"
#include "tests/support/temp_dir.h"

using namespace vlmc;
using namespace vlmc::train;
namespace fs = std::filesystem;
using vlmc::test::TempDir;

namespace {


uint32_t be32(const uint8_t* p) { return uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | p[3]; }

struct DecodedPng {
  int width = 0, height = 0;
  std::vector<uint8_t> rgb;
  std::vector<int> filters;  // filter type used by each row
};

// A minimal PNG reader for what encode_png writes (8-bit RGB, no interlace);
// every structural check is a REQUIRE so a broken file fails loudly.
DecodedPng decode_png(const std::vector<uint8_t>& png) {
  static const uint8_t kSignature[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  REQUIRE(png.size() >= 8);
  REQUIRE(std::memcmp(png.data(), kSignature, 8) == 0);
  DecodedPng out;
  std::vector<uint8_t> idat;
  std::vector<std::string> order;
  size_t pos = 8;
  while (pos < png.size()) {
    REQUIRE(pos + 12 <= png.size());
    const uint32_t len = be32(&png[pos]);
    REQUIRE(pos + 12 + len <= png.size());
    const std::string type(reinterpret_cast<const char*>(&png[pos + 4]), 4);
    const uint8_t* data = &png[pos + 8];
    const uLong crc = crc32(0L, &png[pos + 4], uInt(4 + len));
    INFO("chunk " << type);
    REQUIRE(be32(data + len) == uint32_t(crc));
    order.push_back(type);
    if (type == "IHDR") {
      REQUIRE(len == 13);
      out.width = int(be32(data));
      out.height = int(be32(data + 4));
      REQUIRE(data[8] == 8);   // bit depth
      REQUIRE(data[9] == 2);   // truecolour
      REQUIRE(data[10] == 0);  // deflate
      REQUIRE(data[11] == 0);  // adaptive filtering
      REQUIRE(data[12] == 0);  // no interlace
    } else if (type == "IDAT") {
      idat.insert(idat.end(), data, data + len);
    }
    pos += 12 + len;
  }
  REQUIRE(order.size() >= 3);
  REQUIRE(order.front() == "IHDR");
  REQUIRE(order.back() == "IEND");

  const size_t stride = size_t(out.width) * 3;
  std::vector<uint8_t> raw((stride + 1) * size_t(out.height));
  uLongf raw_size = uLongf(raw.size());
  REQUIRE(uncompress(raw.data(), &raw_size, idat.data(), uLong(idat.size())) == Z_OK);
  REQUIRE(raw_size == raw.size());

  out.rgb.assign(stride * size_t(out.height), 0);
  for (int y = 0; y < out.height; ++y) {
    const uint8_t* in = &raw[size_t(y) * (stride + 1)];
    const int filter = in[0];
    REQUIRE(filter <= 4);
    out.filters.push_back(filter);
    uint8_t* row = &out.rgb[size_t(y) * stride];
    const uint8_t* up = y > 0 ? row - stride : nullptr;
    for (size_t i = 0; i < stride; ++i) {
      const int a = i >= 3 ? row[i - 3] : 0, b = up ? up[i] : 0, c = (up && i >= 3) ? up[i - 3] : 0;
      int pred = 0;
      if (filter == 1) pred = a;
      if (filter == 2) pred = b;
      if (filter == 3) pred = (a + b) >> 1;
      if (filter == 4) {
        const int p = a + b - c, pa = std::abs(p - a), pb = std::abs(p - b), pc = std::abs(p - c);
        pred = (pa <= pb && pa <= pc) ? a : (pb <= pc ? b : c);
      }
      row[i] = uint8_t(in[i + 1] + pred);
    }
  }
  return out;
}

// Smooth gradients (Sub/Up/Avg/Paeth win) mixed with noise (None wins), so the
// round trip exercises several filter types.
Image test_pattern(int w, int h) {
  Image img;
  img.width = w, img.height = h;
  img.rgb.resize(size_t(w) * size_t(h) * 3);
  uint32_t state = 12345;
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      uint8_t* p = &img.rgb[(size_t(y) * size_t(w) + size_t(x)) * 3];
      state = state * 1664525u + 1013904223u;
      if (y % 4 == 3) {
        p[0] = uint8_t(state >> 24), p[1] = uint8_t(state >> 16), p[2] = uint8_t(state >> 8);
      } else {
        p[0] = uint8_t(x * 7 + y), p[1] = uint8_t(y * 5), p[2] = uint8_t((x * y) & 0xff);
      }
    }
  return img;
}

std::vector<double> range(int n, double start = 0) {
  std::vector<double> v;
  for (int i = 0; i < n; ++i) v.push_back(start + i);
  return v;
}

Rgb pixel_at(const Image& img, const PlotFrame& f, double x, double y) {
  return img.at(int(std::lround(f.pixel_x(x))), int(std::lround(f.pixel_y(y))));
}

// A rasterized 2 px line may sit a pixel off the exact point (rounded endpoints,
// an even pen width), so "on the line" means within one pixel of it.
bool colour_near(const Image& img, const PlotFrame& f, double x, double y, Rgb colour) {
  const int cx = int(std::lround(f.pixel_x(x))), cy = int(std::lround(f.pixel_y(y)));
  for (int dy = -1; dy <= 1; ++dy)
    for (int dx = -1; dx <= 1; ++dx)
      if (img.at(cx + dx, cy + dy) == colour) return true;
  return false;
}

constexpr Rgb kWhite{255, 255, 255};

bool is_background(Rgb c) { return c == kWhite || c == Rgb{232, 232, 232}; }  // white or grid

// True when every step between consecutive ticks is the same 1, 2 or 5 x 10^k.
bool nice_linear_ticks(const std::vector<double>& ticks) {
  if (ticks.size() < 2) return false;
  const double step = ticks[1] - ticks[0];
  const double mantissa = step / std::pow(10.0, std::floor(std::log10(step) + 1e-9));
  if (std::abs(mantissa - 1) > 1e-6 && std::abs(mantissa - 2) > 1e-6 && std::abs(mantissa - 5) > 1e-6) return false;
  for (size_t i = 1; i < ticks.size(); ++i)
    if (std::abs(ticks[i] - ticks[i - 1] - step) > step * 1e-6) return false;
  for (double t : ticks)
    if (std::abs(t / step - std::round(t / step)) > 1e-6) return false;
  return true;
}

std::vector<uint8_t> read_bytes(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

}  // namespace

TEST_CASE("plot: encode_png round-trips pixels through an independent decoder", "[plot]") {
  for (auto [w, h] : {std::pair{1, 1}, std::pair{37, 23}, std::pair{300, 7}}) {
    const Image img = test_pattern(w, h);
    const std::vector<uint8_t> png = encode_png(img);
    const DecodedPng d = decode_png(png);
    CHECK(d.width == w);
    CHECK(d.height == h);
    CHECK(d.rgb == img.rgb);
  }
  // The adaptive filter really adapts: the pattern is not all filter 0.
  const DecodedPng d = decode_png(encode_png(test_pattern(64, 64)));
  CHECK(std::count(d.filters.begin(), d.filters.end(), 0) < int(d.filters.size()));
}

TEST_CASE("plot: encode_png rejects an inconsistent image", "[plot]") {
  Image img;
  img.width = 4, img.height = 3;
  img.rgb.resize(35);
  REQUIRE_THROWS_WITH(encode_png(img), Catch::Contains("4x3") && Catch::Contains("36") && Catch::Contains("35"));
  img.width = 0;
  img.rgb.clear();
  REQUIRE_THROWS_WITH(encode_png(img), Catch::Contains("not positive"));
}

TEST_CASE("plot: a known line lands on its pixels and far pixels stay white", "[plot]") {
  // y = x from 0 to 10, dense enough that no markers are drawn.
  Series diag{"diagonal", {}, {}};
  for (int i = 0; i <= 100; ++i) diag.x.push_back(i / 10.0), diag.y.push_back(i / 10.0);
  PlotOptions opt;
  opt.title = "Loss curve (test)";
  const PlotFrame f = plot_frame({diag}, opt);
  REQUIRE(f.has_data);
  CHECK(f.x_min == 0);
  CHECK(f.x_max == 10);
  CHECK(f.y_min == 0);
  CHECK(f.y_max == 10);
  CHECK(nice_linear_ticks(f.x_ticks));
  CHECK(nice_linear_ticks(f.y_ticks));
  CHECK(f.left > 0);
  CHECK(f.right < opt.width - 1);
  CHECK(f.top > 0);
  CHECK(f.bottom < opt.height - 1);

  const Image img = render_line_plot({diag}, opt);
  REQUIRE(img.width == 900);
  REQUIRE(img.height == 540);
  REQUIRE(img.rgb.size() == size_t(900 * 540 * 3));
  const Rgb colour = series_colour(0);
  for (double t = 0.25; t < 10; t += 0.5) {
    INFO("t = " << t);
    CHECK(colour_near(img, f, t, t, colour));
  }
  // Continuous: every column the line spans has a pixel of its colour.
  const int c0 = int(std::lround(f.pixel_x(0.1))), c1 = int(std::lround(f.pixel_x(9.9)));
  int columns_with_line = 0;
  for (int x = c0; x <= c1; ++x) {
    bool found = false;
    for (int y = f.top; y <= f.bottom && !found; ++y) found = img.at(x, y) == colour;
    columns_with_line += found;
  }
  CHECK(columns_with_line == c1 - c0 + 1);
  // Far from the line: empty plot area, the right margin, the top-left image corner.
  CHECK(is_background(pixel_at(img, f, 9, 1)));
  CHECK(is_background(pixel_at(img, f, 7, 3)));
  CHECK(img.at(img.width - 2, img.height / 2) == kWhite);
  CHECK(img.at(1, 1) == kWhite);
  // The legend went to a corner without the line and shows its colour there.
  int legend_colour = 0;
  for (int y = f.top; y < f.top + 60; ++y)
    for (int x = f.left; x < f.left + 80; ++x) legend_colour += img.at(x, y) == colour;
  CHECK(legend_colour > 0);
  // Deterministic: the same input gives the same pixels.
  CHECK(render_line_plot({diag}, opt).rgb == img.rgb);
}

TEST_CASE("plot: series get distinct colours", "[plot]") {
  for (size_t i = 0; i < 10; ++i)
    for (size_t j = i + 1; j < 10; ++j) CHECK_FALSE(series_colour(i) == series_colour(j));
  Series a{"a", range(50), std::vector<double>(50, 1.0)}, b{"b", range(50), std::vector<double>(50, 3.0)};
  const PlotFrame f = plot_frame({a, b}, PlotOptions{});
  const Image img = render_line_plot({a, b}, PlotOptions{});
  CHECK(colour_near(img, f, 10.5, 1.0, series_colour(0)));
  CHECK(colour_near(img, f, 10.5, 3.0, series_colour(1)));
}

TEST_CASE("plot: NaN and Inf points are skipped and break the line", "[plot]") {
  Series s{"loss", range(11), range(11)};
  s.y[5] = std::numeric_limits<double>::quiet_NaN();
  s.x[8] = std::numeric_limits<double>::infinity();
  const PlotOptions opt;
  const PlotFrame f = plot_frame({s}, opt);
  CHECK(f.x_max == 10);
  const Image img = render_line_plot({s}, opt);
  const Rgb colour = series_colour(0);
  CHECK(colour_near(img, f, 2.5, 2.5, colour));  // a segment between finite points
  CHECK(is_background(pixel_at(img, f, 4.7, 4.7)));  // 4 -> 6 would pass here
  CHECK(is_background(pixel_at(img, f, 5.3, 5.3)));
  CHECK(is_background(pixel_at(img, f, 7.5, 7.5)));  // 7 -> 9 would pass here
  CHECK(colour_near(img, f, 9.5, 9.5, colour));

  // An isolated point between gaps is still visible.
  Series dot{"", {1, 2, 3}, {1, std::nan(""), 3}};
  dot.y[0] = std::nan("");
  const PlotFrame g = plot_frame({dot}, opt);
  CHECK(colour_near(render_line_plot({dot}, opt), g, 3, 3, colour));
}

TEST_CASE("plot: empty input still gives a valid image with a no-data note", "[plot]") {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  PlotOptions log_opt;
  log_opt.log_y = true;
  const std::vector<std::pair<std::vector<Series>, PlotOptions>> cases = {
      {{}, PlotOptions{}},
      {{Series{"all nan", {nan, 1}, {2, nan}}}, PlotOptions{}},
      {{Series{"not positive", {1, 2}, {0, -1}}}, log_opt},
      {{Series{"empty", {}, {}}}, log_opt},
  };
  for (const auto& [series, opt] : cases) {
    const PlotFrame f = plot_frame(series, opt);
    CHECK_FALSE(f.has_data);
    const Image img = render_line_plot(series, opt);
    const DecodedPng d = decode_png(encode_png(img));
    CHECK(d.rgb == img.rgb);
    int ink = 0;  // the note, in the middle of the plot area
    const int mx = (f.left + f.right) / 2, my = (f.top + f.bottom) / 2;
    for (int y = my - 10; y <= my + 10; ++y)
      for (int x = mx - 40; x <= mx + 40; ++x) ink += !is_background(img.at(x, y));
    CHECK(ink > 20);
  }
}

TEST_CASE("plot: log_y uses decade ticks and skips non-positive values", "[plot]") {
  Series s{"loss", range(5), {10, 1, 0.1, 0.0, 0.01}};
  PlotOptions opt;
  opt.log_y = true;
  const PlotFrame f = plot_frame({s}, opt);
  CHECK(f.y_min == Approx(0.01));
  CHECK(f.y_max == Approx(10));
  REQUIRE(f.y_ticks.size() == 4);
  CHECK(f.y_ticks[0] == Approx(0.01));
  CHECK(f.y_ticks[3] == Approx(10));
  const Image img = render_line_plot({s}, opt);
  CHECK(colour_near(img, f, 0.5, std::sqrt(10.0), series_colour(0)));  // geometric midpoint of 10 and 1
  CHECK(is_background(pixel_at(img, f, 2.5, std::sqrt(0.1 * 0.01))));  // 0 at x = 3 breaks 2 -> 4

  // Less than a decade of data still gets at least three ticks.
  const PlotFrame narrow = plot_frame({Series{"n", {0, 1}, {2.1, 3.5}}}, opt);
  CHECK(narrow.y_ticks.size() >= 3);
  CHECK(narrow.y_min <= 2.1);
  CHECK(narrow.y_max >= 3.5);
}

TEST_CASE("plot: constant and large-valued series get readable axes", "[plot]") {
  const PlotFrame flat = plot_frame({Series{"flat", {0, 100}, {2.5, 2.5}}}, PlotOptions{});
  CHECK(flat.y_min < 2.5);
  CHECK(flat.y_max > 2.5);
  CHECK(nice_linear_ticks(flat.y_ticks));
  const PlotFrame big = plot_frame({Series{"big", {0, 3e7}, {1e-6, 5e-6}}}, PlotOptions{});
  CHECK(nice_linear_ticks(big.x_ticks));
  CHECK(nice_linear_ticks(big.y_ticks));
  CHECK_NOTHROW(render_line_plot({Series{"big", {0, 3e7}, {1e-6, 5e-6}}}, PlotOptions{}));
  // Every printable ASCII character has a glyph.
  PlotOptions opt;
  for (char c = ' '; c <= '~'; ++c) opt.title += c;
  CHECK_NOTHROW(render_line_plot({}, opt));
}

TEST_CASE("plot: bad options and mismatched series are errors naming them", "[plot]") {
  PlotOptions opt;
  opt.width = 199;
  REQUIRE_THROWS_WITH(render_line_plot({}, opt), Catch::Contains("PlotOptions.width") && Catch::Contains("199"));
  opt.width = 8193;
  REQUIRE_THROWS_WITH(render_line_plot({}, opt), Catch::Contains("PlotOptions.width"));
  opt.width = 200;
  opt.height = 149;
  REQUIRE_THROWS_WITH(render_line_plot({}, opt), Catch::Contains("PlotOptions.height"));
  opt.height = 150;
  CHECK_NOTHROW(render_line_plot({Series{"tiny", {0, 1}, {1, 0}}}, opt));  // the smallest size works
  REQUIRE_THROWS_WITH(render_line_plot({Series{"stage 1", {0, 1, 2}, {1, 2}}}, PlotOptions{}),
                      Catch::Contains("'stage 1'") && Catch::Contains("3 x values") && Catch::Contains("2 y values"));
}

TEST_CASE("plot: write_line_plot_png writes atomically and reports unwritable paths", "[plot]") {
  TempDir dir("plot");
  const std::vector<Series> series = {Series{"stage 1", range(20), range(20, 1)}};
  const PlotOptions opt;
  const fs::path target = dir.path / "loss.png";
  write_line_plot_png(target.string(), series, opt);
  const std::vector<uint8_t> bytes = read_bytes(target);
  CHECK(bytes == encode_png(render_line_plot(series, opt)));
  CHECK(decode_png(bytes).width == opt.width);
  // Overwriting works too, and only the target is left in the directory.
  write_line_plot_png(target.string(), series, opt);
  CHECK(std::distance(fs::directory_iterator(dir.path), fs::directory_iterator{}) == 1);

  const fs::path missing = dir.path / "no_such_dir" / "loss.png";
  REQUIRE_THROWS_WITH(write_line_plot_png(missing.string(), series, opt), Catch::Contains(missing.string()));
  CHECK_FALSE(fs::exists(dir.path / "no_such_dir"));
  CHECK(std::distance(fs::directory_iterator(dir.path), fs::directory_iterator{}) == 1);

  // A bad option fails before anything touches the disk.
  PlotOptions bad;
  bad.height = 10;
  const fs::path other = dir.path / "other.png";
  REQUIRE_THROWS_WITH(write_line_plot_png(other.string(), series, bad), Catch::Contains("PlotOptions.height"));
  CHECK_FALSE(fs::exists(other));
}
