#include "kiln/serve/prediction_log.h"

#include <gtest/gtest.h>

#include <cmath>
#include <ctime>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include <fmt/format.h>
#define XXH_INLINE_ALL
#include <xxhash.h>

#include "kiln/monitor/metrics.h"
#include "support/test_support.h"

namespace kiln::serve {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;
using testing::TempDir;

std::vector<Json> read_lines(const fs::path& path) {
  std::vector<Json> lines;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    Json j = Json::parse(line, nullptr, false);
    EXPECT_FALSE(j.is_discarded()) << path << ": not JSON: " << line;
    lines.push_back(j);
  }
  return lines;
}

std::shared_ptr<const LoggedModel> classifier() {
  return std::make_shared<const LoggedModel>(LoggedModel{"mlp", "3", {"a", "b", "c"}});
}

std::shared_ptr<const LoggedModel> regressor() {
  return std::make_shared<const LoggedModel>(LoggedModel{"price", "1", {}});
}

/// XXH3-128 of the float32 bytes of `v` in canonical hex, by libxxhash itself (not Kiln's code).
std::string float_bytes_xxh128(const std::vector<float>& v) {
  XXH128_canonical_t c;
  XXH128_canonicalFromHash(&c, XXH3_128bits(v.data(), v.size() * sizeof(float)));
  std::string hex;
  for (unsigned char b : c.digest) hex += fmt::format("{:02x}", b);
  return hex;
}

/// Captures `inputs` (rows × width) as the server does, then queues the rows.
void log_rows(PredictionLog& log, std::shared_ptr<const LoggedModel> model, std::string id,
              int64_t rows, const std::vector<float>& inputs, std::vector<float> outputs) {
  log.log_predictions(std::move(model), std::move(id), rows,
                      log.capture_inputs(inputs.data(), rows,
                                         static_cast<int64_t>(inputs.size()) / rows),
                      std::move(outputs));
}

TEST(PredictionLog, ParsesTheFlagValues) {
  EXPECT_EQ(*parse_prediction_log_inputs("off"), PredictionLogInputs::kOff);
  EXPECT_EQ(*parse_prediction_log_inputs("hash"), PredictionLogInputs::kHash);
  EXPECT_EQ(*parse_prediction_log_inputs("inputs"), PredictionLogInputs::kInputs);
  EXPECT_FALSE(parse_prediction_log_inputs("sha").ok());
  EXPECT_EQ(PredictionLogOptions().inputs_, PredictionLogInputs::kHash);
}

TEST(PredictionLog, HashModeLogsEachBatchRowWithItsIdClassConfidenceAndInputHash) {
  TempDir dir;
  auto log = PredictionLog::Create(PredictionLogOptions(dir / "logs").file_name("p.jsonl"));
  ASSERT_TRUE(log.ok()) << log.status();
  const std::vector<float> row0{1.5f, -2.25f}, row1{0.1f, 3e-8f};
  std::vector<float> inputs = row0;
  inputs.insert(inputs.end(), row1.begin(), row1.end());
  const std::vector<float> logits{0.f, 2.f, 1.f, 5.f, 0.f, 0.f};
  log_rows(**log, classifier(), "req", 2, inputs, logits);
  log_rows(**log, classifier(), "single", 1, row1, {3.f, 0.f, 0.f});
  (*log)->log_feedback("mlp", "3", "req#1", "\"a\"");
  (*log)->close();
  const std::vector<Json> lines = read_lines(dir / "logs" / "p.jsonl");
  ASSERT_EQ(lines.size(), 4u);
  EXPECT_EQ(lines[0]["id"], "req#0");
  EXPECT_EQ(lines[1]["id"], "req#1");
  EXPECT_EQ(lines[2]["id"], "single");
  for (const Json& l : {lines[0], lines[1], lines[2]}) {
    EXPECT_EQ(l["model"], "mlp");
    EXPECT_EQ(l["version"], "3");
    EXPECT_FALSE(l.contains("inputs"));
    EXPECT_NEAR(l["ts"].get<double>(), std::time(nullptr), 5.0);
  }
  EXPECT_EQ(lines[0]["prediction"], "b");
  EXPECT_NEAR(lines[0]["confidence"].get<double>(),
              std::exp(2.0) / (1 + std::exp(2.0) + std::exp(1.0)), 1e-6);
  EXPECT_EQ(lines[1]["prediction"], "a");
  EXPECT_EQ(lines[0]["input_xxh128"], float_bytes_xxh128(row0));
  EXPECT_EQ(lines[1]["input_xxh128"], float_bytes_xxh128(row1));
  EXPECT_EQ(lines[2]["input_xxh128"], float_bytes_xxh128(row1));
  EXPECT_EQ(lines[3], (Json{{"ts", lines[3]["ts"]},
                            {"id", "req#1"},
                            {"model", "mlp"},
                            {"version", "3"},
                            {"truth", "a"}}));
  EXPECT_EQ((*log)->lines_written(), 4);
}

