#pragma once

#include <atomic>
#include <boost/beast/http.hpp>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "kiln/core/expected.h"

namespace kiln::serve {

using HttpRequest = boost::beast::http::request<boost::beast::http::string_body>;
using HttpResponse = boost::beast::http::response<boost::beast::http::string_body>;
/// Sends the response for one request. Call exactly once, from any thread.
using HttpReply = std::function<void(HttpResponse&&)>;
/// Handles one request; may reply at once or later (e.g. from a batcher thread). Called on an IO
/// thread: must not block.
using HttpHandler = std::function<void(HttpRequest&&, HttpReply)>;
/// Told about each request the server answers by itself (413 body too large, 400 unparsable
/// HTTP) with the status and a short reason; for metrics and access logs. Called on an IO thread.
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
  HttpServerOptions& idle_timeout_s(int v) {
    idle_timeout_s_ = v;
    return *this;
  }
  std::string host_ = "127.0.0.1";
  int port_ = 8000;  ///< 0: any free port (see HttpServer::port())
  int io_threads_ = 1;
  int64_t max_body_bytes_ = 16 << 20;  ///< larger bodies get 413
  int idle_timeout_s_ = 60;            ///< keep-alive connections idle this long are closed
};

/// HTTP/1.1 server on Boost.Beast/Asio: keep-alive, a fixed pool of IO threads (no thread per
/// request or connection), bodies over max_body_bytes answered 413, unparsable requests 400.
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
  /// Closes the listening socket; responses from now on carry "Connection: close".
  void stop_accepting();
  /// Blocks until no request is being handled (read and not yet answered) or the timeout passes;
  /// true when idle.
  bool wait_idle(std::chrono::milliseconds timeout);
  /// Requests read and not yet answered.
  int64_t in_flight() const;
  /// Client connections open now.
  int64_t open_connections() const;
  /// Stops the IO threads (open connections are dropped) and joins them. Blocks.
  void stop();

  struct Impl;

 private:
  explicit HttpServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace kiln::serve
