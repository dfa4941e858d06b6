// `kiln serve` end to end: the real binary on a free loopback port, real bundles trained on the
// breast-cancer CSV, real HTTP. Covers every endpoint and error path, batching, hot reload under
// load, a broken version leaving the old one serving, promtool on /metrics, SIGTERM drain, and a
// model saved by Python's torch.jit.save.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <thread>

#include "kiln/core/hash.h"
#include "serve_helpers.h"
#include "support/test_support.h"

namespace kiln {
namespace {

using testing::CommandResult;
using testing::HttpClient;
using testing::HttpResult;
using testing::read_text;
using testing::run_kiln;
using testing::ServerProcess;
using testing::shared_datasets_dir;
using testing::TempDir;
using testing::write_text;
using Json = nlohmann::json;
namespace fs = std::filesystem;

/// Shared across the suite: two breast-cancer bundles trained with different seeds.
class ServeCliTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    home_ = new TempDir();
    for (int seed : {1, 2}) {
      const fs::path out = home_->path() / ("run" + std::to_string(seed));
      CommandResult r = run_kiln(
          // --model mlp: a two-hidden-layer MLP without the model search (faster, and its
          // linear layers exercise prepacking).
          {"train", "--data", (shared_datasets_dir() / "breast_cancer.csv").string(), "--target",
           "diagnosis", "--model", "mlp", "--set", "seed=" + std::to_string(seed), "--out",
           out.string()},
          home_->path(), {"KILN_THREADS=1"});
      ASSERT_EQ(r.exit_code, 0) << r.err;
    }
    // The first 4 rows' 30 features, as the raw CSV gives them.
    std::ifstream in(shared_datasets_dir() / "breast_cancer.csv");
    std::string line;
    std::getline(in, line);
    for (int i = 0; i < 4 && std::getline(in, line); ++i) {
      std::vector<double> row;
      std::stringstream ss(line);
      std::string cell;
      while (std::getline(ss, cell, ',') && row.size() < 30) row.push_back(std::stod(cell));
      rows_.push_back(row);
    }
  }
  static void TearDownTestSuite() {
    delete home_;
    home_ = nullptr;
  }
  static fs::path bundle(int seed) {
    return home_->path() / ("run" + std::to_string(seed)) / "bundle";
  }
  static std::string body(int n, const std::string& extra = "") {
    Json data = Json::array();
    for (int i = 0; i < n; ++i) data.push_back(rows_[static_cast<size_t>(i % 4)]);
    Json j{{"inputs",
            Json::array({Json{
                {"name", "input"}, {"shape", {n, 30}}, {"datatype", "FP32"}, {"data", data}}})}};
    std::string s = j.dump();
    if (!extra.empty()) s = s.substr(0, s.size() - 1) + "," + extra + "}";
    return s;
  }
  static std::string error_of(const HttpResult& r) {
    Json j = Json::parse(r.body, nullptr, false);
    return j.is_object() && j.contains("error") && j["error"].is_string()
               ? j["error"].get<std::string>()
               : "<no error field in: " + r.body + ">";
  }

  static TempDir* home_;
  static std::vector<std::vector<double>> rows_;
};
TempDir* ServeCliTest::home_ = nullptr;
std::vector<std::vector<double>> ServeCliTest::rows_;

