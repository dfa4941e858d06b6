#include "kiln/loadtest/generator.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <thread>

namespace kiln::loadtest {
namespace {

constexpr int64_t kSecond = 1'000'000'000;
constexpr int64_t kLateNs = 1'000'000;           // a send this late counts as backed up
constexpr int64_t kHousekeepingNs = 10'000'000;  // timeout scan / reconnect cadence
constexpr int64_t kSpinNs = 5'000;  // closer than this: spin (epoll_wait 0) instead of a timer
constexpr int64_t kReconnectDelayNs = 10'000'000;
constexpr size_t kBufferBytes = 16384;  // response headers must fit
constexpr int64_t kTimelineHighestNs = 100 * kSecond;

int64_t now_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * kSecond + ts.tv_nsec;
}

enum class ConnState { kFree, kConnecting, kWriting, kReading, kCooling };
enum class Failure { kConnect, kRead, kWrite, kTimeout };

struct Conn {
  int fd = -1;
  ConnState state = ConnState::kFree;
  const std::string* request = nullptr;
  size_t written = 0;
  int64_t start_ns = 0;  ///< latency origin: intended (open loop) or actual send time
  int64_t sent_ns = 0;   ///< when the request's first byte went out (timeout origin)
  int64_t retry_ns = 0;  ///< kCooling: usable again from then
  char* buf = nullptr;
  size_t len = 0;
  bool in_body = false;
  int64_t body_left = 0;
  int status = 0;
  bool close_after = false;
  bool reused = false;  ///< has answered before (an EOF before any byte may be a stale socket)
  uint32_t events = 0;  ///< the epoll interest set now registered
};

/// Case-insensitive: does header line [b, e) start with `name` (lower case, with the colon)?
bool header_is(const char* b, const char* e, const char* name, size_t n) {
  if (static_cast<size_t>(e - b) < n) return false;
  for (size_t i = 0; i < n; ++i)
    if (std::tolower(static_cast<unsigned char>(b[i])) != name[i]) return false;
  return true;
}

const char* skip_spaces(const char* p, const char* e) {
  while (p < e && (*p == ' ' || *p == '\t')) ++p;
  return p;
}

/// One event loop: its share of the schedule over its share of the connections.
class Worker {
 public:
  Worker(const LoadOptions& o, int index, int64_t t0, LoadResult* out)
      : o_(o), index_(index), t0_(t0), out_(out) {
    const int n = std::max(1, o.threads_);
    conns_.resize(static_cast<size_t>(o.connections_ / n + (index < o.connections_ % n)));
    buffers_.resize(conns_.size() * kBufferBytes);
    for (size_t i = 0; i < conns_.size(); ++i) {
      conns_[i].buf = buffers_.data() + i * kBufferBytes;
      free_.push_back(static_cast<int>(i));
    }
    end_ns_ = t0 + static_cast<int64_t>(o.duration_s_ * 1e9);
    timeout_ns_ = static_cast<int64_t>(o.timeout_s_ * 1e9);
    drain_end_ns_ = end_ns_ + static_cast<int64_t>(o.drain_s_ * 1e9);
    out_->timeline.resize(static_cast<size_t>(o.duration_s_ + o.drain_s_) + 2);
  }
  ~Worker() {
    for (auto& c : conns_)
      if (c.fd >= 0) ::close(c.fd);
    if (epfd_ >= 0) ::close(epfd_);
    if (timerfd_ >= 0) ::close(timerfd_);
  }

