#include "kiln/loadtest/generator.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <functional>
#include <thread>
#include <vector>

#include "kiln/loadtest/find_max.h"

namespace kiln::loadtest {
namespace {

/// A tiny blocking HTTP/1.1 server on 127.0.0.1 (a thread per connection) whose answer to
/// request number n (counted over all connections) waits `delay_ms(n)` first.
class TinyServer {
 public:
  explicit TinyServer(std::function<int(int64_t)> delay_ms = nullptr, bool answer = true,
                      std::string reply = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
      : delay_ms_(std::move(delay_ms)), answer_(answer), reply_(std::move(reply)) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    const int one = 1;
    setsockopt(fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a);
    ::listen(fd_, 128);
    socklen_t len = sizeof a;
    getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    accept_thread_ = std::thread([this] { accept_loop(); });
  }
  ~TinyServer() {
    stop_ = true;
    accept_thread_.join();
    for (auto& t : conn_threads_) t.join();
    ::close(fd_);
  }
  int port() const { return port_; }
  int64_t requests() const { return count_; }

 private:
  void accept_loop() {
    while (!stop_) {
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, 20) <= 0) continue;
      const int c = ::accept(fd_, nullptr, nullptr);
      if (c >= 0) conn_threads_.emplace_back([this, c] { serve(c); });
    }
  }
  void serve(int c) {
    std::string buf;
    char tmp[4096];
    while (!stop_) {
      size_t end;
      while ((end = buf.find("\r\n\r\n")) == std::string::npos) {
        pollfd p{c, POLLIN, 0};
        if (stop_) break;
        if (::poll(&p, 1, 20) <= 0) continue;
        const ssize_t n = ::recv(c, tmp, sizeof tmp, 0);
        if (n <= 0) {
          ::close(c);
          return;
        }
        buf.append(tmp, static_cast<size_t>(n));
      }
      if (stop_) break;
      buf.erase(0, end + 4);  // the tests send GETs only
      const int64_t n = count_++;
      if (!answer_) continue;
      if (delay_ms_) {
        const int d = delay_ms_(n);
        if (d > 0) std::this_thread::sleep_for(std::chrono::milliseconds(d));
      }
      if (::send(c, reply_.data(), reply_.size(), MSG_NOSIGNAL) <= 0) break;
    }
    ::close(c);
  }

  std::function<int(int64_t)> delay_ms_;
  bool answer_;
  std::string reply_;
  int fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<int64_t> count_{0};
  std::thread accept_thread_;
  std::vector<std::thread> conn_threads_;
};

LoadOptions options_for(int port) {
  auto t = parse_target("http://127.0.0.1:" + std::to_string(port) + "/ping", false);
  EXPECT_TRUE(t.ok());
  return LoadOptions(*t, {build_request(*t, "/ping", "")});
}

