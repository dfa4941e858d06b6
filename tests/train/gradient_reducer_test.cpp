// Gradients all-reduced from backward hooks, in buckets, between two real Gloo ranks (two
// threads of this process on a loopback TCP store): each parameter's gradient is the mean of
// what each rank computed on its own rows, whatever the bucket size, including a parameter that
// only one rank used and a frozen one that no bucket holds.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <mutex>
#include <thread>

#include "kiln/train/distributed.h"
#include "support/test_support.h"

namespace kiln::train {
namespace {

/// A small network: two linear layers and a head that only rank 1's loss uses, listed first
/// (buckets start in reverse parameter order: its bucket, which rank 0 never fills during
/// backward, is the last to start and holds no other back).
struct Net {
  torch::nn::Linear a{8, 16}, b{16, 4}, unused_by_rank0{8, 4};
  std::vector<torch::Tensor> parameters() const {
    std::vector<torch::Tensor> all;
    for (const auto* m : {&unused_by_rank0, &a, &b})
      for (const torch::Tensor& p : (*m)->parameters()) all.push_back(p);
    return all;
  }
  torch::Tensor loss(const torch::Tensor& x, bool head) {
    torch::Tensor l = b(torch::relu(a(x))).pow(2).mean();
    if (head) l = l + unused_by_rank0(x).abs().mean();
    return l;
  }
};

/// torch's default generator is one for the process: the two rank threads seed and draw under
/// this lock, so each gets the numbers its seed gives.
std::mutex generator_mu;

/// Rank `rank` of a two-rank job on 127.0.0.1:port.
Expected<std::unique_ptr<DistributedContext>> join_two_ranks(int rank, int port) {
  DistributedSettings s;
  s.rank = rank;
  s.world_size = 2;
  s.master_port = port;
  s.timeout_seconds = 60;
  return DistributedContext::Join(s);
}

/// Rank `rank`'s gradients (per parameter) for two steps, reduced by a GradientReducer.
std::vector<std::vector<torch::Tensor>> reduced(int rank, int port, int64_t bucket_bytes,
                                                Status* failed, int64_t* early) {
  std::unique_lock<std::mutex> drawing(generator_mu);
  torch::manual_seed(7);  // the same initial weights on both ranks
  Net net;
  drawing.unlock();
  net.a->bias.set_requires_grad(false);  // frozen: in no bucket, no gradient
  auto ctx = join_two_ranks(rank, port);
  if (!ctx.ok()) {
    *failed = ctx.status();
    return {};
  }
  GradientReducer reducer(**ctx, net.parameters(), bucket_bytes);
  std::vector<std::vector<torch::Tensor>> steps;
  for (int step = 0; step < 2; ++step) {
    for (torch::Tensor& p : net.parameters())
      if (p.grad().defined()) p.mutable_grad().zero_();
    drawing.lock();
    torch::manual_seed(100 + 10 * step + rank);  // each rank its own rows
    const torch::Tensor rows = torch::randn({5, 8});
    drawing.unlock();
    net.loss(rows, rank == 1).backward();
    if (Status st = reducer.finish(); !st.ok()) {
      *failed = st;
      return {};
    }
    std::vector<torch::Tensor> grads;
    for (const torch::Tensor& p : net.parameters())
      grads.push_back(p.grad().defined() ? p.grad().clone() : torch::Tensor());
    steps.push_back(grads);
  }
  *early = reducer.started_in_backward();
  return steps;
}

/// The same two steps on one process: each rank's gradients computed alone, then averaged.
std::vector<std::vector<torch::Tensor>> expected_means() {
  std::vector<std::vector<torch::Tensor>> steps(2);
  std::vector<std::vector<torch::Tensor>> per_rank[2];
  for (int rank = 0; rank < 2; ++rank) {
    torch::manual_seed(7);
    Net net;
    net.a->bias.set_requires_grad(false);
    for (int step = 0; step < 2; ++step) {
      for (torch::Tensor& p : net.parameters())
        if (p.grad().defined()) p.mutable_grad().zero_();
      torch::manual_seed(100 + 10 * step + rank);
      net.loss(torch::randn({5, 8}), rank == 1).backward();
      std::vector<torch::Tensor> grads;
      for (const torch::Tensor& p : net.parameters())
        grads.push_back(p.grad().defined() ? p.grad().clone() : torch::zeros_like(p));
      per_rank[rank].push_back(grads);
    }
  }
  for (int step = 0; step < 2; ++step)
    for (size_t k = 0; k < per_rank[0][step].size(); ++k)
      steps[step].push_back((per_rank[0][step][k] + per_rank[1][step][k]) / 2);
  return steps;
}

TEST(GradientReducerTest, BucketsGiveTheMeanOfEachRanksGradients) {
  // The weights do not change between the two steps (no optimizer): step 2 checks that the
  // reducer starts clean after finish().
  const auto want = expected_means();
  for (int64_t bucket_bytes : {int64_t{1}, int64_t{300}, int64_t{1} << 20}) {
    const int port = testing::free_loopback_port();
    ASSERT_GT(port, 0);
    Status failed[2];
    int64_t early[2] = {0, 0};
    std::vector<std::vector<torch::Tensor>> got[2];
    std::thread other([&] { got[1] = reduced(1, port, bucket_bytes, &failed[1], &early[1]); });
    got[0] = reduced(0, port, bucket_bytes, &failed[0], &early[0]);
    other.join();
    // One parameter per bucket: the buckets backward fills start before finish().
    if (bucket_bytes == 1) {
      EXPECT_GT(early[0], 0);
      EXPECT_GT(early[1], 0);
    }
    for (int rank = 0; rank < 2; ++rank) {
      ASSERT_TRUE(failed[rank].ok()) << failed[rank];
      ASSERT_EQ(got[rank].size(), 2u);
      for (int step = 0; step < 2; ++step) {
        const auto& grads = got[rank][static_cast<size_t>(step)];
        for (size_t k = 0; k < grads.size(); ++k) {
          if (k == 3) {  // a.bias: frozen, no gradient on either rank
            EXPECT_FALSE(grads[k].defined());
            continue;
          }
          ASSERT_TRUE(grads[k].defined()) << "bucket " << bucket_bytes << " param " << k;
          EXPECT_TRUE(torch::allclose(grads[k], want[static_cast<size_t>(step)][k], 1e-6, 1e-7))
              << "bucket " << bucket_bytes << ", rank " << rank << ", step " << step << ", param "
              << k;
        }
      }
    }
  }
}

/// Rank `rank`'s gradients after one step of three accumulated batches: the first two only add
/// into .grad (set_synchronising(false)), the third all-reduces. Rank 0 uses the head only in
/// its first batch, so the last backward gives it no gradient there: its sum is in .grad.
std::vector<torch::Tensor> reduced_accumulating(int rank, int port, Status* failed) {
  std::unique_lock<std::mutex> drawing(generator_mu);
  torch::manual_seed(7);
  Net net;
  drawing.unlock();
  auto ctx = join_two_ranks(rank, port);
  if (!ctx.ok()) {
    *failed = ctx.status();
    return {};
  }
  GradientReducer reducer(**ctx, net.parameters(), /*bucket_bytes=*/300);
  for (int batch = 0; batch < 3; ++batch) {
    drawing.lock();
    torch::manual_seed(200 + 10 * batch + rank);
    const torch::Tensor rows = torch::randn({4, 8});
    drawing.unlock();
    reducer.set_synchronising(batch == 2);
    net.loss(rows, rank == 1 || batch == 0).backward();
  }
  if (Status st = reducer.finish(); !st.ok()) {
    *failed = st;
    return {};
  }
  std::vector<torch::Tensor> grads;
  for (const torch::Tensor& p : net.parameters()) grads.push_back(p.grad().clone());
  return grads;
}

TEST(GradientReducerTest, AccumulatedBatchesAllReduceTheirSumOnce) {
  // Expected: each rank's three gradients summed alone, then averaged over the ranks.
  std::vector<torch::Tensor> sums[2];
  for (int rank = 0; rank < 2; ++rank) {
    torch::manual_seed(7);
    Net net;
    for (int batch = 0; batch < 3; ++batch) {
      torch::manual_seed(200 + 10 * batch + rank);
      net.loss(torch::randn({4, 8}), rank == 1 || batch == 0).backward();
    }
    for (const torch::Tensor& p : net.parameters()) sums[rank].push_back(p.grad().clone());
  }
  const int port = testing::free_loopback_port();
  ASSERT_GT(port, 0);
  Status failed[2];
  std::vector<torch::Tensor> got[2];
  std::thread other([&] { got[1] = reduced_accumulating(1, port, &failed[1]); });
  got[0] = reduced_accumulating(0, port, &failed[0]);
  other.join();
  for (int rank = 0; rank < 2; ++rank) {
    ASSERT_TRUE(failed[rank].ok()) << failed[rank];
    ASSERT_EQ(got[rank].size(), sums[0].size());
    for (size_t k = 0; k < sums[0].size(); ++k)
      EXPECT_TRUE(torch::allclose(got[rank][k], (sums[0][k] + sums[1][k]) / 2, 1e-6, 1e-7))
          << "rank " << rank << ", param " << k;
  }
}

}  // namespace
}  // namespace kiln::train
