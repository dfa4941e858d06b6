#include "support/test_support.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include "kiln/core/files.h"
#include "kiln/core/hash.h"

namespace kiln::testing {

TempDir::TempDir() {
  auto dir = make_temp_directory("kiln-test-");
  if (!dir.ok()) throw std::runtime_error(dir.status().to_string());
  path_ = *dir;
}

TempDir::~TempDir() {
  std::error_code ec;
  fs::remove_all(path_, ec);
}

fs::path source_dir() {
  if (const char* s = std::getenv("KILN_SOURCE_DIR"); s && *s) return s;
  return KILN_SOURCE_DIR_DEFAULT;
}

std::string example(const std::string& rel) { return (source_dir() / "examples" / rel).string(); }

fs::path shared_datasets_dir() { return source_dir().parent_path() / "shared" / "datasets"; }

fs::path fashion_mnist_dir() {
  // The GPU machine has no Debian package: scripts/gpu.sh carries the files and names them.
  if (const char* s = std::getenv("KILN_FASHION_MNIST_DIR"); s && *s) return s;
  return "/usr/share/datasets/fashion-mnist";
}

fs::path kiln_binary() {
  if (const char* s = std::getenv("KILN_BINARY"); s && *s) return s;
  return KILN_BINARY_DEFAULT;
}

pid_t spawn_kiln(const std::vector<std::string>& args, const fs::path& home) {
  pid_t pid = ::fork();
  if (pid == 0) {
    ::setenv("KILN_HOME", home.c_str(), 1);
    std::string bin = kiln_binary().string();
    std::vector<std::string> copy = args;
    std::vector<char*> argv{bin.data()};
    for (auto& a : copy) argv.push_back(a.data());
    argv.push_back(nullptr);
    int null_fd = ::open("/dev/null", O_WRONLY);
    ::dup2(null_fd, 1);
    ::dup2(null_fd, 2);
    ::execv(bin.c_str(), argv.data());
    ::_exit(127);
  }
  return pid;
}

fs::path train_breast_cancer_bundle(const fs::path& home, const fs::path& out) {
  CommandResult r = run_kiln(
      {"train", example("breast-cancer/train.yaml"), "--out", out.string(), "--json"}, home);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  return out / "bundle";
}

CommandResult run_program(const std::vector<std::string>& argv_in,
                          const std::vector<std::string>& env) {
  TempDir io;
  fs::path out_path = io / "stdout", err_path = io / "stderr";
  pid_t pid = ::fork();
  if (pid == 0) {
    int out_fd = ::open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    int err_fd = ::open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    int null_fd = ::open("/dev/null", O_RDONLY);
    ::dup2(null_fd, 0);
    ::dup2(out_fd, 1);
    ::dup2(err_fd, 2);
    for (const auto& kv : env) {
      auto eq = kv.find('=');
      ::setenv(kv.substr(0, eq).c_str(), kv.substr(eq + 1).c_str(), 1);
    }
    std::vector<std::string> copy = argv_in;
    std::vector<char*> argv;
    for (auto& a : copy) argv.push_back(a.data());
    argv.push_back(nullptr);
    ::execvp(argv[0], argv.data());
    ::_exit(127);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  CommandResult r;
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  r.out = read_text(out_path);
  r.err = read_text(err_path);
  return r;
}

CommandResult run_kiln(const std::vector<std::string>& args, const fs::path& home,
                       const std::vector<std::string>& extra_env) {
  std::vector<std::string> argv = {kiln_binary().string()};
  argv.insert(argv.end(), args.begin(), args.end());
  std::vector<std::string> env = {"KILN_HOME=" + home.string()};
  env.insert(env.end(), extra_env.begin(), extra_env.end());
  return run_program(argv, env);
}

void write_text(const fs::path& path, const std::string& text) {
  if (path.has_parent_path()) fs::create_directories(path.parent_path());
  std::ofstream f(path, std::ios::binary);
  f << text;
}

void write_sealed_manifest(const fs::path& bundle_dir, nlohmann::json manifest) {
  manifest.erase("manifest_sha256");
  manifest["manifest_sha256"] = sha256_hex(manifest.dump());  // nlohmann::json sorts keys
  write_text(bundle_dir / "manifest.json", manifest.dump(2));
}

std::string read_text(const fs::path& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

int free_loopback_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = 0;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  int port = -1;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0)
    port = ntohs(addr.sin_port);
  ::close(fd);
  return port;
}

int connect_loopback(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    ::close(fd);
    return -1;
  }
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  return fd;
}

}  // namespace kiln::testing
