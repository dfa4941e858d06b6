#include "kiln/train/trainer.h"

#include <gtest/gtest.h>
#include <torch/script.h>
#include <torch/torch.h>

#include <chrono>

#include "kiln/core/files.h"
#include "kiln/core/threads.h"
#include "kiln/data/prepare.h"
#include "kiln/data/snapshot.h"
#include "kiln/data/spec.h"
#include "kiln/model/bundle.h"
#include "kiln/model/network.h"
#include "kiln/train/calibration.h"
#include "kiln/train/checkpoint.h"
#include "kiln/train/evaluate.h"
#include "kiln/train/optim.h"
#include "kiln/train/weight_average.h"
#include "support/test_support.h"
#include "train_test_data.h"

namespace kiln::train {
namespace {

using kiln::testing::source_dir;
using kiln::testing::TempDir;
using kiln::testing::write_text;

const char* kMlp = R"(model: {zoo: mlp, hidden: [32], dropout: 0.1}
optimizer: {name: adam, lr: 0.005}
schedule: {name: cosine, warmup_steps: 5}
batch_size: 32
epochs: 12
seed: 3
threads: 1
workers: 1
deterministic: true
)";

Json without_timings(Json history) {
  for (auto& line : history) {
    line.erase("epoch_seconds");
    line.erase("samples_per_s");
  }
  return history;
}

TEST(TrainerTest, MlpOnBreastCancerReaches95PercentAndWritesEverything) {
  auto cfg = config_for(breast_cancer_snapshot(), kMlp);
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  TempDir out;
  auto r = train(*cfg, TrainOptions(out.path()).progress(nullptr));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_FALSE(r->interrupted);
  EXPECT_EQ(r->epochs, 12);
  ASSERT_EQ(r->history.size(), 12u);
  EXPECT_GE(r->history.back()["val_accuracy"].get<double>(), 0.95) << r->history.back();
  EXPECT_GE(r->test_metrics["accuracy"].get<double>(), 0.9) << r->test_metrics;
  EXPECT_LT(r->history.back()["train_loss"].get<double>(),
            r->history.front()["train_loss"].get<double>());
  for (const char* f :
       {"checkpoint.pt", "config.json", "metrics.jsonl", "loss_curve.svg", "metric_curve.svg",
        "confusion_matrix.svg", "reliability.svg", "final_metrics.json"})
    EXPECT_TRUE(fs::exists(out / f)) << f;
  auto lines = read_file(out / "metrics.jsonl");
  ASSERT_TRUE(lines.ok());
  EXPECT_EQ(std::count(lines->begin(), lines->end(), '\n'), 12);

  // The bundle: readable, lineage filled in, and its TorchScript module agrees with the metrics
  // it records (tables: the module takes raw features, so compare against the eager network).
  ASSERT_FALSE(r->bundle_dir.empty());
  auto bundle = model::read_bundle(r->bundle_dir);
  ASSERT_TRUE(bundle.ok()) << bundle.status();
  const Json& m = bundle->manifest;
  EXPECT_EQ(m["task"], "classification");
  EXPECT_EQ(m["labels"].size(), 2u);
  EXPECT_EQ(m["lineage"]["config_hash"], cfg->hash());
  EXPECT_EQ(m["lineage"]["snapshot_hash"], r->snapshot_hash);
  EXPECT_EQ(m["metrics"]["test"]["accuracy"], r->test_metrics["accuracy"]);
  auto net = model::load_bundle_network(*bundle);
  ASSERT_TRUE(net.ok()) << net.status();
  auto snapshot = data::read_snapshot(breast_cancer_snapshot());
  ASSERT_TRUE(snapshot.ok());
  auto again = evaluate(**net, snapshot->splits.at("test"), eval_options_for(*snapshot));
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_DOUBLE_EQ((*again)["accuracy"].get<double>(), r->test_metrics["accuracy"].get<double>());
}

TEST(TrainerTest, ResumeAfterInterruptionEndsWithIdenticalMetrics) {
  auto cfg = config_for(breast_cancer_snapshot(), kMlp, {"epochs=4", "checkpoint_every=5"});
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  TempDir full_dir;
  auto full = train(*cfg, TrainOptions(full_dir.path()).progress(nullptr).bundle(false));
  ASSERT_TRUE(full.ok()) << full.status();
  const int64_t steps_per_epoch = full->steps / 4;
  // Mid-epoch (after a step checkpoint), and exactly at an epoch boundary.
  for (int64_t stop_at : {steps_per_epoch + 3, 2 * steps_per_epoch}) {
    SCOPED_TRACE("stop at step " + std::to_string(stop_at));
    TempDir dir;
    auto first =
        train(*cfg, TrainOptions(dir.path()).progress(nullptr).bundle(false).max_steps(stop_at));
    ASSERT_TRUE(first.ok()) << first.status();
    EXPECT_TRUE(first->interrupted);
    EXPECT_EQ(first->steps, stop_at);
    EXPECT_TRUE(first->test_metrics.is_null());
    // A fresh start into the same directory is refused; resume continues.
    auto refused = train(*cfg, TrainOptions(dir.path()).progress(nullptr).bundle(false));
    EXPECT_EQ(refused.status().code(), StatusCode::kAlreadyExists);
    auto resumed =
        train(*cfg, TrainOptions(dir.path()).progress(nullptr).bundle(false).resume(true));
    ASSERT_TRUE(resumed.ok()) << resumed.status();
    EXPECT_FALSE(resumed->interrupted);
    EXPECT_EQ(resumed->steps, full->steps);
    EXPECT_EQ(without_timings(resumed->history), without_timings(full->history));
    EXPECT_EQ(resumed->test_metrics, full->test_metrics);
  }
}

TEST(TrainerTest, ResumeRefusesAnotherConfigAndAMissingCheckpoint) {
  auto cfg = config_for(breast_cancer_snapshot(), kMlp, {"epochs=2"});
  auto other = config_for(breast_cancer_snapshot(), kMlp, {"epochs=2", "optimizer.lr=0.1"});
  ASSERT_TRUE(cfg.ok() && other.ok());
  TempDir dir;
  auto missing = train(*cfg, TrainOptions(dir.path()).progress(nullptr).resume(true));
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  ASSERT_TRUE(
      train(*cfg, TrainOptions(dir.path()).progress(nullptr).bundle(false).max_steps(3)).ok());
  auto mismatch = train(*other, TrainOptions(dir.path()).progress(nullptr).resume(true));
  EXPECT_EQ(mismatch.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(mismatch.status().message().find("another config"), std::string::npos);
}

TEST(TrainerTest, DivergingLossStopsNamingTheStepAndKeepsALoadableCheckpoint) {
  auto cfg = config_for(breast_cancer_snapshot(), kMlp,
                        {"optimizer={name: sgd, lr: 1.0e9, momentum: 0.9}",
                         "schedule.name=constant", "schedule.warmup_steps=0", "log_every=1"});
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  TempDir dir;
  auto r = train(*cfg, TrainOptions(dir.path()).progress(nullptr));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  const std::string& m = r.status().message();
  EXPECT_NE(m.find("not finite"), std::string::npos) << m;
  EXPECT_NE(m.find("at step"), std::string::npos) << m;
  EXPECT_NE(m.find("checkpoint"), std::string::npos) << m;

  auto spec = model::parse_model_spec(cfg->model);
  auto net = model::NetworkImpl::Create(*spec, {30}, 2, 0);
  ASSERT_TRUE(net.ok()) << net.status();
  auto opt = make_optimizer((*net)->parameters(), cfg->optimizer);
  auto state = load_checkpoint(dir / "checkpoint.pt", **net, opt->get());
  ASSERT_TRUE(state.ok()) << state.status();
  for (const auto& p : (*net)->parameters()) EXPECT_TRUE(torch::isfinite(p).all().item<bool>());
}

TEST(TrainerTest, ModelOutputsThatDoNotMatchTheLabelsAreRejectedBeforeTraining) {
  auto cfg = config_for(breast_cancer_snapshot(),
                        "model: {layers: [{type: linear, out: 3}]}\nepochs: 1\n");
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  TempDir dir;
  auto r = train(*cfg, TrainOptions(dir.path()).progress(nullptr));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("2 classes"), std::string::npos) << r.status();
  EXPECT_FALSE(fs::exists(dir / "checkpoint.pt"));
}

TEST(TrainerTest, LabelsOutsideTheClassListAreRejected) {
  TempDir dir;
  Json manifest = {{"name", "toy"},
                   {"kind", "table"},
                   {"task", "classification"},
                   {"schema", {{"target", {{"name", "y"}, {"classes", {"a", "b"}}}}}}};
  std::map<std::string, data::SplitTensors> splits;
  splits["train"] = {torch::randn({20, 4}), torch::arange(20, torch::kInt64).remainder(3), {}};
  auto snap = data::write_snapshot(dir.path(), "toy", manifest, splits);
  ASSERT_TRUE(snap.ok()) << snap.status();
  auto cfg = config_for(*snap, "model: {zoo: mlp}\nepochs: 1\n");
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  auto r = train(*cfg, TrainOptions(dir / "out").progress(nullptr));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("labels 0..2"), std::string::npos) << r.status();
}

