#include <gtest/gtest.h>
#include <torch/torch.h>

#include "kiln/train/evaluate.h"
#include "kiln/train/metrics.h"
#include "kiln/train/optim.h"
#include "kiln/train/plots.h"

namespace kiln::train {
namespace {

ScheduleConfig schedule(const std::string& name) {
  ScheduleConfig s;
  s.name = name;
  return s;
}

TEST(LrScheduleTest, ConstantWithLinearWarmup) {
  ScheduleConfig c = schedule("constant");
  c.warmup_steps = 5;
  LrSchedule s(c, 0.1, 10, 100);
  EXPECT_DOUBLE_EQ(s.lr(0), 0.02);
  EXPECT_DOUBLE_EQ(s.lr(4), 0.1);
  EXPECT_DOUBLE_EQ(s.lr(5), 0.1);
  EXPECT_DOUBLE_EQ(s.lr(99), 0.1);
}

TEST(LrScheduleTest, StepDecaysEveryStepSizeEpochs) {
  ScheduleConfig c = schedule("step");
  c.step_size = 3;
  c.gamma = 0.5;
  LrSchedule s(c, 0.1, 10, 100);
  EXPECT_DOUBLE_EQ(s.lr(0), 0.1);
  EXPECT_DOUBLE_EQ(s.lr(29), 0.1);
  EXPECT_DOUBLE_EQ(s.lr(30), 0.05);
  EXPECT_DOUBLE_EQ(s.lr(60), 0.025);
}

TEST(LrScheduleTest, CosineFromBaseToMinAfterWarmupEpochs) {
  ScheduleConfig c = schedule("cosine");
  LrSchedule s(c, 0.1, 10, 100);
  EXPECT_DOUBLE_EQ(s.lr(0), 0.1);
  EXPECT_NEAR(s.lr(50), 0.05, 1e-12);
  EXPECT_NEAR(s.lr(100), 0.0, 1e-12);
  c.warmup_epochs = 1;
  c.min_lr = 0.01;
  LrSchedule w(c, 0.1, 10, 110);
  EXPECT_DOUBLE_EQ(w.lr(0), 0.01);
  EXPECT_DOUBLE_EQ(w.lr(9), 0.1);
  EXPECT_DOUBLE_EQ(w.lr(10), 0.1);
  EXPECT_NEAR(w.lr(60), 0.055, 1e-12);
}

TEST(LrScheduleTest, OneCycleRisesToPeakThenAnnealsToFinal) {
  ScheduleConfig c = schedule("one_cycle");
  c.max_lr = 1.0;
  c.pct_start = 0.3;
  c.div_factor = 25;
  c.final_div = 1e4;
  LrSchedule s(c, 0.1, 10, 100);
  EXPECT_DOUBLE_EQ(s.lr(0), 0.04);
  EXPECT_DOUBLE_EQ(s.lr(15), 0.52);
  EXPECT_DOUBLE_EQ(s.lr(30), 1.0);
  EXPECT_NEAR(s.lr(99), 1e-4, 1e-12);
  for (int64_t i = 31; i < 100; ++i) EXPECT_LT(s.lr(i), s.lr(i - 1)) << i;
  c.anneal = "linear";
  LrSchedule lin(c, 0.1, 10, 100);
  EXPECT_NEAR(lin.lr(64), 1.0 + (1e-4 - 1.0) * (34.0 / 69.0), 1e-12);
}

TEST(OptimizerTest, BuildsEachKindAndSetsTheLearningRate) {
  torch::Tensor w = torch::zeros({3}, torch::requires_grad());
  for (const char* name : {"sgd", "adam", "adamw"}) {
    OptimizerConfig c;
    c.name = name;
    c.lr = 0.5;
    auto opt = make_optimizer({w}, c);
    ASSERT_TRUE(opt.ok()) << opt.status();
    set_learning_rate(**opt, 0.25);
    EXPECT_DOUBLE_EQ((*opt)->param_groups()[0].options().get_lr(), 0.25);
  }
  OptimizerConfig bad;
  bad.name = "rmsprop";
  EXPECT_EQ(make_optimizer({w}, bad).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(make_optimizer({}, OptimizerConfig()).status().code(), StatusCode::kInvalidArgument);
}

TEST(MetricsTest, ClassificationMatchesHandComputedValues) {
  torch::Tensor pred = torch::tensor({0, 1, 1, 2, 2, 2}, torch::kInt64);
  torch::Tensor truth = torch::tensor({0, 1, 2, 2, 2, 0}, torch::kInt64);
  auto m = classification_metrics(pred, truth, {"a", "b", "c"});
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_DOUBLE_EQ((*m)["accuracy"].get<double>(), 4.0 / 6.0);
  EXPECT_EQ((*m)["confusion_matrix"], Json::parse("[[1,0,1],[0,1,0],[0,1,2]]"));
  const Json& a = (*m)["per_class"]["a"];
  EXPECT_DOUBLE_EQ(a["precision"].get<double>(), 1.0);
  EXPECT_DOUBLE_EQ(a["recall"].get<double>(), 0.5);
  EXPECT_NEAR(a["f1"].get<double>(), 2.0 / 3.0, 1e-12);
  EXPECT_EQ(a["support"], 2);
  const Json& b = (*m)["per_class"]["b"];
  EXPECT_DOUBLE_EQ(b["precision"].get<double>(), 0.5);
  EXPECT_DOUBLE_EQ(b["recall"].get<double>(), 1.0);
  const Json& c = (*m)["per_class"]["c"];
  EXPECT_NEAR(c["precision"].get<double>(), 2.0 / 3.0, 1e-12);
  EXPECT_EQ(c["support"], 3);
  EXPECT_NEAR((*m)["macro_f1"].get<double>(), 2.0 / 3.0, 1e-12);
}

TEST(MetricsTest, ClassificationErrors) {
  torch::Tensor p = torch::tensor({0, 3}, torch::kInt64);
  torch::Tensor t = torch::tensor({0, 1}, torch::kInt64);
  EXPECT_EQ(classification_metrics(p, t, {"a", "b"}).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(classification_metrics(p, torch::tensor({0}, torch::kInt64)).status().code(),
            StatusCode::kInvalidArgument);
  auto unnamed = classification_metrics(p, t);
  ASSERT_TRUE(unnamed.ok());
  EXPECT_TRUE((*unnamed)["per_class"].contains("3"));
}

TEST(MetricsTest, RegressionMatchesHandComputedValues) {
  auto m = regression_metrics(torch::tensor({1.f, 2.f, 3.f}), torch::tensor({1.f, 2.f, 5.f}));
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_NEAR((*m)["mse"].get<double>(), 4.0 / 3.0, 1e-12);
  EXPECT_NEAR((*m)["mae"].get<double>(), 2.0 / 3.0, 1e-12);
  EXPECT_NEAR((*m)["r2"].get<double>(), 1.0 - 36.0 / 78.0, 1e-12);
}

TEST(EvaluateTest, FlipTtaIsOnePassOverTheBatchAndItsMirror) {
  torch::manual_seed(3);
  const torch::Tensor x = torch::rand({3, 2, 4, 5}).contiguous(at::MemoryFormat::ChannelsLast);
  const torch::Tensor w = torch::rand({2 * 4 * 5, 6});
  int calls = 0;
  bool channels_last = false;
  const Predictor predict = [&](const torch::Tensor& batch) {
    ++calls;
    channels_last = batch.is_contiguous(at::MemoryFormat::ChannelsLast);
    return batch.flatten(1).matmul(w).to(torch::kBFloat16);
  };
  const torch::Tensor got = predict_with_mirror(predict, x);
  EXPECT_EQ(calls, 1);
  EXPECT_TRUE(channels_last);
  EXPECT_EQ(got.scalar_type(), torch::kFloat32);
  const torch::Tensor want =
      (predict(x).to(torch::kFloat32) + predict(x.flip({3})).to(torch::kFloat32)) * 0.5;
  EXPECT_TRUE(torch::allclose(got, want)) << got << want;
}

TEST(PlotsTest, SvgsAreWellFormedAndEscaped) {
  std::string chart = line_chart_svg("loss <train>", "epoch", {{"a", {{1, 0.5}, {2, 0.25}}}});
  EXPECT_EQ(chart.rfind("<svg", 0), 0u);
  EXPECT_NE(chart.find("&lt;train&gt;"), std::string::npos);
  EXPECT_NE(chart.find("<polyline"), std::string::npos);
  std::string cm = confusion_matrix_svg(Json::parse("[[3,1],[0,4]]"), {"x&y", "z"});
  EXPECT_NE(cm.find("x&amp;y"), std::string::npos);
  EXPECT_NE(cm.find(">4</text>"), std::string::npos);
  EXPECT_NE(cm.find("</svg>"), std::string::npos);
  // Reliability: one bar and marker per non-empty bin, the diagonal, the ECE in the title.
  const Json bins = {
      {"count", {0, 3, 5}}, {"confidence", {0, 0.5, 0.9}}, {"accuracy", {0, 0.4, 1}}};
  const std::string rel = reliability_svg(bins, 0.0625);
  EXPECT_EQ(rel.rfind("<svg", 0), 0u);
  EXPECT_NE(rel.find("Reliability (ECE 0.0625)"), std::string::npos);
  size_t bars = 0;
  for (size_t at = rel.find("<circle"); at != std::string::npos; at = rel.find("<circle", at + 1))
    ++bars;
  EXPECT_EQ(bars, 2u);
  EXPECT_NE(rel.find("<title>5 rows, accuracy 1, confidence 0.9</title>"), std::string::npos);
  EXPECT_NE(rel.find("stroke-dasharray"), std::string::npos);
  EXPECT_NE(rel.find("</svg>"), std::string::npos);
}

}  // namespace
}  // namespace kiln::train
