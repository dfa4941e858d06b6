#include "kiln/serve/http_server.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <condition_variable>
#include <cstring>
#include <future>
#include <mutex>
#include <thread>
#include <unordered_map>

#include "kiln/core/logging.h"
#include "kiln/serve/protocol.h"

namespace kiln::serve {
namespace detail {

using Clock = std::chrono::steady_clock;

/// State every IO loop shares; outlives the HttpServer while a reply may still reach a loop.
struct Shared {
  HttpServerOptions options;
  HttpLimits limits;
  HttpHandler handler;
  HttpRejectHook on_reject;
  int listen_fd = -1;
  uint16_t port = 0;
  std::atomic<int64_t> in_flight{0};
  std::atomic<int64_t> connections{0};
  std::atomic<bool> stopping{false};
  std::mutex idle_mu;
  std::condition_variable idle_cv;

  void request_done() {
    if (in_flight.fetch_sub(1) == 1) {
      std::lock_guard<std::mutex> lock(idle_mu);
      idle_cv.notify_all();
    }
  }
};

/// A growable byte buffer: [begin, end) holds unconsumed input.
struct Buffer {
  std::unique_ptr<char[]> data;
  size_t cap = 0, begin = 0, end = 0;

  std::string_view view() const { return {data.get() + begin, end - begin}; }
  /// Moves the unconsumed bytes to the front and grows to at least `total` bytes of capacity.
  /// True when the bytes moved (views into them are stale).
  bool make_room(size_t total) {
    const bool moved = begin > 0 || cap < total;
    if (begin > 0) {
      std::memmove(data.get(), data.get() + begin, end - begin);
      end -= begin;
      begin = 0;
    }
    if (cap >= total) return moved;
    const size_t n = std::max(total, cap * 2);
    std::unique_ptr<char[]> bigger(new char[n]);
    if (end) std::memcpy(bigger.get(), data.get(), end);
    data = std::move(bigger);
    cap = n;
    return moved;
  }
};

struct Conn {
  int fd = -1;
  uint64_t id = 0;
  Buffer in;
  std::string out;
  size_t out_pos = 0;
  HttpRequest req;
  HeadParse head;
  std::string chunked_body;    // the decoded body of a chunked request, while it is answered
  ChunkedCursor chunk_cursor;  // how far the chunked body in `in` has been scanned
  bool have_head = false;
  bool head_moved = false;  // the buffer moved since `req`'s views were taken
  bool continue_sent = false;
  bool head_method = false;  // the request being answered is a HEAD: headers only
  bool busy = false;         // a request was handed over and is not answered yet
  int flight_pending = 0;    // responses in `out` not fully sent
  bool want_read = false;    // readable while busy: read when the reply is out
  bool in_process = false;   // process_input() is on the stack
  bool close_after_write = false;
  bool peer_closed = false;
  bool lingering = false;
  bool dead = false;
  bool counted = true;  // in Shared::connections
  Clock::time_point last_active;
  Clock::time_point linger_deadline;
};

thread_local struct Loop* tls_loop = nullptr;

constexpr uint64_t kListenId = 1;
constexpr uint64_t kWakeId = 2;

struct Loop : std::enable_shared_from_this<Loop> {
  std::shared_ptr<Shared> shared;
  int epfd = -1;
  int evfd = -1;
  int spare_fd = -1;  // held in reserve: freed to shed one connection when out of descriptors
  std::thread thread;
  std::unordered_map<uint64_t, std::unique_ptr<Conn>> conns;
  std::vector<uint64_t> graveyard;
  uint64_t next_id = 16;
  bool listening = false;
  std::atomic<bool> quit{false};
  Clock::time_point last_sweep;

  std::mutex mu;  // guards the fields below
  std::vector<std::pair<uint64_t, HttpResponse>> pending;
  std::vector<std::function<void()>> commands;
  bool wake_sent = false;
  bool stopped = false;

  explicit Loop(std::shared_ptr<Shared> s) : shared(std::move(s)) {}
  ~Loop() {
    for (auto& [id, c] : conns) {
      for (; c->flight_pending > 0; --c->flight_pending) shared->request_done();
      if (c->counted) shared->connections.fetch_sub(1);
      ::close(c->fd);
    }
    if (epfd >= 0) ::close(epfd);
    if (evfd >= 0) ::close(evfd);
    if (spare_fd >= 0) ::close(spare_fd);
  }

