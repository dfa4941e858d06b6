// `kiln deploy`: two real `kiln serve` replicas behind a real nginx on loopback, sharing the
// registry; rolled from version 1 to version 2 while `kiln loadtest` sends inference requests
// through nginx, with no failed request; then taken down. Bad cluster files are clear errors.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <nlohmann/json.hpp>
#include <thread>

#include "support/test_support.h"

namespace kiln {
namespace {

using testing::run_kiln;
using testing::TempDir;
using Json = nlohmann::json;
namespace fs = std::filesystem;

TEST(DeployCliTest, TwoReplicasBehindNginxRollWithoutAFailedRequest) {
  TempDir home;
  const std::string csv = (testing::shared_datasets_dir() / "breast_cancer.csv").string();
  // Two versions of one model in the shared registry.
  auto v1 = run_kiln({"train", "--data", csv, "--target", "diagnosis", "--out",
                      (home / "a").string(), "--seed", "1"},
                     home.path());
  ASSERT_EQ(v1.exit_code, 0) << v1.err;
  auto v2 = run_kiln({"train", "--data", csv, "--target", "diagnosis", "--out",
                      (home / "b").string(), "--seed", "2"},
                     home.path());
  ASSERT_EQ(v2.exit_code, 0) << v2.err;
  for (const char* run : {"a", "b"})
    ASSERT_EQ(run_kiln({"registry", "push", (home / run).string(), "--name", "bc"}, home.path())
                  .exit_code,
              0);

  const int port = testing::free_loopback_port();
  const fs::path cluster = home / "cluster.yaml";
  testing::write_text(cluster, "name: test\nport: " + std::to_string(port) +
                                   "\nreplicas: 2\nmodels: [bc@1]\nserve_args: [--threads, 1]\n");
  auto up = run_kiln({"deploy", "up", cluster.string()}, home.path());
  const testing::ClusterDownAtExit down_at_exit{cluster, home.path()};
  ASSERT_EQ(up.exit_code, 0) << up.out << up.err;
  EXPECT_NE(up.out.find("2 replica(s) behind nginx on http://127.0.0.1:" + std::to_string(port)),
            std::string::npos)
      << up.out;
  auto status = run_kiln({"deploy", "status", cluster.string(), "--json"}, home.path());
  ASSERT_EQ(status.exit_code, 0) << status.err;
  Json s = Json::parse(status.out);
  ASSERT_EQ(s["replicas"].size(), 2u) << s.dump();
  for (const Json& r : s["replicas"]) {
    EXPECT_TRUE(r["ready"].get<bool>()) << r.dump();
    ASSERT_EQ(r["models"].size(), 1u) << r.dump();
    EXPECT_EQ(r["models"][0]["versions"], Json::parse(R"(["1"])")) << r.dump();
  }
  EXPECT_TRUE(s["nginx"]["alive"].get<bool>());
  // A second `up` of a running cluster is refused.
  auto again = run_kiln({"deploy", "up", cluster.string()}, home.path());
  EXPECT_EQ(again.exit_code, 1);
  EXPECT_NE(again.err.find("already up"), std::string::npos) << again.err;

  // Load through nginx while the cluster rolls to version 2.
  const fs::path load_out = home / "load.json";
  const auto load_start = std::chrono::steady_clock::now();
  const pid_t load = ::fork();
  if (load == 0) {
    const int fd = ::open(load_out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ::dup2(fd, 1);
    const int null_fd = ::open("/dev/null", O_WRONLY);
    ::dup2(null_fd, 2);
    ::setenv("KILN_HOME", home.path().c_str(), 1);
    std::string bin = testing::kiln_binary().string();
    std::vector<std::string> args = {
        bin,
        "loadtest",
        "http://127.0.0.1:" + std::to_string(port) + "/v2/models/bc/infer",
        "--data",
        csv,
        "--drop-column",
        "diagnosis",
        "--rate",
        "200",
        "--connections",
        "16",
        "--duration",
        "15",
        "--json"};
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    ::execv(bin.c_str(), argv.data());
    ::_exit(127);
  }
  std::this_thread::sleep_for(std::chrono::seconds(2));
  auto roll = run_kiln({"deploy", "roll", cluster.string(), "--model", "bc@2"}, home.path());
  EXPECT_EQ(roll.exit_code, 0) << roll.out << roll.err;
  EXPECT_NE(roll.out.find("(2/2)"), std::string::npos) << roll.out;
  // The whole roll happened under the load (15 s of it), or the test proves nothing.
  EXPECT_LT(std::chrono::steady_clock::now() - load_start, std::chrono::seconds(15));
  int load_status = 0;
  ASSERT_EQ(::waitpid(load, &load_status, 0), load);
  const Json report = Json::parse(testing::read_text(load_out));
  EXPECT_EQ(report["errors"]["total"], 0) << report["errors"].dump();
  EXPECT_GE(report["requests"]["completed"].get<int64_t>(), 2500) << report["requests"].dump();
  EXPECT_EQ(report["status_codes"].size(), 1u) << report["status_codes"].dump();

  status = run_kiln({"deploy", "status", cluster.string(), "--json"}, home.path());
  ASSERT_EQ(status.exit_code, 0) << status.err;
  s = Json::parse(status.out);
  ASSERT_EQ(s["replicas"].size(), 2u);
  std::vector<int> pids;
  for (const Json& r : s["replicas"]) {
    EXPECT_TRUE(r["ready"].get<bool>()) << r.dump();
    EXPECT_EQ(r["models"][0]["versions"], Json::parse(R"(["2"])")) << r.dump();
    EXPECT_GE(r["id"].get<int>(), 2);  // both replaced
    pids.push_back(r["pid"].get<int>());
  }
  const int nginx_pid = s["nginx"]["pid"].get<int>();

  auto down = run_kiln({"deploy", "down", cluster.string()}, home.path());
  EXPECT_EQ(down.exit_code, 0) << down.err;
  EXPECT_NE(::kill(nginx_pid, 0), 0);
  for (int pid : pids) EXPECT_NE(::kill(pid, 0), 0) << pid;
  EXPECT_LT(testing::connect_loopback(port), 0);
  status = run_kiln({"deploy", "status", cluster.string()}, home.path());
  EXPECT_EQ(status.exit_code, 2);
  EXPECT_NE(status.err.find("is not up"), std::string::npos) << status.err;
}

TEST(DeployCliTest, BadClusterFilesAreNamedByLine) {
  TempDir home;
  const fs::path cluster = home / "cluster.yaml";
  testing::write_text(cluster, "name: t\nreplicas: 2\nmodels: [bc@1]\nreplica_count: 3\n");
  auto r = run_kiln({"deploy", "up", cluster.string()}, home.path());
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("cluster.yaml:4: replica_count: unknown field"), std::string::npos) << r.err;
  testing::write_text(cluster, "name: t\nmodels: [bc@1]\nnodes: [local, gpu-box-1]\n");
  r = run_kiln({"deploy", "up", cluster.string()}, home.path());
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("'gpu-box-1': a node is `local` or a mapping"), std::string::npos) << r.err;
  testing::write_text(cluster, "name: t\nmodels: [bc@1]\nnodes: [{host: box, prot: 22}]\n");
  r = run_kiln({"deploy", "up", cluster.string()}, home.path());
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("cluster.yaml:3: nodes: unknown node field 'prot'"), std::string::npos)
      << r.err;
  testing::write_text(cluster, "name: t\nmodels: [bc@1]\nserve_args: [--port, 9000]\n");
  r = run_kiln({"deploy", "up", cluster.string()}, home.path());
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("--port is set by the cluster"), std::string::npos) << r.err;
  testing::write_text(cluster, "name: t\nmodels: [bc@1]\nregistry: mysql://db/kiln\n");
  r = run_kiln({"deploy", "up", cluster.string()}, home.path());
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("cluster.yaml:3: registry: expected 'sqlite' or a postgresql://"),
            std::string::npos)
      << r.err;
  // --dry-run prints the nginx.conf and starts nothing.
  testing::write_text(cluster, "name: t\nport: 18080\nmodels: [bc@1]\n");
  r = run_kiln({"deploy", "up", cluster.string(), "--dry-run"}, home.path());
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("proxy_next_upstream error timeout http_502 http_503 non_idempotent"),
            std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("listen 127.0.0.1:18080"), std::string::npos) << r.out;
}

