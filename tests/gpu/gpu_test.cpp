// On a CUDA device (skipped, saying why, elsewhere): the loader's GPU batches equal its CPU
// batches; a Fashion-MNIST subset trains on the GPU in bf16 and resumes on the CPU; exported
// modules (fp32, bf16, flip TTA) give the CPU's outputs on the GPU through the serving runner;
// NVML reads the card.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "kiln/data/images.h"
#include "kiln/data/loader.h"
#include "kiln/model/bundle.h"
#include "kiln/model/device.h"
#include "kiln/model/export.h"
#include "kiln/model/network.h"
#include "kiln/model/spec.h"
#include "kiln/monitor/gpu_stats.h"
#include "kiln/serve/runner.h"
#include "kiln/train/config.h"
#include "kiln/train/trainer.h"
#include "support/test_support.h"

namespace kiln {
namespace {

using testing::fashion_mnist_dir;
using testing::TempDir;
using testing::write_text;
namespace fs = std::filesystem;

class GpuTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (model::cuda_device_count() == 0)
      GTEST_SKIP() << "no CUDA device ("
                   << (at::hasCUDA() ? "LibTorch sees no GPU"
                                     : "LibTorch "
                                       "without CUDA")
                   << ")";
  }
  const torch::Device gpu{torch::kCUDA, 0};
};

const data::ImageSet& fmnist_subset() {
  static const data::ImageSet set = [] {
    auto s = data::read_idx_images(fashion_mnist_dir() / "train-images-idx3-ubyte.gz",
                                   fashion_mnist_dir() / "train-labels-idx1-ubyte.gz", 2000);
    if (!s.ok()) throw std::runtime_error(s.status().to_string());
    return *s;
  }();
  return set;
}

TEST_F(GpuTest, LoaderBuildsTheCpuBatchesOnTheGpu) {
  const auto options = data::LoaderOptions(256)
                           .shuffle(true)
                           .seed(5)
                           .workers(2)
                           .augment(data::AugmentOptions().crop_padding(2).hflip(0.5f).erase(0.3f))
                           .normalize({0.2860f}, {0.3530f})
                           .channels_last(true);
  auto on_cpu = data::Loader::Create(fmnist_subset(), options);
  auto on_gpu = data::Loader::Create(fmnist_subset(), data::LoaderOptions(options).device(gpu));
  ASSERT_TRUE(on_cpu.ok() && on_gpu.ok());
  for (int64_t epoch : {0, 1}) {
    ASSERT_TRUE((*on_cpu)->start_epoch(epoch).ok());
    ASSERT_TRUE((*on_gpu)->start_epoch(epoch).ok());
    for (int64_t k = 0; k < (*on_cpu)->batches_per_epoch(); ++k) {
      auto a = (*on_cpu)->next();
      auto b = (*on_gpu)->next();
      ASSERT_TRUE(a.ok() && b.ok() && a->has_value() && b->has_value());
      const data::Batch& want = **a;
      const data::Batch& got = **b;
      EXPECT_TRUE(got.inputs.is_cuda());
      EXPECT_TRUE(got.targets.is_cuda());
      EXPECT_TRUE(torch::equal(want.targets, got.targets.cpu()));
      EXPECT_LT((want.inputs - got.inputs.cpu()).abs().max().item<double>(), 1e-5)
          << "epoch " << epoch << " batch " << k;
    }
  }
}

// A Fashion-MNIST dataset spec over the carried (or Debian's) files.
fs::path write_fmnist_spec(const fs::path& dir) {
  write_text(
      dir / "dataset.yaml",
      "name: fashion-mnist\nkind: images\nformat: idx\nroot: " + fashion_mnist_dir().string() +
          "\nsplits:\n  train: {images: train-images-idx3-ubyte.gz, labels: "
          "train-labels-idx1-ubyte.gz}\n  test: {images: t10k-images-idx3-ubyte.gz, "
          "labels: t10k-labels-idx1-ubyte.gz}\nclasses: [T-shirt/top, Trouser, Pullover, "
          "Dress, Coat, Sandal, Shirt, Sneaker, Bag, Ankle boot]\nsplit: {val: 0.1, seed: "
          "42}\n");
  return dir / "dataset.yaml";
}