TEST(PredictionLog, InputsModeStoresTheRowValuesAndRegressionTheValue) {
  TempDir dir;
  auto log =
      PredictionLog::Create(PredictionLogOptions(dir.path()).inputs(PredictionLogInputs::kInputs));
  ASSERT_TRUE(log.ok()) << log.status();
  EXPECT_EQ((*log)->path(), dir / "predictions.jsonl");
  log_rows(**log, regressor(), "x", 2, {1.5f, 0.1f, -3.f, 1e20f}, {12.5f, -0.25f});
  (*log)->log_feedback("price", "1", "x#0", "13");
  (*log)->close();
  const std::vector<Json> lines = read_lines(dir / "predictions.jsonl");
  ASSERT_EQ(lines.size(), 3u);
  // Shortest round-trip text of each float32: read back as float32, the same value.
  EXPECT_EQ(lines[0]["inputs"].get<std::vector<float>>(), (std::vector<float>{1.5f, 0.1f}));
  EXPECT_EQ(lines[1]["inputs"].get<std::vector<float>>(), (std::vector<float>{-3.f, 1e20f}));
  EXPECT_EQ(lines[0]["prediction"], 12.5);
  EXPECT_EQ(lines[1]["prediction"], -0.25);
  EXPECT_FALSE(lines[0].contains("input_xxh128"));
  EXPECT_FALSE(lines[0].contains("confidence"));
  EXPECT_EQ(lines[2]["truth"], 13);
}

TEST(PredictionLog, OffWritesNothingAndOpensNoFile) {
  TempDir dir;
  auto log =
      PredictionLog::Create(PredictionLogOptions(dir / "logs").inputs(PredictionLogInputs::kOff));
  ASSERT_TRUE(log.ok()) << log.status();
  EXPECT_FALSE((*log)->enabled());
  log_rows(**log, classifier(), "r", 1, {1.f, 2.f}, {0.f, 1.f, 2.f});
  (*log)->log_feedback("mlp", "3", "r", "\"a\"");
  (*log)->close();
  EXPECT_FALSE(fs::exists(dir / "logs"));
  EXPECT_EQ((*log)->lines_written(), 0);
}

TEST(PredictionLog, RotatesBetweenWholeLinesAndBoundsEveryFile) {
  TempDir dir;
  constexpr int64_t kMaxBytes = 4096;
  auto log = PredictionLog::Create(PredictionLogOptions(dir.path())
                                       .file_name("p.jsonl")
                                       .inputs(PredictionLogInputs::kInputs)
                                       .max_bytes(kMaxBytes)
                                       .max_files(3)
                                       .flush_interval(std::chrono::milliseconds(5)));
  ASSERT_TRUE(log.ok()) << log.status();
  constexpr int kLines = 3000;
  for (int i = 0; i < kLines; ++i)
    log_rows(**log, regressor(), "r" + std::to_string(i), 1,
                            {static_cast<float>(i), 0.5f, 0.25f}, {static_cast<float>(i) / 7});
  (*log)->close();
  EXPECT_EQ((*log)->rows_dropped(), 0);
  EXPECT_EQ((*log)->lines_written(), kLines);
  EXPECT_FALSE(fs::exists(dir / "p.jsonl.4"));
  int64_t total = 0;
  std::vector<Json> all;  // oldest first
  for (const char* name : {"p.jsonl.3", "p.jsonl.2", "p.jsonl.1", "p.jsonl"}) {
    ASSERT_TRUE(fs::exists(dir / name)) << name;
    const int64_t size = static_cast<int64_t>(fs::file_size(dir / name));
    EXPECT_LE(size, kMaxBytes) << name;
    EXPECT_GT(size, kMaxBytes / 2) << name;
    EXPECT_EQ(testing::read_text(dir / name).back(), '\n') << name;
    total += size;
    for (Json& j : read_lines(dir / name)) all.push_back(std::move(j));
  }
  EXPECT_LE(total, kMaxBytes * 4);
  // The files hold the newest lines, consecutive, the very last in the live file.
  ASSERT_FALSE(all.empty());
  const int first = kLines - static_cast<int>(all.size());
  for (size_t k = 0; k < all.size(); ++k)
    ASSERT_EQ(all[k]["id"], "r" + std::to_string(first + static_cast<int>(k)));
  EXPECT_EQ(all.back()["id"], "r" + std::to_string(kLines - 1));
}

