#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "kiln/core/expected.h"
#include "kiln/serve/http_parser.h"

namespace kiln::serve {

/// A response: status, a content type (a string literal: not owned), the body and any extra
/// headers. Content-Length and Connection are added by the server.
struct HttpResponse {
  HttpResponse() = default;
  HttpResponse(int status_code, std::string body_text, const char* type = "application/json")
      : status(status_code), content_type(type), body(std::move(body_text)) {}
  int status = 200;
  const char* content_type = "application/json";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;
};

namespace detail {
struct Loop;
}

/// Sends the response to one request: call exactly once, from any thread (on the connection's
/// IO thread it is written at once; from another thread it is queued and that thread woken).
/// Cheap to copy; a reply whose connection has closed meanwhile is dropped.
class HttpReply {
 public:
  HttpReply() = default;
  HttpReply(std::shared_ptr<detail::Loop> loop, uint64_t connection)
      : loop_(std::move(loop)), connection_(connection) {}
  void operator()(HttpResponse&& res) const;

 private:
  std::shared_ptr<detail::Loop> loop_;
  uint64_t connection_ = 0;
};

/// Handles one request; may reply at once or later (e.g. from a batcher thread). Called on an IO
/// thread: must not block. `req` (views into the read buffer) is valid only during the call.
using HttpHandler = std::function<void(const HttpRequest& req, HttpReply reply)>;
/// Told about each request the server answers by itself (413 body too large, 400 unparsable
/// HTTP, 431, 501, 505) with the status and a short reason; for metrics and access logs. Called
/// on an IO thread.
using HttpRejectHook = std::function<void(unsigned status, const std::string& reason)>;

/// Options of HttpServer.
struct HttpServerOptions {
  HttpServerOptions& host(std::string v) {
    host_ = std::move(v);
    return *this;
  }
  HttpServerOptions& port(int v) {
    port_ = v;
    return *this;
  }
  HttpServerOptions& io_threads(int v) {
    io_threads_ = v;
    return *this;
  }
  HttpServerOptions& max_body_bytes(int64_t v) {
    max_body_bytes_ = v;
    return *this;
  }
  HttpServerOptions& max_header_bytes(int64_t v) {
    max_header_bytes_ = v;
    return *this;
  }
  HttpServerOptions& idle_timeout_s(int v) {
    idle_timeout_s_ = v;
    return *this;
  }
  /// Called on each IO thread after each round of socket events (or a timeout), before it waits
  /// for more (e.g. to run the batch those requests completed); returns when to call it again
  /// even without events (time_point::max(): no need).
  HttpServerOptions& after_events(std::function<std::chrono::steady_clock::time_point()> v) {
    after_events_ = std::move(v);
    return *this;
  }
  std::string host_ = "127.0.0.1";
  int port_ = 8000;  ///< 0: any free port (see HttpServer::port())
  int io_threads_ = 1;
  int64_t max_body_bytes_ = 16 << 20;    ///< larger bodies get 413
  int64_t max_header_bytes_ = 64 << 10;  ///< larger request heads get 431
  int idle_timeout_s_ = 60;              ///< keep-alive connections idle this long are closed
  std::function<std::chrono::steady_clock::time_point()> after_events_;
};

/// HTTP/1.1 server on epoll and non-blocking sockets (Linux): a fixed pool of IO threads, each
/// an event loop owning its connections (no thread per request or connection). Keep-alive and
/// pipelining (one request per connection at a time, answered in order); "Expect: 100-continue"
/// answered; chunked request bodies decoded (held to the same limit); bodies over
/// max_body_bytes answered 413, heads over max_header_bytes 431, transfer codings other than
/// chunked 501, unparsable requests 400 (each then closes the connection). A response
/// is written with one send() from the connection's reused buffer.
/// Thread-safe: stop_accepting()/stop() may be called from any thread (not from an IO thread).
///
///   KILN_ASSIGN_OR_RETURN(auto srv, HttpServer::Create(HttpServerOptions().port(0), handler));
///   srv->start();  std::cout << srv->port();
///   ...; srv->stop_accepting(); srv->wait_idle(30s); srv->stop();
class HttpServer {
 public:
  /// Binds and listens (so port() is known and connections queue), serving nothing yet.
  /// Unavailable when the address cannot be bound, naming it.
  static Expected<std::unique_ptr<HttpServer>> Create(const HttpServerOptions& options,
                                                      HttpHandler handler,
                                                      HttpRejectHook on_reject = nullptr);
  ~HttpServer();
  uint16_t port() const;
  /// Starts the IO threads.
  void start();
  /// Closes the listening socket; responses from now on carry "Connection: close". Blocks
  /// until every IO thread has let go of the socket.
  void stop_accepting();
  /// Blocks until no request is being handled (read and not yet answered) or the timeout passes;
  /// true when idle.
  bool wait_idle(std::chrono::milliseconds timeout);
  /// Requests read and not yet answered.
  int64_t in_flight() const;
  /// Client connections open now (that may still send a request).
  int64_t open_connections() const;
  /// Stops the IO threads (open connections are dropped) and joins them. Blocks. Idempotent.
  void stop();

  struct Impl;

 private:
  explicit HttpServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace kiln::serve
