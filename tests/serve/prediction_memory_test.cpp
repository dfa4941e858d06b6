#include "kiln/serve/prediction_memory.h"

#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <map>
#include <new>
#include <random>
#include <string>

// Counts this binary's operator new calls, for the test that remembering allocates nothing.
namespace {
std::atomic<long> news_counted{0};
}  // namespace
void* operator new(std::size_t size) {
  news_counted.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(size ? size : 1)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }

namespace kiln::serve {
namespace {

TEST(PredictionMemory, FindsOneRowByIdAndBatchRowsByIdHashK) {
  PredictionMemory memory(10);
  memory.remember("single", 0, 1, 3, 0.0);
  for (int k = 0; k < 3; ++k) memory.remember("batch", k, 3, 10 + k, 0.5 * k);
  ASSERT_NE(memory.find("single"), nullptr);
  EXPECT_EQ(memory.find("single")->predicted, 3);
  EXPECT_EQ(memory.find("batch"), nullptr) << "a batch's rows are batch#k";
  ASSERT_NE(memory.find("batch#2"), nullptr);
  EXPECT_EQ(memory.find("batch#2")->predicted, 12);
  EXPECT_DOUBLE_EQ(memory.find("batch#1")->prediction, 0.5);
  EXPECT_EQ(memory.find("batch#3"), nullptr);
  EXPECT_EQ(memory.find("nobody"), nullptr);
  EXPECT_EQ(memory.size(), 4);
}

TEST(PredictionMemory, ForgetsTheOldestBeyondCapacity) {
  PredictionMemory memory(100);
  // Interleave finds so that part of the ring is indexed before it wraps.
  for (int i = 0; i < 1000; ++i) {
    memory.remember("r" + std::to_string(i), 0, 1, i, 0.0);
    if (i % 97 == 0) {
      EXPECT_NE(memory.find("r" + std::to_string(i)), nullptr);
    }
  }
  EXPECT_EQ(memory.size(), 100);
  for (int i = 0; i < 900; ++i) EXPECT_EQ(memory.find("r" + std::to_string(i)), nullptr) << i;
  for (int i = 900; i < 1000; ++i) {
    PredictionMemory::Entry* e = memory.find("r" + std::to_string(i));
    ASSERT_NE(e, nullptr) << i;
    EXPECT_EQ(e->predicted, i);
  }
}

TEST(PredictionMemory, LabelledStaysWithTheRowAndAReusedIdShadowsTheOldOne) {
  PredictionMemory memory(8);
  memory.remember("a", 0, 1, 1, 0.0);
  memory.find("a")->labelled = true;
  memory.remember("b", 0, 1, 2, 0.0);
  EXPECT_TRUE(memory.find("a")->labelled);
  EXPECT_FALSE(memory.find("b")->labelled);
  memory.remember("a", 0, 1, 7, 0.0);  // the same id again: a new prediction, not labelled
  EXPECT_EQ(memory.find("a")->predicted, 7);
  EXPECT_FALSE(memory.find("a")->labelled);
  // The newer "a" survives when the older one's slot is overwritten.
  for (int i = 0; i < 6; ++i) memory.remember("x" + std::to_string(i), 0, 1, 0, 0.0);
  ASSERT_NE(memory.find("a"), nullptr);
  EXPECT_EQ(memory.find("a")->predicted, 7);
}

TEST(PredictionMemory, IndexStaysBoundedUnderLongRuns) {
  PredictionMemory memory(50);
  for (int i = 0; i < 20000; ++i) {
    memory.remember("id-" + std::to_string(i), 0, 1, i % 10, 0.0);
    if (i % 7 == 0) {
      ASSERT_NE(memory.find("id-" + std::to_string(i)), nullptr);
    }
  }
  EXPECT_EQ(memory.find("id-19999")->predicted, 9);
  EXPECT_EQ(memory.find("id-19949"), nullptr);
  EXPECT_NE(memory.find("id-19950"), nullptr);
}

TEST(PredictionMemory, RememberingAllocatesNothing) {
  // Small long-lived allocations per row, between a busy server's tensors, pinned the freed
  // tensor memory: 1.3 GB of RSS for an MLP under 64-row requests.
  PredictionMemory memory(1000);
  const std::string long_id(300, 'x');  // hashed by streaming, not on the stack
  const long before = news_counted.load();
  for (int i = 0; i < 5000; ++i) {
    memory.remember("0a1b2c3d-" + std::to_string(i % 10), i % 64, 64, i % 10, 0.0);
    memory.remember(long_id, i % 3, 3, 1, 0.0);
    memory.remember("single", 0, 1, 2, 0.0);
  }
  // The strings built above are short enough for the small-string buffer: no allocation.
  EXPECT_EQ(news_counted.load() - before, 0);
  ASSERT_NE(memory.find(long_id + "#1"), nullptr);
  EXPECT_EQ(memory.find(long_id + "#1")->predicted, 1);
  EXPECT_EQ(memory.find(long_id), nullptr);
}

TEST(PredictionMemory, AgreesWithAPlainMapOverLongRandomRuns) {
  // Ids from a small pool (so rows shadow each other), batches of 1-5 rows, finds and labels
  // at random: every answer matches a map of row id -> newest (seq, predicted) in the window.
  std::mt19937 rng(7);
  for (int capacity : {1, 7, 64, 1000}) {
    PredictionMemory memory(capacity);
    std::map<std::string, std::pair<int64_t, int64_t>> newest;  // row id -> (seq, predicted)
    std::map<std::string, bool> labelled;
    int64_t seq = 0;
    for (int step = 0; step < 20000; ++step) {
      if (rng() % 4 != 0) {
        const std::string id = "req-" + std::to_string(rng() % (3 * capacity + 5));
        const int64_t rows = 1 + static_cast<int64_t>(rng() % 5);
        for (int64_t r = 0; r < rows; ++r) {
          const std::string row_id = rows == 1 ? id : id + "#" + std::to_string(r);
          const int64_t predicted = static_cast<int64_t>(rng() % 1000);
          memory.remember(id, r, rows, predicted, 0.0);
          newest[row_id] = {seq++, predicted};
          labelled[row_id] = false;
        }
      } else {
        const std::string id = "req-" + std::to_string(rng() % (3 * capacity + 5));
        const std::string row_id = rng() % 2 ? id : id + "#" + std::to_string(rng() % 5);
        auto it = newest.find(row_id);
        const bool live = it != newest.end() && it->second.first >= seq - capacity;
        PredictionMemory::Entry* e = memory.find(row_id);
        ASSERT_EQ(e != nullptr, live) << row_id << " at step " << step << ", capacity " << capacity;
        if (!e) continue;
        ASSERT_EQ(e->predicted, it->second.second) << row_id;
        ASSERT_EQ(e->labelled, labelled[row_id]) << row_id;
        e->labelled = true;
        labelled[row_id] = true;
      }
    }
    EXPECT_EQ(memory.size(), std::min<int64_t>(seq, capacity));
  }
}

}  // namespace
}  // namespace kiln::serve
