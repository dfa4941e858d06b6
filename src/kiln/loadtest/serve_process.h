#pragma once

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "kiln/core/expected.h"

namespace kiln::loadtest {

/// `kiln serve MODEL --port 0` as a child process, for `kiln loadtest --model`. Its stdout is
/// read for the ready line; its stderr goes to a temporary log, shown if it fails to start.
/// The destructor stops it (SIGTERM, then SIGKILL after 10 s). Not thread-safe.
class ServeProcess {
 public:
  /// Starts `kiln_binary serve --model REF --port 0 [extra_args]` and blocks until it prints
  /// "kiln serve: ready on http://HOST:PORT (models: NAME:VERSION, ...)" (or `timeout_s` passes
  /// or it exits: the error carries the end of its log).
  static Expected<std::unique_ptr<ServeProcess>> Start(const std::string& kiln_binary,
                                                       const std::string& model_ref,
                                                       const std::vector<std::string>& extra_args,
                                                       double timeout_s = 120);
  ~ServeProcess();
  ServeProcess(const ServeProcess&) = delete;
  ServeProcess& operator=(const ServeProcess&) = delete;

  pid_t pid() const { return pid_; }
  const std::string& host() const { return host_; }
  int port() const { return port_; }
  /// Model names from the ready line, in order.
  const std::vector<std::string>& models() const { return models_; }

  /// SIGTERM and wait (blocks up to `timeout_s`, then SIGKILL). Returns the exit status text.
  Status stop(double timeout_s = 30);

 private:
  ServeProcess() = default;
  pid_t pid_ = -1;
  int out_fd_ = -1;
  std::string log_path_;
  std::string host_;
  int port_ = 0;
  std::vector<std::string> models_;
};

/// This process's executable (/proc/self/exe).
std::string self_executable();

}  // namespace kiln::loadtest