  Status init() {
    epfd = ::epoll_create1(EPOLL_CLOEXEC);
    evfd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    spare_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (epfd < 0 || evfd < 0) return Status::Internal(std::string("epoll: ") + strerror(errno));
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = kWakeId;
    ::epoll_ctl(epfd, EPOLL_CTL_ADD, evfd, &ev);
    ev.events = EPOLLIN | EPOLLEXCLUSIVE;
    ev.data.u64 = kListenId;
    if (::epoll_ctl(epfd, EPOLL_CTL_ADD, shared->listen_fd, &ev) != 0)
      return Status::Internal(std::string("epoll_ctl: ") + strerror(errno));
    listening = true;
    return Status::Ok();
  }

  void wake() {
    uint64_t one = 1;
    [[maybe_unused]] ssize_t n = ::write(evfd, &one, sizeof(one));
  }

  /// Runs `fn` on the loop thread.
  void run_in_loop(std::function<void()> fn) {
    bool do_wake;
    {
      std::lock_guard<std::mutex> lock(mu);
      commands.push_back(std::move(fn));
      do_wake = !wake_sent;
      wake_sent = true;
    }
    if (do_wake) wake();
  }

  void post(uint64_t id, HttpResponse&& res) {
    if (tls_loop == this) return deliver(id, std::move(res));
    bool do_wake;
    {
      std::lock_guard<std::mutex> lock(mu);
      if (stopped) {
        shared->request_done();
        return;
      }
      pending.emplace_back(id, std::move(res));
      do_wake = !wake_sent;
      wake_sent = true;
    }
    if (do_wake) wake();
  }

  void run() {
    tls_loop = this;
    std::vector<epoll_event> events(256);
    std::vector<std::pair<uint64_t, HttpResponse>> replies;
    std::vector<std::function<void()>> cmds;
    last_sweep = Clock::now();
    Clock::time_point wake_at = Clock::time_point::max();  // the after_events hook's next call
    while (!quit.load(std::memory_order_relaxed)) {
      const int n = wait(events, wake_at);
      if (n < 0 && errno != EINTR) {
        KILN_LOG_ERROR("epoll_wait: {}", strerror(errno));
        break;
      }
      for (int i = 0; i < n; ++i) {
        const uint64_t id = events[i].data.u64;
        const uint32_t ev = events[i].events;
        if (id == kWakeId) {
          uint64_t v;
          [[maybe_unused]] ssize_t r = ::read(evfd, &v, sizeof(v));
          {
            std::lock_guard<std::mutex> lock(mu);
            replies.swap(pending);
            cmds.swap(commands);
            wake_sent = false;
          }
          for (auto& fn : cmds) fn();
          cmds.clear();
          for (auto& [cid, res] : replies) deliver(cid, std::move(res));
          replies.clear();
        } else if (id == kListenId) {
          if (listening) accept_all();
        } else {
          auto it = conns.find(id);
          if (it == conns.end() || it->second->dead) continue;
          on_event(it->second.get(), ev);
        }
      }
      if (shared->options.after_events_) wake_at = shared->options.after_events_();
      bury();
      const auto now = Clock::now();
      if (now - last_sweep >= std::chrono::seconds(1)) sweep(now);
    }
    {
      std::lock_guard<std::mutex> lock(mu);
      stopped = true;
      for (size_t i = 0; i < pending.size(); ++i) shared->request_done();
      pending.clear();
    }
    tls_loop = nullptr;
  }

