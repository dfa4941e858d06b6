// Summaries of built networks: the peer CNN's params and FLOPs, table and JSON.
#include "kiln/model/summary.h"

#include <gtest/gtest.h>

#include "kiln/model/network.h"
#include "kiln/model/spec.h"
#include "support/test_support.h"

namespace kiln::model {
namespace {

TEST(SummaryTest, PeerCnnParamsAndFlops) {
  Expected<ModelSpec> spec = load_model_spec_file(kiln::testing::source_dir() /
                                                  "examples/fashion-mnist/peer-cnn-model.yaml");
  ASSERT_TRUE(spec.ok()) << spec.status();
  auto net = NetworkImpl::Create(*spec, {1, 28, 28}, 10);
  ASSERT_TRUE(net.ok()) << net.status();
  Json j = summary_json(**net);
  EXPECT_EQ(j["total_params"], 421642);
  // conv/linear 2*MACs; relu 1/element; maxpool 4/output element; flatten 0.
  int64_t flops = 2 * 9 * 32 * 28 * 28 + 32 * 28 * 28 + 4 * 32 * 14 * 14 +
                  2 * 32 * 9 * 64 * 14 * 14 + 64 * 14 * 14 + 4 * 64 * 7 * 7 + 2 * 3136 * 128 + 128 +
                  2 * 128 * 10;
  EXPECT_EQ(flops, 8557696);
  EXPECT_EQ(j["total_flops"], flops);
  ASSERT_EQ(j["layers"].size(), 10u);
  EXPECT_EQ(j["layers"][7], Json::parse(R"({"index": 7, "name": "layers.7", "type": "linear",
      "input_shape": [3136], "output_shape": [128], "params": 401536, "flops": 802816,
      "hparams": {"in": 3136, "out": 128, "bias": true}})"));
  EXPECT_EQ(j["input_shape"], Json::parse("[1, 28, 28]"));
  EXPECT_EQ(j["outputs"], 10);

  std::string table = render_summary(**net);
  EXPECT_NE(table.find("421,642"), std::string::npos) << table;
  EXPECT_NE(table.find("8,557,696"), std::string::npos) << table;
  EXPECT_NE(table.find("[64,7,7]"), std::string::npos) << table;
  EXPECT_NE(table.find("401,536"), std::string::npos) << table;
}

TEST(SummaryTest, ResidualChildrenAreNestedAndCountedOnce) {
  Expected<ModelSpec> spec = zoo_model("resnet-small", {{"width", 8}});
  ASSERT_TRUE(spec.ok());
  auto net = NetworkImpl::Create(*spec, {3, 32, 32}, 10);
  ASSERT_TRUE(net.ok()) << net.status();
  int64_t counted = 0;
  for (const auto& p : (*net)->parameters()) counted += p.numel();
  Json j = summary_json(**net);
  EXPECT_EQ(j["total_params"], counted);
  const Json& block = j["layers"][5];  // first block of stage 1: projection
  EXPECT_EQ(block["type"], "residual");
  ASSERT_EQ(block["children"].size(), 6u);
  EXPECT_EQ(block["children"][5]["name"], "layers.5.shortcut");
  int64_t child_params = 0;
  for (const auto& c : block["children"]) child_params += c["params"].get<int64_t>();
  EXPECT_EQ(block["params"], child_params);
  std::string table = render_summary(**net);
  EXPECT_NE(table.find("  layers.5.shortcut"), std::string::npos) << table;
  EXPECT_EQ(with_thousands(0), "0");
  EXPECT_EQ(with_thousands(1000), "1,000");
  EXPECT_EQ(with_thousands(999), "999");
}

}  // namespace
}  // namespace kiln::model
