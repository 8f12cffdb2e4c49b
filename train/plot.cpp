// Loss-curve plots: a small rasterizer (lines, rectangles, a 5x8 bitmap font),
// "nice" axis ticks, and a PNG encoder over zlib. See plot.h for the contract.
#include "train/plot.h"

#include <zlib.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string_view>

#include "core/error.h"
#include "core/io/atomic_file.h"
#include "train/metrics_log.h"

namespace vlmc::train {
namespace {

// ---- the font -----------------------------------------------------------------
// Our own 5x8 glyphs for printable ASCII: rows top to bottom, '#' is ink, rows
// 0..6 hold the body (baseline under row 6) and row 7 the descenders of g j p q y.

constexpr int kGlyphW = 5, kGlyphH = 8, kCapH = 7, kAdvance = 6;

struct GlyphSource {
  char c;
  const char* rows;  // kGlyphH rows of kGlyphW characters, separated by '|'
};

constexpr GlyphSource kGlyphs[] = {
    {' ', ".....|.....|.....|.....|.....|.....|.....|....."},
    {'!', "..#..|..#..|..#..|..#..|..#..|.....|..#..|....."},
    {'"', ".#.#.|.#.#.|.....|.....|.....|.....|.....|....."},
    {'#', ".#.#.|.#.#.|#####|.#.#.|#####|.#.#.|.#.#.|....."},
    {'$', "..#..|.####|#.#..|.###.|..#.#|####.|..#..|....."},
    {'%', "##..#|##..#|...#.|..#..|.#...|#..##|#..##|....."},
    {'&', ".##..|#..#.|#.#..|.#...|#.#.#|#..#.|.##.#|....."},
    {'\'', "..#..|..#..|.....|.....|.....|.....|.....|....."},
    {'(', "...#.|..#..|.#...|.#...|.#...|..#..|...#.|....."},
    {')', ".#...|..#..|...#.|...#.|...#.|..#..|.#...|....."},
    {'*', ".....|..#..|#.#.#|.###.|#.#.#|..#..|.....|....."},
    {'+', ".....|..#..|..#..|#####|..#..|..#..|.....|....."},
    {',', ".....|.....|.....|.....|.....|..#..|..#..|.#..."},
    {'-', ".....|.....|.....|.###.|.....|.....|.....|....."},
    {'.', ".....|.....|.....|.....|.....|.##..|.##..|....."},
    {'/', "....#|....#|...#.|..#..|.#...|#....|#....|....."},
    {'0', ".###.|#...#|#..##|#.#.#|##..#|#...#|.###.|....."},
    {'1', "..#..|.##..|..#..|..#..|..#..|..#..|.###.|....."},
    {'2', ".###.|#...#|....#|...#.|..#..|.#...|#####|....."},
    {'3', "#####|...#.|..#..|...#.|....#|#...#|.###.|....."},
    {'4', "...#.|..##.|.#.#.|#..#.|#####|...#.|...#.|....."},
    {'5', "#####|#....|####.|....#|....#|#...#|.###.|....."},
    {'6', "..##.|.#...|#....|####.|#...#|#...#|.###.|....."},
    {'7', "#####|....#|...#.|..#..|.#...|.#...|.#...|....."},
    {'8', ".###.|#...#|#...#|.###.|#...#|#...#|.###.|....."},
    {'9', ".###.|#...#|#...#|.####|....#|...#.|.##..|....."},
    {':', ".....|.##..|.##..|.....|.##..|.##..|.....|....."},
    {';', ".....|.##..|.##..|.....|.##..|..#..|.#...|....."},
    {'<', "...#.|..#..|.#...|#....|.#...|..#..|...#.|....."},
    {'=', ".....|.....|#####|.....|#####|.....|.....|....."},
    {'>', ".#...|..#..|...#.|....#|...#.|..#..|.#...|....."},
    {'?', ".###.|#...#|....#|...#.|..#..|.....|..#..|....."},
    {'@', ".###.|#...#|....#|.##.#|#.#.#|#.#.#|.###.|....."},
    {'A', ".###.|#...#|#...#|#####|#...#|#...#|#...#|....."},
    {'B', "####.|#...#|#...#|####.|#...#|#...#|####.|....."},
    {'C', ".###.|#...#|#....|#....|#....|#...#|.###.|....."},
    {'D', "###..|#..#.|#...#|#...#|#...#|#..#.|###..|....."},
    {'E', "#####|#....|#....|####.|#....|#....|#####|....."},
    {'F', "#####|#....|#....|####.|#....|#....|#....|....."},
    {'G', ".###.|#...#|#....|#.###|#...#|#...#|.####|....."},
    {'H', "#...#|#...#|#...#|#####|#...#|#...#|#...#|....."},
    {'I', ".###.|..#..|..#..|..#..|..#..|..#..|.###.|....."},
    {'J', "..###|...#.|...#.|...#.|...#.|#..#.|.##..|....."},
    {'K', "#...#|#..#.|#.#..|##...|#.#..|#..#.|#...#|....."},
    {'L', "#....|#....|#....|#....|#....|#....|#####|....."},
    {'M', "#...#|##.##|#.#.#|#.#.#|#...#|#...#|#...#|....."},
    {'N', "#...#|#...#|##..#|#.#.#|#..##|#...#|#...#|....."},
    {'O', ".###.|#...#|#...#|#...#|#...#|#...#|.###.|....."},
    {'P', "####.|#...#|#...#|####.|#....|#....|#....|....."},
    {'Q', ".###.|#...#|#...#|#...#|#.#.#|#..#.|.##.#|....."},
    {'R', "####.|#...#|#...#|####.|#.#..|#..#.|#...#|....."},
    {'S', ".####|#....|#....|.###.|....#|....#|####.|....."},
    {'T', "#####|..#..|..#..|..#..|..#..|..#..|..#..|....."},
    {'U', "#...#|#...#|#...#|#...#|#...#|#...#|.###.|....."},
    {'V', "#...#|#...#|#...#|#...#|#...#|.#.#.|..#..|....."},
    {'W', "#...#|#...#|#...#|#.#.#|#.#.#|#.#.#|.#.#.|....."},
    {'X', "#...#|#...#|.#.#.|..#..|.#.#.|#...#|#...#|....."},
    {'Y', "#...#|#...#|.#.#.|..#..|..#..|..#..|..#..|....."},
    {'Z', "#####|....#|...#.|..#..|.#...|#....|#####|....."},
    {'[', ".###.|.#...|.#...|.#...|.#...|.#...|.###.|....."},
    {'\\', "#....|#....|.#...|..#..|...#.|....#|....#|....."},
    {']', ".###.|...#.|...#.|...#.|...#.|...#.|.###.|....."},
    {'^', "..#..|.#.#.|#...#|.....|.....|.....|.....|....."},
    {'_', ".....|.....|.....|.....|.....|.....|.....|#####"},
    {'`', ".#...|..#..|.....|.....|.....|.....|.....|....."},
    {'a', ".....|.....|.###.|....#|.####|#...#|.####|....."},
    {'b', "#....|#....|#.##.|##..#|#...#|#...#|####.|....."},
    {'c', ".....|.....|.###.|#....|#....|#...#|.###.|....."},
    {'d', "....#|....#|.##.#|#..##|#...#|#...#|.####|....."},
    {'e', ".....|.....|.###.|#...#|#####|#....|.###.|....."},
    {'f', "..##.|.#..#|.#...|###..|.#...|.#...|.#...|....."},
    {'g', ".....|.....|.####|#...#|#...#|.####|....#|.###."},
    {'h', "#....|#....|#.##.|##..#|#...#|#...#|#...#|....."},
    {'i', "..#..|.....|.##..|..#..|..#..|..#..|.###.|....."},
    {'j', "...#.|.....|..##.|...#.|...#.|...#.|#..#.|.##.."},
    {'k', "#....|#....|#..#.|#.#..|##...|#.#..|#..#.|....."},
    {'l', ".##..|..#..|..#..|..#..|..#..|..#..|.###.|....."},
    {'m', ".....|.....|##.#.|#.#.#|#.#.#|#...#|#...#|....."},
    {'n', ".....|.....|#.##.|##..#|#...#|#...#|#...#|....."},
    {'o', ".....|.....|.###.|#...#|#...#|#...#|.###.|....."},
    {'p', ".....|.....|####.|#...#|#...#|####.|#....|#...."},
    {'q', ".....|.....|.####|#...#|#...#|.####|....#|....#"},
    {'r', ".....|.....|#.##.|##..#|#....|#....|#....|....."},
    {'s', ".....|.....|.####|#....|.###.|....#|####.|....."},
    {'t', ".#...|.#...|###..|.#...|.#...|.#..#|..##.|....."},
    {'u', ".....|.....|#...#|#...#|#...#|#..##|.##.#|....."},
    {'v', ".....|.....|#...#|#...#|#...#|.#.#.|..#..|....."},
    {'w', ".....|.....|#...#|#...#|#.#.#|#.#.#|.#.#.|....."},
    {'x', ".....|.....|#...#|.#.#.|..#..|.#.#.|#...#|....."},
    {'y', ".....|.....|#...#|#...#|#...#|.####|....#|.###."},
    {'z', ".....|.....|#####|...#.|..#..|.#...|#####|....."},
    {'{', "...#.|..#..|..#..|.#...|..#..|..#..|...#.|....."},
    {'|', "..#..|..#..|..#..|..#..|..#..|..#..|..#..|....."},
    {'}', ".#...|..#..|..#..|...#.|..#..|..#..|.#...|....."},
    {'~', ".....|.....|.#...|#.#.#|...#.|.....|.....|....."},
};

constexpr int kFirstGlyph = 32, kGlyphCount = 95;  // ' ' .. '~'
using Glyph = std::array<uint8_t, kGlyphH>;       // bit 4 is the leftmost column

const std::array<Glyph, kGlyphCount>& font() {
  static const std::array<Glyph, kGlyphCount> table = [] {
    std::array<Glyph, kGlyphCount> t{};
    std::array<bool, kGlyphCount> seen{};
    for (const auto& g : kGlyphs) {
      const std::string_view rows(g.rows);
      const int index = g.c - kFirstGlyph;
      VLMC_CHECK(rows.size() == kGlyphH * (kGlyphW + 1) - 1 && index >= 0 && index < kGlyphCount,
                 "plot font: glyph '", g.c, "' is malformed");
      for (int r = 0; r < kGlyphH; ++r)
        for (int c = 0; c < kGlyphW; ++c)
          if (rows[r * (kGlyphW + 1) + c] == '#') t[index][r] |= uint8_t(1u << (kGlyphW - 1 - c));
      seen[index] = true;
    }
    for (int i = 0; i < kGlyphCount; ++i)
      VLMC_CHECK(seen[i], "plot font: no glyph for '", char(kFirstGlyph + i), "'");
    return t;
  }();
  return table;
}

const Glyph& glyph(char c) {
  const int index = static_cast<unsigned char>(c) - kFirstGlyph;
  return font()[index >= 0 && index < kGlyphCount ? index : '?' - kFirstGlyph];
}

// ---- drawing --------------------------------------------------------------------

constexpr Rgb kWhite{255, 255, 255}, kGrid{232, 232, 232}, kInk{40, 40, 40};

struct Rect {
  int x0, y0, x1, y1;  // inclusive
};

struct Canvas {
  Image& image;

