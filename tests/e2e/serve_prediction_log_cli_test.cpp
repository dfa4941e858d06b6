// The prediction log of a real `kiln serve`: one line per answered row (the response's id, ID#k
// for a batch's rows) with its class, confidence and the XXH3-128 of the row's float32 bytes, a
// line per feedback item, written by the time the server has stopped; --prediction-log off
// writes nothing; bad flag values exit 2.
#include <gtest/gtest.h>
#include <signal.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "serve_helpers.h"
#include "support/test_support.h"

namespace kiln {
namespace {

using testing::HttpClient;
using testing::HttpResult;
using testing::ServerProcess;
using testing::TempDir;
using Json = nlohmann::json;
namespace fs = std::filesystem;

/// XXH3-128 of the float32 bytes of `row` in canonical hex, by libxxhash directly (not Kiln's
/// code): what `xxh128sum` prints for those bytes.
std::string xxh128_of_floats(const std::vector<float>& row) {
  XXH128_canonical_t c;
  XXH128_canonicalFromHash(&c, XXH3_128bits(row.data(), row.size() * sizeof(float)));
  std::string hex;
  char buf[3];
  for (unsigned char b : c.digest) {
    std::snprintf(buf, sizeof buf, "%02x", b);
    hex += buf;
  }
  return hex;
}

/// A row of 30 features, each exactly a float32 (so the server's float32 is the same value).
std::vector<float> make_row(int seed) {
  std::vector<float> row;
  for (int j = 0; j < 30; ++j) row.push_back(static_cast<float>(0.37 * (seed + 1) * (j + 1)));
  return row;
}

std::string infer_json(const std::vector<std::vector<float>>& rows, const std::string& id) {
  Json data = Json::array();
  for (const auto& row : rows)
    for (float v : row) data.push_back(static_cast<double>(v));
  Json body{{"inputs",
             {{{"name", "input"},
               {"shape", {static_cast<int>(rows.size()), 30}},
               {"datatype", "FP32"},
               {"data", data}}}}};
  if (!id.empty()) body["id"] = id;
  return body.dump();
}

std::vector<Json> read_json_lines(const fs::path& path) {
  std::vector<Json> lines;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);) {
    Json j = Json::parse(line, nullptr, false);
    EXPECT_FALSE(j.is_discarded()) << line;
    lines.push_back(j);
  }
  return lines;
}

