// Drives the real `kiln` binary on real data: the CLI contract of the data stage.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "support/test_support.h"

namespace kiln {
namespace {

using testing::CommandResult;
using testing::example;
using testing::fashion_mnist_dir;
using testing::read_text;
using testing::run_kiln;
using testing::shared_datasets_dir;
using testing::source_dir;
using testing::TempDir;
using testing::write_text;
using Json = nlohmann::json;
namespace fs = std::filesystem;

int count_lines(const std::string& s) {
  return static_cast<int>(std::count(s.begin(), s.end(), '\n'));
}

bool empty_or_absent(const fs::path& dir) { return !fs::exists(dir) || fs::is_empty(dir); }

TEST(CliTest, HelpAndVersion) {
  TempDir home;
  CommandResult r = run_kiln({"--help"}, home.path());
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_NE(r.out.find("data"), std::string::npos);
  r = run_kiln({"--version"}, home.path());
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_NE(r.out.find("kiln 0."), std::string::npos);
  r = run_kiln({"data", "--help"}, home.path());
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_NE(r.out.find("profile"), std::string::npos);
  EXPECT_NE(r.out.find("prepare"), std::string::npos);
  r = run_kiln({"data", "prepare", "--help"}, home.path());
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_NE(r.out.find("--out"), std::string::npos);
}

TEST(CliTest, UsageErrorsExitTwoWithOneLine) {
  TempDir home;
  for (const auto& args :
       std::vector<std::vector<std::string>>{{"data", "profile"},
                                             {"data", "profile", "x.csv", "--no-such-flag"},
                                             {"nosuchstage"},
                                             {"data", "profile", "x.csv", "--outlier-z", "-3"},
                                             {}}) {
    CommandResult r = run_kiln(args, home.path());
    EXPECT_EQ(r.exit_code, 2) << r.err;
    EXPECT_EQ(count_lines(r.err), 1) << r.err;
    EXPECT_NE(r.err.find("error"), std::string::npos) << r.err;
  }
}

TEST(CliTest, ProfileDirtyCsvReport) {
  TempDir home;
  fs::path report = home / "report.json";
  CommandResult r =
      run_kiln({"data", "profile", (shared_datasets_dir() / "breast_cancer_dirty.csv").string(),
                "--target", "diagnosis", "--report", report.string()},
               home.path());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("needs_cleaning"), std::string::npos);
  Json j = Json::parse(read_text(report));
  EXPECT_EQ(j["splits"]["all"]["rows"], 576);
  EXPECT_EQ(j["splits"]["all"]["class_counts"]["benign"], 361);
  EXPECT_EQ(j["issues"]["missing_cells"], 18);
  EXPECT_EQ(j["issues"]["non_numeric_cells"], 3);
  EXPECT_EQ(j["issues"]["duplicate_rows"], 7);
  EXPECT_EQ(j["issues"]["ragged_lines"], Json({226}));
  EXPECT_EQ(j["issues"]["outliers"].size(), 2u);
  // --json prints the same report.
  r = run_kiln({"data", "profile", (shared_datasets_dir() / "breast_cancer_dirty.csv").string(),
                "-t", "diagnosis", "--json"},
               home.path());
  ASSERT_EQ(r.exit_code, 0);
  EXPECT_EQ(Json::parse(r.out)["issues"], j["issues"]);
}

TEST(CliTest, ProfileBadInputExitsTwoNamingTheFile) {
  TempDir home;
  CommandResult r =
      run_kiln({"data", "profile", (home / "absent.csv").string(), "--target", "y"}, home.path());
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("absent.csv"), std::string::npos) << r.err;
  r = run_kiln({"data", "profile", (shared_datasets_dir() / "diabetes.csv").string()}, home.path());
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("--target"), std::string::npos) << r.err;
  r = run_kiln(
      {"data", "profile", (shared_datasets_dir() / "diabetes.csv").string(), "--target", "nope"},
      home.path());
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("diabetes.csv"), std::string::npos) << r.err;
  write_text(home / "empty.csv", "");
  r = run_kiln({"data", "profile", (home / "empty.csv").string(), "--target", "y"}, home.path());
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("empty.csv"), std::string::npos) << r.err;
  fs::create_directories(home / "dir.csv");
  r = run_kiln({"data", "profile", (home / "dir.csv").string(), "--target", "y"}, home.path());
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("dir.csv"), std::string::npos) << r.err;
}

