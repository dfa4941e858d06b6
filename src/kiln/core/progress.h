#pragma once

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>

namespace kiln {

/// Progress of long work. On a TTY it redraws one line with a bar, count, rate and ETA; otherwise
/// it prints a plain line at most every `plain_interval` seconds (and at the end), so logs stay
/// readable. Not thread-safe: call update() from one thread.
///
///   ProgressBar bar("profile", total_rows, "rows");
///   for (...) bar.update(done, "loss 0.31");
///   bar.finish();
class ProgressBar {
 public:
  ProgressBar(std::string label, int64_t total, std::string unit = "items", FILE* out = stderr);
  ~ProgressBar();

  /// Sets the absolute count and an optional suffix (e.g. a running metric).
  void update(int64_t done, const std::string& suffix = "");
  void finish(const std::string& suffix = "");

  /// Seconds between plain (non-TTY) lines; default 5.
  void set_plain_interval(double seconds) { plain_interval_ = seconds; }
  bool is_tty() const { return tty_; }

  /// Formats seconds as "1h02m", "3m05s" or "12.3s".
  static std::string format_duration(double seconds);

 private:
  void draw(bool final_line);
  std::string label_;
  std::string unit_;
  std::string suffix_;
  int64_t total_;
  int64_t done_ = 0;
  FILE* out_;
  bool tty_;
  bool finished_ = false;
  double plain_interval_ = 5.0;
  std::chrono::steady_clock::time_point start_;
  std::chrono::steady_clock::time_point last_draw_;
};

}  // namespace kiln
