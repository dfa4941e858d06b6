#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "kiln/core/expected.h"
#include "kiln/loadtest/histogram.h"
#include "kiln/loadtest/target.h"

namespace kiln::loadtest {

/// Settings of one load run. Open loop (rate > 0): request i is due at t0 + i/rate and its
/// latency counts from that intended time, whether or not a connection was free then (wrk2's
/// coordinated-omission-safe model). Closed loop (rate == 0): each connection sends its next
/// request as soon as the previous answer arrives; latency counts from the actual send.
///
///   LoadOptions o(target, {build_request(target, "/v2/health/ready", "")});
///   o.rate(20000).duration_s(5);
///   Expected<LoadResult> r = run_load(o);
struct LoadOptions {
  LoadOptions(Target target, std::vector<std::string> requests)
      : target_(std::move(target)), requests_(std::move(requests)) {}
#define KILN_LT_SETTER(type, name) \
  LoadOptions& name(type v) {      \
    name##_ = v;                   \
    return *this;                  \
  }
  KILN_LT_SETTER(double, rate)
  KILN_LT_SETTER(int, connections)
  KILN_LT_SETTER(double, duration_s)
  KILN_LT_SETTER(double, timeout_s)
  KILN_LT_SETTER(int, threads)
  KILN_LT_SETTER(double, drain_s)
#undef KILN_LT_SETTER

  Target target_;
  std::vector<std::string> requests_;  ///< serialised HTTP/1.1 requests, cycled in order
  double rate_ = 0;                    ///< intended requests per second in total; 0: closed loop
  int connections_ = 64;               ///< keep-alive connections in total (split across threads)
  double duration_s_ = 10;             ///< sending window
  double timeout_s_ = 10;              ///< per request, from its send; counted as a timeout error
  int threads_ = 1;     ///< event loops, each with rate/threads and connections/threads
  double drain_s_ = 2;  ///< after the window, wait this long (at most) for answers
};

/// One second of the run, by completion time.
struct SecondStats {
  int64_t requests = 0;  ///< answers (any status) completed in this second
  int64_t errors = 0;    ///< failed requests (status >= 400 or a socket/timeout error)
  std::unique_ptr<Histogram> latency_ns;  ///< 2 significant digits; null if no answer
};

/// What a run measured. Latencies are in nanoseconds.
struct LoadResult {
  bool open_loop = false;
  double intended_rate = 0;
  int connections = 0;
  int threads = 1;
  double duration_s = 0;  ///< the sending window
  double elapsed_s = 0;   ///< from start to the last answer (or the window's end)
  int64_t scheduled = 0;  ///< open loop: requests due within the window
  int64_t sent = 0;
  int64_t completed = 0;   ///< answers received (any status)
  int64_t unsent = 0;      ///< due but never sent (all connections busy until the end)
  int64_t unfinished = 0;  ///< sent, no answer by the end of the drain
  std::map<int, int64_t> status_counts;
  int64_t errors_status = 0;  ///< answers with status >= 400
  int64_t errors_connect = 0;
  int64_t errors_read = 0;  ///< reset/closed while reading, or an unparsable response
  int64_t errors_write = 0;
  int64_t errors_timeout = 0;
  std::string first_error;  ///< "KIND: why" of the first failed request ("" if none)
  int64_t late_sends = 0;   ///< open loop: sent more than 1 ms after the intended time
  int64_t max_send_lag_ns = 0;
  Histogram latency_ns;  ///< every completed request (3 significant digits)
  /// The same answers timed from the actual send (wrk2's "uncorrected" latency): in open loop
  /// the gap to latency_ns is time spent waiting for a free connection or for the generator.
  Histogram latency_from_send_ns;
  std::vector<SecondStats> timeline;

  int64_t errors() const {
    return errors_status + errors_connect + errors_read + errors_write + errors_timeout;
  }
  /// Requests that ended one way or another (answered or failed).
  int64_t finished() const {
    return completed + errors_connect + errors_read + errors_write + errors_timeout;
  }
  double achieved_rate() const {
    return elapsed_s > 0 ? static_cast<double>(completed) / elapsed_s : 0;
  }
};

/// Runs the load; blocks for about duration + drain. Thread-safe to call from one thread at a
/// time (it starts its own event-loop threads when threads > 1). Errors: bad options.
Expected<LoadResult> run_load(const LoadOptions& options);

/// Open-loop schedule: the intended send time of request `i` (nanoseconds after start) at
/// `rate` req/s, computed without accumulated rounding error.
inline int64_t intended_offset_ns(int64_t i, double rate) {
  return static_cast<int64_t>(static_cast<double>(i) * 1e9 / rate);
}

}  // namespace kiln::loadtest
