#include "kiln/improve/production_rows.h"

#include <gtest/gtest.h>

#include <fstream>

#include "support/test_support.h"

namespace kiln::improve {
namespace {

using testing::TempDir;

void write(const std::filesystem::path& p, const std::string& text) { std::ofstream(p) << text; }

TEST(ProductionRows, JoinsPredictionsToFeedbackAcrossRotatedFiles) {
  TempDir dir;
  // The live file and a rotated one; feedback may come before (in the older file) or after.
  write(
      dir / "predictions-8000.jsonl.1",
      R"({"ts": 1.0, "id": "a", "model": "stable", "version": "1", "prediction": "x", "inputs": [1, 2]}
{"ts": 1.5, "id": "b", "model": "stable", "version": "1", "prediction": "x", "input_xxh128": "00"}
{"ts": 1.7, "id": "c", "model": "other", "version": "1", "prediction": "x", "inputs": [5, 6]}
{"ts": 1.8, "id": "d", "model": "stable", "version": "1", "truth": "y"}
)");
  write(
      dir / "predictions-8000.jsonl",
      R"({"ts": 2.0, "id": "d", "model": "canary", "version": "2", "prediction": "y", "inputs": [3, 4]}
{"ts": 2.1, "id": "e", "model": "stable", "version": "1", "prediction": "y", "inputs": [7, 8]}
{"ts": 2.2, "id": "a", "model": "stable", "version": "1", "truth": 1}
{"ts": 2.3, "id": "b", "model": "stable", "version": "1", "truth": "x"}
{"ts": 2.4, "id": "c", "model": "other", "version": "1", "truth": "x"}
{"ts": 2.5, "id": "torn", "mod)");
  write(dir / "unrelated.txt", "not a log\n");
  auto rows = read_production_rows(dir.path(), {"stable", "canary"});
  ASSERT_TRUE(rows.ok()) << rows.status();
  ASSERT_EQ(rows->rows.size(), 2u);
  EXPECT_EQ(rows->rows[0].id, "a");
  EXPECT_EQ(rows->rows[0].inputs, (std::vector<float>{1, 2}));
  EXPECT_EQ(rows->rows[0].truth, 1);
  EXPECT_EQ(rows->rows[1].id, "d");
  EXPECT_EQ(rows->rows[1].model, "canary");
  EXPECT_EQ(rows->rows[1].truth, "y");
  EXPECT_EQ(rows->files, 2);
  EXPECT_EQ(rows->predictions, 4);  // a, b, d, e (c is another model's)
  EXPECT_EQ(rows->hashed_predictions, 1);
  EXPECT_EQ(rows->feedback, 4);
  EXPECT_EQ(rows->unlabelled, 1);  // e
  EXPECT_EQ(rows->bad_lines, 1);   // the torn last line

  auto all = read_production_rows(dir.path(), {});
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(all->rows.size(), 3u);  // c too
}

TEST(ProductionRows, ADirectoryWithoutLogsIsNotFound) {
  TempDir dir;
  auto rows = read_production_rows(dir.path(), {});
  ASSERT_FALSE(rows.ok());
  EXPECT_EQ(rows.status().code(), StatusCode::kNotFound);
  EXPECT_NE(rows.status().message().find("--prediction-log inputs"), std::string::npos);
}

TEST(ProductionRows, HoldoutIsStableAndNearTheFraction) {
  int held = 0;
  for (int i = 0; i < 10000; ++i) {
    const std::string id = "req-" + std::to_string(i);
    const bool h = in_holdout(id, 0.3);
    EXPECT_EQ(h, in_holdout(id, 0.3));
    if (in_holdout(id, 0.1)) {
      EXPECT_TRUE(in_holdout(id, 0.3)) << "nested: " << id;
    }
    held += h;
  }
  EXPECT_NEAR(held / 10000.0, 0.3, 0.02);
  EXPECT_FALSE(in_holdout("x", 0.0));
  EXPECT_TRUE(in_holdout("x", 1.0));
}

}  // namespace
}  // namespace kiln::improve