  /// epoll_wait until an event, `wake_at` or the next sweep (at most 1 s), with microsecond
  /// precision where the kernel has epoll_pwait2 (5.11+), else rounded up to milliseconds.
  int wait(std::vector<epoll_event>& events, Clock::time_point wake_at) {
    const int max_events = static_cast<int>(events.size());
    auto timeout = std::chrono::nanoseconds(std::chrono::seconds(1));
    if (wake_at != Clock::time_point::max())
      timeout = std::clamp<std::chrono::nanoseconds>(wake_at - Clock::now(),
                                                     std::chrono::nanoseconds(0), timeout);
    static std::atomic<bool> have_pwait2{true};
    if (have_pwait2.load(std::memory_order_relaxed)) {
      timespec ts{static_cast<time_t>(timeout.count() / 1000000000),
                  static_cast<long>(timeout.count() % 1000000000)};
      const int n = ::epoll_pwait2(epfd, events.data(), max_events, &ts, nullptr);
      if (n >= 0 || errno != ENOSYS) return n;
      have_pwait2 = false;
    }
    const auto ms = std::chrono::ceil<std::chrono::milliseconds>(timeout).count();
    return ::epoll_wait(epfd, events.data(), max_events, static_cast<int>(ms));
  }

  void accept_all() {
    for (;;) {
      const int fd = ::accept4(shared->listen_fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) {
        if (errno == EINTR || errno == ECONNABORTED) continue;
        if ((errno == EMFILE || errno == ENFILE) && spare_fd >= 0) {
          // Out of descriptors: the listen socket stays readable, so waiting would spin. Free
          // the reserve, accept the connection and close it at once (the client sees the close
          // rather than a hang), then take the reserve back.
          KILN_LOG_WARN("accept failed: {}; closing a new connection", strerror(errno));
          ::close(spare_fd);
          const int shed = ::accept4(shared->listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
          if (shed >= 0) ::close(shed);
          spare_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
          continue;
        }
        if (errno != EAGAIN && errno != EWOULDBLOCK)
          KILN_LOG_WARN("accept failed: {}", strerror(errno));
        return;
      }
      int one = 1;
      ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
      auto c = std::make_unique<Conn>();
      c->fd = fd;
      c->id = next_id++;
      c->in.make_room(16384);
      c->last_active = Clock::now();
      epoll_event ev{};
      ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
      ev.data.u64 = c->id;
      if (::epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) != 0) {
        ::close(fd);
        continue;
      }
      shared->connections.fetch_add(1);
      conns.emplace(c->id, std::move(c));
    }
  }

  void kill(Conn* c) {
    if (c->dead) return;
    c->dead = true;
    graveyard.push_back(c->id);
  }

  void bury() {
    for (uint64_t id : graveyard) {
      auto it = conns.find(id);
      if (it == conns.end()) continue;
      Conn* c = it->second.get();
      for (; c->flight_pending > 0; --c->flight_pending) shared->request_done();
      if (c->counted) shared->connections.fetch_sub(1);
      ::close(c->fd);
      conns.erase(it);
    }
    graveyard.clear();
  }

  void sweep(Clock::time_point now) {
    last_sweep = now;
    const auto idle = std::chrono::seconds(shared->options.idle_timeout_s_);
    for (auto& [id, c] : conns) {
      if (c->dead) continue;
      if (c->lingering ? now > c->linger_deadline
                       : !c->busy && c->out_pos == c->out.size() && now - c->last_active > idle)
        kill(c.get());
    }
    bury();
  }

  void on_event(Conn* c, uint32_t ev) {
    if (ev & (EPOLLERR | EPOLLHUP)) return kill(c);
    if ((ev & EPOLLOUT) && c->out_pos < c->out.size()) {
      flush(c);
      if (c->dead) return;
      if (!c->busy && !c->in_process) resume(c);
    }
    if (ev & (EPOLLIN | EPOLLRDHUP)) {
      if (c->lingering) return discard(c);
      on_readable(c);
    }
  }

  /// Reads what the socket holds (unless a request is being answered) and handles it.
  void on_readable(Conn* c) {
    for (;;) {
      if (c->busy || c->close_after_write || c->dead) {
        c->want_read = true;
        return;
      }
      c->want_read = false;
      if (c->in.cap - c->in.end < 4096 && c->in.make_room(c->in.end - c->in.begin + 16384))
        c->head_moved = true;
      const size_t space = c->in.cap - c->in.end;
      const ssize_t n = ::recv(c->fd, c->in.data.get() + c->in.end, space, 0);
      if (n < 0) {
        if (errno == EINTR) continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK) kill(c);
        return;
      }
      if (n == 0) {
        c->peer_closed = true;
        // A client may half-close after its request: answer what is complete, then close.
        process_input(c);
        if (!c->busy && c->out_pos == c->out.size())
          kill(c);
        else
          c->close_after_write = true;
        return;
      }
      c->in.end += static_cast<size_t>(n);
      c->last_active = Clock::now();
      process_input(c);
      if (static_cast<size_t>(n) < space) return;  // drained; edge-triggered: a new edge follows
    }
  }

