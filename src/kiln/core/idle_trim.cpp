#include "kiln/core/idle_trim.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace kiln {
namespace {

/// Resident bytes of this process (/proc/self/statm), 0 when unreadable.
int64_t resident_bytes() {
  std::FILE* f = std::fopen("/proc/self/statm", "r");
  if (!f) return 0;
  long long size = 0, resident = 0;
  const int got = std::fscanf(f, "%lld %lld", &size, &resident);
  std::fclose(f);
  return got == 2 ? resident * static_cast<int64_t>(::sysconf(_SC_PAGESIZE)) : 0;
}

}  // namespace

IdleMemoryTrimmer::IdleMemoryTrimmer(std::function<uint64_t()> activity,
                                     std::chrono::milliseconds idle,
                                     std::function<void(int64_t)> on_trim)
    : activity_(std::move(activity)), idle_(idle), on_trim_(std::move(on_trim)) {
  thread_ = std::thread([this] { run(); });
}

IdleMemoryTrimmer::~IdleMemoryTrimmer() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

int64_t IdleMemoryTrimmer::trims() const {
  std::lock_guard<std::mutex> lock(mu_);
  return trims_;
}

int64_t IdleMemoryTrimmer::released_bytes() const {
  std::lock_guard<std::mutex> lock(mu_);
  return released_bytes_;
}

void IdleMemoryTrimmer::run() {
  using Clock = std::chrono::steady_clock;
  const auto tick = std::max(std::chrono::milliseconds(1), idle_ / 2);
  uint64_t seen = activity_();
  bool busy_since_trim = false;
  Clock::time_point last_move = Clock::now();
  std::unique_lock<std::mutex> lock(mu_);
  while (!cv_.wait_for(lock, tick, [this] { return stopping_; })) {
    const uint64_t now_seen = activity_();
    if (now_seen != seen) {
      seen = now_seen;
      busy_since_trim = true;
      last_move = Clock::now();
      continue;
    }
    if (!busy_since_trim || Clock::now() - last_move < idle_) continue;
    busy_since_trim = false;
    lock.unlock();
    const int64_t before = resident_bytes();
#if defined(__GLIBC__)
    malloc_trim(0);
#endif
    // Memory another thread took meanwhile can make RSS grow: nothing released, then.
    const int64_t released = std::max<int64_t>(0, before - resident_bytes());
    if (on_trim_) on_trim_(released);
    lock.lock();
    ++trims_;
    released_bytes_ += released;
  }
}

}  // namespace kiln
