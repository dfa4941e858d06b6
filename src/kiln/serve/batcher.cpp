#include "kiln/serve/batcher.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstring>

namespace kiln::serve {

namespace {
double seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }
}  // namespace

DynamicBatcher::DynamicBatcher(const BatcherOptions& options, std::vector<int64_t> sample_shape,
                               RunFn run)
    : options_(options),
      sample_shape_(std::move(sample_shape)),
      sample_numel_([this] {
        int64_t n = 1;
        for (int64_t d : sample_shape_) n *= d;
        return n;
      }()),
      gap_(std::chrono::microseconds(options_.arrival_gap_us_ >= 0
                                         ? options_.arrival_gap_us_
                                         : std::min<int64_t>(100, options_.max_delay_us_ / 10))),
      run_(std::move(run)) {
  worker_ = std::thread([this] { loop(); });
}

DynamicBatcher::~DynamicBatcher() { stop(); }

Status DynamicBatcher::submit(BatchJob&& job) { return enqueue(std::move(job), true); }

Status DynamicBatcher::submit_deferred(BatchJob&& job) { return enqueue(std::move(job), false); }

Status DynamicBatcher::enqueue(BatchJob&& job, bool may_wake) {
  bool wake = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) return Status::Unavailable("the model version is shutting down");
    job.enqueued = Clock::now();
    last_arrival_ = job.enqueued;
    // Wake the worker only when it waits for a first job or the batch is now full: while it
    // waits for the batch to fill it sleeps until its own deadline and then rereads
    // last_arrival_, so arrivals cost no context switch.
    if (options_.queued_everywhere_) options_.queued_everywhere_->fetch_add(1);
    wake = may_wake && (queue_.empty() || queued_rows_ + job.rows >= options_.max_batch_ ||
                        options_.nothing_more_coming());
    queued_rows_ += job.rows;
    queue_.push_back(std::move(job));
  }
  if (wake) cv_.notify_one();
  return Status::Ok();
}

Clock::time_point DynamicBatcher::dispatch() {
  const auto max_delay = std::chrono::microseconds(options_.max_delay_us_);
  for (;;) {
    std::vector<BatchJob> jobs;
    {
      std::unique_lock<std::mutex> lock(mu_);
      if (queue_.empty()) return Clock::time_point::max();
      if (running_ > 0 || queued_rows_ >= options_.max_batch_) {
        // The worker takes it: after the running forward, or at once when full (so reading and
        // parsing the next requests overlap the forward).
        if (worker_idle_ || queued_rows_ >= options_.max_batch_) cv_.notify_one();
        return Clock::time_point::max();
      }
      const auto due = std::min(queue_.front().enqueued + max_delay, last_arrival_ + gap_);
      if (!options_.nothing_more_coming() && Clock::now() < due) return due;
      take_batch(&jobs);
    }
    // OpenMP's thread count is per thread (see loop()).
    thread_local bool threads_set = false;
    if (!threads_set) {
      at::init_num_threads();
      threads_set = true;
    }
    run_batch(jobs);
    std::lock_guard<std::mutex> lock(mu_);
    running_ = 0;
    if (worker_waits_forward_ || stopping_) cv_.notify_all();
  }
}

void DynamicBatcher::take_batch(std::vector<BatchJob>* jobs) {
  int64_t rows = 0;
  while (!queue_.empty() && (jobs->empty() || rows + queue_.front().rows <= options_.max_batch_)) {
    rows += queue_.front().rows;
    jobs->push_back(std::move(queue_.front()));
    queue_.pop_front();
  }
  queued_rows_ -= rows;
  running_ = static_cast<int64_t>(jobs->size());
  if (options_.queued_everywhere_)
    options_.queued_everywhere_->fetch_sub(static_cast<int64_t>(jobs->size()));
}

void DynamicBatcher::stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_ && !worker_.joinable()) return;
    stopping_ = true;
  }
  cv_.notify_all();
  if (worker_.joinable() && worker_.get_id() != std::this_thread::get_id()) worker_.join();
}

