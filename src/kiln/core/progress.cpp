#include "kiln/core/progress.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>

namespace kiln {

ProgressBar::ProgressBar(std::string label, int64_t total, std::string unit, FILE* out)
    : label_(std::move(label)),
      unit_(std::move(unit)),
      total_(total),
      out_(out),
      tty_(::isatty(::fileno(out)) == 1),
      start_(std::chrono::steady_clock::now()),
      last_draw_(start_) {}

ProgressBar::~ProgressBar() {
  if (!finished_) finish();
}

std::string ProgressBar::format_duration(double s) {
  char buf[32];
  if (!std::isfinite(s) || s < 0) return "?";
  if (s >= 3600) {
    std::snprintf(buf, sizeof buf, "%dh%02dm", static_cast<int>(s / 3600),
                  static_cast<int>(std::fmod(s, 3600) / 60));
  } else if (s >= 60) {
    std::snprintf(buf, sizeof buf, "%dm%02ds", static_cast<int>(s / 60),
                  static_cast<int>(std::fmod(s, 60)));
  } else {
    std::snprintf(buf, sizeof buf, "%.1fs", s);
  }
  return buf;
}

void ProgressBar::update(int64_t done, const std::string& suffix) {
  done_ = done;
  suffix_ = suffix;
  auto now = std::chrono::steady_clock::now();
  double since = std::chrono::duration<double>(now - last_draw_).count();
  if (tty_ ? since >= 0.1 : since >= plain_interval_) {
    last_draw_ = now;
    draw(false);
  }
}

void ProgressBar::finish(const std::string& suffix) {
  if (finished_) return;
  finished_ = true;
  if (!suffix.empty()) suffix_ = suffix;
  if (total_ > 0) done_ = std::max(done_, total_);
  draw(true);
}

void ProgressBar::draw(bool final_line) {
  double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  double rate = elapsed > 0 ? done_ / elapsed : 0.0;
  double eta = (rate > 0 && total_ > 0) ? (total_ - done_) / rate : NAN;
  double frac = total_ > 0 ? std::min(1.0, static_cast<double>(done_) / total_) : 0.0;
  std::string tail = suffix_.empty() ? "" : " | " + suffix_;
  if (tty_) {
    constexpr int kWidth = 28;
    int filled = static_cast<int>(frac * kWidth);
    std::string bar(filled, '#');
    bar.resize(kWidth, '.');
    std::fprintf(out_, "\r\033[K%s [%s] %3.0f%% %lld/%lld %s %.0f %s/s %s %s%s", label_.c_str(),
                 bar.c_str(), frac * 100, static_cast<long long>(done_),
                 static_cast<long long>(total_), unit_.c_str(), rate, unit_.c_str(),
                 final_line ? "in" : "ETA", format_duration(final_line ? elapsed : eta).c_str(),
                 tail.c_str());
    if (final_line) std::fputc('\n', out_);
  } else {
    std::fprintf(out_, "%s: %lld/%lld %s (%.0f%%), %.0f %s/s, %s %s%s\n", label_.c_str(),
                 static_cast<long long>(done_), static_cast<long long>(total_), unit_.c_str(),
                 frac * 100, rate, unit_.c_str(), final_line ? "took" : "ETA",
                 format_duration(final_line ? elapsed : eta).c_str(), tail.c_str());
  }
  std::fflush(out_);
}

}  // namespace kiln