TEST(CliTest, PrepareIsDeterministicAndContentAddressed) {
  TempDir home;
  std::string hashes[2];
  for (int i = 0; i < 2; ++i) {
    fs::path out = home / ("out" + std::to_string(i));
    CommandResult r = run_kiln(
        {"data", "prepare", example("breast-cancer/dirty.yaml"), "--out", out.string(), "--json"},
        home.path());
    ASSERT_EQ(r.exit_code, 0) << r.err;
    Json j = Json::parse(r.out);
    hashes[i] = j["content_hash"];
    fs::path snap = j["snapshot"].get<std::string>();
    EXPECT_EQ(snap.parent_path(), out);
    EXPECT_EQ(snap.filename().string(), "breast-cancer-dirty-" + hashes[i].substr(0, 12));
    EXPECT_TRUE(fs::exists(snap / "manifest.json"));
    EXPECT_EQ(j["cleaning"]["ragged_rejected"][0]["line"], 226);
  }
  EXPECT_EQ(hashes[0], hashes[1]);
  // Without --out the snapshot lands in $KILN_HOME/snapshots.
  CommandResult r = run_kiln({"data", "prepare", example("diabetes/dataset.yaml")}, home.path());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_FALSE(empty_or_absent(home / "snapshots"));
}

// --categorical makes a code column of a CSV given directly categorical, in prepare and profile;
// a column that is not there is named, exit 2.
TEST(CliTest, CategoricalFlagMakesACodeColumnACategory) {
  TempDir home;
  const std::string csv = (shared_datasets_dir() / "diabetes.csv").string();
  CommandResult r = run_kiln({"data", "prepare", csv, "-t", "disease_progression", "--categorical",
                              "sex", "--out", (home / "out").string(), "--json"},
                             home.path());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const fs::path snap = Json::parse(r.out)["snapshot"].get<std::string>();
  const Json manifest = Json::parse(read_text(snap / "manifest.json"));
  EXPECT_EQ(manifest["schema"]["features"][9]["name"], "sex");
  EXPECT_EQ(manifest["schema"]["features"][9]["categories"], Json({"1", "2"}));
  r = run_kiln(
      {"data", "profile", csv, "-t", "disease_progression", "--categorical", "sex", "--json"},
      home.path());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(Json::parse(r.out)["features"][1]["type"], "categorical");
  r = run_kiln({"data", "prepare", csv, "-t", "disease_progression", "--categorical", "gender"},
               home.path());
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("categories.columns names 'gender', which is not a column"),
            std::string::npos)
      << r.err;
}

// --target-encode target-encodes a column of a CSV given directly (number codes included), in
// prepare, profile and the quick path of train; `kiln train` without --data refuses it.
TEST(CliTest, TargetEncodeFlagTargetEncodesAColumn) {
  TempDir home;
  const std::string csv = (shared_datasets_dir() / "diabetes.csv").string();
  CommandResult r = run_kiln({"data", "prepare", csv, "-t", "disease_progression",
                              "--target-encode", "age", "--out", (home / "out").string(), "--json"},
                             home.path());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const fs::path snap = Json::parse(r.out)["snapshot"].get<std::string>();
  const Json manifest = Json::parse(read_text(snap / "manifest.json"));
  EXPECT_EQ(manifest["schema"]["features"][9]["name"], "age");
  EXPECT_EQ(manifest["schema"]["features"][9]["encoding"], "target");
  EXPECT_EQ(manifest["schema"]["output_features"], 10);
  r = run_kiln(
      {"data", "profile", csv, "-t", "disease_progression", "--target-encode", "age", "--json"},
      home.path());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(Json::parse(r.out)["features"][0]["type"], "categorical");
  r = run_kiln({"train", "--data", csv, "-t", "disease_progression", "--target-encode", "age",
                "--out", (home / "run").string()},
               home.path(), {"KILN_THREADS=1"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const Json bundle = Json::parse(read_text(home / "run" / "bundle" / "manifest.json"));
  EXPECT_EQ(bundle["preprocessing"]["categorical"][0]["column"], "age");
  EXPECT_TRUE(bundle["preprocessing"]["categorical"][0].contains("target_table"));
  r = run_kiln({"data", "prepare", csv, "-t", "disease_progression", "--target-encode", "gender",
                "--out", (home / "bad").string()},
               home.path());
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("categories.target_encode names 'gender', which is not a column"),
            std::string::npos)
      << r.err;
  EXPECT_TRUE(empty_or_absent(home / "bad"));  // nothing half-written
  r = run_kiln({"train", example("diabetes/train.yaml"), "--target-encode", "age"}, home.path());
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("--target-encode belongs to the quick path"), std::string::npos) << r.err;
}