  /// Handles the complete requests in the buffer, one at a time (pipelined ones wait for the
  /// previous answer), then sends what was answered.
  void process_input(Conn* c) {
    c->in_process = true;
    while (!c->busy && !c->close_after_write && !c->dead) {
      std::string_view data = c->in.view();
      if (data.empty()) break;
      if (!c->have_head) {
        HeadParse h = parse_request_head(data, shared->limits, &c->req);
        if (h.result == HeadParse::kNeedMore) break;
        if (h.result == HeadParse::kError) {
          reject(c, h.error_status, h.error);
          break;
        }
        const size_t total = h.head_bytes + (h.chunked ? 0 : h.content_length);
        if (c->in.begin + total > c->in.cap) {
          c->in.make_room(total);
          data = c->in.view();
          h = parse_request_head(data, shared->limits, &c->req);  // views moved
        }
        c->head = std::move(h);
        c->chunk_cursor = {};
        c->have_head = true;
        c->head_moved = false;
        c->continue_sent = false;
      }
      // The request's end: after Content-Length bytes, or after the last chunk (the buffer grows
      // by itself as a chunked body arrives; the scan holds it to the limits).
      size_t total = c->head.head_bytes + c->head.content_length;
      bool complete = data.size() >= total;
      if (c->head.chunked) {
        const ChunkedParse scan = parse_chunked_body(data.substr(c->head.head_bytes),
                                                     shared->limits, nullptr, &c->chunk_cursor);
        if (scan.result == ChunkedParse::kError) {
          c->have_head = false;
          reject(c, scan.error_status, scan.error);
          break;
        }
        complete = scan.result == ChunkedParse::kDone;
        total = c->head.head_bytes + scan.consumed;
      }
      if (!complete) {
        if (c->head.expect_continue && !c->continue_sent) {
          c->continue_sent = true;
          c->out += c->req.minor_version == 0 ? "HTTP/1.0" : "HTTP/1.1";
          c->out += " 100 Continue\r\n\r\n";
        }
        break;
      }
      if (c->head_moved) {  // the body arrived over several reads and the buffer moved
        parse_request_head(data, shared->limits, &c->req);
        c->head_moved = false;
      }
      if (c->head.chunked) {
        c->chunked_body.clear();
        parse_chunked_body(data.substr(c->head.head_bytes), shared->limits, &c->chunked_body);
        c->req.body = c->chunked_body;
      } else {
        c->req.body = data.substr(c->head.head_bytes, c->head.content_length);
      }
      c->head_method = c->req.method == "HEAD";
      c->have_head = false;
      c->busy = true;
      shared->in_flight.fetch_add(1);
      try {
        shared->handler(c->req, HttpReply(shared_from_this(), c->id));
      } catch (const std::exception& e) {
        KILN_LOG_ERROR("request handler threw: {}", e.what());
      }
      c->in.begin += total;
      if (c->in.begin == c->in.end) c->in.begin = c->in.end = 0;
    }
    c->in_process = false;
    flush(c);
  }

  /// After a response went out: the next pipelined request, then the socket.
  void resume(Conn* c) {
    if (c->dead || c->busy || c->close_after_write) return;
    process_input(c);
    if (!c->dead && !c->busy && c->want_read) on_readable(c);
  }

  void deliver(uint64_t id, HttpResponse&& res) {
    auto it = conns.find(id);
    if (it == conns.end() || it->second->dead || !it->second->busy) {
      shared->request_done();
      return;
    }
    Conn* c = it->second.get();
    c->busy = false;
    serialize(c, res, c->req.keep_alive && !c->peer_closed);
    if (c->in_process) return;  // process_input() continues and flushes
    flush(c);
    resume(c);
  }

