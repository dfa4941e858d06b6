// `kiln deploy` with a node reached by ssh: a real OpenSSH server (Debian's sshd, a throwaway
// host key and client key, a free loopback port) stands in for a second host. The cluster runs
// one replica here and one started over ssh, both behind nginx; it answers, rolls to a new
// version and goes down, the remote replica included.
#include <gtest/gtest.h>
#include <pwd.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <nlohmann/json.hpp>
#include <thread>

#include "kiln/core/ports.h"
#include "serve_helpers.h"
#include "support/test_support.h"

namespace kiln {
namespace {

using testing::CommandResult;
using testing::run_kiln;
using testing::run_program;
using testing::TempDir;
using Json = nlohmann::json;
namespace fs = std::filesystem;

/// sshd on 127.0.0.1:port() accepting `key()` for the current user; killed by the destructor.
class SshServer {
 public:
  explicit SshServer(const fs::path& dir) : dir_(dir) {
    for (const char* name : {"host_key", "client_key"}) {
      CommandResult k =
          run_program({"ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", (dir / name).string()});
      if (k.exit_code != 0) {
        ADD_FAILURE() << "ssh-keygen: " << k.err;
        return;
      }
    }
    fs::copy_file(dir / "client_key.pub", dir / "authorized_keys");
    if (::geteuid() == 0) fs::create_directories("/run/sshd");  // sshd's privilege separation
    port_ = free_loopback_port();
    testing::write_text(dir / "sshd_config",
                        "Port " + std::to_string(port_) + "\nListenAddress 127.0.0.1\nHostKey " +
                            (dir / "host_key").string() + "\nAuthorizedKeysFile " +
                            (dir / "authorized_keys").string() +
                            "\nPermitRootLogin prohibit-password\nPasswordAuthentication no\n"
                            "KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
                            "PidFile " +
                            (dir / "sshd.pid").string() + "\n");
    pid_ = ::fork();
    if (pid_ == 0) {
      const std::string config = (dir / "sshd_config").string();
      const std::string log = (dir / "sshd.log").string();
      ::execl("/usr/sbin/sshd", "/usr/sbin/sshd", "-D", "-f", config.c_str(), "-E", log.c_str(),
              static_cast<char*>(nullptr));
      ::_exit(127);
    }
    for (int i = 0; i < 100; ++i) {  // up to 10 s for it to listen
      const int fd = testing::connect_loopback(port_);
      if (fd >= 0) {
        ::close(fd);
        return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    ADD_FAILURE() << "sshd did not listen: " << testing::read_text(dir / "sshd.log");
  }
  ~SshServer() {
    if (pid_ > 0) {
      ::kill(pid_, SIGTERM);
      ::waitpid(pid_, nullptr, 0);
    }
  }
  int port() const { return port_; }
  fs::path key() const { return dir_ / "client_key"; }
  std::string log() const { return testing::read_text(dir_ / "sshd.log"); }

 private:
  fs::path dir_;
  int port_ = 0;
  pid_t pid_ = -1;
};

TEST(DeploySshTest, AReplicaStartedOverSshServesRollsAndStops) {
  TempDir home;
  const std::string csv = (testing::shared_datasets_dir() / "breast_cancer.csv").string();
  for (int seed : {1, 2}) {
    const fs::path out = home / ("run" + std::to_string(seed));
    ASSERT_EQ(run_kiln({"train", "--data", csv, "--target", "diagnosis", "--out", out.string(),
                        "--seed", std::to_string(seed)},
                       home.path())
                  .exit_code,
              0);
    ASSERT_EQ(run_kiln({"registry", "push", out.string(), "--name", "bc"}, home.path()).exit_code,
              0);
  }
  fs::create_directories(home / "ssh");
  SshServer sshd(home / "ssh");
  ASSERT_GT(sshd.port(), 0);
  const std::string user = ::getpwuid(::geteuid())->pw_name;
  const std::string node = user + "@127.0.0.1";
  const int port = free_loopback_port();
  const int first_port = free_loopback_port();
  const fs::path cluster = home / "cluster.yaml";
  // The "remote" node shares this KILN_HOME, as hosts sharing a mount do.
  testing::write_text(cluster,
                      "name: ssh\nport: " + std::to_string(port) +
                          "\nreplicas: 1\nmodels: [bc@1]\nserve_args: [--threads, 1]\nnodes:\n"
                          "  - local\n  - host: " +
                          node + "\n    ssh: [-p, \"" + std::to_string(sshd.port()) + "\", -i, " +
                          sshd.key().string() +
                          ", -o, StrictHostKeyChecking=no, -o, UserKnownHostsFile=/dev/null, -o, "
                          "LogLevel=ERROR]\n    kiln: " +
                          testing::kiln_binary().string() + "\n    home: " + home.path().string() +
                          "\n    first_port: " + std::to_string(first_port) + "\n");
  CommandResult up = run_kiln({"deploy", "up", cluster.string()}, home.path());
  const testing::ClusterDownAtExit down_at_exit{cluster, home.path()};
  ASSERT_EQ(up.exit_code, 0) << up.out << up.err << sshd.log();
  EXPECT_NE(sshd.log().find("Accepted publickey for " + user), std::string::npos) << sshd.log();

  auto status = [&] {
    CommandResult st = run_kiln({"deploy", "status", cluster.string(), "--json"}, home.path());
    EXPECT_EQ(st.exit_code, 0) << st.err;
    return st.exit_code == 0 ? Json::parse(st.out) : Json::object();
  };
  Json s = status();
  ASSERT_EQ(s["replicas"].size(), 2u) << s.dump();
  EXPECT_EQ(s["replicas"][0]["node"], "local");
  EXPECT_EQ(s["replicas"][1]["node"], node);
  EXPECT_EQ(s["replicas"][1]["port"], first_port);
  for (const Json& r : s["replicas"]) {
    EXPECT_TRUE(r["ready"].get<bool>()) << r.dump();
    EXPECT_TRUE(r["alive"].get<bool>()) << r.dump();
    EXPECT_EQ(r["models"][0]["versions"], Json::array({"1"})) << r.dump();
  }
  const int remote_pid = s["replicas"][1]["pid"];
  // nginx sends requests to both.
  testing::HttpClient client(port);
  for (int i = 0; i < 20; ++i) {
    testing::HttpResult r = client.post(
        "/v2/models/bc/infer",
        testing::breast_cancer_infer_body(testing::breast_cancer_rows()[0].features, 1.0));
    ASSERT_EQ(r.status, 200) << r.body;
  }
  CommandResult roll =
      run_kiln({"deploy", "roll", cluster.string(), "--model", "bc@2"}, home.path());
  ASSERT_EQ(roll.exit_code, 0) << roll.out << roll.err;
  s = status();
  ASSERT_EQ(s["replicas"].size(), 2u);
  for (const Json& r : s["replicas"])
    EXPECT_EQ(r["models"][0]["versions"], Json::array({"2"})) << r.dump();
  EXPECT_EQ(s["replicas"][1]["node"], node);
  EXPECT_NE(::kill(remote_pid, 0), 0) << "the rolled-out remote replica still runs";
  const int rolled_remote_pid = s["replicas"][1]["pid"];
  CommandResult down = run_kiln({"deploy", "down", cluster.string()}, home.path());
  EXPECT_EQ(down.exit_code, 0) << down.err;
  EXPECT_NE(::kill(rolled_remote_pid, 0), 0) << "down left the remote replica running";
}

}  // namespace
}  // namespace kiln
