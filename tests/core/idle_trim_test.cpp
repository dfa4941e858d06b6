// The idle trimmer trims once after activity stops, never while it moves, and never before any.
#include "kiln/core/idle_trim.h"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>

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

}  // namespace
}  // namespace kiln