TEST(TrainerTest, EmaBundlesTheAveragedWeightsAndResumesExactly) {
  auto cfg = config_for(breast_cancer_snapshot(), kMlp,
                        {"epochs=3", "checkpoint_every=5", "ema={decay: 0.95}"});
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  TempDir full_dir;
  auto full = train(*cfg, TrainOptions(full_dir.path()).progress(nullptr));
  ASSERT_TRUE(full.ok()) << full.status();
  EXPECT_GE(full->test_metrics["accuracy"].get<double>(), 0.9) << full->test_metrics;

  // The bundle holds the checkpoint's averages, not the weights training left.
  auto bundle = model::read_bundle(full->bundle_dir);
  ASSERT_TRUE(bundle.ok()) << bundle.status();
  auto bundled = model::load_bundle_network(*bundle);
  auto trained = model::load_bundle_network(*bundle);
  ASSERT_TRUE(bundled.ok() && trained.ok());
  WeightAverage saved(**trained, 0.95, true);
  auto state =
      load_checkpoint(full_dir / "checkpoint.pt", **trained, nullptr, false, &saved.averages());
  ASSERT_TRUE(state.ok()) << state.status();
  const auto params = (*bundled)->parameters();
  const auto live = (*trained)->parameters();
  ASSERT_LE(params.size(), saved.averages().size());
  bool any_differs = false;
  for (size_t i = 0; i < params.size(); ++i) {
    EXPECT_TRUE(torch::equal(params[i], saved.averages()[i])) << "parameter " << i;
    any_differs = any_differs || !torch::equal(params[i], live[i]);
  }
  EXPECT_TRUE(any_differs) << "the bundle holds the trained weights, not their average";

  // Interrupted mid-epoch and resumed: the same averages, so the same history and metrics.
  const int64_t steps_per_epoch = full->steps / 3;
  TempDir dir;
  auto first =
      train(*cfg, TrainOptions(dir.path()).progress(nullptr).max_steps(steps_per_epoch + 3));
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_TRUE(first->interrupted);
  auto resumed = train(*cfg, TrainOptions(dir.path()).progress(nullptr).resume(true));
  ASSERT_TRUE(resumed.ok()) << resumed.status();
  EXPECT_EQ(without_timings(resumed->history), without_timings(full->history));
  EXPECT_EQ(resumed->test_metrics, full->test_metrics);
}

