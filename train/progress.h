// A one-line training progress bar that behaves well both on a terminal and in
// a CI log.
//
// On a TTY it redraws one line in place with '\r' (at most ~10 times a second,
// so a fast loop does not spend its time writing to the terminal). Anywhere
// else it prints a complete line at most every `log_every_s` seconds and one
// final line, so a log stays a few lines long however many steps run.
//
// The ETA comes from the rate since `start_step`: a resumed run did not do the
// skipped steps, and counting them as instant would make the ETA far too short.
#pragma once

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <optional>
#include <string>

namespace vlmc::train {

// What the trainer knows after a step. NaN lr / tokens_per_s mean "unknown"
// and are left out of the line; the loss is always shown, "nan"/"inf"
// included, since a non-finite loss is exactly what the user must see.
struct ProgressStats {
  double loss = NAN;
  double lr = NAN;
  double tokens_per_s = NAN;
  double validation = NAN;  // the last validation's answer accuracy (0..1), when the stage validates
};

class ProgressBar {
 public:
  // total_steps >= 1, 0 <= start_step <= total_steps. `tty` overrides the
  // isatty(fileno(out)) detection (tests, or a caller that knows better).
  ProgressBar(std::string label, int64_t total_steps, int64_t start_step = 0, FILE* out = stderr,
              std::optional<bool> tty = std::nullopt, double log_every_s = 10.0);
  ~ProgressBar();
  ProgressBar(const ProgressBar&) = delete;
  ProgressBar& operator=(const ProgressBar&) = delete;

  // `step` = steps done so far (1..total_steps).
  void update(int64_t step, const ProgressStats& stats);
  // Prints the final line with the total time. Idempotent; the destructor calls it.
  void finish();

  // "42s", "3m05s", "1h02m"; "?" for a negative or non-finite duration.
  static std::string format_duration(double seconds);
  // The line for `step` after `elapsed_s` seconds since construction, e.g.
  // "stage1 [#########...........] 120/400 loss 2.3456 lr 9.87e-04 tok/s 12.3k ETA 1m12s".
  // Pure: depends only on its arguments and the constructor's.
  std::string render(int64_t step, const ProgressStats& stats, double elapsed_s) const;

  static constexpr int kBarWidth = 20;
  static constexpr size_t kMaxLabel = 24;   // longer labels are clipped
  static constexpr size_t kMaxColumns = 119;  // a line never exceeds this

 private:
  using Clock = std::chrono::steady_clock;
  std::string line(int64_t step, const ProgressStats& stats, const std::string& tail) const;
  void draw(const std::string& text, bool final_line);
  double seconds_since_start() const;

  std::string label_;
  int64_t total_;
  int64_t start_;
  FILE* out_;
  bool tty_;
  double log_every_s_;
  Clock::time_point t0_;
  Clock::time_point last_draw_;
  bool drawn_ = false;        // anything drawn yet (the first TTY draw is never rate-limited)
  size_t last_width_ = 0;     // of the line on screen, to blank a longer previous one
  int64_t step_;
  ProgressStats stats_;
  bool finished_ = false;
  int exceptions_at_start_ = 0;  // std::uncaught_exceptions() when constructed
};

}  // namespace vlmc::train
