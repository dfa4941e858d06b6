#include "kiln/train/fine_tune.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "kiln/model/bundle.h"
#include "kiln/model/manifest.h"
#include "kiln/train/trainer.h"
#include "support/test_support.h"
#include "train_test_data.h"

namespace kiln::train {
namespace {

using kiln::testing::source_dir;
using kiln::testing::TempDir;
using kiln::testing::write_text;

Expected<TrainConfig> mlp_config(const std::string& yaml) {
  return config_for(breast_cancer_snapshot(), yaml);
}

const char* kMlp = R"(model: {zoo: mlp, hidden: [16, 8]}
optimizer: {name: adam, lr: 0.01}
batch_size: 64
epochs: 3
seed: 1
threads: 1
deterministic: true
)";

/// A trained parent bundle, once per test process.
const fs::path& parent_bundle() {
  static TempDir dir;  // removed at exit
  static fs::path bundle = [] {
    auto cfg = mlp_config(kMlp);
    EXPECT_TRUE(cfg.ok()) << cfg.status();
    auto r = train(*cfg, TrainOptions(dir.path()).progress(nullptr));
    EXPECT_TRUE(r.ok()) << r.status();
    return r->bundle_dir;
  }();
  return bundle;
}

std::vector<std::string> parent_labels() { return model::read_bundle(parent_bundle())->labels(); }

model::TensorMap weights_of(const fs::path& bundle_dir) {
  auto b = model::read_bundle(bundle_dir);
  EXPECT_TRUE(b.ok()) << b.status();
  auto w = model::load_bundle_weights(*b);
  EXPECT_TRUE(w.ok()) << w.status();
  return *w;
}

TEST(FineTuneTest, InitLoadsMatchingTensorsAndFrozenLayersStayAsLoaded) {
  // mlp [16, 8]: layers 1, 3, 5 are linear (0 flattens, 2 and 4 are activations).
  auto cfg = mlp_config(std::string(kMlp) + "init: " + parent_bundle().string() +
                        "\nfreeze: [1]\nparam_groups: [{layers: [5], lr_scale: 3}]\n");
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  TempDir out;
  auto r = train(*cfg, TrainOptions(out.path()).progress(nullptr));
  ASSERT_TRUE(r.ok()) << r.status();
  const model::TensorMap before = weights_of(parent_bundle());
  const model::TensorMap after = weights_of(r->bundle_dir);
  EXPECT_TRUE(torch::equal(before.at("layers.1.weight"), after.at("layers.1.weight")));
  EXPECT_TRUE(torch::equal(before.at("layers.1.bias"), after.at("layers.1.bias")));
  EXPECT_FALSE(torch::equal(before.at("layers.3.weight"), after.at("layers.3.weight")));
  EXPECT_FALSE(torch::equal(before.at("layers.5.weight"), after.at("layers.5.weight")));
  auto manifest = model::read_bundle(r->bundle_dir)->manifest;
  EXPECT_EQ(manifest["lineage"]["init"]["loaded"].size(), 6u);
  EXPECT_TRUE(manifest["lineage"]["init"]["reinitialised"].empty());
  EXPECT_FALSE(manifest["lineage"].contains("parent"));  // a directory, not a registry version
  EXPECT_EQ(manifest["training"]["freeze"], Json::array({"1"}));
}

TEST(FineTuneTest, ChangedShapesStartFreshAndAddedOrRemovedLayersAreReported) {
  // One hidden layer fewer: layers.1 matches, .3 becomes the head (another shape), .5 is gone.
  auto net = model::NetworkImpl::Create(
      *model::parse_model_spec(Json::parse(R"({"zoo": "mlp", "hidden": [16]})"), "model"), {30}, 2,
      7);
  ASSERT_TRUE(net.ok()) << net.status();
  const torch::Tensor fresh_head = (*net)->named_parameters()["layers.3.weight"].clone();
  auto report = init_from(parent_bundle().string(), **net, parent_labels());
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->loaded, (std::vector<std::string>{"layers.1.bias", "layers.1.weight"}));
  EXPECT_EQ(report->reinitialised.size(), 2u) << report->summary();
  EXPECT_EQ(report->dropped, (std::vector<std::string>{"layers.5.bias", "layers.5.weight"}));
  EXPECT_NE(report->summary().find("re-initialised 2 (layers.3.bias [2] was [8]"),
            std::string::npos)
      << report->summary();
  EXPECT_TRUE(torch::equal((*net)->named_parameters()["layers.1.weight"],
                           weights_of(parent_bundle()).at("layers.1.weight")));
  EXPECT_TRUE(torch::equal((*net)->named_parameters()["layers.3.weight"], fresh_head));
}