  void set(int x, int y, Rgb c) {
    if (x < 0 || y < 0 || x >= image.width || y >= image.height) return;
    uint8_t* p = &image.rgb[(size_t(y) * size_t(image.width) + size_t(x)) * 3];
    p[0] = c.r, p[1] = c.g, p[2] = c.b;
  }
  void fill(Rect r, Rgb c) {
    for (int y = std::max(r.y0, 0); y <= std::min(r.y1, image.height - 1); ++y)
      for (int x = std::max(r.x0, 0); x <= std::min(r.x1, image.width - 1); ++x) set(x, y, c);
  }
  void outline(Rect r, Rgb c) {
    fill({r.x0, r.y0, r.x1, r.y0}, c);
    fill({r.x0, r.y1, r.x1, r.y1}, c);
    fill({r.x0, r.y0, r.x0, r.y1}, c);
    fill({r.x1, r.y0, r.x1, r.y1}, c);
  }
  // A square "pen" of side `width` around (x, y), kept inside `clip`.
  void stamp(int x, int y, int width, Rgb c, Rect clip) {
    const int lo = -(width / 2);
    fill({std::max(x + lo, clip.x0), std::max(y + lo, clip.y0), std::min(x + lo + width - 1, clip.x1),
          std::min(y + lo + width - 1, clip.y1)},
         c);
  }
  // Bresenham: every step moves one pixel, so the line has no gaps at any slope.
  void line(int x0, int y0, int x1, int y1, int width, Rgb c, Rect clip) {
    const int dx = std::abs(x1 - x0), dy = -std::abs(y1 - y0);
    const int sx = x0 < x1 ? 1 : -1, sy = y0 < y1 ? 1 : -1;
    int err = dx + dy;
    for (;;) {
      stamp(x0, y0, width, c, clip);
      if (x0 == x1 && y0 == y1) break;
      const int e2 = 2 * err;
      if (e2 >= dy) err += dy, x0 += sx;
      if (e2 <= dx) err += dx, y0 += sy;
    }
  }
  // Horizontal text with its top-left corner at (x, y).
  void text(int x, int y, const std::string& s, Rgb c, int scale) {
    for (size_t i = 0; i < s.size(); ++i) {
      const Glyph& g = glyph(s[i]);
      for (int r = 0; r < kGlyphH; ++r)
        for (int col = 0; col < kGlyphW; ++col)
          if (g[r] >> (kGlyphW - 1 - col) & 1) {
            const int px = x + (int(i) * kAdvance + col) * scale, py = y + r * scale;
            fill({px, py, px + scale - 1, py + scale - 1}, c);
          }
    }
  }
  // Text turned a quarter left (read bottom to top), starting at bottom-left (x, y).
  void vertical_text(int x, int y, const std::string& s, Rgb c, int scale) {
    for (size_t i = 0; i < s.size(); ++i) {
      const Glyph& g = glyph(s[i]);
      for (int r = 0; r < kGlyphH; ++r)
        for (int col = 0; col < kGlyphW; ++col)
          if (g[r] >> (kGlyphW - 1 - col) & 1) {
            const int px = x + r * scale, py = y - (int(i) * kAdvance + col + 1) * scale;
            fill({px, py, px + scale - 1, py + scale - 1}, c);
          }
    }
  }
};

int text_width(const std::string& s, int scale) {
  return s.empty() ? 0 : (int(s.size()) * kAdvance - 1) * scale;
}

// ---- axes -----------------------------------------------------------------------

// Beyond this magnitude a value is treated like a non-finite one: it keeps the
// axis arithmetic (ranges, 10^k for log ticks) far from overflow and underflow.
constexpr double kMaxMagnitude = 1e100;

bool usable(double x, double y, bool log_y) {
  if (!std::isfinite(x) || !std::isfinite(y) || std::abs(x) > kMaxMagnitude || std::abs(y) > kMaxMagnitude)
    return false;
  return !log_y || y >= 1.0 / kMaxMagnitude;
}

struct Axis {
  double lo, hi;
  std::vector<double> ticks;
};

// The step of 1, 2 or 5 x 10^k closest to raw: the values people read off an axis.
double nice_step(double raw) {
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  const double n = raw / mag;
  return (n < 1.5 ? 1.0 : n < 3.0 ? 2.0 : n < 7.0 ? 5.0 : 10.0) * mag;
}

Axis linear_axis(double lo, double hi, int target) {
  // A (near-)constant series still gets a readable axis around its value.
  if (!(hi - lo > std::max(std::abs(lo), std::abs(hi)) * 1e-9)) {
    const double c = 0.5 * (lo + hi), d = c == 0 ? 1.0 : std::abs(c) * 0.1;
    lo = c - d, hi = c + d;
  }
  const double step = nice_step((hi - lo) / target);
  const double a = std::floor(lo / step + 1e-9), b = std::ceil(hi / step - 1e-9);
  Axis axis{a * step, b * step, {}};
  for (double i = a; i <= b + 0.5; i += 1.0) {
    const double t = i * step;
    axis.ticks.push_back(std::abs(t) < step * 1e-9 ? 0.0 : t);
  }
  return axis;
}

double pow10i(int k) { return std::pow(10.0, k); }

int floor_div(int a, int d) { return a >= 0 ? a / d : -((-a + d - 1) / d); }
int ceil_div(int a, int d) { return -floor_div(-a, d); }

Axis log_axis(double lo, double hi, int target) {
  if (!(hi > lo * (1 + 1e-9))) lo /= 2, hi *= 2;
  const int klo = int(std::floor(std::log10(lo) + 1e-9)), khi = int(std::ceil(std::log10(hi) - 1e-9));
  if (khi - klo > target) {
    // Many decades: a tick every d-th decade.
    const int d = (khi - klo + target - 1) / target;
    const int a = floor_div(klo, d) * d, b = ceil_div(khi, d) * d;
    Axis axis{pow10i(a), pow10i(b), {}};
    for (int k = a; k <= b; k += d) axis.ticks.push_back(pow10i(k));
    return axis;
  }
  // Few decades: the sparsest mantissa set that still gives three ticks.
  static const std::vector<int> kMantissas[] = {{1}, {1, 2, 5}, {1, 2, 3, 4, 5, 6, 7, 8, 9}};
  Axis axis{};
  for (const auto& ms : kMantissas) {
    double a = 0, b = HUGE_VAL;
    for (int k = klo - 1; k <= khi + 1; ++k)
      for (int m : ms) {
        const double t = m * pow10i(k);
        if (t <= lo * (1 + 1e-9)) a = std::max(a, t);
        if (t >= hi * (1 - 1e-9)) b = std::min(b, t);
      }
    axis = Axis{a, b, {}};
    for (int k = klo - 1; k <= khi + 1; ++k)
      for (int m : ms)
        if (const double t = m * pow10i(k); t >= a * (1 - 1e-9) && t <= b * (1 + 1e-9)) axis.ticks.push_back(t);
    std::sort(axis.ticks.begin(), axis.ticks.end());
    if (axis.ticks.size() >= 3) break;
  }
  return axis;
}

// "1.5e6" rather than printf's "1.5e+06".
std::string compact_exponent(const std::string& s) {
  const size_t e = s.find('e');
  if (e == std::string::npos) return s;
  std::string out = s.substr(0, e + 1);
  size_t i = e + 1;
  if (s[i] == '-') out += '-';
  if (s[i] == '-' || s[i] == '+') ++i;
  while (i + 1 < s.size() && s[i] == '0') ++i;
  return out + s.substr(i);
}

std::string printf_string(const char* format, int precision, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, format, precision, v);
  return buf;
}

// Labels on a linear axis share one precision, set by the step.
std::string linear_label(double v, double step, double max_abs) {
  if (v == 0) return "0";
  const int step_exp = int(std::floor(std::log10(step) + 1e-9));
  if (max_abs >= 1e6 || step_exp < -4) {
    const int lead = int(std::floor(std::log10(max_abs) + 1e-9));
    return compact_exponent(printf_string("%.*e", std::max(0, lead - step_exp), v));
  }
  return printf_string("%.*f", std::max(0, -step_exp), v);
}

std::string log_label(double v) {
  const int k = int(std::floor(std::log10(v) + 1e-9));
  if (k >= -4 && k <= 5) return printf_string("%.*f", std::max(0, -k), v);
  const int m = int(std::lround(v / pow10i(k)));
  return str(m, "e", k);
}

std::vector<std::string> tick_labels(const Axis& axis, bool log) {
  std::vector<std::string> out;
  const double step = axis.ticks.size() > 1 ? axis.ticks[1] - axis.ticks[0] : 1.0;
  const double max_abs = std::max(std::abs(axis.lo), std::abs(axis.hi));
  for (double t : axis.ticks) out.push_back(log ? log_label(t) : linear_label(t, step, max_abs));
  return out;
}

// ---- layout ---------------------------------------------------------------------

constexpr int kMinWidth = 200, kMinHeight = 150, kMaxSide = 8192;

// Text (and lines) grow with the image so a large plot stays readable.
int scale_for(const PlotOptions& o) { return std::clamp(std::min(o.width / 450, o.height / 270), 1, 4); }

struct Layout {
  int scale, gap, tick_len, text_h;
};

Layout layout_for(const PlotOptions& o) {
  const int s = scale_for(o);
  return {s, 4 * s, 4 * s, kGlyphH * s};
}

struct Frame {
  PlotFrame frame;
  std::vector<std::string> x_labels, y_labels;
};

Frame compute_frame(const std::vector<Series>& series, const PlotOptions& o) {
  VLMC_CHECK(o.width >= kMinWidth && o.width <= kMaxSide, "plot: PlotOptions.width ", o.width,
             " is outside [", kMinWidth, ", ", kMaxSide, "]");
  VLMC_CHECK(o.height >= kMinHeight && o.height <= kMaxSide, "plot: PlotOptions.height ", o.height,
             " is outside [", kMinHeight, ", ", kMaxSide, "]");
  double x_lo = HUGE_VAL, x_hi = -HUGE_VAL, y_lo = HUGE_VAL, y_hi = -HUGE_VAL;
  for (const auto& s : series) {
    VLMC_CHECK(s.x.size() == s.y.size(), "plot: series '", s.label, "' has ", s.x.size(), " x values but ",
               s.y.size(), " y values");
    for (size_t i = 0; i < s.x.size(); ++i)
      if (usable(s.x[i], s.y[i], o.log_y)) {
        x_lo = std::min(x_lo, s.x[i]), x_hi = std::max(x_hi, s.x[i]);
        y_lo = std::min(y_lo, s.y[i]), y_hi = std::max(y_hi, s.y[i]);
      }
  }
  Frame f;
  PlotFrame& p = f.frame;
  p.has_data = x_lo <= x_hi;
  p.log_y = o.log_y;
  if (!p.has_data) x_lo = 0, x_hi = 1, y_lo = o.log_y ? 1 : 0, y_hi = o.log_y ? 10 : 1;

  const Layout L = layout_for(o);
  p.top = o.title.empty() ? 3 * L.gap : 2 * L.gap + L.text_h + 3 * L.gap;
  p.bottom = o.height - 1 -
             (L.tick_len + L.gap + L.text_h + (o.x_label.empty() ? 0 : 2 * L.gap + L.text_h) + 2 * L.gap);
  const int plot_h = p.bottom - p.top;
  const Axis y = o.log_y ? log_axis(y_lo, y_hi, std::clamp(plot_h / (50 * L.scale), 2, 10))
                         : linear_axis(y_lo, y_hi, std::clamp(plot_h / (50 * L.scale), 2, 10));
  f.y_labels = tick_labels(y, o.log_y);
  int y_label_w = 0;
  for (const auto& s : f.y_labels) y_label_w = std::max(y_label_w, text_width(s, L.scale));
  p.left = 2 * L.gap + (o.y_label.empty() ? 0 : L.text_h + 2 * L.gap) + y_label_w + L.gap + L.tick_len;
  p.left = std::min(p.left, o.width / 2);  // absurdly long labels are clipped, the plot keeps half

  // The last x label is centred on the right frame line, so the right margin
  // depends on the labels, which depend on the plot width: settle it in two passes.
  int right_margin = 4 * L.gap;
  Axis x{};
  for (int pass = 0; pass < 2; ++pass) {
    p.right = o.width - 1 - right_margin;
    x = linear_axis(x_lo, x_hi, std::clamp((p.right - p.left) / (70 * L.scale), 2, 12));
    f.x_labels = tick_labels(x, false);
    right_margin = std::max(4 * L.gap, text_width(f.x_labels.back(), L.scale) / 2 + L.gap);
  }
  p.x_min = x.lo, p.x_max = x.hi, p.x_ticks = x.ticks;
  p.y_min = y.lo, p.y_max = y.hi, p.y_ticks = y.ticks;
  return f;
}

// ---- PNG ------------------------------------------------------------------------

void put_be32(std::vector<uint8_t>& out, uint32_t v) {
  for (int shift = 24; shift >= 0; shift -= 8) out.push_back(uint8_t(v >> shift));
}

void put_chunk(std::vector<uint8_t>& out, const char type[4], const std::vector<uint8_t>& data) {
  put_be32(out, uint32_t(data.size()));
  const size_t start = out.size();
  out.insert(out.end(), type, type + 4);
  out.insert(out.end(), data.begin(), data.end());
  const uLong crc = crc32(0L, out.data() + start, uInt(out.size() - start));
  put_be32(out, uint32_t(crc));
}

uint8_t paeth(int a, int b, int c) {
  const int p = a + b - c, pa = std::abs(p - a), pb = std::abs(p - b), pc = std::abs(p - c);
  return uint8_t(pa <= pb && pa <= pc ? a : pb <= pc ? b : c);
}

// One filtered scanline: the filter-type byte, then the filtered bytes.
void filter_row(int type, const uint8_t* row, const uint8_t* prev, size_t n, uint8_t* out) {
  constexpr size_t bpp = 3;
  out[0] = uint8_t(type);
  for (size_t i = 0; i < n; ++i) {
    const int a = i >= bpp ? row[i - bpp] : 0, b = prev[i], c = i >= bpp ? prev[i - bpp] : 0;
    const int predictor = type == 0 ? 0 : type == 1 ? a : type == 2 ? b : type == 3 ? (a + b) / 2 : paeth(a, b, c);
    out[i + 1] = uint8_t(row[i] - predictor);
  }
}

}  // namespace