TEST(ServePredictionLogCliTest, LogsEveryRowWithItsIdPredictionAndInputHashAndTheFeedback) {
  TempDir home;
  const auto bundle = testing::train_breast_cancer_bundle(home.path(), home / "bundle-run");
  ServerProcess srv({"--model", bundle.string(), "--prediction-log-max-mb", "1"}, home.path(),
                    home / "log");
  ASSERT_TRUE(srv.ready()) << srv.log();
  HttpClient c(srv.port());
  const Json labels = Json::parse(c.get("/v2/models/bundle").body)["parameters"]["labels"];
  ASSERT_EQ(labels.size(), 2u) << labels;

  std::map<std::string, std::vector<float>> sent;  // id in the log -> the row
  for (const std::string id : {"a", "b", "c"}) {
    sent[id] = make_row(static_cast<int>(sent.size()));
    HttpResult r = c.post("/v2/models/bundle/infer", infer_json({sent[id]}, id));
    ASSERT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(Json::parse(r.body)["id"], id);
  }
  HttpResult r = c.post("/v2/models/bundle/infer", infer_json({make_row(7)}, ""));
  ASSERT_EQ(r.status, 200) << r.body;
  sent[Json::parse(r.body)["id"].get<std::string>()] = make_row(7);
  const std::vector<std::vector<float>> batch{make_row(10), make_row(11), make_row(12)};
  r = c.post("/v2/models/bundle/infer", infer_json(batch, "batch"));
  ASSERT_EQ(r.status, 200) << r.body;
  for (size_t k = 0; k < batch.size(); ++k) sent["batch#" + std::to_string(k)] = batch[k];
  // The binary tensor extension: the hash is of the very bytes sent.
  const std::string header =
      R"({"id":"bin","inputs":[{"name":"input","shape":[1,30],"datatype":"FP32","parameters":{"binary_data_size":120}}]})";
  sent["bin"] = make_row(20);
  r = c.post("/v2/models/bundle/infer",
             header + std::string(reinterpret_cast<const char*>(sent["bin"].data()), 120),
             {"Content-Type: application/octet-stream",
              "Inference-Header-Content-Length: " + std::to_string(header.size())});
  ASSERT_EQ(r.status, 200) << r.body;

  Json feedback = Json::array({{{"id", "a"}, {"truth", labels[0]}},
                               {{"id", "batch#1"}, {"truth", labels[1]}},
                               {{"id", "never-seen"}, {"truth", labels[0]}}});
  r = c.post("/v2/models/bundle/feedback", feedback.dump());
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(Json::parse(r.body)["joined"], 2);

  const std::string metrics = c.get("/metrics").body;
  EXPECT_NE(metrics.find("# TYPE kiln_prediction_log_lines_total counter"), std::string::npos);
  EXPECT_NE(metrics.find("kiln_prediction_log_dropped_total 0"), std::string::npos) << metrics;

  // Lines may still be in memory (written within a second); stopping writes them all.
  srv.signal(SIGTERM);
  ASSERT_EQ(srv.wait_exit(), 0) << srv.log();
  const fs::path file = home / "logs" / ("predictions-" + std::to_string(srv.port()) + ".jsonl");
  ASSERT_TRUE(fs::exists(file)) << srv.log();
  std::map<std::string, Json> predicted, truth;
  for (const Json& line : read_json_lines(file)) {
    EXPECT_EQ(line["model"], "bundle") << line;
    EXPECT_EQ(line["version"], "1") << line;
    EXPECT_GT(line["ts"].get<double>(), 1.7e9) << line;
    (line.contains("truth") ? truth : predicted)[line["id"].get<std::string>()] = line;
  }
  ASSERT_EQ(predicted.size(), sent.size());
  for (const auto& [id, row] : sent) {
    ASSERT_TRUE(predicted.count(id)) << id;
    const Json& line = predicted[id];
    EXPECT_EQ(line["input_xxh128"], xxh128_of_floats(row)) << line;
    EXPECT_FALSE(line.contains("inputs"));
    EXPECT_NE(std::find(labels.begin(), labels.end(), line["prediction"]), labels.end()) << line;
    EXPECT_GE(line["confidence"].get<double>(), 0.5) << line;
    EXPECT_LE(line["confidence"].get<double>(), 1.0) << line;
  }
  ASSERT_EQ(truth.size(), 3u);
  EXPECT_EQ(truth["a"]["truth"], labels[0]);
  EXPECT_EQ(truth["batch#1"]["truth"], labels[1]);
  EXPECT_TRUE(truth.count("never-seen"));  // logged though the server forgot (or never saw) it

  // --prediction-log inputs stores the values; off writes no file.
  {
    ServerProcess inputs({"--model", bundle.string(), "--prediction-log", "inputs"}, home.path(),
                         home / "log2");
    ASSERT_TRUE(inputs.ready()) << inputs.log();
    HttpClient c2(inputs.port());
    ASSERT_EQ(c2.post("/v2/models/bundle/infer", infer_json({sent["a"]}, "x")).status, 200);
    inputs.signal(SIGTERM);
    ASSERT_EQ(inputs.wait_exit(), 0);
    const std::vector<Json> lines = read_json_lines(
        home / "logs" / ("predictions-" + std::to_string(inputs.port()) + ".jsonl"));
    ASSERT_EQ(lines.size(), 1u);
    EXPECT_EQ(lines[0]["inputs"].get<std::vector<float>>(), sent["a"]);
    EXPECT_FALSE(lines[0].contains("input_xxh128"));
  }
  fs::remove_all(home / "logs");
  ServerProcess off({"--model", bundle.string(), "--prediction-log", "off"}, home.path(),
                    home / "log3");
  ASSERT_TRUE(off.ready()) << off.log();
  HttpClient c3(off.port());
  ASSERT_EQ(c3.post("/v2/models/bundle/infer", infer_json({sent["a"]}, "y")).status, 200);
  off.signal(SIGTERM);
  ASSERT_EQ(off.wait_exit(), 0);
  EXPECT_FALSE(fs::exists(home / "logs"));
}

TEST(ServePredictionLogCliTest, BadPredictionLogFlagsExit2NamingTheFlag) {
  TempDir home;
  for (const std::vector<std::string>& flags :
       std::vector<std::vector<std::string>>{{"--prediction-log", "sha"},
                                             {"--prediction-log-max-mb", "0"},
                                             {"--prediction-log-files", "-1"},
                                             {"--prediction-log-files", "many"}}) {
    std::vector<std::string> args{"serve", "--model", (home / "none").string(), "--port", "0"};
    args.insert(args.end(), flags.begin(), flags.end());
    const testing::CommandResult r = testing::run_kiln(args, home.path());
    EXPECT_EQ(r.exit_code, 2) << flags[0] << " " << flags[1] << ": " << r.err;
    EXPECT_NE((r.out + r.err).find(flags[0]), std::string::npos) << r.out << r.err;
  }
}

}  // namespace
}  // namespace kiln