// `kiln deploy k8s`: manifests for a real cluster, validated offline against the Kubernetes API
// schemas (kubernetes-models); the validator itself rejects a broken one.
TEST(DeployCliTest, KubernetesManifestsValidateAgainstTheApiSchemas) {
  TempDir home;
  const fs::path cluster = home / "cluster.yaml";
  testing::write_text(cluster,
                      "name: fmnist\nreplicas: 2\nmodels: [fmnist@production]\n"
                      "serve_args: [--threads, \"1\"]\n"
                      "registry: postgresql://kiln:pw@db.ml.svc:5432/kiln\n");
  const fs::path out = home / "k8s";
  auto r = run_kiln({"deploy", "k8s", cluster.string(), "--out", out.string(), "--image",
                     "registry.example.com/kiln:0.1.0", "--namespace", "ml"},
                    home.path());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::vector<std::string> files;
  for (const auto& entry : fs::directory_iterator(out)) files.push_back(entry.path().string());
  ASSERT_EQ(files.size(), 8u);
  std::vector<std::string> argv = {
      "node", (testing::source_dir() / "tools/kubernetes/validate.mjs").string()};
  argv.insert(argv.end(), files.begin(), files.end());
  auto valid = testing::run_program(argv);
  EXPECT_EQ(valid.exit_code, 0) << valid.out << valid.err;
  size_t ok = 0;
  for (size_t at = 0; (at = valid.out.find("\"ok\":true", at)) != std::string::npos; ++at) ++ok;
  EXPECT_EQ(ok, 8u) << valid.out;
  for (const char* kind :
       {"Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler", "ConfigMap",
        "PersistentVolumeClaim", "Secret"})
    EXPECT_NE(valid.out.find(std::string("\"kind\":\"") + kind + "\""), std::string::npos) << kind;
  const std::string deployment = testing::read_text(out / "deployment.yaml");
  for (const char* want :
       {"image: registry.example.com/kiln:0.1.0", "namespace: ml", "- fmnist@production",
        "terminationGracePeriodSeconds: 45", "path: /v2/health/ready", "path: /v2/health/live",
        "maxUnavailable: 0", "- sleep", "prometheus.io/scrape: \"true\"", "name: KILN_REGISTRY",
        "name: fmnist-registry"})
    EXPECT_NE(deployment.find(want), std::string::npos) << want << "\n" << deployment;
  // The autoscaler owns the replica count (from the cluster file); the Deployment leaves it
  // unset, so re-applying it does not undo a scale-out.
  EXPECT_EQ(deployment.find("replicas:"), std::string::npos) << deployment;
  const std::string autoscaler = testing::read_text(out / "hpa.yaml");
  EXPECT_NE(autoscaler.find("minReplicas: 2"), std::string::npos) << autoscaler;
  // The validator is not a rubber stamp.
  std::string broken = deployment;
  broken.replace(broken.find("containerPort: 8000"), 19, "containerPort: eight");
  testing::write_text(home / "broken.yaml", broken);
  auto invalid = testing::run_program(
      {"node", (testing::source_dir() / "tools/kubernetes/validate.mjs").string(),
       (home / "broken.yaml").string()});
  EXPECT_EQ(invalid.exit_code, 1) << invalid.out << invalid.err;
  EXPECT_NE(invalid.out.find("containerPort must be integer"), std::string::npos) << invalid.out;
  // Names Kubernetes refuses are refused here.
  testing::write_text(cluster, "name: FMNIST_1\nmodels: [fmnist@production]\n");
  r = run_kiln({"deploy", "k8s", cluster.string(), "--out", (home / "k2").string()}, home.path());
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("is not a Kubernetes name"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace kiln
