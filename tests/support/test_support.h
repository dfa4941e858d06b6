#pragma once

#include <sys/types.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace kiln::testing {

namespace fs = std::filesystem;

/// A fresh temp directory removed when the object dies. Each test gets its own.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const fs::path& path() const { return path_; }
  fs::path operator/(const std::string& name) const { return path_ / name; }

 private:
  fs::path path_;
};

/// The repository root (KILN_SOURCE_DIR if set, else the configure-time path).
fs::path source_dir();
/// examples/<rel> in the repository, as a string for command lines.
std::string example(const std::string& rel);
/// ../shared/datasets beside the checkout (read-only in CI: never write there).
fs::path shared_datasets_dir();
/// /usr/share/datasets/fashion-mnist
fs::path fashion_mnist_dir();
/// Path of the built `kiln` binary (KILN_BINARY if set, else the configure-time build path).
fs::path kiln_binary();

/// Result of running a command: exit code and captured stdout/stderr.
struct CommandResult {
  int exit_code = -1;
  std::string out;
  std::string err;
};

/// Runs argv[0] (looked up in PATH) with argv and extra env "K=V" entries, stdin from /dev/null,
/// capturing output; 127 when it cannot be started. Blocks until the process exits.
CommandResult run_program(const std::vector<std::string>& argv,
                          const std::vector<std::string>& env = {});

/// Runs `kiln args...` with `KILN_HOME=home` (and extra env "K=V" entries), capturing output.
/// Blocks until the process exits.
CommandResult run_kiln(const std::vector<std::string>& args, const fs::path& home,
                       const std::vector<std::string>& extra_env = {});

/// Starts `kiln args...` with `KILN_HOME=home` in the background, output discarded, and returns
/// its pid at once (for kill -9 and concurrency tests); reap it with waitpid.
pid_t spawn_kiln(const std::vector<std::string>& args, const fs::path& home);

/// Runs `kiln deploy down CLUSTER` (home as KILN_HOME) when it goes out of scope, however the
/// test leaves (a failed ASSERT included), so no replica or nginx outlives it; a cluster the test
/// already took down just answers "not up".
struct ClusterDownAtExit {
  fs::path cluster, home;
  ~ClusterDownAtExit() { run_kiln({"deploy", "down", cluster.string()}, home); }
};

/// Trains examples/breast-cancer/train.yaml (a couple of seconds) into `out` and returns the
/// bundle directory, out/bundle. A failed run fails the calling test.
fs::path train_breast_cancer_bundle(const fs::path& home, const fs::path& out);

/// A loopback TCP port the kernel just handed out and nobody listens on (bound, then closed);
/// -1 on failure.
int free_loopback_port();
/// A TCP connection to 127.0.0.1:port with TCP_NODELAY (raw HTTP tests); -1 if refused.
int connect_loopback(int port);

/// Writes a text file (test fixtures), creating parent directories.
void write_text(const fs::path& path, const std::string& text);
std::string read_text(const fs::path& path);

/// Writes `manifest` as bundle_dir/manifest.json, resealed: "manifest_sha256" recomputed as the
/// bundle format documents it (sha256 of the compact, key-sorted JSON without that key), written
/// here independently of Kiln's code. For tests that edit a manifest on purpose (a file added, a
/// signature changed), so the edit tests what it means to and not the seal.
void write_sealed_manifest(const fs::path& bundle_dir, nlohmann::json manifest);

}  // namespace kiln::testing
