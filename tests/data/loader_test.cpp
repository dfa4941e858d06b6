#include "kiln/data/loader.h"

#include <ATen/Parallel.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <atomic>
#include <chrono>
#include <set>
#include <stdexcept>

#include "kiln/data/images.h"
#include "support/test_support.h"

namespace kiln::data {
namespace {

// The first 1000 Fashion-MNIST training images (uint8 N×1×28×28) and labels.
const ImageSet& fmnist() {
  static const ImageSet set = [] {
    const auto dir = kiln::testing::fashion_mnist_dir();
    auto s = read_idx_images(dir / "train-images-idx3-ubyte.gz", dir / "train-labels-idx1-ubyte.gz",
                             1000);
    if (!s.ok()) throw std::runtime_error(s.status().to_string());
    return *s;
  }();
  return set;
}

const AugmentOptions kAugment =
    AugmentOptions().crop_padding(2).hflip(0.5f).noise_std(0.02f).erase(0.5f);

std::unique_ptr<Loader> make(const LoaderOptions& options, BatchTransform transform = nullptr) {
  auto loader = Loader::Create(fmnist(), options, std::move(transform));
  if (!loader.ok()) throw std::runtime_error(loader.status().to_string());
  return std::move(loader).value();
}

std::vector<Batch> run_epoch(Loader& loader, int64_t epoch, int64_t first_batch = 0) {
  std::vector<Batch> batches;
  Status s = loader.start_epoch(epoch, first_batch);
  if (!s.ok()) throw std::runtime_error(s.to_string());
  while (true) {
    auto b = loader.next();
    if (!b.ok()) throw std::runtime_error(b.status().to_string());
    if (!b->has_value()) break;
    batches.push_back(std::move(**b));
  }
  return batches;
}

void expect_same(const std::vector<Batch>& a, const std::vector<Batch>& b) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t k = 0; k < a.size(); ++k) {
    EXPECT_EQ(a[k].index, b[k].index);
    EXPECT_TRUE(torch::equal(a[k].indices, b[k].indices)) << "batch " << k;
    EXPECT_TRUE(torch::equal(a[k].inputs, b[k].inputs)) << "batch " << k;
    EXPECT_TRUE(torch::equal(a[k].targets, b[k].targets)) << "batch " << k;
  }
}

TEST(LoaderEpoch, EverySampleOnceWithUnevenLastBatch) {
  auto loader = make(LoaderOptions(64).shuffle(true).workers(2).seed(3));
  EXPECT_EQ(loader->size(), 1000);
  EXPECT_EQ(loader->batches_per_epoch(), 16);
  auto batches = run_epoch(*loader, 0);
  ASSERT_EQ(batches.size(), 16u);
  std::vector<int64_t> seen;
  for (size_t k = 0; k < batches.size(); ++k) {
    const Batch& b = batches[k];
    EXPECT_EQ(b.index, static_cast<int64_t>(k));
    EXPECT_EQ(b.size(), k + 1 < batches.size() ? 64 : 1000 - 15 * 64);
    EXPECT_EQ(b.inputs.scalar_type(), torch::kFloat32);
    EXPECT_EQ(b.inputs.sizes(), (std::vector<int64_t>{b.size(), 1, 28, 28}));
    EXPECT_EQ(b.targets.scalar_type(), torch::kInt64);
    // No augmentation: inputs are exactly the stored pixels / 255, targets the labels.
    torch::Tensor rows = b.indices;
    EXPECT_TRUE(
        torch::equal(b.inputs, fmnist().images.index_select(0, rows).to(torch::kFloat32) / 255));
    EXPECT_TRUE(torch::equal(b.targets, fmnist().labels.index_select(0, rows)));
    for (int64_t i = 0; i < b.size(); ++i) seen.push_back(rows[i].item<int64_t>());
  }
  std::sort(seen.begin(), seen.end());
  std::vector<int64_t> all(1000);
  std::iota(all.begin(), all.end(), 0);
  EXPECT_EQ(seen, all);
}