// prepare says what feature selection and PCA did: the columns a threshold dropped, the share of
// the training variance the components keep.
TEST(CliTest, PrepareReportsFeatureSelectionAndPca) {
  TempDir home;
  write_text(home / "dataset.yaml",
             "name: bc\nkind: table\nsources: [" +
                 (shared_datasets_dir() / "breast_cancer.csv").string() +
                 "]\ntarget: diagnosis\n"
                 "features: {variance_threshold: 1.0, pca: {variance_fraction: 0.9}}\n");
  CommandResult r = run_kiln(
      {"data", "prepare", (home / "dataset.yaml").string(), "--out", (home / "out").string()},
      home.path());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  // Variance above 1 in its own units: the smoothness, concavity, symmetry ... columns drop.
  EXPECT_NE(r.out.find("features: variance_threshold kept "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("(dropped: mean_smoothness"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find(" components, 9"), std::string::npos) << r.out;  // 90-100% kept
  EXPECT_NE(r.out.find("% of the training variance"), std::string::npos) << r.out;
}

struct BadImageCase {
  std::string name;
  std::string images_bytes;  // "" keeps the real file
  std::string labels_bytes;
  std::string expect_in_error;
};

TEST(CliTest, PrepareBadImageInputsExitTwoWithoutPartialSnapshot) {
  TempDir home;
  const std::string real_images = read_text(fashion_mnist_dir() / "t10k-images-idx3-ubyte.gz");
  const std::string real_labels = read_text(fashion_mnist_dir() / "t10k-labels-idx1-ubyte.gz");
  std::string corrupt = real_labels;
  for (size_t i = 20; i < 60 && i < corrupt.size(); ++i)
    corrupt[i] = static_cast<char>(corrupt[i] ^ 0x5a);
  // Raw IDX labels with a wrong magic number; and 5 labels for 10000 images.
  std::string wrong_magic("\x00\x00\x09\x01\x00\x00\x00\x02\x01\x02", 10);
  std::string few_labels("\x00\x00\x08\x01\x00\x00\x00\x05\x01\x02\x03\x04\x05", 13);
  std::vector<BadImageCase> cases = {
      {"truncated", "", real_labels.substr(0, real_labels.size() / 2), "labels.gz"},
      {"corrupt", "", corrupt, "labels.gz"},
      {"magic", "", wrong_magic, "labels.gz"},
      {"mismatch", "", few_labels, "labels.gz"},
      {"empty", "", std::string(), "labels.gz"},
  };
  for (const auto& c : cases) {
    fs::path dir = home / c.name;
    write_text(dir / "labels.gz", c.labels_bytes);
    write_text(dir / "dataset.yaml",
               "name: bad\nkind: images\nroot: " + fashion_mnist_dir().string() +
                   "\nsplits:\n  train:\n    images: t10k-images-idx3-ubyte.gz\n    labels: " +
                   (dir / "labels.gz").string() + "\n");
    fs::path out = dir / "out";
    CommandResult r = run_kiln(
        {"data", "prepare", (dir / "dataset.yaml").string(), "--out", out.string()}, home.path());
    EXPECT_EQ(r.exit_code, 2) << c.name << ": " << r.err;
    EXPECT_NE(r.err.find(c.expect_in_error), std::string::npos) << c.name << ": " << r.err;
    EXPECT_EQ(count_lines(r.err), 1) << c.name << ": " << r.err;
    EXPECT_TRUE(empty_or_absent(out)) << c.name;
  }
  (void)real_images;
}

TEST(CliTest, PrepareCifarRecordOfWrongSizeExitsTwo) {
  TempDir home;
  std::string batch(3073 * 3 + 100, '\0');  // three whole records, then a truncated fourth
  write_text(home / "data_batch_1.bin", batch);
  write_text(home / "dataset.yaml",
             "name: cifar\nkind: images\nformat: cifar10\nsplits:\n  train:\n    batches: "
             "[data_batch_1.bin]\n");
  CommandResult r = run_kiln(
      {"data", "prepare", (home / "dataset.yaml").string(), "--out", (home / "out").string()},
      home.path());
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("data_batch_1.bin"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("record"), std::string::npos) << r.err;
  EXPECT_TRUE(empty_or_absent(home / "out"));
}

TEST(CliTest, PrepareBadCsvInputsExitTwo) {
  TempDir home;
  // Ragged rows with the default policy (error): every line listed, nothing written.
  write_text(home / "ragged.csv", "a,b,y\n1,2,x\n3,4\n5,6,z\n7,8,x,9\n");
  CommandResult r = run_kiln({"data", "prepare", (home / "ragged.csv").string(), "--target", "y",
                              "--out", (home / "out").string()},
                             home.path());
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("ragged.csv"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("3 (2 fields)"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("5 (4 fields)"), std::string::npos) << r.err;
  EXPECT_TRUE(empty_or_absent(home / "out"));
  // No target column.
  r = run_kiln({"data", "prepare", (shared_datasets_dir() / "breast_cancer.csv").string(),
                "--target", "label", "--out", (home / "out").string()},
               home.path());
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("'label'"), std::string::npos) << r.err;
  // Unterminated quote names the line.
  write_text(home / "quote.csv", "a,y\n1,x\n\"2,y\n");
  r = run_kiln({"data", "prepare", (home / "quote.csv").string(), "--target", "y", "--out",
                (home / "out").string()},
               home.path());
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("quote.csv"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("3"), std::string::npos) << r.err;
  EXPECT_TRUE(empty_or_absent(home / "out"));
}

}  // namespace
}  // namespace kiln