int64_t DynamicBatcher::pending() const {
  std::lock_guard<std::mutex> lock(mu_);
  return static_cast<int64_t>(queue_.size()) + running_;
}

void DynamicBatcher::loop() {
  // OpenMP's thread count is per thread: without this the worker forwards with one OpenMP
  // thread per core whatever torch::set_num_threads() said on the main thread, and the idle
  // OpenMP workers spin after every forward (on 2 cores: 1.2 ms of CPU per 1-row request
  // instead of 60 us).
  at::init_num_threads();
  const auto max_delay = std::chrono::microseconds(options_.max_delay_us_);
  const auto gap = gap_;
  std::vector<BatchJob> jobs;
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      // A batch run by dispatch() on another thread holds running_: one forward at a time.
      worker_idle_ = true;
      cv_.wait(lock, [this] { return (!queue_.empty() && running_ == 0) || stopping_; });
      worker_idle_ = false;
      if (queue_.empty() && stopping_) return;  // stopping and drained
      // Wait for the batch to fill: until max_batch rows, the oldest request's max delay, or a
      // quiet gap with no new arrival.
      while (!stopping_ && !queue_.empty() && queued_rows_ < options_.max_batch_) {
        const auto oldest_deadline = queue_.front().enqueued + max_delay;
        const auto quiet_deadline = last_arrival_ + gap;
        const auto until = std::min(oldest_deadline, quiet_deadline);
        if (Clock::now() >= until || options_.nothing_more_coming()) break;
        cv_.wait_until(lock, until);
      }
      // dispatch() may have taken the jobs (or be running a batch) meanwhile.
      if (running_ > 0) {
        worker_waits_forward_ = true;
        cv_.wait(lock, [this] { return running_ == 0; });
        worker_waits_forward_ = false;
      }
      if (queue_.empty()) continue;
      take_batch(&jobs);
    }
    run_batch(jobs);
    jobs.clear();
    std::lock_guard<std::mutex> lock(mu_);
    running_ = 0;
  }
}

void DynamicBatcher::run_batch(std::vector<BatchJob>& jobs) {
  const auto start = Clock::now();
  // Jobs past their deadline fail without running.
  std::vector<BatchJob*> live;
  int64_t rows = 0;
  for (auto& j : jobs) {
    if (start > j.deadline) {
      BatchResult r;
      r.status = Status::Unavailable(
          "request timed out after " +
          std::to_string(
              std::chrono::duration_cast<std::chrono::milliseconds>(start - j.enqueued).count()) +
          " ms in the queue");
      r.queue_seconds = seconds(start - j.enqueued);
      j.done(std::move(r));
      continue;
    }
    live.push_back(&j);
    rows += j.rows;
  }
  if (live.empty()) return;
  std::vector<int64_t> shape{rows};
  shape.insert(shape.end(), sample_shape_.begin(), sample_shape_.end());
  torch::Tensor batch = torch::empty(shape, torch::kFloat32);
  float* dst = batch.data_ptr<float>();
  for (BatchJob* j : live) {
    std::memcpy(dst, j->data.data(), j->data.size() * sizeof(float));
    dst += j->data.size();
  }
  Expected<std::vector<torch::Tensor>> out = run_(batch);
  const double compute = seconds(Clock::now() - start);
  int64_t offset = 0;
  for (BatchJob* j : live) {
    BatchResult r;
    r.queue_seconds = seconds(start - j->enqueued);
    r.compute_seconds = compute;
    r.batch_size = rows;
    if (!out.ok()) {
      r.status = out.status();
    } else {
      for (const torch::Tensor& t : *out) {
        if (t.dim() == 0 || t.size(0) != rows) {
          r.status =
              Status::Internal("model output has " + std::to_string(t.dim() ? t.size(0) : 0) +
                               " rows for a batch of " + std::to_string(rows));
          r.outputs.clear();
          break;
        }
        r.outputs.push_back(t.narrow(0, offset, j->rows));
      }
    }
    offset += j->rows;
    j->done(std::move(r));
  }
}

}  // namespace kiln::serve