  /// A request the server answers itself (bad HTTP, limits): the answer, then close.
  void reject(Conn* c, int status, const std::string& message) {
    if (shared->on_reject) shared->on_reject(static_cast<unsigned>(status), message);
    shared->in_flight.fetch_add(1);
    std::string body = "{\"error\": ";
    append_json_string(&body, message);
    body += "}";
    c->req.minor_version = 1;
    c->head_method = false;
    serialize(c, HttpResponse(status, std::move(body)), false);
  }

  void serialize(Conn* c, const HttpResponse& res, bool keep_alive) {
    const bool keep = keep_alive && !shared->stopping.load(std::memory_order_relaxed);
    std::string& o = c->out;
    if (c->out_pos == o.size()) {
      o.clear();
      c->out_pos = 0;
    }
    char num[24];
    o += c->req.minor_version == 0 ? "HTTP/1.0 " : "HTTP/1.1 ";
    o.append(num, std::to_chars(num, num + sizeof(num), res.status).ptr);
    o += ' ';
    o += http_reason(res.status);
    o += "\r\nContent-Type: ";
    o += res.content_type;
    o += "\r\nContent-Length: ";
    o.append(num, std::to_chars(num, num + sizeof(num), res.body.size()).ptr);
    o += "\r\n";
    for (const auto& [name, value] : res.headers) {
      o += name;
      o += ": ";
      o += value;
      o += "\r\n";
    }
    if (!keep)
      o += "Connection: close\r\n";
    else if (c->req.minor_version == 0)
      o += "Connection: keep-alive\r\n";
    o += "\r\n";
    if (!c->head_method) o += res.body;  // HEAD: the same headers, no body (RFC 9110 9.3.2)
    ++c->flight_pending;
    if (!keep) c->close_after_write = true;
  }

  void flush(Conn* c) {
    while (c->out_pos < c->out.size()) {
      const ssize_t n =
          ::send(c->fd, c->out.data() + c->out_pos, c->out.size() - c->out_pos, MSG_NOSIGNAL);
      if (n < 0) {
        if (errno == EINTR) continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK) kill(c);
        return;  // EPOLLOUT resumes
      }
      c->out_pos += static_cast<size_t>(n);
    }
    c->out.clear();
    c->out_pos = 0;
    c->last_active = Clock::now();
    for (; c->flight_pending > 0; --c->flight_pending) shared->request_done();
    if (c->close_after_write && !c->busy && !c->lingering) start_linger(c);
  }

  /// Half-closes, then discards what the client still sends (e.g. the rest of a body refused
  /// with 413) until it closes or 2 s pass, so the response is not lost to a TCP reset.
  void start_linger(Conn* c) {
    c->lingering = true;
    if (c->counted) {
      c->counted = false;
      shared->connections.fetch_sub(1);
    }
    if (c->peer_closed || ::shutdown(c->fd, SHUT_WR) != 0) return kill(c);
    c->linger_deadline = Clock::now() + std::chrono::seconds(2);
    discard(c);
  }

  void discard(Conn* c) {
    char sink[16384];
    for (;;) {
      const ssize_t n = ::recv(c->fd, sink, sizeof(sink), 0);
      if (n > 0) continue;
      if (n < 0 && errno == EINTR) continue;
      if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) kill(c);
      return;
    }
  }
};

}  // namespace detail

void HttpReply::operator()(HttpResponse&& res) const {
  if (loop_) loop_->post(connection_, std::move(res));
}

struct HttpServer::Impl {
  std::shared_ptr<detail::Shared> shared;
  std::vector<std::shared_ptr<detail::Loop>> loops;
  bool started = false;
  bool stopped = false;
};

HttpServer::HttpServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

HttpServer::~HttpServer() {
  stop();
  if (impl_ && impl_->shared->listen_fd >= 0) ::close(impl_->shared->listen_fd);
}