Rgb Image::at(int x, int y) const {
  VLMC_CHECK(x >= 0 && y >= 0 && x < width && y < height, "Image::at: pixel (", x, ", ", y, ") is outside the ",
             width, "x", height, " image");
  const uint8_t* p = &rgb[(size_t(y) * size_t(width) + size_t(x)) * 3];
  return {p[0], p[1], p[2]};
}

std::vector<uint8_t> encode_png(const Image& image) {
  VLMC_CHECK(image.width > 0 && image.height > 0, "encode_png: image size ", image.width, "x", image.height,
             " is not positive");
  const size_t row_bytes = size_t(image.width) * 3;
  VLMC_CHECK(image.rgb.size() == row_bytes * size_t(image.height), "encode_png: a ", image.width, "x",
             image.height, " image needs ", row_bytes * size_t(image.height), " RGB bytes, got ", image.rgb.size());

  std::vector<uint8_t> raw((row_bytes + 1) * size_t(image.height));
  const std::vector<uint8_t> zero_row(row_bytes, 0);
  std::vector<uint8_t> trial(row_bytes + 1);
  for (int y = 0; y < image.height; ++y) {
    const uint8_t* row = image.rgb.data() + size_t(y) * row_bytes;
    const uint8_t* prev = y == 0 ? zero_row.data() : row - row_bytes;
    uint8_t* out = raw.data() + size_t(y) * (row_bytes + 1);
    uint64_t best_cost = UINT64_MAX;
    for (int type = 0; type <= 4; ++type) {
      filter_row(type, row, prev, row_bytes, trial.data());
      uint64_t cost = 0;
      for (size_t i = 1; i <= row_bytes; ++i) cost += uint64_t(std::abs(int(int8_t(trial[i]))));
      if (cost < best_cost) best_cost = cost, std::copy(trial.begin(), trial.end(), out);
    }
  }
  uLongf packed_size = compressBound(uLong(raw.size()));
  std::vector<uint8_t> packed(packed_size);
  const int rc = compress2(packed.data(), &packed_size, raw.data(), uLong(raw.size()), 6);
  VLMC_CHECK(rc == Z_OK, "encode_png: zlib compress2 failed (code ", rc, ")");
  packed.resize(packed_size);
  VLMC_CHECK(packed.size() < 0x7fffffffu, "encode_png: compressed data of ", packed.size(),
             " bytes does not fit one PNG chunk");

  std::vector<uint8_t> png = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  std::vector<uint8_t> ihdr;
  put_be32(ihdr, uint32_t(image.width));
  put_be32(ihdr, uint32_t(image.height));
  ihdr.insert(ihdr.end(), {8, 2, 0, 0, 0});  // 8-bit, truecolour, deflate, adaptive filters, no interlace
  put_chunk(png, "IHDR", ihdr);
  put_chunk(png, "IDAT", packed);
  put_chunk(png, "IEND", {});
  return png;
}

