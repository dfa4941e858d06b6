#include "kiln/serve/http_server.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "support/test_support.h"

namespace kiln::serve {
namespace {

/// Answers "METHOD TARGET BODY"; targets starting with /async are answered from another thread
/// after 20 ms (as a batcher would).
class EchoServer {
 public:
  explicit EchoServer(HttpServerOptions options = HttpServerOptions()) {
    auto srv = HttpServer::Create(options.port(0), [this](const HttpRequest& req, HttpReply reply) {
      std::string text =
          std::string(req.method) + " " + std::string(req.target) + " " + std::string(req.body);
      if (req.target.rfind("/async", 0) == 0) {
        threads_.emplace_back([reply, text] {
          std::this_thread::sleep_for(std::chrono::milliseconds(20));
          reply(HttpResponse(200, text, "text/plain"));
        });
        return;
      }
      reply(HttpResponse(200, text, "text/plain"));
    });
    EXPECT_TRUE(srv.ok()) << srv.status().message();
    server_ = std::move(*srv);
    server_->start();
  }
  ~EchoServer() {
    for (auto& t : threads_) t.join();
    server_->stop();
  }
  HttpServer& server() { return *server_; }
  int port() const { return server_->port(); }

 private:
  std::vector<std::thread> threads_;  // touched on the one IO thread only
  std::unique_ptr<HttpServer> server_;
};

int connect_to(int port) { return kiln::testing::connect_loopback(port); }

/// Everything the server sends until it closes the connection (or 5 s pass).
std::string read_until_close(int fd) {
  std::string out;
  char buf[65536];
  pollfd p{fd, POLLIN, 0};
  while (::poll(&p, 1, 5000) == 1) {
    const ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

/// Sends `data` in one go, then reads until the server closes.
std::string send_and_read(int port, const std::string& data) {
  const int fd = connect_to(port);
  EXPECT_GE(fd, 0);
  EXPECT_EQ(::send(fd, data.data(), data.size(), MSG_NOSIGNAL), static_cast<ssize_t>(data.size()));
  std::string out = read_until_close(fd);
  ::close(fd);
  return out;
}

size_t count(const std::string& s, const std::string& what) {
  size_t n = 0;
  for (size_t p = s.find(what); p != std::string::npos; p = s.find(what, p + 1)) ++n;
  return n;
}

TEST(HttpServer, KeepAlivePipeliningInOrderAndClose) {
  EchoServer echo;
  // Three pipelined requests in one write: the first answered late from another thread, the
  // second at once; answers come in request order, the last one closes.
  const std::string out = send_and_read(
      echo.port(),
      "POST /async HTTP/1.1\r\nContent-Length: 3\r\n\r\nonePOST /sync HTTP/1.1\r\nContent-Length:"
      " 3\r\n\r\ntwoGET /last HTTP/1.1\r\nConnection: close\r\n\r\n");
  const size_t a = out.find("POST /async one"), b = out.find("POST /sync two"),
               c = out.find("GET /last ");
  ASSERT_NE(a, std::string::npos) << out;
  ASSERT_NE(b, std::string::npos) << out;
  ASSERT_NE(c, std::string::npos) << out;
  EXPECT_LT(a, b);
  EXPECT_LT(b, c);
  EXPECT_EQ(count(out, "HTTP/1.1 200 OK\r\n"), 3u) << out;
  EXPECT_EQ(count(out, "Connection: close\r\n"), 1u) << out;
  EXPECT_NE(out.find("Content-Type: text/plain\r\nContent-Length: 15\r\n"), std::string::npos);
  EXPECT_EQ(echo.server().in_flight(), 0);
}

/// Sends `data` one byte at a time (300 us apart), then reads until the server closes.
std::string send_byte_by_byte(int port, const std::string& data) {
  const int fd = connect_to(port);
  EXPECT_GE(fd, 0);
  if (fd < 0) return "";
  for (char c : data) {
    EXPECT_EQ(::send(fd, &c, 1, MSG_NOSIGNAL), 1);
    std::this_thread::sleep_for(std::chrono::microseconds(300));
  }
  std::string out = read_until_close(fd);
  ::close(fd);
  return out;
}

TEST(HttpServer, RequestSplitAtEveryByte) {
  EchoServer echo;
  const std::string out = send_byte_by_byte(
      echo.port(),
      "POST /v2/x HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\n\r\nhello worldGET /y HTTP/1.1\r\n"
      "Connection: close\r\n\r\n");
  EXPECT_NE(out.find("POST /v2/x hello world"), std::string::npos) << out;
  EXPECT_NE(out.find("GET /y "), std::string::npos) << out;
  EXPECT_EQ(count(out, "HTTP/1.1 200 OK"), 2u) << out;
}

// A chunked body sent a byte at a time is decoded whole, and the pipelined request after it is
// answered too.
TEST(HttpServer, ChunkedBodySplitAtEveryByte) {
  EchoServer echo;
  const std::string out = send_byte_by_byte(
      echo.port(),
      "POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nhello \r\n5;x=y\r\nworld\r\n"
      "0\r\n\r\nGET /y HTTP/1.1\r\nConnection: close\r\n\r\n");
  EXPECT_NE(out.find("POST /c hello world"), std::string::npos) << out;
  EXPECT_NE(out.find("GET /y "), std::string::npos) << out;
  EXPECT_EQ(count(out, "HTTP/1.1 200 OK"), 2u) << out;
}

TEST(HttpServer, LargeBodyArrivingInPiecesAfterAPipelinedRequest) {
  EchoServer echo;
  // The second request's head is parsed while the first request's bytes are still in the read
  // buffer; its body then arrives in small pieces and the buffer is moved and grown under it.
  const std::string body(200000, 'b');
  const std::string req =
      "POST /a HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcPOST /big?q=1 HTTP/1.1\r\n"
      "X-Pad: " +
      std::string(100, 'p') +
      "\r\nConnection: close\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
  const int fd = connect_to(echo.port());
  ASSERT_GE(fd, 0);
  size_t sent = 0;
  for (size_t chunk = 300; sent < req.size(); chunk = 3000) {
    const size_t n = std::min(chunk, req.size() - sent);
    ASSERT_EQ(::send(fd, req.data() + sent, n, MSG_NOSIGNAL), static_cast<ssize_t>(n));
    sent += n;
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  const std::string out = read_until_close(fd);
  ::close(fd);
  EXPECT_NE(out.find("POST /a abc"), std::string::npos) << out.substr(0, 300);
  EXPECT_NE(out.find("Content-Length: " + std::to_string(14 + body.size()) + "\r\n"),
            std::string::npos)
      << out.substr(0, 300);
  EXPECT_NE(out.find("POST /big?q=1 " + body), std::string::npos) << out.substr(0, 300);
}

TEST(HttpServer, LimitsAndBadRequestsAreAnsweredThenClosed) {
  std::vector<unsigned> rejected;
  std::mutex mu;
  auto srv = HttpServer::Create(
      HttpServerOptions().port(0).max_body_bytes(100).max_header_bytes(1024),
      [](const HttpRequest&, HttpReply reply) { reply(HttpResponse(200, "{}")); },
      [&](unsigned status, const std::string&) {
        std::lock_guard<std::mutex> lock(mu);
        rejected.push_back(status);
      });
  ASSERT_TRUE(srv.ok());
  (*srv)->start();
  const int port = (*srv)->port();
  std::string out =
      send_and_read(port, "POST / HTTP/1.1\r\nContent-Length: 101\r\n\r\n" + std::string(101, 'x'));
  EXPECT_EQ(out.rfind("HTTP/1.1 413 Payload Too Large\r\n", 0), 0u) << out;
  EXPECT_NE(out.find("Connection: close"), std::string::npos);
  EXPECT_NE(out.find("{\"error\": \"request body exceeds the limit of 100 bytes\"}"),
            std::string::npos)
      << out;
  out = send_and_read(port,
                      "POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n5\r\nhello\r\n0\r\n\r\n");
  EXPECT_EQ(out.rfind("HTTP/1.1 501 Not Implemented\r\n", 0), 0u) << out;
  // A chunked body is held to the same size limit as a Content-Length one.
  out = send_and_read(port, "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n40\r\n" +
                                std::string(64, 'x') + "\r\n40\r\n");
  EXPECT_EQ(out.rfind("HTTP/1.1 413 Payload Too Large\r\n", 0), 0u) << out;
  out = send_and_read(port, "GET / HTTP/1.1\r\nX: " + std::string(2000, 'a') + "\r\n\r\n");
  EXPECT_EQ(out.rfind("HTTP/1.1 431 ", 0), 0u) << out;
  out = send_and_read(port, "GET / FTP/1.1\r\n\r\n");
  EXPECT_EQ(out.rfind("HTTP/1.1 400 Bad Request\r\n", 0), 0u) << out;
  // A request within the limits still works, and HTTP/1.0 gets a 1.0 answer and a close.
  out =
      send_and_read(port, "POST / HTTP/1.0\r\nContent-Length: 100\r\n\r\n" + std::string(100, 'x'));
  EXPECT_EQ(out.rfind("HTTP/1.0 200 OK\r\n", 0), 0u) << out;
  EXPECT_NE(out.find("Connection: close"), std::string::npos);
  {
    std::lock_guard<std::mutex> lock(mu);
    EXPECT_EQ(rejected, (std::vector<unsigned>{413, 501, 413, 431, 400}));
  }
  EXPECT_TRUE((*srv)->wait_idle(std::chrono::milliseconds(2000)));
  (*srv)->stop();
}

TEST(HttpServer, ExpectContinueAndCounters) {
  EchoServer echo;
  const int fd = connect_to(echo.port());
  ASSERT_GE(fd, 0);
  const std::string head =
      "POST /async HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n";
  ASSERT_EQ(::send(fd, head.data(), head.size(), 0), static_cast<ssize_t>(head.size()));
  char buf[4096];
  pollfd p{fd, POLLIN, 0};
  ASSERT_EQ(::poll(&p, 1, 2000), 1);
  ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
  ASSERT_GT(n, 0);
  EXPECT_EQ(std::string(buf, static_cast<size_t>(n)), "HTTP/1.1 100 Continue\r\n\r\n");
  for (int i = 0; i < 200 && echo.server().open_connections() != 1; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  EXPECT_EQ(echo.server().open_connections(), 1);
  ASSERT_EQ(::send(fd, "body", 4, 0), 4);
  for (int i = 0; i < 200 && echo.server().in_flight() != 1; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  EXPECT_EQ(echo.server().in_flight(), 1);  // answered 20 ms later from another thread
  EXPECT_TRUE(echo.server().wait_idle(std::chrono::milliseconds(2000)));
  ASSERT_EQ(::poll(&p, 1, 2000), 1);
  n = ::recv(fd, buf, sizeof(buf), 0);
  EXPECT_NE(std::string(buf, static_cast<size_t>(n)).find("POST /async body"), std::string::npos);
  ::close(fd);
  for (int i = 0; i < 200 && echo.server().open_connections() != 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  EXPECT_EQ(echo.server().open_connections(), 0);
}

TEST(HttpServer, StopAcceptingClosesTheListenerAndMarksAnswersClose) {
  EchoServer echo;
  const int fd = connect_to(echo.port());
  ASSERT_GE(fd, 0);
  for (int i = 0; i < 200 && echo.server().open_connections() != 1; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  echo.server().stop_accepting();
  EXPECT_LT(connect_to(echo.port()), 0);
  const std::string req = "GET /x HTTP/1.1\r\n\r\n";
  ASSERT_EQ(::send(fd, req.data(), req.size(), 0), static_cast<ssize_t>(req.size()));
  const std::string out = read_until_close(fd);
  ::close(fd);
  EXPECT_EQ(out.rfind("HTTP/1.1 200 OK\r\n", 0), 0u) << out;
  EXPECT_NE(out.find("Connection: close"), std::string::npos) << out;
}

TEST(HttpServer, HeadAnswersHeadersWithoutABodyAndKeepsTheConnectionInStep) {
  EchoServer echo;
  // HEAD then GET on one connection: the HEAD answer carries the GET's Content-Length but no
  // body, so the GET answer that follows parses from the first byte of its status line.
  const std::string out = send_and_read(
      echo.port(), "HEAD /h HTTP/1.1\r\n\r\nGET /g HTTP/1.1\r\nConnection: close\r\n\r\n");
  const std::string first =
      "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 8\r\n\r\n";
  ASSERT_EQ(out.rfind(first, 0), 0u) << out;
  EXPECT_EQ(out.find("HTTP/1.1 200 OK\r\n", first.size()), first.size()) << out;
  EXPECT_EQ(out.find("HEAD /h"), std::string::npos) << out;
  EXPECT_NE(out.find("GET /g "), std::string::npos) << out;
}

TEST(HttpServer, ListensOnIpv6LoopbackAndRefusesHostsThatAreNotAddresses) {
  auto bad = HttpServer::Create(
      HttpServerOptions().host("localhost").port(0),
      [](const HttpRequest&, HttpReply reply) { reply(HttpResponse(200, "x", "text/plain")); });
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("--host localhost: not an IPv4 or IPv6 address"),
            std::string::npos)
      << bad.status().message();

  const int probe = ::socket(AF_INET6, SOCK_STREAM, 0);
  sockaddr_in6 any6{};
  any6.sin6_family = AF_INET6;
  any6.sin6_addr = in6addr_loopback;
  const bool have_v6 =
      probe >= 0 && ::bind(probe, reinterpret_cast<sockaddr*>(&any6), sizeof(any6)) == 0;
  if (probe >= 0) ::close(probe);
  if (!have_v6) GTEST_SKIP() << "no IPv6 loopback on this machine";
  for (const char* host : {"::1", "[::1]"}) {
    SCOPED_TRACE(host);
    auto srv = HttpServer::Create(HttpServerOptions().host(host).port(0),
                                  [](const HttpRequest& req, HttpReply reply) {
                                    reply(HttpResponse(200, std::string(req.target), "text/plain"));
                                  });
    ASSERT_TRUE(srv.ok()) << srv.status().message();
    (*srv)->start();
    const int fd = ::socket(AF_INET6, SOCK_STREAM, 0);
    sockaddr_in6 addr = any6;
    addr.sin6_port = htons((*srv)->port());
    ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    const std::string req = "GET /six HTTP/1.1\r\nConnection: close\r\n\r\n";
    ASSERT_EQ(::send(fd, req.data(), req.size(), MSG_NOSIGNAL), static_cast<ssize_t>(req.size()));
    const std::string out = read_until_close(fd);
    ::close(fd);
    EXPECT_EQ(out.rfind("HTTP/1.1 200 OK\r\n", 0), 0u) << out;
    EXPECT_NE(out.find("\r\n\r\n/six"), std::string::npos) << out;
    (*srv)->stop();
  }
}

}  // namespace
}  // namespace kiln::serve
