// `kiln compress REF --quantize int8`: a real Fashion-MNIST CNN quantised into a new bundle whose
// model.pt is the int8 module with its own test metrics (what `kiln eval` measures again), about
// a quarter of the float module's size, its parent in the lineage; served by a real `kiln serve`
// and passed by `kiln test`. Bad references and options are clear errors.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "serve_helpers.h"
#include "support/test_support.h"

namespace kiln {
namespace {

using testing::example;
using testing::HttpClient;
using testing::HttpResult;
using testing::run_kiln;
using testing::ServerProcess;
using testing::TempDir;
using Json = nlohmann::json;
namespace fs = std::filesystem;

TEST(CompressCliTest, Int8BundleIsSmallerAccurateServedAndTested) {
  TempDir home;
  auto trained = run_kiln({"train", example("fashion-mnist/cnn.yaml"), "--out",
                           (home / "cnn").string(), "--set", "data.limit=3000", "--set", "epochs=2",
                           "--set", "model.width=16", "--set", "model.hidden=32"},
                          home.path(), {"KILN_THREADS=1"});
  ASSERT_EQ(trained.exit_code, 0) << trained.err;
  ASSERT_EQ(run_kiln({"registry", "push", (home / "cnn").string(), "--name", "fm"}, home.path())
                .exit_code,
            0);
  auto r = run_kiln({"compress", "fm@1", "--quantize", "int8", "--calibration-rows", "300",
                     "--timing-seconds", "0.2", "--out", (home / "int8").string(), "--json"},
                    home.path(), {"KILN_THREADS=1"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const Json report = Json::parse(r.out);
  EXPECT_EQ(report["parent"], "fm@1");
  EXPECT_EQ(report["quantize"], "int8");
  EXPECT_EQ(report["calibration"]["rows"], 300);
  EXPECT_NE(r.err.find("int8: 4 layers quantised"), std::string::npos) << r.err;
  const double before = report["before"]["test"]["accuracy"].get<double>();
  const double after = report["after"]["test"]["accuracy"].get<double>();
  EXPECT_GT(after, 0.6);
  EXPECT_NEAR(after, before, 0.03);
  EXPECT_GT(report["after"]["samples_per_s"]["batch_64"].get<double>(), 0);

  // The bundle: int8 model.pt with its own metrics, the parent in its lineage, a quarter-ish of
  // the float module's size.
  const auto bundle = home / "int8";
  const Json manifest = Json::parse(testing::read_text(bundle / "manifest.json"));
  EXPECT_EQ(manifest["lineage"]["parent"], "fm@1");
  EXPECT_EQ(manifest["compression"]["quantize"], "int8");
  EXPECT_EQ(manifest["metrics"]["test"]["accuracy"].get<double>(), after);
  EXPECT_FALSE(manifest.contains("precisions"));
  const auto float_bytes = fs::file_size(home / "cnn" / "bundle" / "model.pt");
  const auto int8_bytes = fs::file_size(bundle / "model.pt");
  EXPECT_LT(int8_bytes, float_bytes / 2) << int8_bytes << " vs " << float_bytes;

  // kiln eval of the new bundle measures its own module: the recorded figure, exactly.
  // (on the snapshot it was compressed on: the one the parent was trained on, data.limit=3000)
  const std::string hash = manifest["lineage"]["snapshot_hash"].get<std::string>().substr(0, 12);
  fs::path snapshot;
  for (const auto& entry : fs::directory_iterator(home / "snapshots"))
    if (entry.path().filename().string().find(hash) != std::string::npos) snapshot = entry.path();
  ASSERT_FALSE(snapshot.empty());
  auto eval =
      run_kiln({"eval", bundle.string(), "--data", snapshot.string(), "--json"}, home.path());
  ASSERT_EQ(eval.exit_code, 0) << eval.err;
  EXPECT_EQ(Json::parse(eval.out)["accuracy"].get<double>(), after);

  // Pushed and served like any bundle.
  ASSERT_EQ(run_kiln({"registry", "push", bundle.string(), "--name", "fm"}, home.path()).exit_code,
            0);
  auto shown = run_kiln({"registry", "show", "fm@2", "--json"}, home.path());
  EXPECT_EQ(Json::parse(shown.out)["lineage"]["parent"], "fm@1") << shown.out;
  ServerProcess server({"--model", "fm@2"}, home.path(), home / "serve.log");
  ASSERT_TRUE(server.ready()) << server.log();
  EXPECT_NE(server.log().find("an int8 module on oneDNN's quantised operators"), std::string::npos)
      << server.log();
  Json data = Json::array();
  for (int i = 0; i < 2 * 784; ++i) data.push_back((i * 13) % 256);
  HttpResult infer =
      HttpClient(server.port())
          .post("/v2/models/fm/infer", Json{{"inputs", Json::array({Json{{"name", "input"},
                                                                         {"shape", {2, 1, 28, 28}},
                                                                         {"datatype", "FP32"},
                                                                         {"data", data}}})},
                                            {"outputs", Json::array({Json{{"name", "labels"}}})}}
                                           .dump());
  ASSERT_EQ(infer.status, 200) << infer.body;
  EXPECT_EQ(Json::parse(infer.body)["outputs"][0]["shape"], Json::array({2}));

  // The default model-test suite passes on it (the rebuild check knows it is compressed).
  // (One thread: oneDNN's int8 operators on two OpenMP threads stall on a loaded machine, and
  // the suite's latency check would measure that.)
  auto tested = run_kiln({"test", bundle.string(), "--json"}, home.path(), {"KILN_THREADS=1"});
  EXPECT_EQ(tested.exit_code, 0) << tested.out << tested.err;

  // Structured pruning: half the channels of every hidden layer, fine-tuned for two epochs with
  // the model's own recipe; then quantised as well. (A toy: the parent saw 3,000 images for two
  // epochs; the full-size figures are in docs/benchmarks.md.)
  auto pruned = run_kiln({"compress", "fm@1", "--prune", "0.5", "--fine-tune-epochs", "2",
                          "--timing-seconds", "0", "--out", (home / "pruned").string(), "--json"},
                         home.path(), {"KILN_THREADS=1"});
  ASSERT_EQ(pruned.exit_code, 0) << pruned.err;
  const Json prune_report = Json::parse(pruned.out);
  const Json& p = prune_report["prune"];
  EXPECT_EQ(p["layers"].size(), 3u);
  EXPECT_LT(p["flops_after"].get<double>(), 0.5 * p["flops_before"].get<double>());
  EXPECT_LT(p["params_after"].get<double>(), 0.5 * p["params_before"].get<double>());
  EXPECT_GT(prune_report["after"]["test"]["accuracy"].get<double>(), before - 0.1);
  const Json pruned_manifest = Json::parse(testing::read_text(home / "pruned" / "manifest.json"));
  EXPECT_EQ(pruned_manifest["model"]["layers"][0]["out"], 8);  // width 16 -> 8
  EXPECT_EQ(pruned_manifest["lineage"]["parent"], "fm@1");
  auto both =
      run_kiln({"compress", (home / "pruned").string(), "--quantize", "int8", "--timing-seconds",
                "0", "--out", (home / "pruned-int8").string(), "--json"},
               home.path(), {"KILN_THREADS=1"});
  ASSERT_EQ(both.exit_code, 0) << both.err;
  const Json both_report = Json::parse(both.out);
  EXPECT_EQ(both_report["quantize"], "int8");
  EXPECT_EQ(both_report["prune"]["ratio"], 0.5);  // the pruning report carries over
  EXPECT_LT(fs::file_size(home / "pruned-int8" / "model.pt"), int8_bytes);
  // An accuracy budget: the strongest candidate within it (here a generous one: the first).
  auto budget = run_kiln({"compress", "fm@1", "--max-drop", "50", "--fine-tune-epochs", "1",
                          "--timing-seconds", "0", "--out", (home / "budget").string(), "--json"},
                         home.path(), {"KILN_THREADS=1"});
  ASSERT_EQ(budget.exit_code, 0) << budget.err;
  const Json budget_report = Json::parse(budget.out);
  EXPECT_EQ(budget_report["budget"]["chosen"], "prune 0.75 + int8") << budget.out;
  EXPECT_EQ(budget_report["budget"]["tried"].size(), 1u);
  EXPECT_NE(budget.err.find("budget: chose prune 0.75 + int8"), std::string::npos) << budget.err;
  const Json budget_manifest = Json::parse(testing::read_text(home / "budget" / "manifest.json"));
  EXPECT_EQ(budget_manifest["lineage"]["parent"], "fm@1");
  EXPECT_EQ(budget_manifest["compression"]["budget"]["max_drop_points"], 50.0);
  auto conflicting = run_kiln({"compress", "fm@1", "--max-drop", "1", "--prune", "0.5", "--out",
                               (home / "conflict").string()},
                              home.path());
  EXPECT_EQ(conflicting.exit_code, 2);
  EXPECT_NE(conflicting.err.find("either --max-drop or those"), std::string::npos)
      << conflicting.err;

  // Distillation: a narrower student trained on the teacher's softened outputs.
  testing::write_text(home / "student.yaml",
                      "model: {zoo: cnn-small, width: 8, hidden: 16}\nepochs: 2\nalpha: 0.5\n");
  auto distilled =
      run_kiln({"compress", "fm@1", "--distill", (home / "student.yaml").string(),
                "--timing-seconds", "0", "--out", (home / "student").string(), "--json"},
               home.path(), {"KILN_THREADS=1"});
  ASSERT_EQ(distilled.exit_code, 0) << distilled.err;
  const Json distill_report = Json::parse(distilled.out)["distill"];
  EXPECT_LT(distill_report["flops_after"].get<double>(),
            0.5 * distill_report["flops_before"].get<double>());
  EXPECT_EQ(distill_report["alpha"], 0.5);
  // The teacher teaches as it is served: its flip TTA's logits.
  EXPECT_EQ(distill_report["teacher_tta"], "flip");
  EXPECT_NE(distilled.err.find("the teacher as served, with its flip test-time augmentation"),
            std::string::npos)
      << distilled.err;
  EXPECT_NE(distilled.err.find("distill: training the student"), std::string::npos)
      << distilled.err;
  const Json student_manifest = Json::parse(testing::read_text(home / "student" / "manifest.json"));
  EXPECT_EQ(student_manifest["lineage"]["teacher"], "fm@1");
  EXPECT_EQ(student_manifest["lineage"]["parent"], "fm@1");
  EXPECT_FALSE(student_manifest["lineage"].contains("teachers"));
  EXPECT_EQ(distill_report["teachers"], Json::array({"fm@1"}));
  // (22 optimizer steps on 2,700 images: far above chance, far from trained.)
  EXPECT_GT(student_manifest["metrics"]["test"]["accuracy"].get<double>(), 0.3);
  // An ensemble teacher: the student learns the mean of fm@1's and the pruned model's outputs.
  auto ensemble = run_kiln({"compress", "fm@1", "--distill", (home / "student.yaml").string(),
                            "--ensemble", (home / "pruned").string(), "--timing-seconds", "0",
                            "--out", (home / "ensemble-student").string(), "--json"},
                           home.path(), {"KILN_THREADS=1"});
  ASSERT_EQ(ensemble.exit_code, 0) << ensemble.err;
  const Json teachers = Json::array({"fm@1", (home / "pruned").string()});
  EXPECT_EQ(Json::parse(ensemble.out)["distill"]["teachers"], teachers);
  EXPECT_NE(ensemble.err.find("on the mean of 2 teachers' softened outputs, [\"fm@1\""),
            std::string::npos)
      << ensemble.err;
  const Json ensemble_manifest =
      Json::parse(testing::read_text(home / "ensemble-student" / "manifest.json"));
  EXPECT_EQ(ensemble_manifest["lineage"]["teachers"], teachers);
  EXPECT_EQ(ensemble_manifest["lineage"]["teacher"], "fm@1");
  EXPECT_GT(ensemble_manifest["metrics"]["test"]["accuracy"].get<double>(), 0.3);
  auto unknown_teacher =
      run_kiln({"compress", "fm@1", "--distill", (home / "student.yaml").string(), "--ensemble",
                "nobody@1", "--out", (home / "bad").string()},
               home.path());
  EXPECT_NE(unknown_teacher.exit_code, 0);
  EXPECT_NE(unknown_teacher.err.find("--ensemble nobody@1"), std::string::npos)
      << unknown_teacher.err;
  testing::write_text(home / "bad-student.yaml", "modle: {zoo: mlp}\n");
  auto bad_student =
      run_kiln({"compress", "fm@1", "--distill", (home / "bad-student.yaml").string(), "--out",
                (home / "bad").string()},
               home.path());
  EXPECT_EQ(bad_student.exit_code, 2);
  EXPECT_NE(bad_student.err.find("needs 'model:'"), std::string::npos) << bad_student.err;

  auto again = run_kiln({"compress", (home / "pruned-int8").string(), "--quantize", "int8", "--out",
                         (home / "twice").string()},
                        home.path());
  EXPECT_EQ(again.exit_code, 2);
  EXPECT_NE(again.err.find("already quantised"), std::string::npos) << again.err;
}

TEST(CompressCliTest, BadInputIsNamed) {
  TempDir home;
  auto nothing = run_kiln({"compress", "nobody@1", "--out", (home / "x").string()}, home.path());
  EXPECT_EQ(nothing.exit_code, 2) << nothing.err;
  EXPECT_NE(nothing.err.find("nothing to do (give --prune RATIO, --distill STUDENT.yaml"),
            std::string::npos)
      << nothing.err;
  auto lone_ensemble = run_kiln({"compress", "nobody@1", "--quantize", "int8", "--ensemble",
                                 "other@1", "--out", (home / "x").string()},
                                home.path());
  EXPECT_EQ(lone_ensemble.exit_code, 2) << lone_ensemble.err;
  EXPECT_NE(lone_ensemble.err.find("--ensemble adds teachers to --distill"), std::string::npos)
      << lone_ensemble.err;
  auto missing = run_kiln(
      {"compress", "nobody@1", "--quantize", "int8", "--out", (home / "x").string()}, home.path());
  EXPECT_NE(missing.exit_code, 0);
  EXPECT_NE(missing.err.find("nobody"), std::string::npos) << missing.err;
  auto bad = run_kiln({"compress", "x", "--quantize", "int4", "--out", (home / "x").string()},
                      home.path());
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_NE(bad.err.find("int4"), std::string::npos) << bad.err;
}

}  // namespace
}  // namespace kiln
