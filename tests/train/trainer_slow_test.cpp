#include <gtest/gtest.h>

#include "kiln/train/trainer.h"
#include "support/test_support.h"

namespace kiln::train {
namespace {

using kiln::testing::source_dir;
using kiln::testing::TempDir;
using kiln::testing::write_text;

// The whole Fashion-MNIST training set (54k train / 6k val / 10k test), the default small CNN,
// a few epochs: the end-to-end figure the README quotes. No timing assertion (see bench/).
TEST(TrainerSlowTest, CnnSmallOnFullFashionMnist) {
  TempDir dir;
  write_text(dir / "train.yaml",
             "data: " + (source_dir() / "examples/fashion-mnist/dataset.yaml").string() +
                 R"(
model: {zoo: cnn-small, width: 32, hidden: 128, dropout: 0.1}
loss: {kind: cross_entropy, label_smoothing: 0.1}
optimizer: {name: adamw, lr: 0.003, weight_decay: 0.05}
schedule: {name: one_cycle, pct_start: 0.25}
batch_size: 256
epochs: 3
seed: 1
augment: {hflip: 0.5}
workers: 1
)");
  auto cfg = load_train_config(dir / "train.yaml");
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  auto r = train(*cfg, TrainOptions(dir / "out").snapshot_dir(dir / "snapshots").progress(stderr));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_GT(r->test_metrics["accuracy"].get<double>(), 0.87) << r->test_metrics["accuracy"];
  std::fprintf(stderr, "full FMNIST: test accuracy %.4f, %.1f s in all, %s\n",
               r->test_metrics["accuracy"].get<double>(), r->seconds, r->precision.c_str());
}

}  // namespace
}  // namespace kiln::train
