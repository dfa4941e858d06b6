#include "kiln/train/config.h"

#include <gtest/gtest.h>

#include "support/test_support.h"

namespace kiln::train {
namespace {

using kiln::testing::TempDir;
using kiln::testing::write_text;

const char* kBase = R"(data: data/dataset.yaml
model: {zoo: mlp, hidden: [16]}
optimizer: {name: adamw, lr: 0.01}
epochs: 3
)";

Expected<TrainConfig> load(const TempDir& dir, const std::string& text,
                           const std::vector<std::string>& overrides = {}) {
  write_text(dir / "train.yaml", text);
  return load_train_config(dir / "train.yaml", overrides);
}

TEST(YamlToJsonTest, TypesPlainScalarsAndKeepsQuotedStrings) {
  std::map<std::string, int> lines;
  auto j = yaml_to_json("a: 1\nb: 0.5\nc: true\nd: '7'\ne: ~\nf: [1, x]\ng: {h: 1e-3}\n", &lines);
  ASSERT_TRUE(j.ok()) << j.status();
  EXPECT_TRUE((*j)["a"].is_number_integer());
  EXPECT_DOUBLE_EQ((*j)["b"].get<double>(), 0.5);
  EXPECT_EQ((*j)["c"], true);
  EXPECT_EQ((*j)["d"], "7");
  EXPECT_TRUE((*j)["e"].is_null());
  EXPECT_EQ((*j)["f"][1], "x");
  EXPECT_DOUBLE_EQ((*j)["g"]["h"].get<double>(), 1e-3);
  EXPECT_EQ(lines["g.h"], 7);
}

TEST(TrainConfigTest, ParsesWithDefaultsAndResolvesDataRelativeToTheFile) {
  TempDir dir;
  auto c = load(dir, kBase);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->data_path, dir / "data/dataset.yaml");
  EXPECT_EQ(c->optimizer.name, "adamw");
  EXPECT_DOUBLE_EQ(c->optimizer.weight_decay, 0.01);  // adamw default
  EXPECT_EQ(c->epochs, 3);
  EXPECT_EQ(c->batch_size, 128);
  EXPECT_EQ(c->precision, "auto");
  EXPECT_EQ(c->schedule.name, "constant");
  EXPECT_EQ(c->to_json()["model"]["zoo"], "mlp");
  EXPECT_EQ(c->hash().size(), 64u);
}

TEST(TrainConfigTest, DeviceIsCheckedButLeavesTheHashOfOtherConfigs) {
  TempDir dir;
  auto base = load(dir, kBase);
  ASSERT_TRUE(base.ok()) << base.status();
  EXPECT_EQ(base->device, "auto");
  EXPECT_FALSE(base->to_json().contains("device"));
  // A config for a GPU machine validates anywhere: the device is resolved when training starts.
  auto gpu = load(dir, std::string(kBase) + "device: cuda:1\n");
  ASSERT_TRUE(gpu.ok()) << gpu.status();
  EXPECT_EQ(gpu->device, "cuda:1");
  EXPECT_EQ(gpu->to_json()["device"], "cuda:1");
  EXPECT_NE(gpu->hash(), base->hash());
  auto bad = load(dir, std::string(kBase) + "device: cuda:one\n");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("line 5: device: \"cuda:one\" is not a device"),
            std::string::npos)
      << bad.status().message();
}

