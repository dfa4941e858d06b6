#include <gtest/gtest.h>

#include "kiln/data/profile.h"
#include "kiln/data/spec.h"
#include "support/test_support.h"

namespace kiln::data {
namespace {

using kiln::testing::source_dir;

// The whole published dataset: in data_slow_tests (ctest label slow).
TEST(ProfileSlowTest, FashionMnistFull) {
  auto spec = load_dataset_spec(source_dir() / "examples/fashion-mnist/dataset.yaml");
  ASSERT_TRUE(spec.ok()) << spec.status();
  auto report = profile_dataset(*spec);
  ASSERT_TRUE(report.ok()) << report.status();
  const Json& s = (*report)["splits"];
  EXPECT_EQ(s["train"]["rows"], 60000);
  EXPECT_EQ(s["test"]["rows"], 10000);
  for (const auto& [name, n] : s["train"]["class_counts"].items()) EXPECT_EQ(n, 6000) << name;
  for (const auto& [name, n] : s["test"]["class_counts"].items()) EXPECT_EQ(n, 1000) << name;
  EXPECT_DOUBLE_EQ(s["train"]["imbalance_ratio"].get<double>(), 1.0);
}

}  // namespace
}  // namespace kiln::data
