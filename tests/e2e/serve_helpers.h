#pragma once

// A blocking HTTP/1.1 client and a `kiln serve` child process for the serve end-to-end tests.

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "support/test_support.h"

namespace kiln::testing {

struct HttpResult {
  int status = 0;                              ///< 0: connection failed or closed
  std::map<std::string, std::string> headers;  ///< lower-case names
  std::string body;
};

/// One keep-alive connection to 127.0.0.1:port; reconnects when the server closed it.
class HttpClient {
 public:
  explicit HttpClient(int port) : port_(port) {}
  ~HttpClient() { close_fd(); }
  HttpClient(const HttpClient&) = delete;
  HttpClient& operator=(const HttpClient&) = delete;

  HttpResult get(const std::string& path, const std::vector<std::string>& headers = {}) {
    return request("GET", path, "", headers);
  }
  HttpResult post(const std::string& path, const std::string& body,
                  const std::vector<std::string>& headers = {}) {
    return request("POST", path, body, headers);
  }

  HttpResult request(const std::string& method, const std::string& path, const std::string& body,
                     const std::vector<std::string>& headers) {
    for (int attempt = 0; attempt < 2; ++attempt) {
      if (fd_ < 0 && !connect_fd()) return {};
      std::string req = method + " " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\n";
      for (const auto& h : headers) req += h + "\r\n";
      if (method == "POST") {
        bool has_type = false;
        for (const auto& h : headers) has_type |= h.rfind("Content-Type", 0) == 0;
        if (!has_type) req += "Content-Type: application/json\r\n";
        req += "Content-Length: " + std::to_string(body.size()) + "\r\n";
      }
      req += "\r\n" + body;
      if (!send_all(req)) {
        close_fd();
        continue;
      }
      HttpResult r = read_response();
      if (r.status == 0 && attempt == 0 && fresh_ == false) {
        close_fd();  // a stale keep-alive connection: retry once on a new one
        continue;
      }
      return r;
    }
    return {};
  }

 private:
  bool connect_fd() {
    fd_ = testing::connect_loopback(port_);
    if (fd_ < 0) return false;
    buf_.clear();
    fresh_ = true;
    return true;
  }
  void close_fd() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }
  bool send_all(const std::string& s) {
    size_t off = 0;
    while (off < s.size()) {
      ssize_t n = ::send(fd_, s.data() + off, s.size() - off, MSG_NOSIGNAL);
      if (n <= 0) return false;
      off += static_cast<size_t>(n);
    }
    return true;
  }
  bool fill() {
    char tmp[65536];
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, 60000) <= 0) return false;
    ssize_t n = ::recv(fd_, tmp, sizeof(tmp), 0);
    if (n <= 0) return false;
    buf_.append(tmp, static_cast<size_t>(n));
    return true;
  }
  HttpResult read_response() {
    HttpResult r;
    size_t end;
    while ((end = buf_.find("\r\n\r\n")) == std::string::npos)
      if (!fill()) return {};
    fresh_ = false;
    std::string head = buf_.substr(0, end);
    buf_.erase(0, end + 4);
    size_t line_end = head.find("\r\n");
    std::string status_line = head.substr(0, line_end);
    r.status = std::stoi(status_line.substr(9, 3));
    if (r.status == 100) return read_response();  // interim "100 Continue"
    size_t pos = line_end == std::string::npos ? head.size() : line_end + 2;
    while (pos < head.size()) {
      size_t e = head.find("\r\n", pos);
      if (e == std::string::npos) e = head.size();
      std::string line = head.substr(pos, e - pos);
      size_t colon = line.find(':');
      if (colon != std::string::npos) {
        std::string name = line.substr(0, colon);
        for (auto& c : name) c = static_cast<char>(std::tolower(c));
        std::string value = line.substr(colon + 1);
        while (!value.empty() && value.front() == ' ') value.erase(0, 1);
        r.headers[name] = value;
      }
      pos = e + 2;
    }
    const size_t len = r.headers.count("content-length")
                           ? static_cast<size_t>(std::stoull(r.headers["content-length"]))
                           : 0;
    while (buf_.size() < len)
      if (!fill()) return {};
    r.body = buf_.substr(0, len);
    buf_.erase(0, len);
    if (r.headers["connection"] == "close") close_fd();
    return r;
  }

  int port_;
  int fd_ = -1;
  bool fresh_ = false;
  std::string buf_;
};