  void run() {
    epfd_ = epoll_create1(EPOLL_CLOEXEC);
    timerfd_ = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = UINT64_MAX;
    epoll_ctl(epfd_, EPOLL_CTL_ADD, timerfd_, &ev);
    prctl(PR_SET_TIMERSLACK, 1000UL, 0, 0, 0);  // wake within ~1 us of the timer, not 50 us

    const bool open = o_.rate_ > 0;
    const int n = std::max(1, o_.threads_);
    // This worker sends requests index, index+n, index+2n, ... of the global schedule.
    int64_t k = 0;
    auto intended = [&](int64_t kk) { return t0_ + intended_offset_ns(kk * n + index_, o_.rate_); };
    int64_t next_due = open ? intended(0) : t0_;
    int64_t next_housekeeping = t0_ + kHousekeepingNs;
    int64_t armed = -1;
    epoll_event events[256];
    size_t rr = 0;  // request cycling
    const size_t nreq = o_.requests_.size();

    for (;;) {
      int64_t now = now_ns();
      if (open) {
        while (next_due <= now && next_due < end_ns_ && !free_.empty()) {
          if (now - next_due > kLateNs) {
            ++out_->late_sends;
            out_->max_send_lag_ns = std::max(out_->max_send_lag_ns, now - next_due);
          }
          ++out_->scheduled;
          send_on(pop_free(), &o_.requests_[(rr++ * n + index_) % nreq], next_due, now);
          next_due = intended(++k);
        }
      } else if (now < end_ns_) {
        while (!free_.empty())
          send_on(pop_free(), &o_.requests_[(rr++ * n + index_) % nreq], now, now);
      }
      if (now >= next_housekeeping) {
        housekeeping(now);
        next_housekeeping = now + kHousekeepingNs;
      }
      const bool sending = now < end_ns_;
      if (!sending && (busy_ == 0 || now >= drain_end_ns_)) break;

      int64_t wake = std::min(next_housekeeping, sending ? end_ns_ : drain_end_ns_);
      if (open && sending && !free_.empty()) wake = std::min(wake, next_due);
      // Sleep until `wake` (or an event): epoll_pwait2's nanosecond timeout where the kernel has
      // it (5.11+), else a timerfd armed at `wake`. Closer than kSpinNs: poll without sleeping.
      const int64_t wait_ns = wake - now <= kSpinNs ? 0 : wake - now;
      int got;
      if (use_pwait2_) {
        const timespec ts{static_cast<time_t>(wait_ns / kSecond),
                          static_cast<long>(wait_ns % kSecond)};
        got = epoll_pwait2(epfd_, events, 256, &ts, nullptr);
        if (got < 0 && errno == ENOSYS) {
          use_pwait2_ = false;
          continue;
        }
      } else {
        if (wait_ns > 0 && wake != armed) {
          itimerspec its{};
          its.it_value.tv_sec = wake / kSecond;
          its.it_value.tv_nsec = wake % kSecond;
          timerfd_settime(timerfd_, TFD_TIMER_ABSTIME, &its, nullptr);
          armed = wake;
        }
        got = epoll_wait(epfd_, events, 256, wait_ns > 0 ? -1 : 0);
      }
      if (got < 0 && errno != EINTR) break;
      for (int e = 0; e < got; ++e) {
        if (events[e].data.u64 == UINT64_MAX) {
          uint64_t ticks;
          if (::read(timerfd_, &ticks, sizeof ticks) < 0) {
          }
          armed = -1;
          continue;
        }
        handle(static_cast<int>(events[e].data.u64), events[e].events);
      }
    }
    // What is left: due but never sent, sent but never answered.
    if (open) {
      const int64_t stop = std::min(now_ns(), end_ns_);
      while (next_due < stop) {
        ++out_->scheduled;
        ++out_->unsent;
        next_due = intended(++k);
      }
    }
    for (auto& c : conns_)
      if (c.state == ConnState::kConnecting || c.state == ConnState::kWriting ||
          c.state == ConnState::kReading)
        ++out_->unfinished;
  }

 private:
  int pop_free() {
    const int i = free_.back();
    free_.pop_back();
    return i;
  }

  void send_on(int i, const std::string* request, int64_t start, int64_t now) {
    Conn& c = conns_[static_cast<size_t>(i)];
    c.request = request;
    c.written = 0;
    c.start_ns = start;
    c.sent_ns = now;
    c.len = 0;
    c.in_body = false;
    ++busy_;
    ++out_->sent;
    if (c.fd < 0) {
      if (!connect(i)) return;
      if (c.state == ConnState::kConnecting) return;
    }
    c.state = ConnState::kWriting;
    write_some(i);
  }