Rgb series_colour(size_t index) {
  // Okabe-Ito's colour-blind-safe set (darkest first), then two extra neutrals.
  static constexpr Rgb kPalette[] = {{0, 114, 178},  {213, 94, 0},    {0, 158, 115},   {204, 121, 167},
                                     {230, 159, 0},  {86, 180, 233},  {0, 0, 0},       {170, 150, 20},
                                     {120, 120, 120}, {140, 80, 60}};
  return kPalette[index % std::size(kPalette)];
}

double PlotFrame::pixel_x(double x) const { return left + (x - x_min) / (x_max - x_min) * (right - left); }

double PlotFrame::pixel_y(double y) const {
  const double t = log_y ? (std::log10(y) - std::log10(y_min)) / (std::log10(y_max) - std::log10(y_min))
                         : (y - y_min) / (y_max - y_min);
  return bottom - t * (bottom - top);
}

PlotFrame plot_frame(const std::vector<Series>& series, const PlotOptions& options) {
  return compute_frame(series, options).frame;
}

Image render_line_plot(const std::vector<Series>& series, const PlotOptions& options) {
  const Frame fr = compute_frame(series, options);
  const PlotFrame& f = fr.frame;
  const Layout L = layout_for(options);
  const int s = L.scale;

  Image image;
  image.width = options.width, image.height = options.height;
  image.rgb.assign(size_t(image.width) * size_t(image.height) * 3, 255);
  Canvas cv{image};
  const Rect area{f.left, f.top, f.right, f.bottom};

  // Grid and ticks. Labels that would touch the previous one are skipped.
  int last_right = INT32_MIN;
  for (size_t i = 0; i < f.x_ticks.size(); ++i) {
    const int col = int(std::lround(f.pixel_x(f.x_ticks[i])));
    cv.fill({col, f.top, col, f.bottom}, kGrid);
    cv.fill({col, f.bottom + 1, col, f.bottom + L.tick_len}, kInk);
    const int w = text_width(fr.x_labels[i], s), x = col - w / 2;
    if (x > last_right + L.gap) {
      cv.text(x, f.bottom + L.tick_len + L.gap, fr.x_labels[i], kInk, s);
      last_right = x + w;
    }
  }
  int last_top = INT32_MAX;
  for (size_t i = 0; i < f.y_ticks.size(); ++i) {
    const int row = int(std::lround(f.pixel_y(f.y_ticks[i])));
    cv.fill({f.left, row, f.right, row}, kGrid);
    cv.fill({f.left - L.tick_len, row, f.left - 1, row}, kInk);
    const int w = text_width(fr.y_labels[i], s), y = row - kCapH * s / 2;
    if (y + kCapH * s + L.gap / 2 < last_top) {
      cv.text(f.left - L.tick_len - L.gap - w, y, fr.y_labels[i], kInk, s);
      last_top = y;
    }
  }
  cv.outline(area, kInk);

  // Title, axis labels.
  const int mid_x = (f.left + f.right) / 2, mid_y = (f.top + f.bottom) / 2;
  cv.text(mid_x - text_width(options.title, s) / 2, 2 * L.gap, options.title, kInk, s);
  cv.text(mid_x - text_width(options.x_label, s) / 2, f.bottom + L.tick_len + L.gap + L.text_h + 2 * L.gap,
          options.x_label, kInk, s);
  cv.vertical_text(2 * L.gap, mid_y + text_width(options.y_label, s) / 2, options.y_label, kInk, s);

  // The lines: a run of usable points is a polyline; an isolated point, or any
  // point of a sparse series (eval points), also gets a square marker.
  const int pen = s;
  for (size_t si = 0; si < series.size(); ++si) {
    const Series& ser = series[si];
    const Rgb colour = series_colour(si);
    size_t n_usable = 0;
    for (size_t i = 0; i < ser.x.size(); ++i) n_usable += usable(ser.x[i], ser.y[i], f.log_y);
    const bool markers = n_usable <= 40;
    auto ok = [&](size_t i) { return i < ser.x.size() && usable(ser.x[i], ser.y[i], f.log_y); };
    auto px = [&](size_t i) { return int(std::lround(f.pixel_x(ser.x[i]))); };
    auto py = [&](size_t i) { return int(std::lround(f.pixel_y(ser.y[i]))); };
    for (size_t i = 0; i < ser.x.size(); ++i) {
      if (!ok(i)) continue;
      const bool joined_before = i > 0 && ok(i - 1), joined_after = ok(i + 1);
      if (joined_before) cv.line(px(i - 1), py(i - 1), px(i), py(i), pen, colour, area);
      if (markers || (!joined_before && !joined_after)) cv.stamp(px(i), py(i), 2 * pen + 3, colour, area);
    }
  }
  if (!f.has_data) {
    const std::string note = "no data";
    cv.text(mid_x - text_width(note, s) / 2, mid_y - kCapH * s / 2, note, kInk, s);
  }

  // Legend: a framed white box in the corner of the plot area with the fewest
  // line pixels under it (top right first: loss curves fall away from it).
  std::vector<size_t> entries;
  int label_w = 0;
  for (size_t i = 0; i < series.size(); ++i)
    if (!series[i].label.empty()) entries.push_back(i), label_w = std::max(label_w, text_width(series[i].label, s));
  if (!entries.empty()) {
    const int swatch = 14 * s, row_h = L.text_h + L.gap;
    const int w = L.gap + swatch + L.gap + label_w + L.gap, h = L.gap + int(entries.size()) * row_h;
    const int inset = L.gap;
    const Rect corners[] = {{f.right - inset - w, f.top + inset, f.right - inset, f.top + inset + h},
                            {f.left + inset, f.top + inset, f.left + inset + w, f.top + inset + h},
                            {f.right - inset - w, f.bottom - inset - h, f.right - inset, f.bottom - inset},
                            {f.left + inset, f.bottom - inset - h, f.left + inset + w, f.bottom - inset}};
    Rect best = corners[0];
    long best_ink = -1;
    for (const Rect& r : corners) {
      long ink = 0;
      for (int y = std::max(r.y0, 0); y <= std::min(r.y1, image.height - 1); ++y)
        for (int x = std::max(r.x0, 0); x <= std::min(r.x1, image.width - 1); ++x) {
          const Rgb c = image.at(x, y);
          ink += !(c == kWhite) && !(c == kGrid);
        }
      if (best_ink < 0 || ink < best_ink) best = r, best_ink = ink;
    }
    cv.fill(best, kWhite);
    cv.outline(best, kInk);
    for (size_t e = 0; e < entries.size(); ++e) {
      const int top = best.y0 + L.gap + int(e) * row_h;
      const int line_y = top + kCapH * s / 2;
      const Rgb colour = series_colour(entries[e]);
      cv.line(best.x0 + L.gap, line_y, best.x0 + L.gap + swatch, line_y, pen, colour, best);
      cv.text(best.x0 + 2 * L.gap + swatch, top, series[entries[e]].label, kInk, s);
    }
  }
  return image;
}

