// The registry's reliability loops with real `kiln registry push` processes: two processes
// pushing 50 versions each of one name at once, and kill -9 at random moments during pushes.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <thread>

#include "kiln/core/hash.h"
#include "support/test_support.h"

namespace kiln {
namespace {

using testing::CommandResult;
using testing::example;
using testing::run_kiln;
using testing::train_breast_cancer_bundle;
using testing::spawn_kiln;
using testing::TempDir;
using Json = nlohmann::json;
namespace fs = std::filesystem;



/// A copy of `src` with an extra 4 MB file of bytes seeded by `seed` (listed in the manifest), so
/// every push has new content to copy and fsync: a long window for the kill to land in.
fs::path variant_bundle(const fs::path& src, const fs::path& dst, uint32_t seed) {
  fs::copy(src, dst);
  std::mt19937 rng(seed);
  std::string big(4 << 20, '\0');
  for (auto& c : big) c = static_cast<char>(rng());
  testing::write_text(dst / "big.bin", big);
  Json m = Json::parse(testing::read_text(dst / "manifest.json"));
  m["files"]["big.bin"] = sha256_hex(big);
  testing::write_sealed_manifest(dst, m);
  return dst;
}

/// Files (temp ones included) under KILN_HOME/artifacts.
int count_artifact_files(const fs::path& home) {
  int n = 0;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(home / "artifacts", ec);
       !ec && it != fs::recursive_directory_iterator(); it.increment(ec))
    n += it->is_regular_file(ec);
  return n;
}

/// Waits until the push `pid` starts writing artifacts (true) or exits (false).
bool wait_for_artifact_writes(const fs::path& home, int before, pid_t pid) {
  for (int i = 0; i < 200000; ++i) {
    if (count_artifact_files(home) > before) return true;
    int status = 0;
    if (::waitpid(pid, &status, WNOHANG) == pid) {
      return false;
    }
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  return false;
}

/// Every listed version is whole: it pulls (each artifact re-hashed) and `verify` is clean.
void expect_registry_whole(const fs::path& home, const std::string& name) {
  CommandResult r = run_kiln({"registry", "verify"}, home);
  EXPECT_EQ(r.exit_code, 0) << r.err << r.out;
  r = run_kiln({"registry", "list", name, "--json"}, home);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  for (const auto& v : Json::parse(r.out)) {
    const std::string ref = name + "@" + std::to_string(v["version"].get<int64_t>());
    const fs::path out = home / ("pulled-" + ref);
    CommandResult p = run_kiln({"registry", "pull", ref, "--out", out.string()}, home);
    EXPECT_EQ(p.exit_code, 0) << ref << ": " << p.err;
    fs::remove_all(out);
  }
}

TEST(RegistryCliSlowTest, TwoProcessesPushingFiftyEachGetDistinctGapFreeVersions) {
  TempDir home;
  const fs::path bundle = train_breast_cancer_bundle(home.path(), home / "run");
  auto pusher = [&](int who, std::vector<int64_t>* got) {
    for (int i = 0; i < 50; ++i) {
      CommandResult r = run_kiln({"registry", "push", bundle.string(), "--name", "shared", "--tag",
                                  "pusher=" + std::to_string(who), "--json"},
                                 home.path());
      if (r.exit_code != 0) {
        ADD_FAILURE() << "pusher " << who << " push " << i << ": " << r.err;
        continue;
      }
      got->push_back(Json::parse(r.out)["version"].get<int64_t>());
    }
  };
  std::vector<int64_t> a, b;
  std::thread ta(pusher, 1, &a), tb(pusher, 2, &b);
  ta.join();
  tb.join();
  std::set<int64_t> all(a.begin(), a.end());
  all.insert(b.begin(), b.end());
  EXPECT_EQ(a.size() + b.size(), 100u);
  EXPECT_EQ(all.size(), 100u) << "duplicate version numbers";
  if (!all.empty()) {
    EXPECT_EQ(*all.begin(), 1);
    EXPECT_EQ(*all.rbegin(), 100);
  }
  CommandResult r = run_kiln({"registry", "verify"}, home.path());
  EXPECT_EQ(r.exit_code, 0) << r.err << r.out;
  r = run_kiln({"registry", "list", "shared", "--json"}, home.path());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(Json::parse(r.out).size(), 100u);
}

TEST(RegistryCliSlowTest, KillNineDuringPushNeverLeavesAHalfMadeVersion) {
  TempDir home;
  const fs::path bundle = train_breast_cancer_bundle(home.path(), home / "run");
  // Half the kills land at a random moment of a whole push (mostly process start); the other
  // half a random 0-30 ms after the push starts writing artifacts: during the copies, the fsyncs,
  // the renames and the version transaction.
  const auto t0 = std::chrono::steady_clock::now();
  ASSERT_EQ(
      run_kiln({"registry", "push", variant_bundle(bundle, home / "v0", 0).string(), "--name", "k"},
               home.path())
          .exit_code,
      0);
  const int64_t push_us =
      std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - t0)
          .count();
  std::mt19937 rng(1234);
  std::uniform_int_distribution<int64_t> anywhere(0, push_us), late(0, 30000);
  int killed = 0, killed_writing = 0;
  for (int i = 1; i <= 30; ++i) {
    const fs::path b = variant_bundle(bundle, home / ("v" + std::to_string(i)), i);
    const int before = count_artifact_files(home.path());
    pid_t pid = spawn_kiln(
        {"registry", "push", b.string(), "--name", "k", "--tag", "try=" + std::to_string(i)},
        home.path());
    bool exited = false;
    if (i % 2 == 0) {
      exited = !wait_for_artifact_writes(home.path(), before, pid);
      if (!exited) std::this_thread::sleep_for(std::chrono::microseconds(late(rng)));
    } else {
      std::this_thread::sleep_for(std::chrono::microseconds(anywhere(rng)));
    }
    int status = 0;
    if (!exited) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      const bool was_killed = WIFSIGNALED(status);
      killed += was_killed;
      killed_writing += was_killed && i % 2 == 0;
    }
  }
  std::printf(
      "kill -9 loop: %d of 30 pushes killed, %d of them after artifact writes began "
      "(a whole push took %.0f ms)\n",
      killed, killed_writing, push_us / 1e3);
  EXPECT_GT(killed_writing, 0);
  EXPECT_GT(killed, 0);
  expect_registry_whole(home.path(), "k");
  // The next push succeeds and gets the next number; gc then clears what the kills left.
  CommandResult r =
      run_kiln({"registry", "push", bundle.string(), "--name", "k", "--json"}, home.path());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const int64_t next = Json::parse(r.out)["version"].get<int64_t>();
  r = run_kiln({"registry", "list", "k", "--json"}, home.path());
  Json versions = Json::parse(r.out);
  EXPECT_EQ(versions.back()["version"].get<int64_t>(), next);
  EXPECT_EQ(run_kiln({"registry", "gc", "--grace", "0"}, home.path()).exit_code, 0);
  expect_registry_whole(home.path(), "k");
}

}  // namespace
}  // namespace kiln