TEST_F(ServeCliTest, EndpointsAnswerTheOpenInferenceProtocol) {
  TempDir t;
  ServerProcess srv({"--model", bundle(1).string()}, t.path(), t / "log");
  ASSERT_TRUE(srv.ready()) << srv.log();
  EXPECT_NE(srv.ready_line().find("(models: bundle:1)"), std::string::npos) << srv.ready_line();
  HttpClient c(srv.port());

  EXPECT_EQ(c.get("/v2/health/live").status, 200);
  EXPECT_EQ(c.get("/v2/health/ready").status, 200);
  HttpResult meta = c.get("/v2");
  ASSERT_EQ(meta.status, 200);
  Json m = Json::parse(meta.body);
  EXPECT_EQ(m["name"], "kiln");
  EXPECT_TRUE(m.contains("version"));
  EXPECT_EQ(m["extensions"][0], "binary_tensor_data");

  for (std::string path : {"/v2/models/bundle", "/v2/models/bundle/versions/1"}) {
    HttpResult r = c.get(path);
    ASSERT_EQ(r.status, 200) << path << r.body;
    Json j = Json::parse(r.body);
    EXPECT_EQ(j["name"], "bundle");
    EXPECT_EQ(j["versions"], Json::array({"1"}));
    EXPECT_EQ(j["platform"], "pytorch_torchscript");
    EXPECT_EQ(j["inputs"][0], (Json{{"name", "input"}, {"datatype", "FP32"}, {"shape", {-1, 30}}}));
    EXPECT_EQ(j["outputs"][0]["name"], "logits");
    EXPECT_EQ(j["outputs"][1]["name"], "probabilities");
    EXPECT_EQ(j["outputs"][2]["name"], "labels");
    EXPECT_EQ(c.get(path + "/ready").status, 200);
    EXPECT_EQ(Json::parse(c.get(path + "/ready").body)["ready"], true);
  }

  // Batched JSON inference, id echoed, default output = the signature's logits.
  HttpResult r = c.post("/v2/models/bundle/infer", body(3, "\"id\": \"req-7\""));
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.headers["content-type"], "application/json");
  Json j = Json::parse(r.body);
  EXPECT_EQ(j["model_name"], "bundle");
  EXPECT_EQ(j["model_version"], "1");
  EXPECT_EQ(j["id"], "req-7");
  ASSERT_EQ(j["outputs"].size(), 1u);
  EXPECT_EQ(j["outputs"][0]["name"], "logits");
  EXPECT_EQ(j["outputs"][0]["shape"], Json::array({3, 2}));
  EXPECT_EQ(j["outputs"][0]["data"].size(), 6u);
  const std::vector<float> logits = j["outputs"][0]["data"].get<std::vector<float>>();

  // Versioned path, requested classifier extras; the same rows give the same logits.
  r = c.post(
      "/v2/models/bundle/versions/1/infer",
      body(3, R"("outputs": [{"name": "probabilities"}, {"name": "labels"}, {"name": "logits"}])"));
  ASSERT_EQ(r.status, 200) << r.body;
  j = Json::parse(r.body);
  ASSERT_EQ(j["outputs"].size(), 3u);
  EXPECT_EQ(j["outputs"][0]["name"], "probabilities");
  auto probs = j["outputs"][0]["data"].get<std::vector<float>>();
  ASSERT_EQ(probs.size(), 6u);
  for (int i = 0; i < 3; ++i) EXPECT_NEAR(probs[2 * i] + probs[2 * i + 1], 1.0, 1e-5);
  EXPECT_EQ(j["outputs"][1]["datatype"], "BYTES");
  EXPECT_EQ(j["outputs"][1]["shape"], Json::array({3}));
  for (int i = 0; i < 3; ++i) {
    const std::string label = j["outputs"][1]["data"][i];
    EXPECT_EQ(label, logits[2 * i + 1] > logits[2 * i] ? "malignant" : "benign");
  }
  EXPECT_EQ(j["outputs"][2]["data"].get<std::vector<float>>(), logits);
  // The first rows of the dataset are malignant; a trained model says so.
  EXPECT_EQ(j["outputs"][1]["data"][0], "malignant");

  // "Expect: 100-continue" (curl's habit for large bodies): the headers alone get an interim
  // "100 Continue" at once, then the body gets the answer.
  {
    const std::string b1 = body(1);
    const int fd = testing::connect_loopback(srv.port());
    ASSERT_GE(fd, 0);
    const std::string head =
        "POST /v2/models/bundle/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        "Expect: 100-continue\r\nConnection: close\r\nContent-Length: " +
        std::to_string(b1.size()) + "\r\n\r\n";
    ASSERT_EQ(::send(fd, head.data(), head.size(), 0), static_cast<ssize_t>(head.size()));
    pollfd pfd{fd, POLLIN, 0};
    ASSERT_EQ(::poll(&pfd, 1, 2000), 1) << "no interim response to Expect: 100-continue";
    char buf[65536];
    ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
    ASSERT_GT(n, 0);
    EXPECT_EQ(std::string(buf, static_cast<size_t>(n)).rfind("HTTP/1.1 100 Continue\r\n", 0), 0u);
    ASSERT_EQ(::send(fd, b1.data(), b1.size(), 0), static_cast<ssize_t>(b1.size()));
    std::string reply;
    while (::poll(&pfd, 1, 5000) == 1 && (n = ::recv(fd, buf, sizeof(buf), 0)) > 0)
      reply.append(buf, static_cast<size_t>(n));
    ::close(fd);
    EXPECT_EQ(reply.rfind("HTTP/1.1 200 OK\r\n", 0), 0u) << reply;
  }

  // Other numeric datatypes are converted: FP64 and INT32 (integers in the data).
  Json b = Json::parse(body(1));
  b["inputs"][0]["datatype"] = "FP64";
  EXPECT_EQ(c.post("/v2/models/bundle/infer", b.dump()).status, 200);
  Json ints = b;
  std::vector<int> iv(30, 1);
  ints["inputs"][0]["datatype"] = "INT32";
  ints["inputs"][0]["data"] = iv;
  EXPECT_EQ(c.post("/v2/models/bundle/infer", ints.dump()).status, 200);

  // Binary tensor data extension: FP32 input bytes after the JSON header, binary output back.
  std::string header =
      R"({"inputs":[{"name":"input","shape":[2,30],"datatype":"FP32","parameters":{"binary_data_size":240}}],)"
      R"("outputs":[{"name":"logits","parameters":{"binary_data":true}}]})";
  std::string raw = header;
  for (int i = 0; i < 2; ++i)
    for (double v : rows_[static_cast<size_t>(i)]) {
      float f = static_cast<float>(v);
      raw.append(reinterpret_cast<const char*>(&f), 4);
    }
  r = c.post("/v2/models/bundle/infer", raw,
             {"Content-Type: application/octet-stream",
              "Inference-Header-Content-Length: " + std::to_string(header.size())});
  ASSERT_EQ(r.status, 200) << r.body;
  const size_t json_len = std::stoul(r.headers["inference-header-content-length"]);
  Json bj = Json::parse(r.body.substr(0, json_len));
  EXPECT_EQ(bj["outputs"][0]["parameters"]["binary_data_size"], 16);
  ASSERT_EQ(r.body.size(), json_len + 16);
  float got[4];
  std::memcpy(got, r.body.data() + json_len, 16);
  for (int i = 0; i < 4; ++i) EXPECT_NEAR(got[i], logits[static_cast<size_t>(i)], 1e-4);

  // Non-finite values (only the binary extension can carry them): an Infinity is refused with a
  // 400 naming the row and position; a NaN is a missing value this bundle's imputer fills in.
  auto binary_request = [&](float planted) {
    std::string body = header;
    for (int i = 0; i < 2; ++i)
      for (size_t j = 0; j < 30; ++j) {
        float f = i == 1 && j == 7 ? planted : static_cast<float>(rows_[static_cast<size_t>(i)][j]);
        body.append(reinterpret_cast<const char*>(&f), 4);
      }
    return c.post("/v2/models/bundle/infer", body,
                  {"Content-Type: application/octet-stream",
                   "Inference-Header-Content-Length: " + std::to_string(header.size())});
  };
  r = binary_request(std::numeric_limits<float>::infinity());
  EXPECT_EQ(r.status, 400) << r.body;
  EXPECT_NE(r.body.find("row 1, value 7 is +Infinity"), std::string::npos) << r.body;
  r = binary_request(std::numeric_limits<float>::quiet_NaN());
  EXPECT_EQ(r.status, 200) << r.body;
}

