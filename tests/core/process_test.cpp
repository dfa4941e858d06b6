// spawn_process: environment, working directory, redirections (one shared file, append or
// truncate, a pipe), PATH lookup, process groups, and the 127 of a child that cannot start.
#include "kiln/core/process.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

#include "support/test_support.h"

namespace kiln {
namespace {

using testing::read_text;
using testing::TempDir;

int wait_exit(pid_t pid) {
  int status = 0;
  if (::waitpid(pid, &status, 0) != pid) return -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

TEST(SpawnProcess, EnvironmentWorkingDirectoryAndOneSharedOutputFile) {
  TempDir dir;
  ::setenv("KILN_SPAWN_TEST_KEPT", "kept", 1);
  ::setenv("KILN_SPAWN_TEST_REPLACED", "old", 1);
  SpawnOptions o;
  o.argv = {"sh", "-c",
            "echo \"$KILN_SPAWN_TEST_KEPT $KILN_SPAWN_TEST_REPLACED $KILN_SPAWN_TEST_NEW\"; "
            "echo to-stderr >&2; pwd; cat"};  // cat: stdin is /dev/null, so it ends at once
  o.search_path = true;
  o.env = {"KILN_SPAWN_TEST_REPLACED=new", "KILN_SPAWN_TEST_NEW=added"};
  o.cwd = dir.path().string();
  o.stdout_path = o.stderr_path = (dir / "out.log").string();
  Expected<pid_t> pid = spawn_process(o);
  ASSERT_TRUE(pid.ok()) << pid.status();
  EXPECT_EQ(wait_exit(*pid), 0);
  EXPECT_EQ(read_text(dir / "out.log"),
            "kept new added\nto-stderr\n" + std::filesystem::canonical(dir.path()).string() + "\n");
  // This process's environment is untouched.
  EXPECT_STREQ(std::getenv("KILN_SPAWN_TEST_REPLACED"), "old");
  EXPECT_EQ(std::getenv("KILN_SPAWN_TEST_NEW"), nullptr);
  // Append keeps what is there; the default truncates.
  o.argv = {"sh", "-c", "echo again"};
  o.append = true;
  EXPECT_EQ(wait_exit(*spawn_process(o)), 0);
  EXPECT_EQ(read_text(dir / "out.log").substr(read_text(dir / "out.log").size() - 6), "again\n");
  o.append = false;
  EXPECT_EQ(wait_exit(*spawn_process(o)), 0);
  EXPECT_EQ(read_text(dir / "out.log"), "again\n");
}

TEST(SpawnProcess, PipesProcessGroupsAndFailures) {
  // A pipe's write end as stdout; stderr to its own file.
  TempDir dir;
  int fds[2];
  ASSERT_EQ(::pipe2(fds, O_CLOEXEC), 0);
  SpawnOptions o;
  o.argv = {"/bin/sh", "-c", "echo piped; echo err >&2"};
  o.stdout_fd = fds[1];
  o.stderr_path = (dir / "err.log").string();
  o.group = SpawnOptions::Group::kNewProcessGroup;
  Expected<pid_t> pid = spawn_process(o);
  ASSERT_TRUE(pid.ok()) << pid.status();
  ::close(fds[1]);
  char buf[64] = {};
  const ssize_t n = ::read(fds[0], buf, sizeof buf - 1);
  ::close(fds[0]);
  EXPECT_EQ(std::string(buf, n > 0 ? static_cast<size_t>(n) : 0), "piped\n");
  EXPECT_EQ(wait_exit(*pid), 0);
  EXPECT_EQ(read_text(dir / "err.log"), "err\n");
  // Its own process group (and session, asked for).
  o = SpawnOptions();
  o.argv = {"/bin/sleep", "5"};
  o.group = SpawnOptions::Group::kNewSession;
  pid = spawn_process(o);
  ASSERT_TRUE(pid.ok());
  for (int i = 0; i < 200 && ::getsid(*pid) != *pid; ++i) ::usleep(5000);
  EXPECT_EQ(::getsid(*pid), *pid);
  EXPECT_EQ(::getpgid(*pid), *pid);
  ::kill(*pid, SIGKILL);
  EXPECT_EQ(wait_exit(*pid), 128 + SIGKILL);
  // What cannot start: a name not in PATH (NotFound here), a missing file or directory (127).
  o = SpawnOptions();
  o.argv = {"kiln-no-such-program"};
  o.search_path = true;
  EXPECT_EQ(spawn_process(o).status().code(), StatusCode::kNotFound);
  o.argv = {(dir / "missing").string()};
  o.search_path = false;
  o.stderr_path = (dir / "exec.log").string();
  EXPECT_EQ(wait_exit(*spawn_process(o)), 127);
  EXPECT_NE(read_text(dir / "exec.log").find("cannot execute " + (dir / "missing").string()),
            std::string::npos);
  o.argv = {"/bin/true"};
  o.cwd = (dir / "no-such-dir").string();
  EXPECT_EQ(wait_exit(*spawn_process(o)), 127);
  EXPECT_EQ(spawn_process(SpawnOptions()).status().code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace kiln