TEST(TrainConfigTest, EmaIsParsedCheckedAndHashedOnlyWhenOn) {
  TempDir dir;
  auto base = load(dir, kBase);
  ASSERT_TRUE(base.ok()) << base.status();
  EXPECT_FALSE(base->ema.enabled());
  EXPECT_FALSE(base->to_json().contains("ema"));
  auto off = load(dir, std::string(kBase) + "ema: {decay: 0}\n");
  ASSERT_TRUE(off.ok()) << off.status();
  EXPECT_EQ(off->hash(), base->hash());
  auto on = load(dir, std::string(kBase) + "ema: {decay: 0.999}\n", {"ema.warmup=false"});
  ASSERT_TRUE(on.ok()) << on.status();
  EXPECT_DOUBLE_EQ(on->ema.decay, 0.999);
  EXPECT_FALSE(on->ema.warmup);
  EXPECT_EQ(on->to_json()["ema"], (Json{{"decay", 0.999}, {"warmup", false}}));
  EXPECT_NE(on->hash(), base->hash());
  const std::pair<const char*, const char*> bad[] = {
      {"ema: {decay: 1}\n", "line 5: ema.decay: must be in [0, 1) (0: off), got 1"},
      {"ema: {decay: -0.5}\n", "ema.decay: must be in [0, 1)"},
      {"ema: {decya: 0.9}\n", "ema.decya: unknown key"},
      {"ema: 0.999\n", "line 5: ema: {decay: 0.999, warmup: true}"},
  };
  for (const auto& [yaml, expected] : bad) {
    auto r = load(dir, std::string(kBase) + yaml);
    ASSERT_FALSE(r.ok()) << yaml;
    EXPECT_NE(r.status().message().find(expected), std::string::npos) << r.status().message();
  }
  auto lbfgs = load(dir, std::string(kBase) + "ema: {decay: 0.9}\n", {"optimizer.name=lbfgs"});
  ASSERT_FALSE(lbfgs.ok());
  EXPECT_NE(lbfgs.status().message().find("ema: needs a minibatch optimizer"), std::string::npos)
      << lbfgs.status().message();
}

TEST(TrainConfigTest, AccumulateBatchesIsCheckedAndHashedOnlyAboveOne) {
  TempDir dir;
  auto base = load(dir, kBase);
  auto one = load(dir, std::string(kBase) + "accumulate_batches: 1\n");
  auto four = load(dir, kBase, {"accumulate_batches=4"});
  ASSERT_TRUE(base.ok() && one.ok() && four.ok());
  EXPECT_EQ(base->accumulate_batches, 1);
  EXPECT_EQ(one->hash(), base->hash());
  EXPECT_EQ(four->accumulate_batches, 4);
  EXPECT_EQ(four->to_json()["accumulate_batches"], 4);
  EXPECT_NE(four->hash(), base->hash());
  auto zero = load(dir, std::string(kBase) + "accumulate_batches: 0\n");
  ASSERT_FALSE(zero.ok());
  EXPECT_NE(zero.status().message().find("line 5: accumulate_batches: must be > 0"),
            std::string::npos)
      << zero.status().message();
  auto lbfgs = load(dir, kBase, {"accumulate_batches=2", "optimizer.name=lbfgs"});
  ASSERT_FALSE(lbfgs.ok());
  EXPECT_NE(lbfgs.status().message().find("accumulate_batches: lbfgs is full batch"),
            std::string::npos)
      << lbfgs.status().message();
}

TEST(TrainConfigTest, DistillIsParsedHashedAndChecked) {
  TempDir dir;
  const std::string hash_without = load(dir, kBase)->hash();
  auto c = load(dir, std::string(kBase) + "distill: {teacher: fm@production, alpha: 0.5}\n");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->distill.teachers, std::vector<std::string>{"fm@production"});
  EXPECT_DOUBLE_EQ(c->distill.temperature, 4.0);
  EXPECT_DOUBLE_EQ(c->distill.alpha, 0.5);
  EXPECT_EQ(c->to_json()["distill"]["teacher"], "fm@production");
  EXPECT_NE(c->hash(), hash_without);
  EXPECT_FALSE(load(dir, kBase)->to_json().contains("distill"));  // unset: the hash stays
  auto bad_alpha = load(dir, std::string(kBase) + "distill: {teacher: t, alpha: 1.5}\n");
  ASSERT_FALSE(bad_alpha.ok());
  EXPECT_NE(bad_alpha.status().message().find("distill.alpha"), std::string::npos);
  auto bad_t = load(dir, std::string(kBase) + "distill: {teacher: t, temperature: 0}\n");
  ASSERT_FALSE(bad_t.ok());
  EXPECT_NE(bad_t.status().message().find("distill.temperature"), std::string::npos);
  auto no_teacher = load(dir, std::string(kBase) + "distill: {alpha: 0.5}\n");
  ASSERT_FALSE(no_teacher.ok());
  EXPECT_NE(no_teacher.status().message().find("teacher"), std::string::npos);
}