// The default serves linear layers through XNNPACK's prepacked operators (checked at load);
// --no-prepack serves model.pt as saved; both give the same logits.
TEST_F(ServeCliTest, PrepackedAndAsSavedServingGiveTheSameLogits) {
  TempDir t;
  ServerProcess prepacked({"--model", bundle(1).string()}, t.path(), t / "log1");
  ServerProcess as_saved({"--model", bundle(1).string(), "--no-prepack"}, t.path(), t / "log2");
  ASSERT_TRUE(prepacked.ready()) << prepacked.log();
  ASSERT_TRUE(as_saved.ready()) << as_saved.log();
  EXPECT_NE(prepacked.log().find("XNNPACK prepacked operators (outputs checked)"),
            std::string::npos)
      << prepacked.log();
  EXPECT_EQ(as_saved.log().find("XNNPACK"), std::string::npos) << as_saved.log();
  std::vector<std::vector<float>> logits;
  for (ServerProcess* srv : {&prepacked, &as_saved}) {
    HttpResult r = HttpClient(srv->port()).post("/v2/models/bundle/infer", body(4));
    ASSERT_EQ(r.status, 200) << r.body;
    logits.push_back(Json::parse(r.body)["outputs"][0]["data"].get<std::vector<float>>());
  }
  ASSERT_EQ(logits[0].size(), 8u);
  ASSERT_EQ(logits[1].size(), 8u);
  for (size_t i = 0; i < 8; ++i)
    EXPECT_NEAR(logits[0][i], logits[1][i], 1e-4 * (1 + std::abs(logits[1][i]))) << i;
}

