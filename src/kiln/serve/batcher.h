#pragma once

#include <torch/types.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "kiln/core/expected.h"

namespace kiln::serve {

using Clock = std::chrono::steady_clock;

/// Options of DynamicBatcher.
struct BatcherOptions {
  /// Most samples (rows) in one forward.
  BatcherOptions& max_batch(int64_t v) {
    max_batch_ = v;
    return *this;
  }
  /// Longest a request waits in the queue for the batch to fill (Triton's
  /// max_queue_delay_microseconds).
  BatcherOptions& max_delay_us(int64_t v) {
    max_delay_us_ = v;
    return *this;
  }
  /// Stop waiting for more requests once none has arrived for this long (-1: max_delay_us / 10,
  /// at most 100 us).
  /// This keeps a lone request (or a closed-loop client set that is all queued) from paying the
  /// whole max delay.
  BatcherOptions& arrival_gap_us(int64_t v) {
    arrival_gap_us_ = v;
    return *this;
  }
  /// Requests queued in every batcher of the server (shared counter, kept up to date by each
  /// batcher), and the number of open client connections. When every connection already has a
  /// request queued, no further request can arrive before a response goes out (HTTP/1.1 without
  /// pipelining), so the batch is dispatched at once instead of waiting: closed-loop clients do
  /// not pay the quiet gap. Both unset: plain delay/gap rules.
  BatcherOptions& arrivals(std::shared_ptr<std::atomic<int64_t>> queued_everywhere,
                           std::function<int64_t()> open_connections) {
    queued_everywhere_ = std::move(queued_everywhere);
    open_connections_ = std::move(open_connections);
    return *this;
  }
  int64_t max_batch_ = 64;
  int64_t max_delay_us_ = 2000;
  int64_t arrival_gap_us_ = -1;
  std::shared_ptr<std::atomic<int64_t>> queued_everywhere_;
  std::function<int64_t()> open_connections_;

  /// True when the arrivals hint says nothing more can come now.
  bool nothing_more_coming() const {
    if (!queued_everywhere_ || !open_connections_) return false;
    const int64_t open = open_connections_();
    return open > 0 && queued_everywhere_->load(std::memory_order_relaxed) >= open;
  }
};

/// The outcome of one job: the outputs' rows for it (views into the batch's outputs) or an error.
struct BatchResult {
  Status status;
  std::vector<torch::Tensor> outputs;
  double queue_seconds = 0;    ///< enqueue -> batch start
  double compute_seconds = 0;  ///< the batch's forward
  int64_t batch_size = 0;      ///< rows in the batch it ran in
};

/// A request's rows: float32 data of rows x per-sample elements, and where to send the result.
struct BatchJob {
  int64_t rows = 0;
  std::vector<float> data;
  Clock::time_point enqueued;
  Clock::time_point deadline = Clock::time_point::max();
  /// Called exactly once, on the batcher's thread. Must not block.
  std::function<void(BatchResult&&)> done;
};

/// Dynamic batching for one model version (Triton semantics): one FIFO queue; a worker thread
/// takes the requests in arrival order into one forward of at most max_batch rows, as soon as the
/// batch is full, or when the oldest request has waited max_delay_us, or when no new request has
/// arrived for arrival_gap_us. Requests whose deadline passed before their batch started fail
/// with Unavailable. Batch sizes therefore grow with load: while a forward runs, requests queue.
/// submit() is thread-safe and never blocks on compute. An event loop may instead drive the
/// batching itself (submit_deferred() + dispatch(): same rules, the due batches run on its
/// thread); one forward runs at a time either way, so the runner needs no thread-safety.
///
///   DynamicBatcher b(BatcherOptions().max_batch(64), {1, 28, 28}, run_fn);
///   b.submit(std::move(job));   // job.done(...) is called on the worker thread
///   b.stop();                   // finishes queued jobs, joins the worker
class DynamicBatcher {
 public:
  using RunFn = std::function<Expected<std::vector<torch::Tensor>>(const torch::Tensor&)>;
  DynamicBatcher(const BatcherOptions& options, std::vector<int64_t> sample_shape, RunFn run);
  ~DynamicBatcher();
  DynamicBatcher(const DynamicBatcher&) = delete;
  DynamicBatcher& operator=(const DynamicBatcher&) = delete;

  /// Queues a job (rows <= max_batch, data sized rows x sample elements: the caller checked).
  /// Unavailable after stop().
  Status submit(BatchJob&& job);
  /// As submit(), but wakes nobody: for an event loop that submits the requests it has read,
  /// then calls dispatch() and calls it again by the time it returns.
  Status submit_deferred(BatchJob&& job);
  /// Drives the batching of deferred submissions from the calling thread (an event loop):
  /// when the batch is due (the arrivals hint says nothing more can come now, or the oldest
  /// request has waited max_delay_us, or none arrived for the quiet gap) and none is running, runs
  /// it here (blocks for the forward; the jobs' done callbacks run here) and repeats. A full batch,
  /// or work queued behind a running forward, goes to the worker. Returns when to call again
  /// (time_point::max(): not needed). No thread hand-off per batch for loads the event loop
  /// would otherwise only wait on.
  Clock::time_point dispatch();
  /// Stops accepting, runs every queued job, joins the worker. Idempotent. Blocks.
  void stop();
  /// Jobs queued or running now.
  int64_t pending() const;

 private:
  Status enqueue(BatchJob&& job, bool may_wake);
  void loop();
  /// Moves the next batch's jobs out of the queue and marks them running. Holds mu_.
  void take_batch(std::vector<BatchJob>* jobs);
  void run_batch(std::vector<BatchJob>& jobs);

  const BatcherOptions options_;
  const std::vector<int64_t> sample_shape_;
  const int64_t sample_numel_;
  const Clock::duration gap_;  // the quiet gap in effect
  RunFn run_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<BatchJob> queue_;
  int64_t queued_rows_ = 0;
  int64_t running_ = 0;       // jobs in the forward now (worker or dispatch())
  bool worker_idle_ = false;  // the worker waits for a job
  bool worker_waits_forward_ =
      false;  // the worker took its turn and waits for dispatch()'s forward
  Clock::time_point last_arrival_;
  bool stopping_ = false;
  std::thread worker_;
};

}  // namespace kiln::serve