Expected<std::unique_ptr<HttpServer>> HttpServer::Create(const HttpServerOptions& options,
                                                         HttpHandler handler,
                                                         HttpRejectHook on_reject) {
  auto shared = std::make_shared<detail::Shared>();
  shared->options = options;
  shared->limits.max_body_bytes = options.max_body_bytes_;
  shared->limits.max_header_bytes = static_cast<size_t>(options.max_header_bytes_);
  shared->handler = std::move(handler);
  shared->on_reject = std::move(on_reject);
  const std::string where = options.host_ + ":" + std::to_string(options.port_);
  if (options.port_ < 0 || options.port_ > 65535)
    return Status::InvalidArgument("--port " + std::to_string(options.port_) + ": out of range");
  // An IPv4 literal (127.0.0.1, 0.0.0.0) or an IPv6 one (::1, ::; brackets optional).
  sockaddr_storage addr{};
  socklen_t addr_len = 0;
  std::string host = options.host_;
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']')
    host = host.substr(1, host.size() - 2);
  const auto port_be = htons(static_cast<uint16_t>(options.port_));
  auto* v4 = reinterpret_cast<sockaddr_in*>(&addr);
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&addr);
  if (::inet_pton(AF_INET, host.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = port_be;
    addr_len = sizeof(sockaddr_in);
  } else if (::inet_pton(AF_INET6, host.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = port_be;
    addr_len = sizeof(sockaddr_in6);
  } else {
    return Status::InvalidArgument("--host " + options.host_ +
                                   ": not an IPv4 or IPv6 address (e.g. 127.0.0.1, 0.0.0.0, ::1)");
  }
  const int fd = ::socket(addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return Status::Unavailable("cannot listen on " + where + ": " + strerror(errno));
  int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), addr_len) != 0 ||
      ::listen(fd, SOMAXCONN) != 0) {
    const std::string why = strerror(errno);
    ::close(fd);
    return Status::Unavailable("cannot listen on " + where + ": " + why);
  }
  socklen_t len = sizeof(addr);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  shared->listen_fd = fd;
  shared->port = ntohs(addr.ss_family == AF_INET6 ? v6->sin6_port : v4->sin_port);
  auto impl = std::make_unique<Impl>();
  impl->shared = shared;
  const int n = std::max(1, options.io_threads_);
  for (int i = 0; i < n; ++i) {
    auto loop = std::make_shared<detail::Loop>(shared);
    KILN_RETURN_IF_ERROR(loop->init());
    impl->loops.push_back(std::move(loop));
  }
  return std::unique_ptr<HttpServer>(new HttpServer(std::move(impl)));
}

uint16_t HttpServer::port() const { return impl_->shared->port; }

void HttpServer::start() {
  if (impl_->started) return;
  impl_->started = true;
  for (auto& loop : impl_->loops) {
    detail::Loop* l = loop.get();
    l->thread = std::thread([l] { l->run(); });
  }
}

void HttpServer::stop_accepting() {
  detail::Shared& s = *impl_->shared;
  s.stopping = true;
  if (s.listen_fd < 0) return;
  if (impl_->started && !impl_->stopped) {
    std::vector<std::future<void>> done;
    for (auto& loop : impl_->loops) {
      auto p = std::make_shared<std::promise<void>>();
      done.push_back(p->get_future());
      detail::Loop* l = loop.get();
      l->run_in_loop([l, p] {
        ::epoll_ctl(l->epfd, EPOLL_CTL_DEL, l->shared->listen_fd, nullptr);
        l->listening = false;
        p->set_value();
      });
    }
    for (auto& f : done) f.wait_for(std::chrono::seconds(5));
  }
  ::close(s.listen_fd);
  s.listen_fd = -1;
}

bool HttpServer::wait_idle(std::chrono::milliseconds timeout) {
  detail::Shared& s = *impl_->shared;
  std::unique_lock<std::mutex> lock(s.idle_mu);
  return s.idle_cv.wait_for(lock, timeout, [&s] { return s.in_flight.load() == 0; });
}

int64_t HttpServer::in_flight() const { return impl_->shared->in_flight.load(); }

int64_t HttpServer::open_connections() const { return impl_->shared->connections.load(); }

void HttpServer::stop() {
  if (!impl_ || impl_->stopped) return;
  impl_->stopped = true;
  for (auto& loop : impl_->loops) {
    loop->quit = true;
    loop->wake();
  }
  for (auto& loop : impl_->loops)
    if (loop->thread.joinable()) loop->thread.join();
  for (auto& loop : impl_->loops) {
    std::lock_guard<std::mutex> lock(loop->mu);
    loop->stopped = true;
  }
}

}  // namespace kiln::serve