TEST_F(ServeCliTest, ErrorsAre4xxWithAnErrorField) {
  TempDir t;
  ServerProcess srv({"--model", bundle(1).string(), "--max-batch", "8", "--max-body-bytes",
                     "100000", "--access-log"},
                    t.path(), t / "log");
  ASSERT_TRUE(srv.ready()) << srv.log();
  HttpClient c(srv.port());
  auto expect = [&](const HttpResult& r, int status, const std::string& part) {
    EXPECT_EQ(r.status, status) << r.body;
    EXPECT_NE(error_of(r).find(part), std::string::npos) << error_of(r);
  };
  const std::string infer = "/v2/models/bundle/infer";
  expect(c.post(infer, "{\"inputs\": [1,"), 400, "inputs[0]");
  expect(c.post(infer, "not json"), 400, "request");
  Json b = Json::parse(body(1));
  Json bytes = b;
  bytes["inputs"][0]["datatype"] = "BYTES";
  expect(c.post(infer, bytes.dump()), 400, "BYTES");
  Json strings = b;
  strings["inputs"][0]["data"][0] = "x";
  expect(c.post(infer, strings.dump()), 400, "inputs[0].data[0]");
  Json unknown_type = b;
  unknown_type["inputs"][0]["datatype"] = "FLOAT";
  expect(c.post(infer, unknown_type.dump()), 400, "inputs[0].datatype");
  Json bad_shape = b;
  bad_shape["inputs"][0]["shape"] = {1, 29};
  expect(c.post(infer, bad_shape.dump()), 400, "inputs[0].shape");
  Json count = b;
  count["inputs"][0]["shape"] = {2, 30};
  expect(c.post(infer, count.dump()), 400, "holds 60 elements, the data has 30");
  Json huge = b;
  huge["inputs"][0]["shape"] = {4294967296LL, 4294967296LL};
  expect(c.post(infer, huge.dump()), 400, "inputs[0].shape");
  Json name = b;
  name["inputs"][0]["name"] = "pixels";
  expect(c.post(infer, name.dump()), 400, "inputs[0].name");
  expect(c.post(infer, body(9)), 400, "max batch of 8");
  expect(c.post(infer, body(1, R"("outputs": [{"name": "scores"}])")), 400, "outputs[0].name");
  expect(c.post("/v2/models/nope/infer", body(1)), 404, "unknown model \"nope\"");
  expect(c.post("/v2/models/bundle/versions/7/infer", body(1)), 404, "no version \"7\"");
  expect(c.get("/v2/models/nope"), 404, "unknown model");
  expect(c.get("/v2/models/bundle/versions/7/ready"), 404, "no version");
  expect(c.get("/v2/models/bundle/infer"), 405, "GET");
  expect(c.get("/v3/what"), 404, "no route");
  expect(c.post(infer, body(600)), 413, "exceeds the limit of 100000 bytes");
  // The server is still fine after all that.
  HttpClient c2(srv.port());
  EXPECT_EQ(c2.post(infer, body(2)).status, 200);
  srv.signal(SIGTERM);
  EXPECT_EQ(srv.wait_exit(), 0);
  // --access-log: one JSON line per request.
  const std::string log = srv.log();
  EXPECT_NE(log.find("\"method\": \"GET\", \"path\": \"/v3/what\", \"status\": 404"),
            std::string::npos)
      << log;
  EXPECT_NE(log.find("\"status\": 413"), std::string::npos) << log;
}