TEST(TrainConfigTest, DistillFromAnEnsembleListsItsTeachers) {
  TempDir dir;
  auto c = load(dir, std::string(kBase) + "distill: {teacher: [fm@1, fm@2, fm@3]}\n");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->distill.teachers, (std::vector<std::string>{"fm@1", "fm@2", "fm@3"}));
  EXPECT_EQ(c->to_json()["distill"]["teacher"], Json::array({"fm@1", "fm@2", "fm@3"}));
  auto one = load(dir, std::string(kBase) + "distill: {teacher: [fm@1]}\n");
  ASSERT_TRUE(one.ok()) << one.status();
  // A list of one is the same run as the reference alone, so it hashes the same.
  EXPECT_EQ(one->hash(), load(dir, std::string(kBase) + "distill: {teacher: fm@1}\n")->hash());
  for (const char* bad : {"[]", "[fm@1, 3]", "['']", "{a: 1}"}) {
    auto b = load(dir, std::string(kBase) + "distill: {teacher: " + bad + "}\n");
    ASSERT_FALSE(b.ok()) << bad;
    EXPECT_NE(b.status().message().find("distill.teacher"), std::string::npos) << b.status();
  }
}

TEST(TrainConfigTest, UnknownTopLevelKeyIsNamedWithLineAndValidKeys) {
  TempDir dir;
  auto c = load(dir, std::string(kBase) + "epoch: 4\n");
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), StatusCode::kInvalidArgument);
  const std::string& m = c.status().message();
  EXPECT_NE(m.find("line 5"), std::string::npos) << m;
  EXPECT_NE(m.find("epoch: unknown key"), std::string::npos) << m;
  EXPECT_NE(m.find("batch_size"), std::string::npos) << m;  // lists the valid keys
}

TEST(TrainConfigTest, UnknownNestedKeyIsNamedByItsPath) {
  TempDir dir;
  auto c = load(dir, "data: d.yaml\nmodel: {zoo: mlp}\noptimizer:\n  name: sgd\n  lrr: 0.1\n");
  ASSERT_FALSE(c.ok());
  const std::string& m = c.status().message();
  EXPECT_NE(m.find("optimizer.lrr"), std::string::npos) << m;
  EXPECT_NE(m.find("line 5"), std::string::npos) << m;
  EXPECT_NE(m.find("momentum"), std::string::npos) << m;
}

TEST(TrainConfigTest, BadValuesNameTheField) {
  TempDir dir;
  struct Case {
    std::string yaml, field;
  } cases[] = {
      {"epochs: ten\n", "epochs"},
      {"optimizer: {name: rmsprop}\n", "optimizer.name"},
      {"schedule: {name: cosine, pct_start: 2}\n", "schedule.pct_start"},
      {"precision: fp16\n", "precision"},
      {"device: gpu\n", "device"},
      {"early_stopping: {metric: val_top5}\n", "early_stopping.metric"},
      {"augment: {hflip: 2}\n", "augment"},
      {"batch_size: 0\n", "batch_size"},
      {"model: {zoo: nosuchnet}\n", "model"},
      {"loss: {kind: hinge}\n", "loss"},
  };
  for (const auto& tc : cases) {
    // A later duplicate key would be a YAML error, so build the document without the base key.
    std::string text = "data: d.yaml\n";
    if (tc.yaml.rfind("model:", 0) != 0) text += "model: {zoo: mlp}\n";
    text += tc.yaml;
    auto c = load(dir, text);
    ASSERT_FALSE(c.ok()) << tc.yaml;
    EXPECT_EQ(c.status().code(), StatusCode::kInvalidArgument) << tc.yaml;
    EXPECT_NE(c.status().message().find(tc.field), std::string::npos)
        << tc.yaml << " -> " << c.status().message();
  }
}

TEST(TrainConfigTest, MissingDataOrModelIsAnError) {
  TempDir dir;
  auto c = load(dir, "model: {zoo: mlp}\n");
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("data"), std::string::npos);
  c = load(dir, "data: x.yaml\n");
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("model"), std::string::npos);
}