TEST(TrainerTest, AccumulatingTwoBatchesOf16TrainsAsOneBatchOf32) {
  // No dropout: the two runs draw their random numbers differently, the rest is the same sum.
  // SGD, whose step follows the gradient's scale (Adam's would hide a missing 1/2).
  const std::vector<std::string> common = {"epochs=3", "model.dropout=0", "checkpoint_every=5",
                                           "optimizer={name: sgd, lr: 0.05}"};
  std::vector<std::string> one = common, two = common;
  one.push_back("batch_size=32");
  two.push_back("batch_size=16");
  two.push_back("accumulate_batches=2");
  auto whole = config_for(breast_cancer_snapshot(), kMlp, one);
  auto accumulated = config_for(breast_cancer_snapshot(), kMlp, two);
  ASSERT_TRUE(whole.ok() && accumulated.ok());
  TempDir whole_dir, accumulated_dir;
  auto a = train(*whole, TrainOptions(whole_dir.path()).progress(nullptr).bundle(false));
  auto b =
      train(*accumulated, TrainOptions(accumulated_dir.path()).progress(nullptr).bundle(false));
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(b->steps, a->steps);  // optimizer steps: the schedule sees the same run
  ASSERT_EQ(b->history.size(), a->history.size());
  for (size_t e = 0; e < a->history.size(); ++e) {
    EXPECT_EQ(b->history[e]["step"], a->history[e]["step"]);
    EXPECT_NEAR(b->history[e]["train_loss"].get<double>(),
                a->history[e]["train_loss"].get<double>(), 1e-5);
    EXPECT_NEAR(b->history[e]["val_loss"].get<double>(), a->history[e]["val_loss"].get<double>(),
                1e-5);
  }

  // A group the epoch's batches do not fill: its last step takes what is left.
  auto uneven = config_for(breast_cancer_snapshot(), kMlp,
                           {"epochs=1", "batch_size=16", "accumulate_batches=5"});
  ASSERT_TRUE(uneven.ok());
  TempDir uneven_dir;
  auto u = train(*uneven, TrainOptions(uneven_dir.path()).progress(nullptr).bundle(false));
  ASSERT_TRUE(u.ok()) << u.status();
  auto snapshot = data::read_snapshot(breast_cancer_snapshot());
  ASSERT_TRUE(snapshot.ok());
  const int64_t batches = snapshot->splits.at("train").x.size(0) / 16;  // the last one dropped
  EXPECT_EQ(u->steps, (batches + 4) / 5);

  // Stopped between two steps and resumed: the same run.
  TempDir dir;
  auto first =
      train(*accumulated, TrainOptions(dir.path()).progress(nullptr).bundle(false).max_steps(17));
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_TRUE(first->interrupted);
  EXPECT_EQ(first->steps, 17);
  auto resumed =
      train(*accumulated, TrainOptions(dir.path()).progress(nullptr).bundle(false).resume(true));
  ASSERT_TRUE(resumed.ok()) << resumed.status();
  EXPECT_EQ(without_timings(resumed->history), without_timings(b->history));
  EXPECT_EQ(resumed->test_metrics, b->test_metrics);
}