TEST_F(ServeCliTest, PipelinedRequestsAreAnsweredInOrder) {
  TempDir t;
  ServerProcess srv({"--model", bundle(1).string()}, t.path(), t / "log");
  ASSERT_TRUE(srv.ready()) << srv.log();
  // Three inferences (ids a, b, c), a health check and a bad request in one write on one
  // connection; the last request closes it.
  std::string all;
  auto post = [&](const std::string& b, const std::string& extra_header) {
    all += "POST /v2/models/bundle/infer HTTP/1.1\r\nHost: x\r\n" + extra_header +
           "Content-Type: application/json\r\nContent-Length: " + std::to_string(b.size()) +
           "\r\n\r\n" + b;
  };
  post(body(1, R"("id": "a")"), "");
  post(body(2, R"("id": "b")"), "");
  all += "GET /v2/health/ready HTTP/1.1\r\nHost: x\r\n\r\n";
  post(body(1, R"("id": "c")"), "");
  post("{", "Connection: close\r\n");
  const int fd = testing::connect_loopback(srv.port());
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::send(fd, all.data(), all.size(), 0), static_cast<ssize_t>(all.size()));
  std::string reply;
  char buf[65536];
  pollfd pfd{fd, POLLIN, 0};
  ssize_t n;
  while (::poll(&pfd, 1, 10000) == 1 && (n = ::recv(fd, buf, sizeof(buf), 0)) > 0)
    reply.append(buf, static_cast<size_t>(n));
  ::close(fd);
  std::vector<size_t> at;
  for (const char* want : {"\"id\": \"a\"", "\"id\": \"b\"", "{\"ready\": true}", "\"id\": \"c\"",
                           "HTTP/1.1 400 Bad Request"}) {
    at.push_back(reply.find(want));
    ASSERT_NE(at.back(), std::string::npos) << want << " in:\n" << reply;
  }
  EXPECT_TRUE(std::is_sorted(at.begin(), at.end())) << reply;
  size_t oks = 0;
  for (size_t p = reply.find("HTTP/1.1 200 OK"); p != std::string::npos;
       p = reply.find("HTTP/1.1 200 OK", p + 1))
    ++oks;
  EXPECT_EQ(oks, 4u) << reply;
}

TEST_F(ServeCliTest, ApiKeyIsRequiredExceptForHealth) {
  TempDir t;
  write_text(t / "key", "s3cret\n");
  ServerProcess srv({"--model", bundle(1).string(), "--api-key-file", (t / "key").string()},
                    t.path(), t / "log");
  ASSERT_TRUE(srv.ready()) << srv.log();
  HttpClient c(srv.port());
  EXPECT_EQ(c.get("/v2/health/ready").status, 200);
  HttpResult r = c.post("/v2/models/bundle/infer", body(1));
  EXPECT_EQ(r.status, 401);
  EXPECT_NE(error_of(r).find("API key"), std::string::npos);
  EXPECT_EQ(c.get("/metrics").status, 401);
  EXPECT_EQ(c.post("/v2/models/bundle/infer", body(1), {"Authorization: Bearer wrong"}).status,
            401);
  EXPECT_EQ(c.post("/v2/models/bundle/infer", body(1), {"Authorization: Bearer s3cret"}).status,
            200);
  EXPECT_EQ(c.get("/v2/models/bundle", {"X-API-Key: s3cret"}).status, 200);
}