TEST(LoaderEpoch, DropLastGivesFullBatchesOfDistinctSamples) {
  auto loader = make(LoaderOptions(64).shuffle(true).drop_last(true).workers(1));
  EXPECT_EQ(loader->batches_per_epoch(), 15);
  auto batches = run_epoch(*loader, 2);
  ASSERT_EQ(batches.size(), 15u);
  std::set<int64_t> seen;
  for (const Batch& b : batches) {
    EXPECT_EQ(b.size(), 64);
    for (int64_t i = 0; i < b.size(); ++i) seen.insert(b.indices[i].item<int64_t>());
  }
  EXPECT_EQ(seen.size(), 960u);
  EXPECT_GE(*seen.begin(), 0);
  EXPECT_LT(*seen.rbegin(), 1000);
}

// Data-parallel shards: the ranks' batch k are disjoint slices that together are the one-process
// batch k (same permutation, same boundaries), for an uneven last batch and an odd rank count.
TEST(LoaderEpoch, ShardsPartitionEveryGlobalBatch) {
  auto whole = make(LoaderOptions(64).shuffle(true).seed(5));
  const auto global = run_epoch(*whole, 1);
  for (int64_t ranks : {2, 3}) {
    std::vector<std::vector<Batch>> shards;
    for (int64_t r = 0; r < ranks; ++r) {
      auto loader = make(LoaderOptions(64).shuffle(true).seed(5).shard(r, ranks).workers(1));
      EXPECT_EQ(loader->batches_per_epoch(), whole->batches_per_epoch());
      shards.push_back(run_epoch(*loader, 1));
    }
    for (size_t k = 0; k < global.size(); ++k) {
      std::vector<torch::Tensor> parts;
      for (const auto& shard : shards) parts.push_back(shard[k].indices);
      EXPECT_TRUE(torch::equal(torch::cat(parts), global[k].indices))
          << ranks << " ranks, batch " << k;
      EXPECT_LE(parts.front().size(0) - parts.back().size(0), 1);
    }
  }
  EXPECT_FALSE(LoaderOptions(64).shard(2, 2).validate().ok());
  EXPECT_FALSE(LoaderOptions(2).shard(0, 3).validate().ok());
}

TEST(LoaderEpoch, NoShuffleKeepsDatasetOrder) {
  auto loader = make(LoaderOptions(300).workers(2));
  auto batches = run_epoch(*loader, 5);
  ASSERT_EQ(batches.size(), 4u);
  EXPECT_EQ(batches[3].size(), 100);
  EXPECT_TRUE(torch::equal(batches[1].indices, torch::arange(300, 600, torch::kInt64)));
}

TEST(LoaderDeterminism, SameBatchesForAnyWorkerCountAndRun) {
  const auto base = LoaderOptions(100).shuffle(true).seed(11).augment(kAugment);
  auto reference = run_epoch(*make(LoaderOptions(base).workers(0)), 3);
  expect_same(reference, run_epoch(*make(LoaderOptions(base).workers(1)), 3));
  expect_same(reference, run_epoch(*make(LoaderOptions(base).workers(2).prefetch(1)), 3));
  expect_same(reference, run_epoch(*make(LoaderOptions(base).workers(2).prefetch(7)), 3));
  expect_same(reference, run_epoch(*make(LoaderOptions(base).workers(2)), 3));  // another run
  // batch() builds the same on the calling thread.
  auto loader = make(LoaderOptions(base).workers(2));
  for (int64_t k : {0, 4, 9}) {
    auto b = loader->batch(3, k);
    ASSERT_TRUE(b.ok()) << b.status();
    EXPECT_TRUE(torch::equal(b->inputs, reference[k].inputs));
  }
  // Augmentation really happened, and matches Augmenter on the same batch Rng.
  EXPECT_FALSE(torch::equal(
      reference[0].inputs,
      fmnist().images.index_select(0, reference[0].indices).to(torch::kFloat32) / 255));
}