TEST(TrainerTest, TemperatureCalibrationScalesTheServedLogitsAndKeepsThePredictions) {
  // No dropout, the same seed: the two runs train the same network; calibration only divides
  // the bundle's logits by the T fitted on val.
  const std::vector<std::string> common = {"epochs=30", "model.dropout=0"};
  std::vector<std::string> calibrated_sets = common;
  calibrated_sets.push_back("calibration=temperature");
  auto plain_cfg = config_for(breast_cancer_snapshot(), kMlp, common);
  auto calibrated_cfg = config_for(breast_cancer_snapshot(), kMlp, calibrated_sets);
  ASSERT_TRUE(plain_cfg.ok() && calibrated_cfg.ok());
  EXPECT_NE(plain_cfg->hash(), calibrated_cfg->hash());
  TempDir plain_dir, calibrated_dir;
  auto plain = train(*plain_cfg, TrainOptions(plain_dir.path()).progress(nullptr));
  auto calibrated = train(*calibrated_cfg, TrainOptions(calibrated_dir.path()).progress(nullptr));
  ASSERT_TRUE(plain.ok()) << plain.status();
  ASSERT_TRUE(calibrated.ok()) << calibrated.status();
  EXPECT_EQ(calibrated->test_metrics["confusion_matrix"], plain->test_metrics["confusion_matrix"]);
  EXPECT_TRUE(calibrated->test_metrics.contains("ece"));
  // The reliability bins hold every test row, and the ECE is theirs.
  const Json& bins = calibrated->test_metrics["reliability"];
  int64_t binned = 0;
  double ece = 0;
  for (size_t b = 0; b < bins["count"].size(); ++b) {
    binned += bins["count"][b].get<int64_t>();
    ece += bins["count"][b].get<double>() *
           std::abs(bins["accuracy"][b].get<double>() - bins["confidence"][b].get<double>());
  }
  EXPECT_EQ(binned, calibrated->test_metrics["samples"].get<int64_t>());
  EXPECT_NEAR(ece / static_cast<double>(binned), calibrated->test_metrics["ece"].get<double>(),
              1e-12);

  auto bundle = model::read_bundle(calibrated->bundle_dir);
  auto plain_bundle = model::read_bundle(plain->bundle_dir);
  ASSERT_TRUE(bundle.ok() && plain_bundle.ok());
  const Json& c = bundle->manifest["calibration"];
  ASSERT_TRUE(c.is_object()) << bundle->manifest.dump();
  EXPECT_FALSE(plain_bundle->manifest.contains("calibration"));
  EXPECT_EQ(c["method"], "temperature");
  EXPECT_EQ(c["fitted_on"], "val");
  const double t = c["temperature"];
  EXPECT_GT(t, kMinTemperature);
  EXPECT_LT(t, kMaxTemperature);
  EXPECT_LE(c["val_nll_after"].get<double>(), c["val_nll_before"].get<double>());
  EXPECT_EQ(c["val_ece_after"], calibrated->val_metrics["ece"]);
  EXPECT_EQ(bundle->manifest["metrics"]["test"], calibrated->test_metrics);

  // The served module (model.pt) gives the uncalibrated module's logits divided by T.
  auto snapshot = data::read_snapshot(breast_cancer_snapshot());
  ASSERT_TRUE(snapshot.ok());
  const torch::Tensor rows = snapshot->splits.at("test").served_inputs().to(torch::kFloat);
  auto served = torch::jit::load((calibrated->bundle_dir / model::kBundleModuleFile).string());
  auto plain_served = torch::jit::load((plain->bundle_dir / model::kBundleModuleFile).string());
  torch::NoGradGuard no_grad;
  const torch::Tensor got = served.forward({rows}).toTensor();
  const torch::Tensor want = plain_served.forward({rows}).toTensor() / t;
  EXPECT_TRUE(torch::allclose(got, want, 1e-4, 1e-5));
}