TEST_F(ServeCliTest, ConcurrentRequestsAreBatchedAndMetricsPassPromtool) {
  TempDir t;
  ServerProcess srv(
      {"--model", bundle(1).string(), "--max-delay-us", "20000", "--idle-trim-ms", "300"}, t.path(),
      t / "log");
  ASSERT_TRUE(srv.ready()) << srv.log();
  std::atomic<int> failures{0};
  std::vector<std::thread> clients;
  for (int k = 0; k < 12; ++k)
    clients.emplace_back([&] {
      HttpClient c(srv.port());
      for (int i = 0; i < 10; ++i)
        if (c.post("/v2/models/bundle/infer", body(1)).status != 200) ++failures;
    });
  for (auto& th : clients) th.join();
  EXPECT_EQ(failures.load(), 0);
  HttpClient c(srv.port());
  EXPECT_EQ(c.post("/v2/models/bundle/infer", "{").status, 400);
  HttpResult m = c.get("/metrics");
  ASSERT_EQ(m.status, 200);
  EXPECT_EQ(m.headers["content-type"].rfind("text/plain; version=0.0.4", 0), 0u);
  const std::string& text = m.body;
  for (const char* want :
       {"kiln_inference_requests_total{model=\"bundle\",version=\"1\",outcome=\"success\"} 120",
        "kiln_inference_requests_total{model=\"bundle\",version=\"1\",outcome=\"client_error\"} 1",
        "kiln_inference_queue_seconds_bucket{", "kiln_inference_compute_seconds_bucket{",
        "kiln_inference_request_duration_seconds_count{model=\"bundle\",version=\"1\"} 120",
        "kiln_inference_batch_size_count{model=\"bundle\",version=\"1\"} 120",
        "kiln_inference_requests_in_flight{model=\"bundle\"} 0", "kiln_model_loads_total",
        "# TYPE kiln_model_load_failures_total counter", "process_cpu_seconds_total ",
        "process_resident_memory_bytes ", "process_threads "})
    EXPECT_NE(text.find(want), std::string::npos) << want << "\n" << text;
  // Batching happened: fewer than 120 requests ran alone.
  const std::string key =
      "kiln_inference_batch_size_bucket{model=\"bundle\",version=\"1\",le=\"1\"} ";
  const size_t at = text.find(key);
  ASSERT_NE(at, std::string::npos);
  EXPECT_LT(std::stoi(text.substr(at + key.size())), 100) << text;

  write_text(t / "metrics.txt", text);
  const std::string cmd = "promtool check metrics < " + (t / "metrics.txt").string() + " 2>&1";
  FILE* p = ::popen(cmd.c_str(), "r");
  ASSERT_NE(p, nullptr);
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), p)) > 0) out.append(buf, n);
  const int status = ::pclose(p);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "promtool: " << out;

  // Idle for 300 ms after the burst, the server gives its freed heap back, and counts it.
  // (Each scrape is a request too: scrape once a second, so that idle spells happen.)
  double trims = 0;
  for (int i = 0; i < 10 && trims < 1; ++i) {
    std::this_thread::sleep_for(std::chrono::seconds(1));
    const std::string now = c.get("/metrics").body;
    const std::string key = "\nkiln_memory_trims_total ";
    const size_t t_at = now.find(key);
    ASSERT_NE(t_at, std::string::npos) << now;
    trims = std::stod(now.substr(t_at + key.size()));
    EXPECT_NE(now.find("\nkiln_memory_trimmed_bytes_total "), std::string::npos);
  }
  EXPECT_GE(trims, 1);
}

/// Points `link` at `target` atomically (a new symlink renamed over the old).
void swap_link(const fs::path& link, const fs::path& target) {
  const fs::path tmp = link.string() + ".tmp";
  fs::remove(tmp);
  fs::create_directory_symlink(target, tmp);
  fs::rename(tmp, link);
}

