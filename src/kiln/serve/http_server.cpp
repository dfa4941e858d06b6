#include "kiln/serve/http_server.h"

#include <array>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <future>
#include <optional>
#include <thread>

#include "kiln/core/logging.h"

namespace kiln::serve {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
using tcp = net::ip::tcp;

struct HttpServer::Impl {
  HttpServerOptions options;
  HttpHandler handler;
  HttpRejectHook on_reject;
  net::io_context ioc;
  tcp::acceptor acceptor{ioc};
  // Keeps run() going while every connection waits on a batcher (no pending IO at all).
  std::optional<net::executor_work_guard<net::io_context::executor_type>> work;
  std::vector<std::thread> threads;
  std::atomic<int64_t> in_flight{0};
  std::atomic<int64_t> connections{0};
  std::atomic<bool> stopping{false};
  std::mutex idle_mu;
  std::condition_variable idle_cv;

  void do_accept();
  void request_done() {
    if (in_flight.fetch_sub(1) == 1) {
      std::lock_guard<std::mutex> lock(idle_mu);
      idle_cv.notify_all();
    }
  }
};

namespace {

HttpResponse simple_response(http::status status, const std::string& json, unsigned version) {
  HttpResponse res{status, version};
  res.set(http::field::content_type, "application/json");
  res.body() = json;
  res.keep_alive(false);
  res.prepare_payload();
  return res;
}

class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(tcp::socket&& socket, HttpServer::Impl* server)
      : stream_(std::move(socket)), server_(server) {
    server_->connections.fetch_add(1);
  }
  ~Session() { server_->connections.fetch_sub(1); }

  void start() {
    net::dispatch(stream_.get_executor(), [self = shared_from_this()] { self->do_read(); });
  }

 private:
  void do_read() {
    parser_.emplace();
    parser_->body_limit(static_cast<uint64_t>(server_->options.max_body_bytes_));
    parser_->header_limit(64 * 1024);
    stream_.expires_after(std::chrono::seconds(server_->options.idle_timeout_s_));
    http::async_read_header(
        stream_, buffer_, *parser_,
        [self = shared_from_this()](beast::error_code ec, std::size_t) { self->on_header(ec); });
  }

  /// Answers "Expect: 100-continue" (curl sends it for large bodies and would otherwise wait a
  /// second), then reads the body. A body over the limit fails already at the header (413).
  void on_header(beast::error_code ec) {
    if (ec) return on_read(ec);
    const auto& req = parser_->get();
    if (beast::iequals(req[http::field::expect], "100-continue")) {
      continue_ = std::make_shared<http::response<http::empty_body>>(http::status::continue_,
                                                                     req.version());
      http::async_write(stream_, *continue_,
                        [self = shared_from_this()](beast::error_code ec, std::size_t) {
                          self->continue_.reset();
                          if (ec) return self->close();
                          self->read_body();
                        });
      return;
    }
    read_body();
  }

  void read_body() {
    http::async_read(
        stream_, buffer_, *parser_,
        [self = shared_from_this()](beast::error_code ec, std::size_t) { self->on_read(ec); });
  }

  void on_read(beast::error_code ec) {
    if (ec == http::error::end_of_stream || ec == net::error::eof || ec == beast::error::timeout ||
        ec == net::error::operation_aborted || ec == net::error::connection_reset) {
      return close();
    }
    if (ec == http::error::body_limit) {
      server_->in_flight.fetch_add(1);
      keep_alive_ = false;
      if (server_->on_reject) server_->on_reject(413, "request body too large");
      return write(simple_response(http::status::payload_too_large,
                                   "{\"error\": \"request body exceeds the limit of " +
                                       std::to_string(server_->options.max_body_bytes_) +
                                       " bytes\"}",
                                   11));
    }
    if (ec) {
      server_->in_flight.fetch_add(1);
      keep_alive_ = false;
      if (server_->on_reject) server_->on_reject(400, "malformed HTTP: " + ec.message());
      return write(simple_response(http::status::bad_request,
                                   "{\"error\": \"malformed HTTP request: " + ec.message() + "\"}",
                                   11));
    }
    stream_.expires_never();
    server_->in_flight.fetch_add(1);
    HttpRequest req = parser_->release();
    keep_alive_ = req.keep_alive();
    version_ = req.version();
    auto self = shared_from_this();
    HttpReply reply = [self](HttpResponse&& res) {
      net::post(self->stream_.get_executor(),
                [self, res = std::move(res)]() mutable { self->write(std::move(res)); });
    };
    try {
      server_->handler(std::move(req), std::move(reply));
    } catch (const std::exception& e) {
      KILN_LOG_ERROR("request handler threw: {}", e.what());
    }
  }