  /// Opens conns_[i]; false (request failed, connection cooling) if refused at once.
  bool connect(int i) {
    Conn& c = conns_[static_cast<size_t>(i)];
    c.fd = ::socket(o_.target_.addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    c.reused = false;
    if (c.fd < 0) {
      fail(i, Failure::kConnect, std::strerror(errno));
      return false;
    }
    const int one = 1;
    setsockopt(c.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    const int rc =
        ::connect(c.fd, reinterpret_cast<const sockaddr*>(&o_.target_.addr), o_.target_.addr_len);
    if (rc != 0 && errno != EINPROGRESS) {
      fail(i, Failure::kConnect, std::strerror(errno));
      return false;
    }
    epoll_event ev{};
    ev.events = rc == 0 ? EPOLLIN : EPOLLOUT;
    ev.data.u64 = static_cast<uint64_t>(i);
    epoll_ctl(epfd_, EPOLL_CTL_ADD, c.fd, &ev);
    c.events = ev.events;
    c.state = rc == 0 ? ConnState::kWriting : ConnState::kConnecting;
    return true;
  }

  /// One epoll_ctl only when the interest set changes (not once per request).
  void set_events(Conn& c, int i, uint32_t events) {
    if (c.events == events) return;
    c.events = events;
    epoll_event ev{};
    ev.events = events;
    ev.data.u64 = static_cast<uint64_t>(i);
    epoll_ctl(epfd_, EPOLL_CTL_MOD, c.fd, &ev);
  }

  void write_some(int i) {
    Conn& c = conns_[static_cast<size_t>(i)];
    while (c.written < c.request->size()) {
      const ssize_t n =
          ::send(c.fd, c.request->data() + c.written, c.request->size() - c.written, MSG_NOSIGNAL);
      if (n > 0) {
        c.written += static_cast<size_t>(n);
        continue;
      }
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        set_events(c, i, EPOLLOUT);
        return;
      }
      // A keep-alive socket the server closed while idle: retry once on a fresh one.
      if (c.reused && c.written == 0) {
        close_fd(c);
        if (connect(i) && c.state == ConnState::kWriting) write_some(i);
        return;
      }
      fail(i, Failure::kWrite, n < 0 ? std::strerror(errno) : "connection closed");
      return;
    }
    if (c.state != ConnState::kReading) {
      c.state = ConnState::kReading;
      set_events(c, i, EPOLLIN);
    }
  }

  void handle(int i, uint32_t events) {
    Conn& c = conns_[static_cast<size_t>(i)];
    if (c.fd < 0) return;
    switch (c.state) {
      case ConnState::kConnecting: {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(c.fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err != 0 || (events & (EPOLLERR | EPOLLHUP)))
          return fail(i, Failure::kConnect, err ? std::strerror(err) : "connection failed");
        c.state = ConnState::kWriting;
        return write_some(i);
      }
      case ConnState::kWriting:
        if (events & EPOLLERR) return fail(i, Failure::kWrite, "socket error");
        return write_some(i);
      case ConnState::kReading:
        return read_some(i);
      default: {
        // An idle keep-alive connection became readable: the server closed it (or sent junk).
        close_fd(c);
        return;
      }
    }
  }

  void read_some(int i) {
    Conn& c = conns_[static_cast<size_t>(i)];
    if (c.in_body) c.len = 0;  // body bytes are counted, not kept
    const ssize_t n = ::recv(c.fd, c.buf + c.len, kBufferBytes - c.len, 0);
    if (n < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK) return;
      return fail(i, Failure::kRead, std::strerror(errno));
    }
    if (n == 0) {
      if (c.reused && c.len == 0 && !c.in_body) {  // stale keep-alive socket: resend once
        const std::string* req = c.request;
        close_fd(c);
        c.request = req;
        c.written = 0;
        if (connect(i) && c.state == ConnState::kWriting) write_some(i);
        c.reused = false;
        return;
      }
      return fail(i, Failure::kRead, "the server closed the connection before answering");
    }
    c.len += static_cast<size_t>(n);
    if (!c.in_body) {
      const char* b = c.buf;
      const char* e = c.buf + c.len;
      const char* head_end = nullptr;
      for (const char* p = b; p + 3 < e; ++p)
        if (p[0] == '\r' && p[1] == '\n' && p[2] == '\r' && p[3] == '\n') {
          head_end = p;
          break;
        }
      if (!head_end) {
        if (c.len == kBufferBytes) return fail(i, Failure::kRead, "response headers over 16 KiB");
        return;
      }
      if (c.len < 12 || std::memcmp(b, "HTTP/1.", 7) != 0)
        return fail(i, Failure::kRead, "not an HTTP/1.x response");
      c.status = (b[9] - '0') * 100 + (b[10] - '0') * 10 + (b[11] - '0');
      c.body_left = -1;
      c.close_after = b[7] == '0';  // HTTP/1.0
      const char* line = static_cast<const char*>(std::memchr(b, '\n', head_end - b));
      while (line && line < head_end) {
        const char* ls = line + 1;
        const char* le = static_cast<const char*>(std::memchr(ls, '\r', head_end + 2 - ls));
        if (!le) break;
        if (header_is(ls, le, "content-length:", 15)) {
          c.body_left = std::strtoll(skip_spaces(ls + 15, le), nullptr, 10);
        } else if (header_is(ls, le, "transfer-encoding:", 18)) {
          return fail(i, Failure::kRead, "chunked responses (Transfer-Encoding) are not supported");
        } else if (header_is(ls, le, "connection:", 11)) {
          const char* v = skip_spaces(ls + 11, le);
          c.close_after = header_is(v, le, "close", 5);
        }
        line = le + 1;
      }
      if (c.body_left < 0) {
        if (c.status == 204 || c.status == 304 || c.status < 200)
          c.body_left = 0;
        else
          return fail(i, Failure::kRead, "a response without Content-Length is not supported");
      }
      c.in_body = true;
      const int64_t have = static_cast<int64_t>(e - (head_end + 4));
      c.body_left -= have;
    } else {
      c.body_left -= n;
    }
    if (c.body_left > 0) return;
    complete(i);
  }