TEST_F(ServeCliTest, HotReloadUnderLoadFailsNoRequestAndKeepsServingPastABrokenVersion) {
  TempDir t;
  const fs::path link = t / "cancer";
  swap_link(link, bundle(1));
  // A corrupt copy (model.pt bytes changed: sha256 mismatch) and a wrong-signature copy (the
  // manifest claims 20 features; the module takes 30).
  fs::copy(bundle(2), t / "corrupt");
  {
    std::string bytes = read_text(t / "corrupt" / "model.pt");
    bytes[bytes.size() / 2] ^= 0x5a;
    write_text(t / "corrupt" / "model.pt", bytes);
    // Touch the manifest so its digest differs from version 2's.
    std::string man = read_text(t / "corrupt" / "manifest.json");
    write_text(t / "corrupt" / "manifest.json", man + "\n");
  }
  fs::copy(bundle(2), t / "wrongsig");
  {
    Json man = Json::parse(read_text(t / "wrongsig" / "manifest.json"));
    man["signature"]["inputs"][0]["shape"] = {-1, 20};
    testing::write_sealed_manifest(t / "wrongsig", man);
  }

  ServerProcess srv({"--model", link.string(), "--poll-interval-ms", "100"}, t.path(), t / "log");
  ASSERT_TRUE(srv.ready()) << srv.log();
  std::atomic<bool> stop{false};
  std::atomic<int> ok{0}, failed{0};
  std::mutex mu;
  std::set<std::string> versions;
  std::string first_failure;
  std::vector<std::thread> load;
  for (int k = 0; k < 4; ++k)
    load.emplace_back([&] {
      HttpClient c(srv.port());
      while (!stop) {
        HttpResult r = c.post("/v2/models/cancer/infer", body(2));
        if (r.status != 200) {
          std::lock_guard<std::mutex> lock(mu);
          if (first_failure.empty()) first_failure = std::to_string(r.status) + " " + r.body;
          ++failed;
          continue;
        }
        ++ok;
        std::lock_guard<std::mutex> lock(mu);
        versions.insert(Json::parse(r.body)["model_version"].get<std::string>());
      }
    });
  auto wait_for_version = [&](const std::string& v) {
    HttpClient c(srv.port());
    for (int i = 0; i < 300; ++i) {
      HttpResult r = c.get("/v2/models/cancer");
      if (r.status == 200 && Json::parse(r.body)["versions"][0] == v) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return false;
  };
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  swap_link(link, bundle(2));
  EXPECT_TRUE(wait_for_version("2")) << srv.log();
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  swap_link(link, t / "corrupt");
  std::this_thread::sleep_for(std::chrono::milliseconds(600));
  swap_link(link, t / "wrongsig");
  std::this_thread::sleep_for(std::chrono::milliseconds(600));
  stop = true;
  for (auto& th : load) th.join();

  EXPECT_EQ(failed.load(), 0) << first_failure;
  EXPECT_GT(ok.load(), 50);
  EXPECT_EQ(versions, (std::set<std::string>{"1", "2"}));
  HttpClient c(srv.port());
  HttpResult r = c.post("/v2/models/cancer/infer", body(1));
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(Json::parse(r.body)["model_version"], "2");  // the broken ones never took over
  const std::string metrics = c.get("/metrics").body;
  EXPECT_NE(metrics.find("kiln_model_load_failures_total{model=\"cancer\"} 2"), std::string::npos)
      << metrics;
  const std::string log = srv.log();
  EXPECT_NE(log.find("sha256 does not match"), std::string::npos) << log;
  EXPECT_NE(log.find("does not match the signature"), std::string::npos) << log;
  EXPECT_NE(log.find("version 2 keeps serving"), std::string::npos) << log;
  EXPECT_NE(log.find("version 1 drained"), std::string::npos) << log;
}

TEST_F(ServeCliTest, SigtermAnswersInFlightRequestsThenExitsZero) {
  TempDir t;
  // A long batching delay and quiet gap keep the requests queued when SIGTERM arrives; an idle
  // keep-alive connection keeps the batcher from concluding that nothing more can come.
  ServerProcess srv(
      {"--model", bundle(1).string(), "--max-delay-us", "1500000", "--batch-gap-us", "1500000"},
      t.path(), t / "log");
  ASSERT_TRUE(srv.ready()) << srv.log();
  HttpClient idle(srv.port());
  ASSERT_EQ(idle.get("/v2/health/live").status, 200);
  const auto t0 = std::chrono::steady_clock::now();
  std::atomic<int> ok{0};
  std::vector<std::thread> clients;
  for (int k = 0; k < 6; ++k)
    clients.emplace_back([&] {
      HttpClient c(srv.port());
      if (c.post("/v2/models/bundle/infer", body(1)).status == 200) ++ok;
    });
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  srv.signal(SIGTERM);
  for (auto& th : clients) th.join();
  EXPECT_EQ(ok.load(), 6) << srv.log();
  // They were answered by the batch (after the 1.5 s delay), not before SIGTERM.
  EXPECT_GT(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(1000));
  EXPECT_EQ(srv.wait_exit(), 0) << srv.log();
  EXPECT_NE(srv.stdout_text().find("kiln serve: stopped"), std::string::npos);
}

TEST_F(ServeCliTest, RequestWaitingPastTheTimeoutGets503) {
  TempDir t;
  // The batch waits 1.5 s to fill (an idle keep-alive connection keeps the batcher from
  // concluding that nothing more can come); the request may wait only 200 ms.
  ServerProcess srv({"--model", bundle(1).string(), "--max-delay-us", "1500000", "--batch-gap-us",
                     "1500000", "--request-timeout-ms", "200"},
                    t.path(), t / "log");
  ASSERT_TRUE(srv.ready()) << srv.log();
  HttpClient idle(srv.port());
  ASSERT_EQ(idle.get("/v2/health/live").status, 200);
  HttpClient c(srv.port());
  HttpResult r = c.post("/v2/models/bundle/infer", body(1));
  EXPECT_EQ(r.status, 503) << r.body;
  EXPECT_NE(error_of(r).find("request timed out after"), std::string::npos) << r.body;
  const std::string metrics = c.get("/metrics").body;
  EXPECT_NE(metrics.find(
                R"(kiln_inference_requests_total{model="bundle",version="1",outcome="timeout"} 1)"),
            std::string::npos)
      << metrics;
  // Without the long delay the same request is answered.
  ServerProcess quick({"--model", bundle(1).string(), "--request-timeout-ms", "200"}, t.path(),
                      t / "log2");
  ASSERT_TRUE(quick.ready()) << quick.log();
  HttpClient q(quick.port());
  EXPECT_EQ(q.post("/v2/models/bundle/infer", body(1)).status, 200);
}

TEST_F(ServeCliTest, BadStartIsReported) {
  TempDir t;
  CommandResult r =
      run_kiln({"serve", "--model", (t / "missing").string(), "--port", "0"}, t.path());
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("no such bundle directory"), std::string::npos) << r.err;
  r = run_kiln({"serve"}, t.path());
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("--model"), std::string::npos) << r.err;
  ServerProcess first({"--model", bundle(1).string()}, t.path(), t / "log1");
  ASSERT_TRUE(first.ready());
  r = run_kiln({"serve", "--model", bundle(1).string(), "--port", std::to_string(first.port())},
               t.path());
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("cannot listen on 127.0.0.1:" + std::to_string(first.port())),
            std::string::npos)
      << r.err;
}

