#include "train/progress.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <exception>
#include <utility>

#include "core/error.h"

namespace vlmc::train {

namespace {

// A terminal redraw faster than this is invisible and only costs time.
constexpr double kTtyRedrawS = 0.1;

std::string printf_str(const char* fmt, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, fmt, v);
  return buf;
}

std::string format_loss(double loss) {
  if (std::isnan(loss)) return "nan";
  if (std::isinf(loss)) return loss > 0 ? "inf" : "-inf";
  // Fixed point reads best for ordinary losses; a huge one would be 30 digits wide.
  return printf_str(std::fabs(loss) < 1e5 ? "%.4f" : "%.3e", loss);
}

// 850, 12.3k, 4.5M, 1.2G: three significant digits are all a rate deserves.
std::string format_rate(double r) {
  if (r < 1e3) return printf_str("%.0f", r);
  if (r < 1e6) return printf_str("%.1fk", r / 1e3);
  if (r < 1e9) return printf_str("%.1fM", r / 1e6);
  return printf_str("%.1fG", r / 1e9);
}

}  // namespace

ProgressBar::ProgressBar(std::string label, int64_t total_steps, int64_t start_step, FILE* out,
                         std::optional<bool> tty, double log_every_s)
    : label_(std::move(label)),
      total_(total_steps),
      start_(start_step),
      out_(out),
      log_every_s_(log_every_s),
      t0_(Clock::now()),
      last_draw_(t0_),
      step_(start_step),
      exceptions_at_start_(std::uncaught_exceptions()) {
  VLMC_CHECK(total_steps >= 1, "ProgressBar '", label_, "': total_steps must be >= 1, got ", total_steps);
  VLMC_CHECK(start_step >= 0 && start_step <= total_steps, "ProgressBar '", label_, "': start_step ", start_step,
             " is outside [0, ", total_steps, "]");
  VLMC_CHECK(out != nullptr, "ProgressBar '", label_, "': output stream is null");
  VLMC_CHECK(log_every_s >= 0, "ProgressBar '", label_, "': log_every_s must be >= 0, got ", log_every_s);
  if (label_.size() > kMaxLabel) label_ = label_.substr(0, kMaxLabel - 3) + "...";
  tty_ = tty ? *tty : ::isatty(::fileno(out)) == 1;
}

ProgressBar::~ProgressBar() {
  // A destructor must not throw; a failed final write to stderr is not worth dying for.
  try {
    if (!finished_ && std::uncaught_exceptions() > exceptions_at_start_) {
      // Unwinding from an error: the bar did not finish, so do not say how long it "took".
      finished_ = true;
      draw(line(step_, stats_, "stopped after " + format_duration(seconds_since_start())), true);
      return;
    }
    finish();
  } catch (...) {
  }
}

std::string ProgressBar::format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  // Round once, then split, so 59.6 s reads "1m00s" and never "60s".
  const long long s = std::llround(seconds);
  char buf[48];
  if (s < 60)
    std::snprintf(buf, sizeof buf, "%llds", s);
  else if (s < 3600)
    std::snprintf(buf, sizeof buf, "%lldm%02llds", s / 60, s % 60);
  else
    std::snprintf(buf, sizeof buf, "%lldh%02lldm", s / 3600, (s % 3600) / 60);
  return buf;
}

std::string ProgressBar::line(int64_t step, const ProgressStats& stats, const std::string& tail) const {
  const int64_t shown = std::clamp<int64_t>(step, 0, total_);
  // 128-bit so a step count near INT64_MAX cannot overflow the product.
  const int filled = static_cast<int>(static_cast<__int128>(shown) * kBarWidth / total_);
  std::string s = label_ + " [" + std::string(filled, '#') + std::string(kBarWidth - filled, '.') + "] " +
                  std::to_string(step) + "/" + std::to_string(total_);
  s += " loss " + format_loss(stats.loss);
  if (std::isfinite(stats.lr)) s += " lr " + printf_str("%.2e", stats.lr);
  if (std::isfinite(stats.tokens_per_s) && stats.tokens_per_s >= 0)
    s += " tok/s " + format_rate(stats.tokens_per_s);
  if (std::isfinite(stats.validation)) s += " val " + printf_str("%.1f%%", 100.0 * stats.validation);
  s += " " + tail;
  // Only absurd values (19-digit step counts, centuries of ETA) get here.
  if (s.size() > kMaxColumns) s.resize(kMaxColumns);
  return s;
}

std::string ProgressBar::render(int64_t step, const ProgressStats& stats, double elapsed_s) const {
  const int64_t done = step - start_;
  std::string eta = "ETA --";  // no rate yet
  if (step >= total_)
    eta = "ETA 0s";
  else if (done > 0 && elapsed_s > 0)
    eta = "ETA " + format_duration(static_cast<double>(total_ - step) * elapsed_s / static_cast<double>(done));
  return line(step, stats, eta);
}

double ProgressBar::seconds_since_start() const {
  return std::chrono::duration<double>(Clock::now() - t0_).count();
}

void ProgressBar::draw(const std::string& text, bool final_line) {
  if (tty_) {
    // Blank what is left of a longer previous line, then end the line only at
    // the end so the next output starts on a fresh one.
    std::string padded = text;
    if (last_width_ > text.size()) padded.append(last_width_ - text.size(), ' ');
    std::fprintf(out_, "\r%s%s", padded.c_str(), final_line ? "\n" : "");
    last_width_ = final_line ? 0 : text.size();
  } else {
    std::fprintf(out_, "%s\n", text.c_str());
  }
  std::fflush(out_);
  last_draw_ = Clock::now();
  drawn_ = true;
}

void ProgressBar::update(int64_t step, const ProgressStats& stats) {
  if (finished_) return;
  step_ = step;
  stats_ = stats;
  const double since_draw = std::chrono::duration<double>(Clock::now() - last_draw_).count();
  if (tty_) {
    if (!drawn_ || since_draw >= kTtyRedrawS || step >= total_) draw(render(step, stats, seconds_since_start()), false);
  } else if (since_draw >= log_every_s_) {
    draw(render(step, stats, seconds_since_start()), false);
  }
}

void ProgressBar::finish() {
  if (finished_) return;
  finished_ = true;
  draw(line(step_, stats_, "took " + format_duration(seconds_since_start())), true);
}

}  // namespace vlmc::train