  void record(int64_t done, int64_t latency, bool error) {
    size_t second = static_cast<size_t>(std::max<int64_t>(0, done - t0_) / kSecond);
    if (second >= out_->timeline.size()) second = out_->timeline.size() - 1;
    SecondStats& s = out_->timeline[second];
    if (latency >= 0) {
      ++s.requests;
      if (!s.latency_ns) s.latency_ns = std::make_unique<Histogram>(kTimelineHighestNs, 2);
      s.latency_ns->record(latency);
    }
    if (error) ++s.errors;
    last_done_ = std::max(last_done_, done);
  }

  void complete(int i) {
    Conn& c = conns_[static_cast<size_t>(i)];
    const int64_t done = now_ns();
    const int64_t latency = done - c.start_ns;
    out_->latency_ns.record(latency);
    out_->latency_from_send_ns.record(done - c.sent_ns);
    ++out_->completed;
    ++out_->status_counts[c.status];
    const bool error = c.status >= 400;
    if (error) ++out_->errors_status;
    record(done, latency, error);
    --busy_;
    c.len = 0;
    c.in_body = false;
    c.reused = true;
    if (c.close_after || c.body_left < 0) close_fd(c);
    c.state = ConnState::kFree;
    free_.push_back(i);
  }

  void close_fd(Conn& c) {
    if (c.fd >= 0) {
      epoll_ctl(epfd_, EPOLL_CTL_DEL, c.fd, nullptr);
      ::close(c.fd);
    }
    c.fd = -1;
    c.events = 0;
    c.len = 0;
    c.in_body = false;
  }

  /// The request on conns_[i] failed: count it, close the socket, rest the connection briefly.
  void fail(int i, Failure kind, const char* why = "") {
    Conn& c = conns_[static_cast<size_t>(i)];
    switch (kind) {
      case Failure::kConnect:
        ++out_->errors_connect;
        break;
      case Failure::kRead:
        ++out_->errors_read;
        break;
      case Failure::kWrite:
        ++out_->errors_write;
        break;
      case Failure::kTimeout:
        ++out_->errors_timeout;
        break;
    }
    if (out_->first_error.empty()) {
      static const char* const kKinds[] = {"connect", "read", "write", "timeout"};
      out_->first_error = std::string(kKinds[static_cast<int>(kind)]) + ": " + why;
    }
    const int64_t now = now_ns();
    record(now, -1, true);
    --busy_;
    close_fd(c);
    if (kind == Failure::kConnect) {
      c.state = ConnState::kCooling;
      c.retry_ns = now + kReconnectDelayNs;
    } else {
      c.state = ConnState::kFree;
      free_.push_back(i);
    }
  }

  void housekeeping(int64_t now) {
    for (size_t i = 0; i < conns_.size(); ++i) {
      Conn& c = conns_[i];
      if (c.state == ConnState::kCooling && now >= c.retry_ns) {
        c.state = ConnState::kFree;
        free_.push_back(static_cast<int>(i));
      } else if ((c.state == ConnState::kConnecting || c.state == ConnState::kWriting ||
                  c.state == ConnState::kReading) &&
                 now - c.sent_ns > timeout_ns_) {
        fail(static_cast<int>(i), Failure::kTimeout, "no answer within --timeout");
      }
    }
  }

 public:
  int64_t last_done_ = 0;