// A run directory stands for its bundle/, and names the model after itself.
TEST_F(ServeCliTest, ServesARunDirectory) {
  TempDir t;
  const fs::path run = bundle(1).parent_path();  // .../run1
  ServerProcess srv({"--model", run.string()}, t.path(), t / "log");
  ASSERT_TRUE(srv.ready()) << srv.log();
  EXPECT_NE(srv.ready_line().find("(models: run1:1)"), std::string::npos) << srv.ready_line();
  HttpClient c(srv.port());
  HttpResult r = c.post("/v2/models/run1/infer", body(2));
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(Json::parse(r.body)["outputs"][0]["shape"], Json::array({2, 2})) << r.body;
}

/// A model written by Python's torch.jit.save (not by Kiln) served end to end: a scripted
/// nn.Module replaces model.pt in a bundle, whose manifest is re-hashed.
TEST_F(ServeCliTest, ServesAModelSavedByPythonTorchJitSave) {
  if (std::system("/usr/bin/python3 -c 'import torch' >/dev/null 2>&1") != 0)
    GTEST_SKIP() << "/usr/bin/python3 cannot import torch (install python3-torch)";
  TempDir t;
  const fs::path b = t / "pyclf";
  fs::copy(bundle(1), b);
  const std::string script =
      "import sys, torch\n"
      "class M(torch.nn.Module):\n"
      "    def __init__(self):\n"
      "        super().__init__()\n"
      "        self.lin = torch.nn.Linear(30, 2)\n"
      "        with torch.no_grad():\n"
      "            self.lin.weight.zero_(); self.lin.bias.copy_(torch.tensor([0.0, 0.0]))\n"
      "            self.lin.weight[1, 0] = 1.0\n"  // logit 1 = mean_radius, logit 0 = 0
      "    def forward(self, x):\n"
      "        return self.lin(x)\n"
      "torch.jit.save(torch.jit.script(M()), sys.argv[1])\n";
  write_text(t / "save.py", script);
  ASSERT_EQ(
      std::system(("/usr/bin/python3 " + (t / "save.py").string() + " " + (b / "model.pt").string())
                      .c_str()),
      0);
  Json man = Json::parse(read_text(b / "manifest.json"));
  man["files"]["model.pt"] = sha256_file(b / "model.pt").value();
  testing::write_sealed_manifest(b, man);

  ServerProcess srv({"--model", b.string()}, t.path(), t / "log");
  ASSERT_TRUE(srv.ready()) << srv.log();
  HttpClient c(srv.port());
  HttpResult r = c.post("/v2/models/pyclf/infer",
                        body(2, R"("outputs": [{"name": "logits"}, {"name": "labels"}])"));
  ASSERT_EQ(r.status, 200) << r.body;
  Json j = Json::parse(r.body);
  const auto logits = j["outputs"][0]["data"].get<std::vector<double>>();
  ASSERT_EQ(logits.size(), 4u);
  EXPECT_NEAR(logits[0], 0.0, 1e-5);
  EXPECT_NEAR(logits[1], rows_[0][0], 1e-3);  // mean_radius of row 0
  EXPECT_NEAR(logits[3], rows_[1][0], 1e-3);
  EXPECT_EQ(j["outputs"][1]["data"][0], "malignant");  // label index 1
}

}  // namespace
}  // namespace kiln
