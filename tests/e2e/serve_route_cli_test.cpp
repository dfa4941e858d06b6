// Progressive delivery in a real `kiln serve`: a route splits one served name between two served
// models by weight (exact without a client key, sticky with one), and a shadow gets a copy of
// every request whose answer is compared and counted, never returned.
#include <gtest/gtest.h>

#include <atomic>
#include <map>
#include <nlohmann/json.hpp>
#include <thread>

#include "kiln/core/files.h"
#include "serve_helpers.h"
#include "support/test_support.h"

namespace kiln {
namespace {

using testing::breast_cancer_infer_body;
using testing::breast_cancer_rows;
using testing::HttpClient;
using testing::HttpResult;
using testing::ServerProcess;
using testing::TempDir;
using Json = nlohmann::json;

/// The value of the sample `series` (name{labels}) in a Prometheus text body, or -1.
double metric(const std::string& text, const std::string& series) {
  const size_t at = text.find(series + " ");
  if (at == std::string::npos) return -1;
  return std::stod(text.substr(at + series.size() + 1));
}

TEST(ServeRouteCliTest, WeightedStickyRoutesAndAShadowThatIsNeverReturned) {
  TempDir home;
  const auto bundle = testing::train_breast_cancer_bundle(home.path(), home / "bundle-run");
  ServerProcess srv(
      {"--model", "stable=" + bundle.string(), "--model", "canary=" + bundle.string(), "--route",
       "cancer=stable:80,canary:20", "--route", "mirrored=stable:100,shadow:canary"},
      home.path(), home / "log");
  ASSERT_TRUE(srv.ready()) << srv.log();
  HttpClient c(srv.port());
  const auto rows = breast_cancer_rows();

  // The route's metadata: the targets' signature under the route's name, and the split.
  Json meta = Json::parse(c.get("/v2/models/cancer").body);
  EXPECT_EQ(meta["name"], "cancer");
  EXPECT_EQ(meta["parameters"]["route"]["spec"], "cancer=stable:80,canary:20");
  EXPECT_EQ(c.get("/v2/models/cancer/ready").status, 200);
  EXPECT_EQ(c.post("/v2/models/cancer/versions/1/infer", "{}").status, 404);

  // No client key: weighted round robin, exact over every 100 requests.
  std::map<std::string, int> seen;
  for (int i = 0; i < 500; ++i) {
    HttpResult r = c.post("/v2/models/cancer/infer",
                          breast_cancer_infer_body(rows[static_cast<size_t>(i)].features, 1.0));
    ASSERT_EQ(r.status, 200) << r.body;
    const std::string target = r.headers["x-kiln-route-target"];
    EXPECT_EQ(Json::parse(r.body)["model_name"], target);
    ++seen[target];
  }
  EXPECT_EQ(seen["stable"], 400);
  EXPECT_EQ(seen["canary"], 100);

  // A client key: every request of one client lands on one target; about 20 % of clients on
  // the canary.
  int canary_clients = 0;
  for (int k = 0; k < 300; ++k) {
    const std::string key = "X-Kiln-Route-Key: user-" + std::to_string(k);
    std::string first;
    for (int i = 0; i < 3; ++i) {
      HttpResult r =
          c.post("/v2/models/cancer/infer",
                 breast_cancer_infer_body(rows[static_cast<size_t>(k)].features, 1.0), {key});
      ASSERT_EQ(r.status, 200);
      if (i == 0) first = r.headers["x-kiln-route-target"];
      EXPECT_EQ(r.headers["x-kiln-route-target"], first) << key;
    }
    canary_clients += first == "canary";
  }
  EXPECT_NEAR(canary_clients, 60, 25);  // binomial(300, 0.2): sd ~7

  // The shadow: answers always come from the primary; the shadow's are compared (the same
  // model: they agree), and feedback reaches both (the shadow's live accuracy).
  Json feedback = Json::array();
  for (int i = 0; i < 40; ++i) {
    const std::string id = "m-" + std::to_string(i);
    HttpResult r = c.post("/v2/models/mirrored/infer",
                          breast_cancer_infer_body(rows[static_cast<size_t>(i)].features, 1.0, id));
    ASSERT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(Json::parse(r.body)["model_name"], "stable");
    EXPECT_EQ(r.headers["x-kiln-route-target"], "stable");
    feedback.push_back({{"id", id}, {"truth", rows[static_cast<size_t>(i)].diagnosis}});
  }
  // A request without an id: the primary and the shadow remember it under the same one.
  HttpResult anonymous =
      c.post("/v2/models/mirrored/infer", breast_cancer_infer_body(rows[100].features, 1.0));
  ASSERT_EQ(anonymous.status, 200);
  feedback.push_back({{"id", Json::parse(anonymous.body)["id"]}, {"truth", rows[100].diagnosis}});
  HttpResult fb = c.post("/v2/models/mirrored/feedback", feedback.dump());
  ASSERT_EQ(fb.status, 200) << fb.body;
  EXPECT_EQ(Json::parse(fb.body)["joined"], 41);

  std::string metrics;
  for (int attempt = 0; attempt < 50; ++attempt) {  // the shadow answers asynchronously
    metrics = c.get("/metrics").body;
    if (metric(metrics,
               R"(kiln_shadow_requests_total{route="mirrored",target="canary",outcome="agree"})") >=
        41)
      break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_EQ(
      metric(metrics,
             R"(kiln_shadow_requests_total{route="mirrored",target="canary",outcome="agree"})"),
      41);
  EXPECT_EQ(metric(metrics, R"(kiln_route_requests_total{route="cancer",target="stable"})"),
            400 + 900 - 3 * canary_clients);
  EXPECT_EQ(metric(metrics, R"(kiln_route_requests_total{route="mirrored",target="stable"})"), 41);
  // Shadow copies are not client requests: the HTTP counter saw each request once.
  const Json report = Json::parse(c.get("/v2/models/mirrored/monitor").body);
  EXPECT_EQ(report["reports"][0]["live"]["labelled_total"], 41);
  EXPECT_EQ(report["shadow_report"]["live"]["labelled_total"], 41);
}

TEST(ServeRouteCliTest, WeightsChangeUnderLoadWithoutAFailedRequest) {
  TempDir home;
  const auto bundle = testing::train_breast_cancer_bundle(home.path(), home / "bundle-run");
  ServerProcess srv({"--model", "stable=" + bundle.string(), "--model", "canary=" + bundle.string(),
                     "--route", "cancer=stable:100,canary:0"},
                    home.path(), home / "log");
  ASSERT_TRUE(srv.ready()) << srv.log();
  HttpClient c(srv.port());
  const auto rows = breast_cancer_rows();
  Json routes = Json::parse(c.get("/v2/routes").body);
  ASSERT_EQ(routes["routes"].size(), 1u);
  EXPECT_EQ(routes["routes"][0]["spec"], "cancer=stable:100,canary:0");
  EXPECT_EQ(c.post("/v2/routes/cancer", R"({"weights": {"stable": 50}})").status, 400);
  EXPECT_EQ(c.post("/v2/routes/cancer", R"({"weights": {"stable": 0, "canary": 0}})").status, 400);
  EXPECT_EQ(c.post("/v2/routes/cancer", "[1]").status, 400);
  EXPECT_EQ(c.post("/v2/routes/nosuch", R"({"weights": {}})").status, 404);

  // Two clients keep sending while the weights move 0 -> 10 -> 50 -> 100 -> 0 % canary, twice.
  std::atomic<bool> stop{false};
  std::atomic<int> sent{0}, failed{0}, on_canary{0};
  std::vector<std::thread> clients;
  for (int t = 0; t < 2; ++t)
    clients.emplace_back([&, t] {
      HttpClient lc(srv.port());
      for (size_t i = static_cast<size_t>(t); !stop.load(); i = (i + 2) % rows.size()) {
        HttpResult r =
            lc.post("/v2/models/cancer/infer", breast_cancer_infer_body(rows[i].features, 1.0));
        ++sent;
        if (r.status != 200) ++failed;
        if (r.headers["x-kiln-route-target"] == "canary") ++on_canary;
      }
    });
  for (int round = 0; round < 2; ++round)
    for (int canary : {10, 50, 100, 0}) {
      const Json body = {{"weights", {{"stable", 100 - canary}, {"canary", canary}}}};
      HttpResult r = c.post("/v2/routes/cancer", body.dump());
      ASSERT_EQ(r.status, 200) << r.body;
      EXPECT_EQ(Json::parse(r.body)["targets"][1]["weight"], canary);
      std::this_thread::sleep_for(std::chrono::milliseconds(150));
    }
  stop = true;
  for (auto& t : clients) t.join();
  EXPECT_GT(sent.load(), 100);
  EXPECT_EQ(failed.load(), 0);
  EXPECT_GT(on_canary.load(), 0);
  // Back at 0 %: nothing reaches the canary.
  for (int i = 0; i < 20; ++i)
    EXPECT_EQ(c.post("/v2/models/cancer/infer", breast_cancer_infer_body(rows[0].features, 1.0))
                  .headers["x-kiln-route-target"],
              "stable");
}

TEST(ServeRouteCliTest, PostedWeightsSurviveARestartWhileTheFlagStands) {
  TempDir home;
  const auto bundle = testing::train_breast_cancer_bundle(home.path(), home / "bundle-run");
  const std::vector<std::string> models{"--model", "stable=" + bundle.string(), "--model",
                                        "canary=" + bundle.string()};
  auto args = [&](const std::string& route) {
    std::vector<std::string> a = models;
    a.insert(a.end(), {"--route", route});
    return a;
  };
  auto spec_of = [](HttpClient& c) {
    return Json::parse(c.get("/v2/routes").body)["routes"][0]["spec"].get<std::string>();
  };
  {
    ServerProcess srv(args("cancer=stable:90,canary:10"), home.path(), home / "log1");
    ASSERT_TRUE(srv.ready()) << srv.log();
    HttpClient c(srv.port());
    ASSERT_EQ(c.post("/v2/routes/cancer", R"({"weights": {"stable": 40, "canary": 60}})").status,
              200);
    srv.signal(SIGKILL);  // a crash: nothing is written at exit
    srv.wait_exit();
  }
  {
    // Same flag: the POSTed split is back, and the log says where it came from.
    ServerProcess srv(args("cancer=stable:90,canary:10"), home.path(), home / "log2");
    ASSERT_TRUE(srv.ready()) << srv.log();
    HttpClient c(srv.port());
    EXPECT_EQ(spec_of(c), "cancer=stable:40,canary:60");
    EXPECT_NE(srv.log().find("weights cancer=stable:40,canary:60 restored from"), std::string::npos)
        << srv.log();
    std::map<std::string, int> seen;
    const auto rows = breast_cancer_rows();
    for (int i = 0; i < 100; ++i)
      ++seen[c.post("/v2/models/cancer/infer", breast_cancer_infer_body(rows[0].features, 1.0))
                 .headers["x-kiln-route-target"]];
    EXPECT_EQ(seen["canary"], 60);
    srv.signal(SIGTERM);
    EXPECT_EQ(srv.wait_exit(), 0);
  }
  {
    // A changed flag wins over weights set under the old one.
    ServerProcess srv(args("cancer=stable:100,canary:0"), home.path(), home / "log3");
    ASSERT_TRUE(srv.ready()) << srv.log();
    HttpClient c(srv.port());
    EXPECT_EQ(spec_of(c), "cancer=stable:100,canary:0");
    srv.signal(SIGTERM);
    EXPECT_EQ(srv.wait_exit(), 0);
  }
  {
    ServerProcess srv(args("cancer=stable:90,canary:10"), home.path(), home / "log4");
    ASSERT_TRUE(srv.ready()) << srv.log();
    HttpClient c(srv.port());
    EXPECT_EQ(spec_of(c), "cancer=stable:90,canary:10");
  }
  // A kept file someone edited by hand: the server refuses to start, naming file and field.
  const fs::path kept = home / "serve" / "routes" / "cancer.json";
  ASSERT_TRUE(write_file_atomic(
                  kept, R"({"started_as": "cancer=stable:90,canary:10", "weights": {"stable": 1}})")
                  .ok());
  std::vector<std::string> serve{"serve", "--port", "0"};
  for (const std::string& a : args("cancer=stable:90,canary:10")) serve.push_back(a);
  const testing::CommandResult r = testing::run_kiln(serve, home.path());
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find(kept.string() + ": weights"), std::string::npos) << r.err;
}

TEST(ServeRouteCliTest, APostToOneReplicaMovesEveryReplicaSharingTheHome) {
  TempDir home;
  const auto bundle = testing::train_breast_cancer_bundle(home.path(), home / "bundle-run");
  testing::TwoRouteReplicas replicas(bundle, home.path());
  ASSERT_TRUE(replicas.ready()) << replicas.logs();
  ServerProcess &a = replicas.a, &b = replicas.b;
  HttpClient ca(a.port()), cb(b.port());
  auto spec_of = [](HttpClient& c) {
    return Json::parse(c.get("/v2/routes").body)["routes"][0]["spec"].get<std::string>();
  };
  ASSERT_EQ(ca.post("/v2/routes/cancer", R"({"weights": {"stable": 75, "canary": 25}})").status,
            200);
  std::string seen;
  for (int i = 0; i < 50 && seen != "cancer=stable:75,canary:25"; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    seen = spec_of(cb);
  }
  EXPECT_EQ(seen, "cancer=stable:75,canary:25") << b.log();
  EXPECT_NE(b.log().find("weights now cancer=stable:75,canary:25 (set through another server"),
            std::string::npos)
      << b.log();
  // And back the other way; the server that was posted to logs no echo of its own write.
  ASSERT_EQ(cb.post("/v2/routes/cancer", R"({"weights": {"stable": 10, "canary": 90}})").status,
            200);
  for (int i = 0; i < 50 && seen != "cancer=stable:10,canary:90"; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    seen = spec_of(ca);
  }
  EXPECT_EQ(seen, "cancer=stable:10,canary:90") << a.log();
  EXPECT_EQ(a.log().find("weights now cancer=stable:75,canary:25 (set through"), std::string::npos);
}

TEST(ServeRouteCliTest, BadRoutesExitNamingTheProblem) {
  TempDir home;
  const auto bundle = testing::train_breast_cancer_bundle(home.path(), home / "bundle-run");
  for (const std::vector<std::string>& route :
       std::vector<std::vector<std::string>>{{"--route", "cancer=stable:80,nosuch:20"},
                                             {"--route", "cancer=stable:0"},
                                             {"--route", "stable=stable:1"},
                                             {"--route", "cancer=stable"}}) {
    std::vector<std::string> args{"serve", "--model", "stable=" + bundle.string(), "--port", "0"};
    args.insert(args.end(), route.begin(), route.end());
    const testing::CommandResult r = testing::run_kiln(args, home.path());
    EXPECT_NE(r.exit_code, 0) << route[1];
    EXPECT_NE(r.err.find("--route"), std::string::npos) << route[1] << ": " << r.err;
  }
}

}  // namespace
}  // namespace kiln