 private:
  const LoadOptions& o_;
  int index_;
  int64_t t0_;
  LoadResult* out_;
  std::vector<Conn> conns_;
  std::vector<char> buffers_;
  std::vector<int> free_;
  int64_t busy_ = 0;
  int64_t end_ns_ = 0, drain_end_ns_ = 0, timeout_ns_ = 0;
  int epfd_ = -1, timerfd_ = -1;
  bool use_pwait2_ = true;
};

void merge_into(LoadResult* into, LoadResult& from) {
  into->scheduled += from.scheduled;
  into->sent += from.sent;
  into->completed += from.completed;
  into->unsent += from.unsent;
  into->unfinished += from.unfinished;
  for (const auto& [code, n] : from.status_counts) into->status_counts[code] += n;
  into->errors_status += from.errors_status;
  into->errors_connect += from.errors_connect;
  into->errors_read += from.errors_read;
  into->errors_write += from.errors_write;
  into->errors_timeout += from.errors_timeout;
  if (into->first_error.empty()) into->first_error = from.first_error;
  into->late_sends += from.late_sends;
  into->max_send_lag_ns = std::max(into->max_send_lag_ns, from.max_send_lag_ns);
  into->latency_ns.add(from.latency_ns);
  into->latency_from_send_ns.add(from.latency_from_send_ns);
  if (into->timeline.size() < from.timeline.size()) into->timeline.resize(from.timeline.size());
  for (size_t s = 0; s < from.timeline.size(); ++s) {
    SecondStats& a = into->timeline[s];
    SecondStats& b = from.timeline[s];
    a.requests += b.requests;
    a.errors += b.errors;
    if (b.latency_ns) {
      if (!a.latency_ns)
        a.latency_ns = std::move(b.latency_ns);
      else
        a.latency_ns->add(*b.latency_ns);
    }
  }
}

}  // namespace

Expected<LoadResult> run_load(const LoadOptions& o) {
  if (o.requests_.empty()) return Status::InvalidArgument("no request to send");
  if (o.rate_ < 0 || !std::isfinite(o.rate_))
    return Status::InvalidArgument("--rate must be a positive number of requests per second");
  if (o.connections_ < 1) return Status::InvalidArgument("--connections must be at least 1");
  if (o.threads_ < 1 || o.threads_ > o.connections_)
    return Status::InvalidArgument("--threads must be between 1 and --connections");
  if (!(o.duration_s_ > 0) || o.duration_s_ > 3600)
    return Status::InvalidArgument("--duration must be in (0, 3600] seconds");
  if (!(o.timeout_s_ > 0)) return Status::InvalidArgument("--timeout must be positive");
  // Too few file descriptors would look like connect errors of the server: raise the soft
  // limit if the hard one allows, else refuse up front.
  const rlim_t needed = static_cast<rlim_t>(o.connections_) + 64;
  rlimit lim{};
  if (getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur < needed) {
    if (lim.rlim_max >= needed || lim.rlim_max == RLIM_INFINITY) {
      lim.rlim_cur = needed;
      setrlimit(RLIMIT_NOFILE, &lim);
    } else {
      return Status::InvalidArgument("--connections " + std::to_string(o.connections_) +
                                     " needs about " + std::to_string(needed) +
                                     " file descriptors; the hard limit is " +
                                     std::to_string(lim.rlim_max) + " (ulimit -Hn)");
    }
  }

  const int n = o.threads_;
  std::vector<LoadResult> parts(static_cast<size_t>(n));
  std::vector<std::unique_ptr<Worker>> workers;
  const int64_t t0 = now_ns() + 5'000'000;  // a moment to set up every loop
  for (int t = 0; t < n; ++t)
    workers.push_back(std::make_unique<Worker>(o, t, t0, &parts[static_cast<size_t>(t)]));
  if (n == 1) {
    workers[0]->run();
  } else {
    std::vector<std::thread> threads;
    for (int t = 0; t < n; ++t)
      threads.emplace_back([&, t] { workers[static_cast<size_t>(t)]->run(); });
    for (auto& th : threads) th.join();
  }
  LoadResult r;
  r.open_loop = o.rate_ > 0;
  r.intended_rate = o.rate_;
  r.connections = o.connections_;
  r.threads = n;
  r.duration_s = o.duration_s_;
  int64_t last_done = 0;
  for (int t = 0; t < n; ++t) {
    merge_into(&r, parts[static_cast<size_t>(t)]);
    last_done = std::max(last_done, workers[static_cast<size_t>(t)]->last_done_);
  }
  const int64_t end = t0 + static_cast<int64_t>(o.duration_s_ * 1e9);
  r.elapsed_s = static_cast<double>(std::max(end, last_done) - t0) / 1e9;
  // Trim the timeline's empty tail.
  while (r.timeline.size() > 1 && r.timeline.back().requests == 0 && r.timeline.back().errors == 0)
    r.timeline.pop_back();
  return r;
}

}  // namespace kiln::loadtest
