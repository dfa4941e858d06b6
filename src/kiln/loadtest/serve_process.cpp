#include "kiln/loadtest/serve_process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "kiln/core/process.h"

namespace kiln::loadtest {
namespace {

std::string log_tail(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  std::string s = ss.str();
  if (s.size() > 2000) s = "..." + s.substr(s.size() - 2000);
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

}  // namespace

std::string self_executable() {
  std::error_code ec;
  auto p = std::filesystem::read_symlink("/proc/self/exe", ec);
  return ec ? std::string() : p.string();
}

Expected<std::unique_ptr<ServeProcess>> ServeProcess::Start(
    const std::string& kiln_binary, const std::string& model_ref,
    const std::vector<std::string>& extra_args, double timeout_s) {
  std::unique_ptr<ServeProcess> p(new ServeProcess());
  char log_template[] = "/tmp/kiln-loadtest-serve-XXXXXX";
  const int log_fd = ::mkostemp(log_template, O_CLOEXEC);
  if (log_fd < 0) return Status::IoError(std::string("mkstemp: ") + std::strerror(errno));
  p->log_path_ = log_template;
  int out[2];
  if (::pipe2(out, O_CLOEXEC) != 0) {
    ::close(log_fd);
    return Status::IoError(std::string("pipe: ") + std::strerror(errno));
  }
  SpawnOptions o;
  o.argv = {kiln_binary, "serve", "--model", model_ref, "--port", "0"};
  o.argv.insert(o.argv.end(), extra_args.begin(), extra_args.end());
  o.stdin_path.clear();
  o.stdout_fd = out[1];
  o.stderr_fd = log_fd;
  o.parent_death_signal = SIGTERM;  // no orphaned server if loadtest is killed
  Expected<pid_t> spawned = spawn_process(o);
  ::close(log_fd);
  ::close(out[1]);
  if (!spawned.ok()) {
    ::close(out[0]);
    return spawned.status();
  }
  p->pid_ = *spawned;
  p->out_fd_ = out[0];
  std::string text;
  const auto deadline = std::chrono::steady_clock::now() +
                        std::chrono::milliseconds(static_cast<int64_t>(timeout_s * 1000));
  const std::string what = "kiln serve --model " + model_ref;
  while (std::chrono::steady_clock::now() < deadline) {
    const size_t at = text.find("ready on http://");
    const size_t nl = at == std::string::npos ? at : text.find('\n', at);
    if (nl != std::string::npos) {
      // "ready on http://HOST:PORT (models: a:1, b:2)"
      const std::string line = text.substr(at + 16, nl - at - 16);
      const size_t space = line.find(' ');
      const std::string hostport = line.substr(0, space);
      const size_t colon = hostport.rfind(':');
      p->host_ = hostport.substr(0, colon);
      p->port_ = std::atoi(hostport.c_str() + colon + 1);
      const size_t m = line.find("(models: ");
      if (m != std::string::npos) {
        std::stringstream ss(line.substr(m + 9, line.rfind(')') - m - 9));
        for (std::string item; std::getline(ss, item, ',');) {
          while (!item.empty() && item.front() == ' ') item.erase(0, 1);
          const size_t c = item.rfind(':');
          if (!item.empty()) p->models_.push_back(item.substr(0, c));
        }
      }
      if (p->port_ <= 0) return Status::Internal(what + ": cannot parse '" + line + "'");
      return p;
    }
    pollfd pfd{p->out_fd_, POLLIN, 0};
    if (::poll(&pfd, 1, 100) > 0) {
      char buf[4096];
      const ssize_t n = ::read(p->out_fd_, buf, sizeof buf);
      if (n <= 0) {
        int status = 0;
        ::waitpid(p->pid_, &status, 0);
        p->pid_ = -1;
        return Status::FailedPrecondition(what + " exited before it was ready:\n" +
                                          log_tail(p->log_path_));
      }
      text.append(buf, static_cast<size_t>(n));
    }
  }
  return Status::Unavailable(what + ": not ready after " + std::to_string(timeout_s) + " s:\n" +
                             log_tail(p->log_path_));
}

Status ServeProcess::stop(double timeout_s) {
  if (pid_ <= 0) return Status::Ok();
  ::kill(pid_, SIGTERM);
  const auto deadline = std::chrono::steady_clock::now() +
                        std::chrono::milliseconds(static_cast<int64_t>(timeout_s * 1000));
  int status = 0;
  for (;;) {
    const pid_t r = ::waitpid(pid_, &status, WNOHANG);
    if (r == pid_) break;
    if (std::chrono::steady_clock::now() > deadline) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, &status, 0);
      pid_ = -1;
      return Status::Unavailable("kiln serve did not stop within " + std::to_string(timeout_s) +
                                 " s of SIGTERM (killed)");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  pid_ = -1;
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return Status::Ok();
  return Status::Unavailable(
      "kiln serve exited with status " +
      std::to_string(WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status)) + ":\n" +
      log_tail(log_path_));
}

ServeProcess::~ServeProcess() {
  if (pid_ > 0) (void)stop(10);
  if (out_fd_ >= 0) ::close(out_fd_);
  if (!log_path_.empty()) ::unlink(log_path_.c_str());
}

}  // namespace kiln::loadtest
