#pragma once
// Starting child processes (fork + exec) the one careful way: the argument and environment
// arrays are built, and PATH searched, before fork, so the child calls only async-signal-safe
// functions (open, dup2, chdir, setsid, prctl, execve) — a multi-threaded parent's child must not
// allocate (another thread may have held the allocator's lock at fork).

#include <sys/types.h>

#include <string>
#include <vector>

#include "kiln/core/expected.h"

namespace kiln {

/// How to start a child. Plain value.
///
///   SpawnOptions o;
///   o.argv = {"/usr/bin/env"};
///   o.env = {"KILN_THREADS=1"};
///   o.stdout_path = o.stderr_path = "run.log";
///   Expected<pid_t> pid = spawn_process(o);
struct SpawnOptions {
  /// argv[0] names the program: a path, or with `search_path` a name looked up in PATH.
  std::vector<std::string> argv;
  /// The file to execute when it is not argv[0] (e.g. /proc/self/exe: this very binary).
  std::string exec_path;
  bool search_path = false;
  /// "KEY=VALUE" entries over this process's environment (a key given here replaces its value).
  std::vector<std::string> env;
  std::string stdin_path = "/dev/null";  ///< "": inherit
  /// Files for stdout and stderr ("": inherit); the same path for both opens one file once.
  std::string stdout_path, stderr_path;
  bool append = false;  ///< append to those files instead of truncating them
  /// Descriptors put on stdout / stderr instead (-1: none); a pipe's write end, say. Those and
  /// every other descriptor of the parent should be O_CLOEXEC, or the child inherits them.
  int stdout_fd = -1, stderr_fd = -1;
  std::string cwd;  ///< "": inherit
  enum class Group { kInherit, kNewProcessGroup, kNewSession };
  Group group = Group::kInherit;
  /// PR_SET_PDEATHSIG: the signal the child gets when this process dies (0: none). The child
  /// also exits (127) at once when this process died before it could ask.
  int parent_death_signal = 0;
};

/// Forks and execs `options`. The child exits 127 when it cannot set itself up (a file it cannot
/// open, a missing cwd) or exec. InvalidArgument for an empty argv, NotFound for a name not in
/// PATH, Unavailable when fork fails. The caller reaps the child (waitpid). Thread-safe.
Expected<pid_t> spawn_process(const SpawnOptions& options);

}  // namespace kiln
