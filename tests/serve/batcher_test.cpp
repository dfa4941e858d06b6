#include "kiln/serve/batcher.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <atomic>
#include <future>
#include <thread>

namespace kiln::serve {
namespace {

/// Doubles its input; records batch sizes.
struct Recorder {
  std::mutex mu;
  std::vector<int64_t> sizes;
  Expected<std::vector<torch::Tensor>> operator()(const torch::Tensor& t) {
    {
      std::lock_guard<std::mutex> lock(mu);
      sizes.push_back(t.size(0));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    return std::vector<torch::Tensor>{t * 2};
  }
};

BatchJob job(float v, int64_t rows, std::promise<BatchResult>* p) {
  BatchJob j;
  j.rows = rows;
  j.data.assign(static_cast<size_t>(rows) * 2, v);
  j.done = [p](BatchResult&& r) { p->set_value(std::move(r)); };
  return j;
}

TEST(Batcher, GroupsConcurrentRequestsAndSplitsResults) {
  auto rec = std::make_shared<Recorder>();
  DynamicBatcher b(BatcherOptions().max_batch(8).max_delay_us(50000).arrival_gap_us(20000), {2},
                   [rec](const torch::Tensor& t) { return (*rec)(t); });
  std::vector<std::promise<BatchResult>> ps(8);
  for (int i = 0; i < 8; ++i) ASSERT_TRUE(b.submit(job(float(i), 1, &ps[i])).ok());
  for (int i = 0; i < 8; ++i) {
    BatchResult r = ps[i].get_future().get();
    ASSERT_TRUE(r.status.ok()) << r.status;
    ASSERT_EQ(r.outputs.size(), 1u);
    EXPECT_EQ(r.outputs[0].size(0), 1);
    EXPECT_FLOAT_EQ(r.outputs[0][0][1].item<float>(), 2.f * i);
    EXPECT_EQ(r.batch_size, 8);
  }
  EXPECT_EQ(rec->sizes, (std::vector<int64_t>{8}));
}

TEST(Batcher, NeverExceedsMaxBatchAndLoneRequestsDoNotWaitTheFullDelay) {
  auto rec = std::make_shared<Recorder>();
  DynamicBatcher b(BatcherOptions().max_batch(4).max_delay_us(2000000).arrival_gap_us(1000), {2},
                   [rec](const torch::Tensor& t) { return (*rec)(t); });
  std::vector<std::promise<BatchResult>> ps(3);
  const auto t0 = Clock::now();
  ASSERT_TRUE(b.submit(job(1, 3, &ps[0])).ok());
  ASSERT_TRUE(b.submit(job(2, 3, &ps[1])).ok());  // 3 + 3 > 4: a second batch
  for (int i = 0; i < 2; ++i) EXPECT_TRUE(ps[i].get_future().get().status.ok());
  EXPECT_LT(Clock::now() - t0, std::chrono::seconds(1));  // the quiet gap, not the 2 s delay
  for (int64_t s : rec->sizes) EXPECT_LE(s, 4);
  b.stop();
  EXPECT_EQ(b.submit(job(3, 1, &ps[2])).code(), StatusCode::kUnavailable);
}

TEST(Batcher, ExpiredRequestsFailAndStopDrainsTheQueue) {
  auto rec = std::make_shared<Recorder>();
  DynamicBatcher b(BatcherOptions().max_batch(64).max_delay_us(100000).arrival_gap_us(100000), {2},
                   [rec](const torch::Tensor& t) { return (*rec)(t); });
  std::promise<BatchResult> expired, fine;
  BatchJob j = job(1, 1, &expired);
  j.deadline = Clock::now();  // already past when the batch starts
  ASSERT_TRUE(b.submit(std::move(j)).ok());
  ASSERT_TRUE(b.submit(job(2, 1, &fine)).ok());
  b.stop();  // does not wait the 100 ms delay, but answers both
  BatchResult e = expired.get_future().get();
  EXPECT_EQ(e.status.code(), StatusCode::kUnavailable);
  EXPECT_NE(e.status.message().find("timed out"), std::string::npos);
  EXPECT_TRUE(fine.get_future().get().status.ok());
}

}  // namespace
}  // namespace kiln::serve

namespace kiln::serve {
namespace {

TEST(Batcher, DispatchesAtOnceWhenEveryConnectionHasARequestQueued) {
  auto rec = std::make_shared<Recorder>();
  auto queued = std::make_shared<std::atomic<int64_t>>(0);
  std::atomic<int64_t> connections{3};
  DynamicBatcher b(
      BatcherOptions().max_batch(64).max_delay_us(5000000).arrival_gap_us(5000000).arrivals(
          queued, [&connections] { return connections.load(); }),
      {2}, [rec](const torch::Tensor& t) { return (*rec)(t); });
  const auto t0 = Clock::now();
  std::vector<std::promise<BatchResult>> ps(3);
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(b.submit(job(float(i), 1, &ps[i])).ok());
  for (int i = 0; i < 3; ++i) EXPECT_EQ(ps[i].get_future().get().batch_size, 3);
  EXPECT_LT(Clock::now() - t0, std::chrono::seconds(2));  // not the 5 s delay
  EXPECT_EQ(queued->load(), 0);
}

}  // namespace
}  // namespace kiln::serve

namespace kiln::serve {
namespace {

TEST(Batcher, DispatchDrivesDeferredSubmissionsFromTheCaller) {
  auto queued = std::make_shared<std::atomic<int64_t>>(0);
  std::atomic<int64_t> connections{2};
  std::mutex mu;
  std::vector<std::thread::id> ran_on;
  DynamicBatcher b(
      BatcherOptions().max_batch(64).max_delay_us(1000000).arrival_gap_us(30000).arrivals(
          queued, [&connections] { return connections.load(); }),
      {2}, [&](const torch::Tensor& t) -> Expected<std::vector<torch::Tensor>> {
        {
          std::lock_guard<std::mutex> lock(mu);
          ran_on.push_back(std::this_thread::get_id());
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(60));
        return std::vector<torch::Tensor>{t * 2};
      });
  const auto me = std::this_thread::get_id();
  auto ready = [](std::future<BatchResult>& f, int ms) {
    return f.wait_for(std::chrono::milliseconds(ms)) == std::future_status::ready;
  };
  // One of two connections has a request: not due yet; dispatch() says when (the 30 ms gap).
  std::promise<BatchResult> a, b2, c, d, e;
  auto fa = a.get_future(), fb = b2.get_future(), fc = c.get_future(), fd = d.get_future(),
       fe = e.get_future();
  ASSERT_TRUE(b.submit_deferred(job(1, 1, &a)).ok());
  Clock::time_point due = b.dispatch();
  ASSERT_NE(due, Clock::time_point::max());
  EXPECT_LE(due - Clock::now(), std::chrono::milliseconds(30));
  EXPECT_FALSE(ready(fa, 0));
  // Both connections have one now: the batch runs here, at once.
  ASSERT_TRUE(b.submit_deferred(job(2, 1, &b2)).ok());
  EXPECT_EQ(b.dispatch(), Clock::time_point::max());
  ASSERT_TRUE(ready(fa, 0));
  EXPECT_EQ(fa.get().batch_size, 2);
  // A lone request runs here once its gap has passed.
  ASSERT_TRUE(b.submit_deferred(job(3, 1, &c)).ok());
  due = b.dispatch();
  ASSERT_NE(due, Clock::time_point::max());
  EXPECT_FALSE(ready(fc, 0));
  std::this_thread::sleep_until(due);
  EXPECT_EQ(b.dispatch(), Clock::time_point::max());
  ASSERT_TRUE(ready(fc, 0));
  EXPECT_EQ(fc.get().batch_size, 1);
  // A full batch goes to the worker; a request queued behind its forward is the worker's too
  // (taken after the forward, not stranded).
  ASSERT_TRUE(b.submit_deferred(job(4, 64, &d)).ok());
  EXPECT_EQ(b.dispatch(), Clock::time_point::max());
  std::this_thread::sleep_for(std::chrono::milliseconds(10));
  ASSERT_TRUE(b.submit_deferred(job(5, 1, &e)).ok());
  EXPECT_EQ(b.dispatch(), Clock::time_point::max());
  ASSERT_TRUE(ready(fd, 3000));
  ASSERT_TRUE(ready(fe, 3000));
  EXPECT_EQ(fd.get().batch_size, 64);
  EXPECT_EQ(fe.get().batch_size, 1);
  std::lock_guard<std::mutex> lock(mu);
  ASSERT_EQ(ran_on.size(), 4u);
  EXPECT_EQ(ran_on[0], me);
  EXPECT_EQ(ran_on[1], me);
  EXPECT_NE(ran_on[2], me);
  EXPECT_NE(ran_on[3], me);
}

}  // namespace
}  // namespace kiln::serve