TEST(LoaderDeterminism, EpochsDiffer) {
  auto loader = make(LoaderOptions(100).shuffle(true).workers(2).augment(kAugment));
  auto e0 = run_epoch(*loader, 0);
  auto e1 = run_epoch(*loader, 1);
  EXPECT_NE(loader->permutation(0), loader->permutation(1));
  EXPECT_FALSE(torch::equal(e0[0].indices, e1[0].indices));
  // Same rows in both epochs still get different augmentation.
  auto plain = make(LoaderOptions(100).workers(2).augment(kAugment));
  auto p0 = run_epoch(*plain, 0);
  auto p1 = run_epoch(*plain, 1);
  EXPECT_TRUE(torch::equal(p0[0].indices, p1[0].indices));
  EXPECT_FALSE(torch::equal(p0[0].inputs, p1[0].inputs));
  // And a different seed gives a different order.
  EXPECT_NE(loader->permutation(0), make(LoaderOptions(100).shuffle(true).seed(1))->permutation(0));
}

TEST(LoaderResume, StartingAtBatchKEqualsTheTailOfTheEpoch) {
  const auto opts = LoaderOptions(64).shuffle(true).seed(5).augment(kAugment).workers(2);
  auto full = run_epoch(*make(opts), 4);
  auto tail = run_epoch(*make(opts), 4, 6);
  ASSERT_EQ(tail.size(), full.size() - 6);
  expect_same(std::vector<Batch>(full.begin() + 6, full.end()), tail);
  // Resuming at the end gives an empty epoch; past it is an error.
  auto loader = make(opts);
  EXPECT_TRUE(run_epoch(*loader, 4, 16).empty());
  EXPECT_EQ(loader->start_epoch(4, 17).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(loader->start_epoch(-1).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(loader->batch(4, 16).status().code(), StatusCode::kInvalidArgument);
}

TEST(LoaderResume, AbandoningAnEpochMidwayRestartsCleanly) {
  const auto opts = LoaderOptions(50).shuffle(true).augment(kAugment).workers(2).prefetch(3);
  auto loader = make(opts);
  auto expected = run_epoch(*make(opts), 1);
  ASSERT_TRUE(loader->start_epoch(0).ok());
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(loader->next().ok());
  expect_same(expected, run_epoch(*loader, 1));  // abandons epoch 0 after 3 batches
}

TEST(LoaderShutdown, DestroyingMidEpochDoesNotHang) {
  const auto start = std::chrono::steady_clock::now();
  for (int round = 0; round < 20; ++round) {
    auto loader = make(LoaderOptions(32).shuffle(true).augment(kAugment).workers(2).prefetch(2));
    ASSERT_TRUE(loader->start_epoch(round).ok());
    for (int i = 0; i < round % 3; ++i) ASSERT_TRUE(loader->next().ok());
  }  // each destroyed with workers busy or waiting on a full queue
  {
    auto idle = make(LoaderOptions(32).workers(3));  // never started
  }
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(20));
}

TEST(LoaderTables, FloatTablesPassThroughUnchanged) {
  torch::manual_seed(0);
  torch::Tensor table = torch::randn({103, 7});
  torch::Tensor y = torch::randn({103});
  auto loader = Loader::Create(table, y, LoaderOptions(10).workers(2));
  ASSERT_TRUE(loader.ok()) << loader.status();
  auto batches = run_epoch(**loader, 0);
  ASSERT_EQ(batches.size(), 11u);
  std::vector<torch::Tensor> xs, ys;
  for (auto& b : batches) {
    xs.push_back(b.inputs);
    ys.push_back(b.targets);
  }
  EXPECT_TRUE(torch::equal(torch::cat(xs), table));
  EXPECT_TRUE(torch::equal(torch::cat(ys), y));

  auto shuffled = Loader::Create(table, y, LoaderOptions(16).shuffle(true).workers(1));
  ASSERT_TRUE(shuffled.ok());
  for (const Batch& b : run_epoch(**shuffled, 1)) {
    EXPECT_TRUE(torch::equal(b.inputs, table.index_select(0, b.indices)));
    EXPECT_TRUE(torch::equal(b.targets, y.index_select(0, b.indices)));
  }
}

TEST(LoaderScaling, NormalizeAndChannelsLast) {
  const float mean = 0.2860f, stdev = 0.3530f;
  auto plain = make(LoaderOptions(128).shuffle(true).augment(kAugment));
  auto normed = make(LoaderOptions(128).shuffle(true).augment(kAugment).normalize({mean}, {stdev}));
  auto b0 = plain->batch(0, 2);
  auto b1 = normed->batch(0, 2);
  ASSERT_TRUE(b0.ok() && b1.ok());
  EXPECT_TRUE(torch::equal(b1->inputs, (b0->inputs - mean) / stdev));

  // Three channels, per-channel statistics, channels_last output.
  torch::Tensor rgb = torch::randint(0, 256, {20, 3, 5, 6}, torch::kUInt8);
  torch::Tensor labels = torch::arange(20, torch::kInt64);
  const std::vector<float> m = {0.1f, 0.2f, 0.3f}, s = {0.5f, 0.25f, 2.f};
  auto cl = Loader::Create(rgb, labels, LoaderOptions(8).normalize(m, s).channels_last(true));
  ASSERT_TRUE(cl.ok()) << cl.status();
  auto b = (*cl)->batch(0, 1);
  ASSERT_TRUE(b.ok());
  EXPECT_TRUE(b->inputs.is_contiguous(torch::MemoryFormat::ChannelsLast));
  torch::Tensor expect =
      (rgb.slice(0, 8, 16).to(torch::kFloat32) / 255 - torch::tensor(m).view({1, 3, 1, 1})) /
      torch::tensor(s).view({1, 3, 1, 1});
  EXPECT_TRUE(torch::allclose(b->inputs, expect, 0, 1e-6));

  auto raw = Loader::Create(rgb, labels, LoaderOptions(20).scale_uint8(false));
  ASSERT_TRUE(raw.ok());
  EXPECT_TRUE(torch::equal((*raw)->batch(0, 0)->inputs, rgb.to(torch::kFloat32)));
}

TEST(LoaderErrors, BadOptionsAndDataAreInvalidArgument) {
  const ImageSet& d = fmnist();
  auto code = [](const Expected<std::unique_ptr<Loader>>& r) { return r.status().code(); };
  EXPECT_EQ(code(Loader::Create(d, LoaderOptions(0))), StatusCode::kInvalidArgument);
  EXPECT_NE(Loader::Create(d, LoaderOptions(0)).status().message().find("batch_size"),
            std::string::npos);
  EXPECT_EQ(code(Loader::Create(d, LoaderOptions(8).workers(-1))), StatusCode::kInvalidArgument);
  EXPECT_EQ(code(Loader::Create(d.images, d.labels.slice(0, 0, 999), LoaderOptions(8))),
            StatusCode::kInvalidArgument);
  EXPECT_NE(Loader::Create(d.images, d.labels.slice(0, 0, 999), LoaderOptions(8))
                .status()
                .message()
                .find("999"),
            std::string::npos);
  EXPECT_EQ(code(Loader::Create(d, LoaderOptions(8).augment(AugmentOptions().hflip(2.f)))),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(code(Loader::Create(d, LoaderOptions(8).normalize({0.1f, 0.2f}, {1.f, 1.f}))),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(code(Loader::Create(d, LoaderOptions(8).normalize({0.1f}, {0.f}))),
            StatusCode::kInvalidArgument);
  torch::Tensor table = torch::zeros({10, 4});
  torch::Tensor y = torch::zeros({10}, torch::kInt64);
  EXPECT_EQ(code(Loader::Create(table, y, LoaderOptions(2).augment(kAugment))),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(code(Loader::Create(table, y, LoaderOptions(2).channels_last(true))),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(code(Loader::Create(table.to(torch::kFloat64), y, LoaderOptions(2))),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(code(Loader::Create(table, y.to(torch::kInt32), LoaderOptions(2))),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(code(Loader::Create(torch::zeros({10, 2, 2}), y, LoaderOptions(2))),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(code(Loader::Create(torch::zeros({0, 4}), torch::zeros({0}), LoaderOptions(2))),
            StatusCode::kInvalidArgument);

  auto loader = make(LoaderOptions(8).workers(1));
  EXPECT_EQ(loader->next().status().code(), StatusCode::kFailedPrecondition);
}

TEST(LoaderErrors, WorkerFailuresSurfaceToTheConsumer) {
  for (int64_t workers : {0, 2}) {
    BatchTransform thrower = [](Batch& b, Rng&) -> Status {
      if (b.index == 3) throw std::runtime_error("boom in transform");
      if (b.index == 5) return Status::DataLoss("bad batch");
      return Status::Ok();
    };
    auto loader = make(LoaderOptions(100).workers(workers), thrower);
    ASSERT_TRUE(loader->start_epoch(0).ok());
    for (int i = 0; i < 3; ++i) ASSERT_TRUE(loader->next().ok()) << "workers " << workers;
    auto failed = loader->next();
    ASSERT_FALSE(failed.ok());
    EXPECT_EQ(failed.status().code(), StatusCode::kInternal);
    EXPECT_NE(failed.status().message().find("boom in transform"), std::string::npos);
    EXPECT_NE(failed.status().message().find("batch 3 of epoch 0"), std::string::npos);
    EXPECT_FALSE(loader->next().ok());  // sticky until the next start_epoch

    ASSERT_TRUE(loader->start_epoch(1, 4).ok());
    ASSERT_TRUE(loader->next().ok());
    auto lost = loader->next();
    EXPECT_EQ(lost.status().code(), StatusCode::kDataLoss);
  }
}

TEST(LoaderThreads, WorkersRunAtenSingleThreadedWithoutTouchingTheCaller) {
  // Ask for several intra-op threads (the default may already be 1 on a small machine), then
  // check that the workers do not use them and that the caller keeps them.
  const int original = at::get_num_threads();
  at::set_num_threads(3);
  std::atomic<int> max_seen{0};
  BatchTransform probe = [&](Batch& b, Rng&) -> Status {
    // An ATen op on a worker: must not fan out into an OpenMP team.
    b.inputs.mul_(1.f);
    int n = at::get_num_threads();
    int prev = max_seen.load();
    while (n > prev && !max_seen.compare_exchange_weak(prev, n)) {
    }
    return Status::Ok();
  };
  auto loader = make(LoaderOptions(100).workers(2), probe);
  run_epoch(*loader, 0);
  loader.reset();
  EXPECT_EQ(max_seen.load(), 1);
  EXPECT_EQ(at::get_num_threads(), 3);
  at::set_num_threads(original);
}

TEST(LoaderOptions, PrintsAndSerialises) {
  const auto opts = LoaderOptions(128).shuffle(true).workers(2).seed(9).augment(kAugment);
  const Json j = opts.to_json();
  EXPECT_EQ(j["batch_size"], 128);
  EXPECT_EQ(j["workers"], 2);
  EXPECT_EQ(j["augment"]["crop_padding"], 2);
  EXPECT_NE(opts.to_string().find("\"seed\":9"), std::string::npos);
}

}  // namespace
}  // namespace kiln::data

namespace kiln::data {
namespace {

// Batches built with tensor ops on a device (the GPU path, run here on the CPU) against the
// worker loops: the same rows, the same augmentation draws and the same arithmetic.
void expect_close(const std::vector<Batch>& loops, const std::vector<Batch>& tensor_ops) {
  ASSERT_EQ(loops.size(), tensor_ops.size());
  for (size_t k = 0; k < loops.size(); ++k) {
    EXPECT_TRUE(torch::equal(loops[k].indices, tensor_ops[k].indices)) << "batch " << k;
    EXPECT_TRUE(torch::equal(loops[k].targets, tensor_ops[k].targets)) << "batch " << k;
    EXPECT_EQ(loops[k].inputs.sizes(), tensor_ops[k].inputs.sizes());
    // (With one channel NCHW and NHWC strides are both channels_last.)
    EXPECT_EQ(loops[k].inputs.is_contiguous(torch::MemoryFormat::ChannelsLast),
              tensor_ops[k].inputs.is_contiguous(torch::MemoryFormat::ChannelsLast))
        << "batch " << k;
    const double worst = (loops[k].inputs - tensor_ops[k].inputs).abs().max().item<double>();
    EXPECT_LT(worst, 1e-5) << "batch " << k;
  }
}

TEST(LoaderDeviceTest, TensorOpsOnADeviceMatchTheWorkerLoops) {
  // Every augmentation at once, strong enough that each changes most samples.
  const AugmentOptions every = AugmentOptions()
                                   .crop_padding(3)
                                   .translate(2)
                                   .hflip(0.5f)
                                   .noise_std(0.05f)
                                   .erase(0.7f)
                                   .erase_value(0.5f);
  for (bool channels_last : {false, true}) {
    LoaderOptions options = LoaderOptions(96)
                                .shuffle(true)
                                .seed(11)
                                .workers(2)
                                .augment(every)
                                .normalize({0.2860f}, {0.3530f})
                                .channels_last(channels_last);
    auto loops = make(options);
    auto tensor_ops = make(LoaderOptions(options).device(torch::kCPU));
    EXPECT_EQ(tensor_ops->batches_per_epoch(), loops->batches_per_epoch());
    for (int64_t epoch : {0, 3}) {
      SCOPED_TRACE("channels_last " + std::to_string(channels_last) + " epoch " +
                   std::to_string(epoch));
      expect_close(run_epoch(*loops, epoch), run_epoch(*tensor_ops, epoch));
    }
  }
  // The augmentation moved pixels (the comparison above is not of two identity maps).
  auto plain = make(LoaderOptions(96).shuffle(true).seed(11).normalize({0.2860f}, {0.3530f}));
  auto augmented = make(LoaderOptions(96)
                            .shuffle(true)
                            .seed(11)
                            .augment(every)
                            .normalize({0.2860f}, {0.3530f})
                            .device(torch::kCPU));
  const Batch a = run_epoch(*plain, 0).front(), b = run_epoch(*augmented, 0).front();
  EXPECT_TRUE(torch::equal(a.indices, b.indices));
  EXPECT_GT((a.inputs - b.inputs).abs().gt(0.1).sum().item<int64_t>(), a.inputs.numel() / 4);
}

TEST(LoaderDeviceTest, ShardsResumesAndTablesOnADevice) {
  // A rank's share of each batch, resumed at batch 2.
  LoaderOptions sharded =
      LoaderOptions(64).shuffle(true).seed(3).augment(kAugment).drop_last(true).shard(1, 3);
  auto loops = make(sharded);
  auto tensor_ops = make(LoaderOptions(sharded).device(torch::kCPU));
  expect_close(run_epoch(*loops, 1, 2), run_epoch(*tensor_ops, 1, 2));
  // A float table with per-column normalisation and float targets.
  torch::Tensor table = torch::rand({50, 4});
  torch::Tensor targets = torch::rand({50});
  LoaderOptions rows = LoaderOptions(16).shuffle(true).seed(5).normalize({0.1f, 0.2f, 0.3f, 0.4f},
                                                                         {1.f, 2.f, 3.f, 4.f});
  auto table_loops = Loader::Create(table, targets, rows);
  auto table_ops = Loader::Create(table, targets, LoaderOptions(rows).device(torch::kCPU));
  ASSERT_TRUE(table_loops.ok() && table_ops.ok());
  expect_close(run_epoch(**table_loops, 0), run_epoch(**table_ops, 0));
  EXPECT_EQ(LoaderOptions(rows).device(torch::kCPU).to_json()["device"], "cpu");
}

}  // namespace
}  // namespace kiln::data