TEST(LoadtestSchedule, IntendedTimesHaveNoDrift) {
  EXPECT_EQ(intended_offset_ns(0, 3), 0);
  EXPECT_EQ(intended_offset_ns(1, 3), 333'333'333);
  EXPECT_EQ(intended_offset_ns(3, 3), 1'000'000'000);
  EXPECT_EQ(intended_offset_ns(3'000'000, 3), 1'000'000'000'000'000);
  EXPECT_EQ(intended_offset_ns(50'000, 50'000), 1'000'000'000);
  // Requests due in [0, 1 s) at 7 req/s: exactly 7.
  int due = 0;
  for (int64_t i = 0; intended_offset_ns(i, 7) < 1'000'000'000; ++i) ++due;
  EXPECT_EQ(due, 7);
}

TEST(LoadtestGenerator, OpenLoopSendsTheScheduleAndCountsAnswers) {
  TinyServer server;
  LoadOptions o = options_for(server.port());
  o.rate(2000).connections(8).duration_s(1);
  auto r = run_load(o);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_TRUE(r->open_loop);
  EXPECT_EQ(r->scheduled, 2000);
  EXPECT_EQ(r->sent + r->unsent, 2000);
  EXPECT_EQ(r->completed, r->sent);
  EXPECT_EQ(r->errors(), 0);
  EXPECT_EQ(r->status_counts.at(200), r->completed);
  EXPECT_EQ(r->latency_ns.total_count(), r->completed);
  EXPECT_GT(r->achieved_rate(), 1500);
  EXPECT_LT(r->achieved_rate(), 2100);
  int64_t in_timeline = 0;
  for (const auto& s : r->timeline) in_timeline += s.requests;
  EXPECT_EQ(in_timeline, r->completed);
}

TEST(LoadtestGenerator, AStallShowsInOpenLoopButHidesInClosedLoop) {
  // One answer in the run waits 300 ms. Open loop at 500 req/s on one connection: the ~150
  // requests due during the stall queue behind it and each counts from its intended time, so
  // p99 is hundreds of ms. Closed loop: the one slow request is the only one that sees it.
  auto stall_once = [](int64_t first) {
    return [first](int64_t n) { return n == first ? 300 : 0; };
  };
  {
    TinyServer server(stall_once(100));
    LoadOptions o = options_for(server.port());
    o.rate(500).connections(1).duration_s(1.2);
    auto r = run_load(o);
    ASSERT_TRUE(r.ok());
    EXPECT_GE(r->latency_ns.value_at_percentile(99), 150'000'000);
    EXPECT_GE(r->latency_ns.max(), 280'000'000);
    EXPECT_GT(r->late_sends, 50);
  }
  {
    TinyServer server(stall_once(100));
    LoadOptions o = options_for(server.port());
    o.connections(1).duration_s(1.2);  // closed loop
    auto r = run_load(o);
    ASSERT_TRUE(r.ok());
    ASSERT_GT(r->completed, 300);
    EXPECT_LT(r->latency_ns.value_at_percentile(99), 100'000'000);
    EXPECT_GE(r->latency_ns.max(), 280'000'000);
  }
}

TEST(LoadtestGenerator, RefusedConnectionsAreConnectErrors) {
  int port;
  {
    TinyServer closed;  // take a free port, then close it
    port = closed.port();
  }
  LoadOptions o = options_for(port);
  o.rate(200).connections(2).duration_s(0.3);
  auto r = run_load(o);
  ASSERT_TRUE(r.ok());
  EXPECT_GT(r->errors_connect, 0);
  EXPECT_EQ(r->completed, 0);
  EXPECT_EQ(r->first_error.rfind("connect: ", 0), 0u) << r->first_error;
}

TEST(LoadtestGenerator, ChunkedAndErrorAnswersAreCountedAndNamed) {
  {
    TinyServer server(nullptr, true,
                      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n");
    LoadOptions o = options_for(server.port());
    o.rate(100).connections(2).duration_s(0.2);
    auto r = run_load(o);
    ASSERT_TRUE(r.ok());
    EXPECT_GT(r->errors_read, 0);
    EXPECT_EQ(r->completed, 0);
    EXPECT_NE(r->first_error.find("chunked"), std::string::npos) << r->first_error;
  }
  {
    TinyServer server(nullptr, true,
                      "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n");
    LoadOptions o = options_for(server.port());
    o.rate(100).connections(2).duration_s(0.2);
    auto r = run_load(o);
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r->completed, 20);
    EXPECT_EQ(r->errors_status, 20);
    EXPECT_EQ(r->status_counts.at(503), 20);
  }
}

TEST(LoadtestGenerator, UnansweredRequestsTimeOut) {
  TinyServer server(nullptr, /*answer=*/false);
  LoadOptions o = options_for(server.port());
  o.rate(20).connections(4).duration_s(0.5).timeout_s(0.2).drain_s(0.5);
  auto r = run_load(o);
  ASSERT_TRUE(r.ok());
  EXPECT_GT(r->errors_timeout, 0);
  EXPECT_EQ(r->completed, 0);
}

TEST(LoadtestGenerator, RejectsBadOptions) {
  LoadOptions o = options_for(1);
  EXPECT_FALSE(run_load(LoadOptions(o).connections(0)).ok());
  EXPECT_FALSE(run_load(LoadOptions(o).duration_s(0)).ok());
  EXPECT_FALSE(run_load(LoadOptions(o).threads(3).connections(2)).ok());
  EXPECT_FALSE(run_load(LoadOptions(o.target_, {})).ok());
}

TEST(LoadtestFindMax, StepsUpToTheCapWhenEveryStageHolds) {
  TinyServer server;
  FindMaxOptions fm;
  fm.start_rate = 200;
  fm.factor = 2;
  fm.stage_s = 0.3;
  fm.max_rate = 1000;
  std::vector<double> seen;
  auto r = find_max(options_for(server.port()).connections(4), *parse_slo("p99<200ms"), fm,
                    [&](const FindMaxStage& s) { seen.push_back(s.rate); });
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ(seen, (std::vector<double>{200, 400, 800}));
  EXPECT_EQ(r->best_rate, 800);
}

TEST(LoadtestFindMax, BisectsBelowTheRateThatBreaksTheSlo) {
  // One connection and 4 ms per answer: about 250 req/s at most, then the queue grows.
  TinyServer server([](int64_t) { return 4; });
  FindMaxOptions fm;
  fm.start_rate = 100;
  fm.factor = 2;
  fm.stage_s = 0.4;
  fm.bisect_steps = 2;
  auto r = find_max(options_for(server.port()).connections(1), *parse_slo("p99<40ms"), fm, nullptr);
  ASSERT_TRUE(r.ok());
  EXPECT_GE(r->best_rate, 100);
  EXPECT_LT(r->best_rate, 400);
  ASSERT_GE(r->stages.size(), 3u);
  EXPECT_TRUE(r->stages[0].ok);
  EXPECT_FALSE(r->stages.back().ok && r->stages.back().rate > r->best_rate);
}

}  // namespace
}  // namespace kiln::loadtest