void write_line_plot_png(const std::string& path, const std::vector<Series>& series, const PlotOptions& options) {
  // Render and encode first: a bad option or series must not touch the disk.
  const std::vector<uint8_t> png = encode_png(render_line_plot(series, options));

  io::write_file_atomically(path, std::string_view(reinterpret_cast<const char*>(png.data()), png.size()),
                        "write_line_plot_png");
}

void plot_loss_history(const std::string& metrics_path, const std::string& png_path) {
  std::map<std::string, Series> by_stage;
  std::vector<std::string> order;
  for (const nlohmann::json& r : MetricsLog::read_all(metrics_path)) {
    if (!r.contains("loss") || !r.contains("step") || !r["loss"].is_number()) continue;
    const std::string stage = r.value("stage", "");
    if (!by_stage.count(stage)) order.push_back(stage);
    Series& s = by_stage[stage];
    s.label = stage;
    s.x.push_back(r["step"].get<double>());
    s.y.push_back(r["loss"].get<double>());
  }
  std::vector<Series> series;
  for (const std::string& stage : order) series.push_back(by_stage[stage]);
  PlotOptions options;
  options.title = "training loss";
  options.log_y = true;
  write_line_plot_png(png_path, series, options);
}

void plot_validation_history(const std::string& metrics_path, const std::string& png_path) {
  std::map<std::string, Series> answers, captions;
  std::vector<std::string> order;
  std::map<std::string, double> last_step;  // per stage, in its own steps
  for (const nlohmann::json& r : MetricsLog::read_all(metrics_path)) {
    if (!r.contains("validation") || !r["validation"].is_object() || !r.contains("step")) continue;
    const std::string stage = r.value("stage", "");
    if (!answers.count(stage)) order.push_back(stage);
    const nlohmann::json& v = r["validation"];
    const double step = r["step"].get<double>();
    last_step[stage] = std::max(last_step[stage], step);
    answers[stage].x.push_back(step);
    answers[stage].y.push_back(100.0 * v.value("answer_accuracy", NAN));
    captions[stage].x.push_back(step);
    captions[stage].y.push_back(v.contains("kinds") ? 100.0 * v["kinds"].value("caption", NAN) : NAN);
  }
  std::vector<Series> series;
  double offset = 0;
  for (const std::string& stage : order) {
    for (auto* by_stage : {&answers, &captions}) {
      Series s = (*by_stage)[stage];
      for (double& x : s.x) x += offset;
      s.label = stage + (by_stage == &answers ? " answers" : " captions");
      series.push_back(std::move(s));
    }
    offset += last_step[stage];
  }
  PlotOptions options;
  options.title = "validation accuracy";
  options.x_label = "optimizer steps since stage 1 began";
  options.y_label = "% exact";
  write_line_plot_png(png_path, series, options);
}

}  // namespace vlmc::train