/// `kiln serve ARGS --port 0` as a child process; waits for the ready line and parses the port.
/// stderr goes to a file (log()). The destructor kills it (SIGKILL) if still running.
class ServerProcess {
 public:
  ServerProcess(const std::vector<std::string>& args, const fs::path& home,
                const fs::path& log_path)
      : log_path_(log_path) {
    int out[2];
    if (::pipe(out) != 0) return;
    pid_ = ::fork();
    if (pid_ == 0) {
      int err_fd = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      ::dup2(out[1], 1);
      ::dup2(err_fd, 2);
      ::close(out[0]);
      ::setenv("KILN_HOME", home.c_str(), 1);
      std::string bin = kiln_binary().string();
      std::vector<std::string> all{bin, "serve", "--port", "0"};
      all.insert(all.end(), args.begin(), args.end());
      std::vector<char*> argv;
      for (auto& a : all) argv.push_back(a.data());
      argv.push_back(nullptr);
      ::execv(bin.c_str(), argv.data());
      ::_exit(127);
    }
    ::close(out[1]);
    out_fd_ = out[0];
    // Wait (up to 60 s) for "kiln serve: ready on http://HOST:PORT (...)".
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (std::chrono::steady_clock::now() < deadline) {
      size_t nl = stdout_.find('\n');
      if (nl != std::string::npos && stdout_.find("ready on http://") != std::string::npos) {
        size_t p = stdout_.find("http://");
        size_t colon = stdout_.find(':', p + 7);
        port_ = std::stoi(stdout_.substr(colon + 1));
        ready_line_ = stdout_.substr(0, nl);
        return;
      }
      pollfd pfd{out_fd_, POLLIN, 0};
      if (::poll(&pfd, 1, 200) > 0) {
        char buf[4096];
        ssize_t n = ::read(out_fd_, buf, sizeof(buf));
        if (n <= 0) break;  // exited before ready
        stdout_.append(buf, static_cast<size_t>(n));
      }
    }
  }
  ~ServerProcess() {
    if (pid_ > 0 && !exited_) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
    if (out_fd_ >= 0) ::close(out_fd_);
  }
  ServerProcess(const ServerProcess&) = delete;
  ServerProcess& operator=(const ServerProcess&) = delete;

  bool ready() const { return port_ > 0; }
  int port() const { return port_; }
  const std::string& ready_line() const { return ready_line_; }
  std::string log() const { return read_text(log_path_); }
  pid_t pid() const { return pid_; }

  void signal(int sig) { ::kill(pid_, sig); }
  /// Waits for exit (up to `timeout`); returns the exit code, 128+signal, or -1 on timeout.
  int wait_exit(std::chrono::seconds timeout = std::chrono::seconds(60)) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      int status = 0;
      pid_t r = ::waitpid(pid_, &status, WNOHANG);
      if (r == pid_) {
        exited_ = true;
        drain_stdout();
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return -1;
  }
  const std::string& stdout_text() const { return stdout_; }

 private:
  void drain_stdout() {
    char buf[4096];
    for (;;) {
      pollfd pfd{out_fd_, POLLIN, 0};
      if (::poll(&pfd, 1, 100) <= 0) break;
      ssize_t n = ::read(out_fd_, buf, sizeof(buf));
      if (n <= 0) break;
      stdout_.append(buf, static_cast<size_t>(n));
    }
  }

  fs::path log_path_;
  pid_t pid_ = -1;
  int out_fd_ = -1;
  int port_ = 0;
  bool exited_ = false;
  std::string stdout_, ready_line_;
};

/// Two servers on one KILN_HOME (replicas), each serving `bundle` as "stable" and "canary"
/// behind route "cancer" (stable 100 %), checking each other's kept split every 200 ms.
/// ready() is false when either did not start.
struct TwoRouteReplicas {
  TwoRouteReplicas(const fs::path& bundle, const fs::path& home)
      : a(args(bundle), home, home / "log-a"), b(args(bundle), home, home / "log-b") {}
  static std::vector<std::string> args(const fs::path& bundle) {
    return {"--model",
            "stable=" + bundle.string(),
            "--model",
            "canary=" + bundle.string(),
            "--route",
            "cancer=stable:100,canary:0",
            "--poll-interval-ms",
            "200"};
  }
  bool ready() const { return a.ready() && b.ready(); }
  std::string logs() const { return a.log() + b.log(); }
  ServerProcess a, b;
};

/// One row of ../shared/datasets/breast_cancer.csv: 30 features and the diagnosis.
struct BreastCancerRow {
  std::vector<double> features;
  std::string diagnosis;
};

/// Every row of breast_cancer.csv (569), in file order.
inline std::vector<BreastCancerRow> breast_cancer_rows() {
  std::istringstream in(read_text(shared_datasets_dir() / "breast_cancer.csv"));
  std::string line;
  std::getline(in, line);
  std::vector<BreastCancerRow> rows;
  while (std::getline(in, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    std::istringstream cells(line);
    BreastCancerRow row;
    for (std::string cell; std::getline(cells, cell, ',');) {
      if (row.features.size() < 30)
        row.features.push_back(std::stod(cell));
      else
        row.diagnosis = cell;
    }
    rows.push_back(row);
  }
  return rows;
}

/// A JSON infer request for one breast-cancer row, its first 20 features multiplied by
/// `scale_first_20` (1: unshifted; 1.5: a planted shift), with `id` when not empty.
inline std::string breast_cancer_infer_body(const std::vector<double>& features,
                                            double scale_first_20, const std::string& id = "") {
  nlohmann::json data = nlohmann::json::array();
  for (size_t i = 0; i < features.size(); ++i)
    data.push_back(features[i] * (i < 20 ? scale_first_20 : 1.0));
  nlohmann::json body = {
      {"inputs", {{{"name", "input"}, {"shape", {1, 30}}, {"datatype", "FP32"}, {"data", data}}}}};
  if (!id.empty()) body["id"] = id;
  return body.dump();
}

}  // namespace kiln::testing