TEST(FineTuneTest, FreezeAndGroupsNameRealLayersOnce) {
  auto net = model::NetworkImpl::Create(
      *model::parse_model_spec(Json::parse(R"({"zoo": "mlp", "hidden": [16, 8]})"), "model"), {30},
      2, 7);
  ASSERT_TRUE(net.ok()) << net.status();
  auto groups = trainable_groups(**net, {"layers.1"}, {{{"5"}, 0.1}});
  ASSERT_TRUE(groups.ok()) << groups.status();
  EXPECT_EQ(groups->params.size(), 2u);
  EXPECT_EQ(groups->scales, (std::vector<double>{1.0, 0.1}));
  EXPECT_EQ(groups->frozen, 30 * 16 + 16);
  EXPECT_FALSE((*net)->named_parameters()["layers.1.weight"].requires_grad());
  auto optimizer = make_grouped_optimizer(*groups, OptimizerConfig{});
  ASSERT_TRUE(optimizer.ok()) << optimizer.status();
  EXPECT_DOUBLE_EQ((*optimizer)->param_groups()[1].options().get_lr(), 1e-3 * 0.1);

  auto none = trainable_groups(**net, {"2"}, {});
  ASSERT_FALSE(none.ok());
  EXPECT_NE(none.status().message().find("layers with parameters: 1, 3, 5"), std::string::npos)
      << none.status();
  auto twice = trainable_groups(**net, {"3"}, {{{"layers.3"}, 2.0}});
  ASSERT_FALSE(twice.ok());
  EXPECT_NE(twice.status().message().find("also frozen"), std::string::npos) << twice.status();
  auto all = trainable_groups(**net, {"1", "3", "5"}, {});
  EXPECT_FALSE(all.ok());
}

TEST(FineTuneTest, AnotherArchitectureOrAMissingReferenceIsAClearError) {
  auto net = model::NetworkImpl::Create(
      *model::parse_model_spec(Json::parse(R"({"zoo": "mlp", "hidden": [5]})"), "model"), {4}, 3,
      7);
  ASSERT_TRUE(net.ok());
  auto r = init_from(parent_bundle().string(), **net);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("shares no tensor"), std::string::npos) << r.status();
  TempDir home;
  setenv("KILN_HOME", home.path().c_str(), 1);
  auto missing = init_from("nobody@production", **net);
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("init:"), std::string::npos) << missing.status();
}

TEST(FineTuneTest, AHeadForOtherClassesStartsFreshThoughItsShapeFits) {
  auto spec = model::parse_model_spec(Json::parse(R"({"zoo": "mlp", "hidden": [16, 8]})"), "model");
  auto net = model::NetworkImpl::Create(*spec, {30}, 2, 7);
  ASSERT_TRUE(net.ok());
  const torch::Tensor fresh_head = (*net)->named_parameters()["layers.5.weight"].clone();
  auto report = init_from(parent_bundle().string(), **net, {"cat", "dog"});
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->loaded.size(), 4u);
  EXPECT_EQ(report->reinitialised,
            (std::vector<std::string>{"layers.5.bias (a head for other classes)",
                                      "layers.5.weight (a head for other classes)"}));
  EXPECT_TRUE(torch::equal((*net)->named_parameters()["layers.5.weight"], fresh_head));
  // The same classes: everything loads.
  auto same = init_from(parent_bundle().string(), **net, parent_labels());
  ASSERT_TRUE(same.ok());
  EXPECT_EQ(same->loaded.size(), 6u);
}

}  // namespace
}  // namespace kiln::train