TEST(PredictionLog, MaxFilesZeroKeepsOnlyTheLiveFile) {
  TempDir dir;
  auto log = PredictionLog::Create(
      PredictionLogOptions(dir.path()).max_bytes(1000).max_files(0).background_writer(false));
  ASSERT_TRUE(log.ok()) << log.status();
  for (int i = 0; i < 100; ++i) log_rows(**log, regressor(), "r", 1, {1.f}, {2.f});
  (*log)->close();
  EXPECT_LE(fs::file_size(dir / "predictions.jsonl"), 1000u);
  EXPECT_FALSE(fs::exists(dir / "predictions.jsonl.1"));
}

TEST(PredictionLog, AFullQueueDropsAndCountsRowsWithoutBlocking) {
  TempDir dir;
  monitor::MetricsRegistry registry;
  PredictionLogMetrics metrics;
  metrics.lines = &registry.counter("kiln_prediction_log_lines_total", "Lines.", {}).with({});
  metrics.dropped = &registry.counter("kiln_prediction_log_dropped_total", "Dropped.", {}).with({});
  // Rows of 1000 floats (4000 bytes, kept whole in inputs mode): two requests fit in the queue,
  // the third does not. No writer thread, so nothing drains the queue until flush().
  auto log = PredictionLog::Create(PredictionLogOptions(dir.path())
                                       .inputs(PredictionLogInputs::kInputs)
                                       .max_queue_bytes(10000)
                                       .background_writer(false),
                                   metrics);
  ASSERT_TRUE(log.ok()) << log.status();
  const std::vector<float> row(1000, 0.5f);
  for (int i = 0; i < 10; ++i)
    log_rows(**log, classifier(), "r" + std::to_string(i), 1, row, {1.f, 0.f, 0.f});
  EXPECT_EQ((*log)->rows_dropped(), 8);
  (*log)->flush();
  EXPECT_EQ((*log)->lines_written(), 2);
  // Room again once written; a batch's rows are dropped together.
  std::vector<float> two_rows(2000, 0.25f);
  log_rows(**log, classifier(), "b", 2, two_rows, {0.f, 1.f, 0.f, 0.f, 0.f, 1.f});
  log_rows(**log, classifier(), "c", 2, two_rows, {0.f, 1.f, 0.f, 0.f, 0.f, 1.f});
  (*log)->close();
  EXPECT_EQ((*log)->rows_dropped(), 10);
  EXPECT_EQ((*log)->lines_written(), 4);
  EXPECT_EQ(metrics.dropped->value(), 10);
  EXPECT_EQ(metrics.lines->value(), 4);
  const std::vector<Json> lines = read_lines(dir / "predictions.jsonl");
  ASSERT_EQ(lines.size(), 4u);
  EXPECT_EQ(lines[0]["id"], "r0");
  EXPECT_EQ(lines[1]["id"], "r1");
  EXPECT_EQ(lines[2]["id"], "b#0");
  EXPECT_EQ(lines[3]["id"], "b#1");
  // After close, nothing is queued or counted.
  log_rows(**log, classifier(), "late", 1, row, {1.f, 0.f, 0.f});
  EXPECT_EQ((*log)->rows_dropped(), 10);
}

TEST(PredictionLog, ALineLongerThanAFileIsDroppedAndCounted) {
  TempDir dir;
  auto log = PredictionLog::Create(PredictionLogOptions(dir.path())
                                       .inputs(PredictionLogInputs::kInputs)
                                       .max_bytes(200)
                                       .background_writer(false));
  ASSERT_TRUE(log.ok()) << log.status();
  log_rows(**log, regressor(), "big", 1, std::vector<float>(100, 0.123f), {1.f});
  log_rows(**log, regressor(), "small", 1, {1.f}, {1.f});
  (*log)->close();
  EXPECT_EQ((*log)->rows_dropped(), 1);
  const std::vector<Json> lines = read_lines(dir / "predictions.jsonl");
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(lines[0]["id"], "small");
}

TEST(PredictionLog, BackgroundWriterWritesWithinTheFlushInterval) {
  TempDir dir;
  auto log = PredictionLog::Create(
      PredictionLogOptions(dir.path()).flush_interval(std::chrono::milliseconds(50)));
  ASSERT_TRUE(log.ok()) << log.status();
  log_rows(**log, regressor(), "soon", 1, {1.f}, {2.f});
  for (int i = 0; i < 200 && (*log)->lines_written() == 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_EQ((*log)->lines_written(), 1);
  EXPECT_EQ(read_lines(dir / "predictions.jsonl").size(), 1u);
}

TEST(PredictionLog, AnUnwritableDirectoryIsAnErrorNamingIt) {
  TempDir dir;
  testing::write_text(dir / "file", "x");
  auto log = PredictionLog::Create(PredictionLogOptions(dir / "file" / "logs"));
  ASSERT_FALSE(log.ok());
  EXPECT_NE(log.status().message().find("file/logs"), std::string::npos) << log.status();
}

}  // namespace
}  // namespace kiln::serve