TEST(TrainConfigTest, SetOverridesApplyBeforeValidation) {
  TempDir dir;
  auto c =
      load(dir, kBase,
           {"epochs=7", "optimizer.lr=0.5", "optimizer.betas=[0.8, 0.9]", "schedule.name=one_cycle",
            "schedule.max_lr=0.2", "precision=bf16", "model.hidden=[8, 4]"});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->epochs, 7);
  EXPECT_DOUBLE_EQ(c->optimizer.lr, 0.5);
  EXPECT_DOUBLE_EQ(c->optimizer.betas[0], 0.8);
  EXPECT_EQ(c->schedule.name, "one_cycle");
  EXPECT_DOUBLE_EQ(c->schedule.max_lr, 0.2);
  EXPECT_EQ(c->precision, "bf16");
  EXPECT_EQ(c->model["hidden"], Json::parse("[8, 4]"));
  auto limited = load(dir, kBase, {"data.limit=100"});  // `data: PATH` takes a limit too
  ASSERT_TRUE(limited.ok()) << limited.status();
  EXPECT_EQ(limited->data_limit, 100);
  EXPECT_EQ(limited->data_path, dir / "data/dataset.yaml");
  auto d = load(dir, "data: {path: d.yaml, limit: 50}\nmodel: {zoo: mlp}\n", {"data.limit=100"});
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->data_limit, 100);
  EXPECT_EQ(d->data, "d.yaml");
}

// data.features (a table spec's selection and PCA, over the spec's own) is read with the spec's
// rules, named with its line when wrong, reachable by --set through the `data: PATH` shorthand,
// and in the config's hash only when given.
TEST(TrainConfigTest, DataFeaturesAreCheckedAndHashedOnlyWhenGiven) {
  TempDir dir;
  auto base = load(dir, kBase);
  ASSERT_TRUE(base.ok()) << base.status();
  EXPECT_TRUE(base->data_features.is_null());
  EXPECT_FALSE(base->to_json()["data"].contains("features"));
  auto pca = load(dir, kBase, {"data.features.pca.n_components=8"});
  ASSERT_TRUE(pca.ok()) << pca.status();
  EXPECT_EQ(pca->data_features, Json::parse(R"({"pca": {"n_components": 8}})"));
  EXPECT_EQ(pca->to_json()["data"]["features"]["pca"]["n_components"], 8);
  EXPECT_NE(pca->hash(), base->hash());
  auto bad = load(dir,
                  "data:\n  path: d.yaml\n  features:\n    pca: {n_components: 2.5}\n"
                  "model: {zoo: mlp}\n");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(
      bad.status().message().find("data.features.pca.n_components: must be an integer, at least 1"),
      std::string::npos)
      << bad.status().message();
  EXPECT_NE(bad.status().message().find("line 4"), std::string::npos) << bad.status().message();
  auto unknown = load(dir, kBase, {"data.features.selection=3"});
  ASSERT_FALSE(unknown.ok());
  EXPECT_NE(unknown.status().message().find("data.features.selection: unknown field"),
            std::string::npos)
      << unknown.status().message();
}

TEST(TrainConfigTest, SetOverrideErrorsNameTheOverride) {
  TempDir dir;
  auto c = load(dir, kBase, {"epochs"});
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("--set epochs"), std::string::npos);
  c = load(dir, kBase, {"bogus.x=1"});
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("bogus"), std::string::npos) << c.status();
  c = load(dir, kBase, {"epochs.x=1"});
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("epochs is not a mapping"), std::string::npos) << c.status();
  c = load(dir, kBase, {"epochs=-1"});
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("epochs"), std::string::npos);
}

TEST(TrainConfigTest, HashFollowsTheSettings) {
  TempDir dir;
  auto a = load(dir, kBase);
  auto b = load(dir, kBase);
  auto c = load(dir, kBase, {"seed=1"});
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  EXPECT_EQ(a->hash(), b->hash());
  EXPECT_NE(a->hash(), c->hash());
}

}  // namespace
}  // namespace kiln::train
