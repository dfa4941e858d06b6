// The idle trimmer trims once after activity stops, never while it moves, and never before any.
#include "kiln/core/idle_trim.h"

#include <gtest/gtest.h>
#include <malloc.h>

#include <atomic>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

namespace kiln {
namespace {

using std::chrono::milliseconds;

/// Waits up to 5 s for `done`.
template <typename F>
bool eventually(F done) {
  for (int i = 0; i < 500 && !done(); ++i) std::this_thread::sleep_for(milliseconds(10));
  return done();
}

TEST(IdleMemoryTrimmerTest, TrimsOnceAfterABurstAndNeverWhileBusy) {
  std::atomic<uint64_t> activity{0};
  IdleMemoryTrimmer trimmer([&] { return activity.load(); }, milliseconds(500));
  // No activity yet: nothing to give back.
  std::this_thread::sleep_for(milliseconds(700));
  EXPECT_EQ(trimmer.trims(), 0);
  // Busy for a second (a move every 10 ms, far inside the 500 ms idle time): no trim.
  for (int i = 0; i < 100; ++i) {
    ++activity;
    std::this_thread::sleep_for(milliseconds(10));
  }
  EXPECT_EQ(trimmer.trims(), 0);
  // Idle: one trim, and only one however long it stays idle.
  ASSERT_TRUE(eventually([&] { return trimmer.trims() == 1; }));
  std::this_thread::sleep_for(milliseconds(1200));
  EXPECT_EQ(trimmer.trims(), 1);
  // The next burst earns the next trim.
  ++activity;
  ASSERT_TRUE(eventually([&] { return trimmer.trims() == 2; }));
}

TEST(IdleMemoryTrimmerTest, ReportsTheResidentMemoryItGaveBack) {
  // As a server configures its allocator: freed memory stays in the heap until a trim.
  ::mallopt(M_TRIM_THRESHOLD, 1 << 30);
  std::atomic<uint64_t> activity{0};
  std::atomic<int64_t> reported{0}, calls{0};
  IdleMemoryTrimmer trimmer([&] { return activity.load(); }, milliseconds(300),
                            [&](int64_t released) {
                              EXPECT_GE(released, 0);
                              reported += released;
                              ++calls;
                            });
  {
    // A burst that touches 64 MiB in 4 KiB blocks (heap, not mmap) and frees it again.
    std::vector<std::unique_ptr<char[]>> blocks;
    for (int i = 0; i < 16384; ++i) {
      blocks.emplace_back(new char[4096]);
      std::memset(blocks.back().get(), i & 0xff, 4096);
    }
    ++activity;
  }
  ASSERT_TRUE(eventually([&] { return trimmer.trims() == 1; }));
  EXPECT_EQ(calls.load(), 1);
  EXPECT_EQ(trimmer.released_bytes(), reported.load());
  EXPECT_GT(trimmer.released_bytes(), int64_t{32} << 20);
}

}  // namespace
}  // namespace kiln
