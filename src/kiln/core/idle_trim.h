#pragma once
// Giving a server's freed heap back to the kernel once a burst is over.

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>

namespace kiln {

/// configure_allocator_for_tensors() keeps freed memory in the heap (trim threshold 1 GiB) so
/// that busy loops do not page-fault their tensors back in; after a burst of traffic that memory
/// stays resident for nothing. This thread samples `activity` (a counter the owner bumps, e.g.
/// requests received) every `idle` / 2; when it has not moved for at least `idle` after moving,
/// it calls malloc_trim(0) once (which also returns free pages inside the heap) and waits for
/// the next burst. Never trims while activity moves, so a busy server never pays for it. Owns its
/// thread: the destructor stops and joins it. `activity` must be thread-safe and outlive this;
/// `on_trim` (optional) is called on that thread after each trim with the resident bytes it
/// released (RSS before - after, at least 0), e.g. to count them on /metrics.
class IdleMemoryTrimmer {
 public:
  IdleMemoryTrimmer(std::function<uint64_t()> activity, std::chrono::milliseconds idle,
                    std::function<void(int64_t released_bytes)> on_trim = {});
  ~IdleMemoryTrimmer();
  IdleMemoryTrimmer(const IdleMemoryTrimmer&) = delete;
  IdleMemoryTrimmer& operator=(const IdleMemoryTrimmer&) = delete;

  /// Trims done so far, and the resident bytes they released in all.
  int64_t trims() const;
  int64_t released_bytes() const;

 private:
  void run();

  std::function<uint64_t()> activity_;
  std::chrono::milliseconds idle_;
  std::function<void(int64_t)> on_trim_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  int64_t trims_ = 0;
  int64_t released_bytes_ = 0;
  std::thread thread_;
};

}  // namespace kiln