TEST(TrainerTest, EarlyStoppingStopsAndRestoresTheBestEpoch) {
  auto cfg =
      config_for(breast_cancer_snapshot(), kMlp,
                 {"epochs=40", "early_stopping={metric: val_loss, patience: 2, min_delta: 0.5}"});
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  TempDir dir;
  auto r = train(*cfg, TrainOptions(dir.path()).progress(nullptr).bundle(false));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->stopped_early);
  EXPECT_LT(r->epochs, 40);
  EXPECT_EQ(r->epochs, r->best_epoch + 2);
  EXPECT_TRUE(fs::exists(dir / "best.pt"));
  // The final val metrics are those of the best epoch's weights.
  EXPECT_NEAR(r->val_metrics["loss"].get<double>(),
              r->history[static_cast<size_t>(r->best_epoch - 1)]["val_loss"].get<double>(), 1e-9);
}

TEST(TrainerTest, SmallCnnLearnsFashionMnistSubsetWithBf16AndChannelsLast) {
  TempDir dir;
  auto cfg = config_for(source_dir() / "examples/fashion-mnist/dataset.yaml",
                        R"(model: {zoo: cnn-small, width: 16, hidden: 64}
optimizer: {name: adam, lr: 0.003}
batch_size: 64
epochs: 2
seed: 1
precision: auto
augment: {hflip: 0.5}
eval_tta: flip
)",
                        {"data.limit=2000"});
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  auto r = train(*cfg, TrainOptions(dir / "out").snapshot_dir(dir / "snapshots").progress(stderr));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->precision, cpu_supports_bf16() ? "bf16" : "fp32");
  EXPECT_GT(r->history.back()["val_accuracy"].get<double>(), 0.6) << r->history.back();
  EXPECT_GT(r->test_metrics["accuracy"].get<double>(), 0.6) << r->test_metrics;
  EXPECT_EQ(r->test_metrics["confusion_matrix"].size(), 10u);
  // The exported module takes raw pixels and folds the normalisation: same accuracy (fp32 vs
  // the bf16 evaluation: allow a few flips).
  auto bundle = model::read_bundle(r->bundle_dir);
  ASSERT_TRUE(bundle.ok()) << bundle.status();
  auto module = model::load_bundle_module(*bundle);
  ASSERT_TRUE(module.ok()) << module.status();
  auto snapshot = data::read_snapshot(dir / "snapshots" /
                                      fs::directory_iterator(dir / "snapshots")->path().filename());
  ASSERT_TRUE(snapshot.ok()) << snapshot.status();
  EvalOptions raw = eval_options_for(*snapshot);
  raw.normalize({}, {}).scale_uint8(false).tta("flip");
  auto scripted = evaluate([&](const torch::Tensor& x) { return module->forward({x}).toTensor(); },
                           snapshot->splits.at("test"), raw);
  ASSERT_TRUE(scripted.ok()) << scripted.status();
  EXPECT_NEAR((*scripted)["accuracy"].get<double>(), r->test_metrics["accuracy"].get<double>(),
              0.02);
}

}  // namespace
}  // namespace kiln::train
