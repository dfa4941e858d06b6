// The whole published Fashion-MNIST: in data_slow_tests (ctest label slow). Expected sums were
// computed independently with Python's gzip module.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "kiln/data/images.h"
#include "support/test_support.h"

namespace kiln::data {
namespace {

std::filesystem::path fm(const std::string& name) {
  return kiln::testing::fashion_mnist_dir() / name;
}

TEST(IdxRead, FashionMnistFull) {
  auto x = read_idx(fm("train-images-idx3-ubyte.gz"));
  ASSERT_TRUE(x.ok()) << x.status();
  EXPECT_EQ(x->sizes(), (std::vector<int64_t>{60000, 28, 28}));
  EXPECT_EQ(x->sum(torch::kInt64).item<int64_t>(), 3431114169LL);
  EXPECT_EQ(x->select(0, 59999).sum().item<int64_t>(), 16684);

  auto train = read_idx_images(fm("train-images-idx3-ubyte.gz"), fm("train-labels-idx1-ubyte.gz"));
  ASSERT_TRUE(train.ok()) << train.status();
  EXPECT_EQ(train->size(), 60000);
  auto counts = torch::bincount(train->labels, {}, 10);
  for (int c = 0; c < 10; ++c) EXPECT_EQ(counts[c].item<int64_t>(), 6000) << c;

  auto test = read_idx_images(fm("t10k-images-idx3-ubyte.gz"), fm("t10k-labels-idx1-ubyte.gz"));
  ASSERT_TRUE(test.ok()) << test.status();
  EXPECT_EQ(test->size(), 10000);
  EXPECT_EQ(test->images.sum(torch::kInt64).item<int64_t>(), 573469082LL);
  counts = torch::bincount(test->labels, {}, 10);
  for (int c = 0; c < 10; ++c) EXPECT_EQ(counts[c].item<int64_t>(), 1000) << c;
}

}  // namespace
}  // namespace kiln::data
