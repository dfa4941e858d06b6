#include "kiln/core/process.h"

#include <fcntl.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>

extern char** environ;

namespace kiln {

namespace {

/// argv[0] looked up in PATH ("" when not found); a name with a '/' is taken as it is.
std::string find_in_path(const std::string& name) {
  if (name.find('/') != std::string::npos) return name;
  const char* path = std::getenv("PATH");
  std::string dirs = path ? path : "/usr/local/bin:/usr/bin:/bin";
  size_t start = 0;
  while (start <= dirs.size()) {
    size_t end = dirs.find(':', start);
    if (end == std::string::npos) end = dirs.size();
    const std::string dir = end > start ? dirs.substr(start, end - start) : ".";
    const std::string candidate = dir + "/" + name;
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
    start = end + 1;
  }
  return "";
}

/// Opens `path` onto `target` (0, 1 or 2). False on failure. Async-signal-safe.
bool redirect(const char* path, int flags, int target) {
  const int fd = ::open(path, flags, 0644);
  if (fd < 0) return false;
  if (fd != target) {
    if (::dup2(fd, target) < 0) return false;
    ::close(fd);
  }
  return true;
}

}  // namespace

Expected<pid_t> spawn_process(const SpawnOptions& o) {
  if (o.argv.empty() || o.argv[0].empty())
    return Status::InvalidArgument("spawn: no program given");
  // Everything the child needs, built here: it may not allocate.
  std::string file = o.exec_path.empty() ? o.argv[0] : o.exec_path;
  if (o.search_path && o.exec_path.empty()) {
    file = find_in_path(o.argv[0]);
    if (file.empty())
      return Status::NotFound("'" + o.argv[0] + "' is not a program in PATH");
  }
  std::vector<char*> argv;
  for (const std::string& a : o.argv) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  std::vector<std::string> env_store;
  for (char** e = environ; e && *e; ++e) {
    const std::string entry = *e;
    const std::string key = entry.substr(0, entry.find('='));
    bool replaced = false;
    for (const std::string& kv : o.env) replaced = replaced || kv.substr(0, kv.find('=')) == key;
    if (!replaced) env_store.push_back(entry);
  }
  env_store.insert(env_store.end(), o.env.begin(), o.env.end());
  std::vector<char*> envp;
  for (const std::string& e : env_store) envp.push_back(const_cast<char*>(e.c_str()));
  envp.push_back(nullptr);
  const int out_flags = O_WRONLY | O_CREAT | (o.append ? O_APPEND : O_TRUNC);
  const bool shared_output = !o.stdout_path.empty() && o.stdout_path == o.stderr_path;
  const pid_t parent = ::getpid();

  const pid_t pid = ::fork();
  if (pid < 0) return Status::Unavailable(std::string("fork: ") + std::strerror(errno));
  if (pid > 0) return pid;
  // The child: async-signal-safe calls only, from here to exec.
  if (o.group == SpawnOptions::Group::kNewSession) ::setsid();
  if (o.group == SpawnOptions::Group::kNewProcessGroup) ::setpgid(0, 0);
  if (o.parent_death_signal != 0 &&
      (::prctl(PR_SET_PDEATHSIG, o.parent_death_signal) != 0 || ::getppid() != parent))
    ::_exit(127);
  if (!o.stdin_path.empty() && !redirect(o.stdin_path.c_str(), O_RDONLY, 0)) ::_exit(127);
  if (!o.stdout_path.empty() && !redirect(o.stdout_path.c_str(), out_flags, 1)) ::_exit(127);
  if (shared_output) {
    if (::dup2(1, 2) < 0) ::_exit(127);
  } else if (!o.stderr_path.empty() && !redirect(o.stderr_path.c_str(), out_flags, 2)) {
    ::_exit(127);
  }
  if (o.stdout_fd >= 0 && ::dup2(o.stdout_fd, 1) < 0) ::_exit(127);
  if (o.stderr_fd >= 0 && ::dup2(o.stderr_fd, 2) < 0) ::_exit(127);
  if (!o.cwd.empty() && ::chdir(o.cwd.c_str()) != 0) ::_exit(127);
  ::execve(file.c_str(), argv.data(), envp.data());
  static const char kCannot[] = "cannot execute ";
  (void)!::write(2, kCannot, sizeof kCannot - 1);
  (void)!::write(2, file.c_str(), file.size());
  (void)!::write(2, "\n", 1);
  ::_exit(127);
}

}  // namespace kiln