  void write(HttpResponse&& res) {
    res.version(version_);
    const bool keep = keep_alive_ && !server_->stopping.load();
    res.keep_alive(keep);
    res.prepare_payload();
    response_ = std::make_shared<HttpResponse>(std::move(res));
    http::async_write(stream_, *response_,
                      [self = shared_from_this(), keep](beast::error_code ec, std::size_t) {
                        self->response_.reset();
                        self->server_->request_done();
                        if (ec) return self->close();
                        if (!keep) return self->linger_close();
                        self->do_read();
                      });
  }

  /// Half-closes, then discards what the client still sends (e.g. the rest of a body refused
  /// with 413) until it closes or 2 s pass, so the response is not lost to a TCP reset.
  void linger_close() {
    beast::error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
    if (ec) return close();
    discard_ = std::make_shared<std::array<char, 16384>>();
    stream_.expires_after(std::chrono::seconds(2));
    do_discard();
  }
  void do_discard() {
    stream_.async_read_some(net::buffer(*discard_),
                            [self = shared_from_this()](beast::error_code ec, std::size_t) {
                              if (ec) return self->close();
                              self->do_discard();
                            });
  }

  void close() {
    beast::error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
    stream_.socket().close(ec);
  }

  beast::tcp_stream stream_;
  HttpServer::Impl* server_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  std::shared_ptr<HttpResponse> response_;
  std::shared_ptr<http::response<http::empty_body>> continue_;
  std::shared_ptr<std::array<char, 16384>> discard_;
  bool keep_alive_ = true;
  unsigned version_ = 11;
};

}  // namespace

void HttpServer::Impl::do_accept() {
  acceptor.async_accept(net::make_strand(ioc), [this](beast::error_code ec, tcp::socket socket) {
    if (ec) {
      if (ec == net::error::operation_aborted || !acceptor.is_open()) return;
      KILN_LOG_WARN("accept failed: {}", ec.message());
    } else {
      socket.set_option(tcp::no_delay(true), ec);
      std::make_shared<Session>(std::move(socket), this)->start();
    }
    if (acceptor.is_open()) do_accept();
  });
}

HttpServer::HttpServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

HttpServer::~HttpServer() { stop(); }

Expected<std::unique_ptr<HttpServer>> HttpServer::Create(const HttpServerOptions& options,
                                                         HttpHandler handler,
                                                         HttpRejectHook on_reject) {
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  impl->handler = std::move(handler);
  impl->on_reject = std::move(on_reject);
  const std::string where = options.host_ + ":" + std::to_string(options.port_);
  beast::error_code ec;
  auto address = net::ip::make_address(options.host_, ec);
  if (ec) return Status::InvalidArgument("--host " + options.host_ + ": not an IP address");
  if (options.port_ < 0 || options.port_ > 65535)
    return Status::InvalidArgument("--port " + std::to_string(options.port_) + ": out of range");
  tcp::endpoint endpoint(address, static_cast<uint16_t>(options.port_));
  impl->acceptor.open(endpoint.protocol(), ec);
  if (!ec) impl->acceptor.set_option(net::socket_base::reuse_address(true), ec);
  if (!ec) impl->acceptor.bind(endpoint, ec);
  if (!ec) impl->acceptor.listen(net::socket_base::max_listen_connections, ec);
  if (ec) return Status::Unavailable("cannot listen on " + where + ": " + ec.message());
  return std::unique_ptr<HttpServer>(new HttpServer(std::move(impl)));
}

uint16_t HttpServer::port() const {
  beast::error_code ec;
  auto ep = impl_->acceptor.local_endpoint(ec);
  return ec ? 0 : ep.port();
}

void HttpServer::start() {
  impl_->work.emplace(impl_->ioc.get_executor());
  impl_->do_accept();
  const int n = std::max(1, impl_->options.io_threads_);
  for (int i = 0; i < n; ++i) impl_->threads.emplace_back([this] { impl_->ioc.run(); });
}

void HttpServer::stop_accepting() {
  impl_->stopping = true;
  std::promise<void> done;
  auto fut = done.get_future();
  net::post(impl_->ioc, [this, &done] {
    beast::error_code ec;
    impl_->acceptor.close(ec);
    done.set_value();
  });
  if (!impl_->threads.empty()) fut.wait_for(std::chrono::seconds(5));
}

bool HttpServer::wait_idle(std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(impl_->idle_mu);
  return impl_->idle_cv.wait_for(lock, timeout, [this] { return impl_->in_flight.load() == 0; });
}

int64_t HttpServer::in_flight() const { return impl_->in_flight.load(); }

int64_t HttpServer::open_connections() const { return impl_->connections.load(); }

void HttpServer::stop() {
  if (!impl_) return;
  impl_->work.reset();
  impl_->ioc.stop();
  for (auto& t : impl_->threads)
    if (t.joinable()) t.join();
  impl_->threads.clear();
}

}  // namespace kiln::serve
