#include "kiln/serve/prediction_memory.h"

#include <gtest/gtest.h>

#include <string>

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

}  // namespace
}  // namespace kiln::serve
