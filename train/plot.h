// Loss-curve plots as PNG files, with no plotting library: the trainer writes
// runs/<name>/loss.png (loss against step, one line per stage and the eval
// points) from these functions.
//
// We rasterize ourselves (lines, a built-in 5x8 bitmap font, "nice" ticks) into
// an 8-bit RGB Image and encode it as PNG with zlib, which the build already
// links. Everything is deterministic: the same series and options give the same
// bytes, so plots can be compared in tests.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace vlmc::train {

struct Rgb {
  uint8_t r, g, b;
  bool operator==(const Rgb&) const = default;
};

struct Image {
  int width = 0, height = 0;
  std::vector<uint8_t> rgb;  // row-major, 3 bytes per pixel, top row first

  Rgb at(int x, int y) const;  // throws vlmc::Error outside the image
};

// PNG bytes of an 8-bit RGB image. Each row gets the PNG filter (0..4) with the
// smallest sum of absolute filtered bytes, the usual heuristic that lets zlib
// shrink flat plot backgrounds to almost nothing. Throws vlmc::Error if the
// size is not positive or rgb does not hold width*height*3 bytes.
std::vector<uint8_t> encode_png(const Image& image);

// One line of the plot. x and y must have the same length (else vlmc::Error
// naming the series). Non-finite points (and, with log_y, y <= 0) are skipped
// and break the line there; an isolated point is drawn as a dot.
struct Series {
  std::string label;
  std::vector<double> x, y;
};

struct PlotOptions {
  int width = 900, height = 540;  // pixels, each in [200, 8192] x [150, 8192]
  std::string title, x_label = "step", y_label = "loss";
  bool log_y = false;
};

// Series i is drawn in series_colour(i): a fixed palette of 10 colours chosen
// to stay distinguishable for colour-blind readers; it repeats after 10.
Rgb series_colour(size_t index);

// Where data lands in the image: the plot area (frame lines included) and the
// axis ranges, which always start and end on a tick. render_line_plot draws
// with exactly this frame; it is public so callers and tests can place things
// in data coordinates.
struct PlotFrame {
  int left = 0, top = 0, right = 0, bottom = 0;  // pixel columns/rows of the frame lines
  double x_min = 0, x_max = 1, y_min = 0, y_max = 1;
  bool log_y = false;
  std::vector<double> x_ticks, y_ticks;  // 1/2/5 x 10^k values inside the ranges
  bool has_data = false;                 // false -> axes with a "no data" note

  double pixel_x(double x) const;  // data -> image column (fractional)
  double pixel_y(double y) const;  // data -> image row (fractional; larger y is higher up)
};

// Checks the options and series (vlmc::Error naming the bad option or series).
PlotFrame plot_frame(const std::vector<Series>& series, const PlotOptions& options);

// White background, frame, light grid at the ticks, tick labels, title, axis
// labels, the lines (2 px wide at the default size) and a legend in the corner
// of the plot area that covers the fewest line pixels. No series, or no finite
// point, still gives a valid image: the axes and a "no data" note.
Image render_line_plot(const std::vector<Series>& series, const PlotOptions& options);

// Renders and writes a PNG atomically: a temporary file beside `path`, flushed,
// then renamed over it, so readers never see half a plot. Throws vlmc::Error
// naming the path if it cannot be written, leaving no file behind.
void write_line_plot_png(const std::string& path, const std::vector<Series>& series,
                         const PlotOptions& options);

// loss.png from every record of metrics.jsonl with a "loss" and a "step",
// one line per "stage" (so a resumed run plots its whole history).
void plot_loss_history(const std::string& metrics_path, const std::string& png_path);

// validation.png from the "validation" records of metrics.jsonl: answer
// accuracy and whole-caption accuracy (%) against the optimizer steps since
// the first validated stage began, each stage's steps after the previous
// stage's last, so stage 2's forgetting of captions shows where it happens.
void plot_validation_history(const std::string& metrics_path, const std::string& png_path);

}  // namespace vlmc::train