TEST_F(GpuTest, TrainsOnTheGpuInBf16AndResumesOnTheCpu) {
  TempDir dir;
  const fs::path spec = write_fmnist_spec(dir.path());
  write_text(dir / "train.yaml", "data: " + spec.string() + R"(
model: {zoo: cnn-small, width: 16, hidden: 64}
optimizer: {name: adamw, lr: 0.003}
batch_size: 128
epochs: 2
seed: 1
augment: {crop_padding: 2, hflip: 0.5}
eval_tta: flip
device: cuda
)");
  auto cfg = train::load_train_config(dir / "train.yaml", {"data.limit=4000"});
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  auto whole = train::train(
      *cfg, train::TrainOptions(dir / "gpu").snapshot_dir(dir / "snapshots").progress(stderr));
  ASSERT_TRUE(whole.ok()) << whole.status();
  EXPECT_EQ(whole->device, "cuda:0");
  EXPECT_EQ(whole->precision, "bf16");
  EXPECT_GT(whole->test_metrics["accuracy"].get<double>(), 0.6) << whole->test_metrics;
  auto bundle = model::read_bundle(whole->bundle_dir);
  ASSERT_TRUE(bundle.ok()) << bundle.status();
  EXPECT_EQ(bundle->manifest["trained_on"], "cuda:0");

  // Stopped on the GPU after 20 steps, finished on the CPU from its checkpoint.
  auto part = train::train(*cfg, train::TrainOptions(dir / "moved")
                                     .snapshot_dir(dir / "snapshots")
                                     .max_steps(20)
                                     .progress(stderr));
  ASSERT_TRUE(part.ok()) << part.status();
  EXPECT_TRUE(part->interrupted);
  train::TrainConfig on_cpu = *cfg;
  on_cpu.device = "cpu";
  auto rest = train::train(on_cpu, train::TrainOptions(dir / "moved")
                                       .snapshot_dir(dir / "snapshots")
                                       .resume(true)
                                       .progress(stderr));
  ASSERT_TRUE(rest.ok()) << rest.status();
  EXPECT_EQ(rest->device, "cpu");
  EXPECT_EQ(rest->epochs, 2);
  EXPECT_GT(rest->test_metrics["accuracy"].get<double>(), 0.6) << rest->test_metrics;
}

TEST_F(GpuTest, ExportedModulesGiveTheCpuOutputsOnTheGpu) {
  auto net = model::NetworkImpl::Create(
      *model::parse_model_spec(Json{{"zoo", "cnn-small"}, {"width", 16}, {"hidden", 64}}),
      {1, 28, 28}, 10, 7);
  ASSERT_TRUE(net.ok()) << net.status();
  (*net)->eval();
  const Json pre = {{"kind", "image_normalize"}, {"mean", {0.286}}, {"std", {0.353}}};
  torch::manual_seed(2);
  const torch::Tensor x = torch::rand({64, 1, 28, 28}) * 255;
  for (const char* precision : {model::kPrecisionFp32, model::kPrecisionBf16}) {
    auto cpu_module = model::export_torchscript(**net, pre, model::kTtaFlip, precision);
    auto gpu_module = model::export_torchscript(**net, pre, model::kTtaFlip, precision);
    ASSERT_TRUE(cpu_module.ok() && gpu_module.ok());
    ASSERT_TRUE(model::place_module(*gpu_module, gpu, "test").ok());
    EXPECT_TRUE(model::module_device(*gpu_module).is_cuda());
    serve::TorchScriptRunner cpu_runner(*cpu_module), gpu_runner(*gpu_module);
    auto want = cpu_runner.run(x);
    auto got = gpu_runner.run(x);  // a CPU batch in, CPU outputs back
    ASSERT_TRUE(want.ok() && got.ok()) << (got.ok() ? want.status() : got.status());
    ASSERT_TRUE(got->front().device().is_cpu());
    const double scale = want->front().abs().max().item<double>();
    const double tolerance = std::string(precision) == "bf16" ? 0.05 * scale + 0.05 : 1e-3;
    EXPECT_LT((want->front() - got->front()).abs().max().item<double>(), tolerance) << precision;
    EXPECT_TRUE(torch::equal(want->front().argmax(1), got->front().argmax(1)) ||
                std::string(precision) == "bf16");
  }
}

TEST_F(GpuTest, NvmlReadsTheCard) {
  auto gpus = monitor::read_gpu_stats();
  ASSERT_TRUE(gpus.ok()) << gpus.status();
  ASSERT_GE(gpus->size(), 1u);
  const monitor::GpuStats& first = gpus->front();
  EXPECT_FALSE(first.name.empty());
  EXPECT_GT(first.memory_total_bytes, int64_t{1} << 30);
  EXPECT_GE(first.utilization, 0.0);
  EXPECT_LE(first.utilization, 1.0);
  std::fprintf(stderr, "%s: %.1f GiB, utilisation %.0f%%, %.0f W\n", first.name.c_str(),
               first.memory_total_bytes / 1073741824.0, first.utilization * 100, first.power_watts);
}

}  // namespace
}  // namespace kiln
