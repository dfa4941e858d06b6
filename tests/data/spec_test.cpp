#include "kiln/data/spec.h"

#include <gtest/gtest.h>

#include "support/test_support.h"

namespace kiln::data {
namespace {

using kiln::testing::source_dir;
using kiln::testing::TempDir;
using kiln::testing::write_text;

Status load_text(const std::string& yaml) {
  TempDir dir;
  write_text(dir / "dataset.yaml", yaml);
  return load_dataset_spec(dir / "dataset.yaml").status();
}

TEST(SpecTest, ShippedExamplesLoad) {
  for (const char* example :
       {"fashion-mnist/dataset.yaml", "breast-cancer/dataset.yaml", "breast-cancer/dirty.yaml",
        "diabetes/dataset.yaml", "breast-cancer/dataset-sklearn-split.yaml",
        "diabetes/dataset-sklearn-split.yaml"}) {
    auto spec = load_dataset_spec(source_dir() / "examples" / example);
    ASSERT_TRUE(spec.ok()) << example << ": " << spec.status();
  }
  auto fm = load_dataset_spec(source_dir() / "examples/fashion-mnist/dataset.yaml");
  EXPECT_EQ(fm->kind, DatasetKind::kImages);
  EXPECT_EQ(fm->classes.size(), 10u);
  EXPECT_EQ(fm->image_splits.size(), 2u);
  auto bc = load_dataset_spec(source_dir() / "examples/breast-cancer/dirty.yaml");
  EXPECT_EQ(bc->cleaning.ragged, RaggedPolicy::kDrop);
  EXPECT_TRUE(fs::exists(bc->sources[0])) << bc->sources[0];
}

TEST(SpecTest, CategoriesColumnsAreReadAndRecordedOnlyWhenGiven) {
  TempDir dir;
  write_text(dir / "dataset.yaml",
             "kind: table\nsources: [a.csv]\ntarget: y\ncategories: {columns: [sex, region]}\n");
  auto spec = load_dataset_spec(dir / "dataset.yaml");
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->categorical_columns, (std::vector<std::string>{"sex", "region"}));
  EXPECT_EQ(spec->to_json()["categories"], Json({{"columns", {"sex", "region"}}}));
  spec->categorical_columns.clear();
  EXPECT_FALSE(spec->to_json().contains("categories"));
}

TEST(SpecTest, TargetEncodedColumnsAreReadAndRecordedOnlyWhenGiven) {
  TempDir dir;
  write_text(dir / "dataset.yaml",
             "kind: table\nsources: [a.csv]\ntarget: y\ncategories: {target_encode: [zip]}\n");
  auto spec = load_dataset_spec(dir / "dataset.yaml");
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->target_encoded_columns, (std::vector<std::string>{"zip"}));
  EXPECT_EQ(spec->to_json()["categories"], Json({{"target_encode", {"zip"}}}));
  write_text(dir / "bad.yaml",
             "kind: table\nsources: [a.csv]\ntarget: y\ncategories: {target_encode: {zip: 1}}\n");
  auto bad = load_dataset_spec(dir / "bad.yaml");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("categories.target_encode"), std::string::npos)
      << bad.status();
  // A numeric smooth: recorded when given; negative, or without columns to encode, refused.
  write_text(dir / "smooth.yaml",
             "kind: table\nsources: [a.csv]\ntarget: y\ncategories: {target_encode: [zip], "
             "target_smooth: 20}\n");
  auto smooth = load_dataset_spec(dir / "smooth.yaml");
  ASSERT_TRUE(smooth.ok()) << smooth.status();
  EXPECT_EQ(smooth->target_smooth, 20);
  EXPECT_EQ(smooth->to_json()["categories"]["target_smooth"], 20);
  EXPECT_FALSE(spec->to_json()["categories"].contains("target_smooth"));
  for (const char* categories :
       {"{target_encode: [zip], target_smooth: -1}", "{target_smooth: 5}"}) {
    write_text(
        dir / "bad_smooth.yaml",
        std::string("kind: table\nsources: [a.csv]\ntarget: y\ncategories: ") + categories + "\n");
    auto refused = load_dataset_spec(dir / "bad_smooth.yaml");
    ASSERT_FALSE(refused.ok()) << categories;
    EXPECT_NE(refused.status().message().find("line 4: categories.target_smooth"),
              std::string::npos)
        << refused.status();
  }
}

TEST(SpecTest, FeatureSelectionAndPcaAreReadWithTheirErrorsNamed) {
  TempDir dir;
  write_text(dir / "dataset.yaml",
             "kind: table\nsources: [a.csv]\ntarget: y\n"
             "features: {variance_threshold: 0.5, pca: {variance_fraction: 0.9, whiten: true}}\n");
  auto spec = load_dataset_spec(dir / "dataset.yaml");
  ASSERT_TRUE(spec.ok()) << spec.status();
  ASSERT_TRUE(spec->variance_threshold && spec->pca);
  EXPECT_EQ(spec->variance_threshold->threshold_, 0.5);
  EXPECT_EQ(spec->pca->variance_fraction_, 0.9);
  EXPECT_TRUE(spec->pca->whiten_);
  EXPECT_EQ(spec->to_json()["features"]["pca"]["variance_fraction"], 0.9);
  const std::string head = "kind: table\nsources: [a.csv]\ntarget: y\nfeatures:\n";
  for (const auto& [yaml, says] : std::vector<std::pair<std::string, std::string>>{
           {"  variance_threshold: -1\n",
            "line 5: features.variance_threshold: must be a finite number"},
           {"  pca: {n_components: 0}\n",
            "features.pca.n_components: must be an integer, at least 1"},
           {"  pca: {variance_fraction: 1.5}\n", "features.pca.variance_fraction: must satisfy"},
           {"  pca: {n_components: 3, variance_fraction: 0.9}\n", "not both"},
           {"  pca: {components: 3}\n", "features.pca.components: unknown field"},
           {"  selection: 3\n", "features.selection: unknown field"}}) {
    const Status st = load_text(head + yaml);
    EXPECT_NE(st.message().find(says), std::string::npos) << yaml << " -> " << st;
  }
}

TEST(SpecTest, UnknownFieldNamesLineAndField) {
  Status st =
      load_text("name: x\nkind: table\nsources: [a.csv]\ntarget: y\ncleaning:\n  mising: drop\n");
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("line 6"), std::string::npos) << st;
  EXPECT_NE(st.message().find("cleaning.mising"), std::string::npos) << st;
}

TEST(SpecTest, BadValuesAreNamed) {
  Status st = load_text("kind: table\nsources: [a.csv]\ntarget: y\ncleaning: {missing: guess}\n");
  EXPECT_NE(st.message().find("cleaning.missing"), std::string::npos) << st;
  EXPECT_NE(st.message().find("median"), std::string::npos) << st;
  st = load_text(
      "kind: table\nsources: [a.csv]\ntarget: y\nsplit: {train: 0.5, val: 0.1, test: 0.1}\n");
  EXPECT_NE(st.message().find("sum to 1"), std::string::npos) << st;
  st = load_text("kind: table\nsources: [a.csv]\n");
  EXPECT_NE(st.message().find("target"), std::string::npos) << st;
  st = load_text(
      "kind: table\nsources: [a.csv]\ntarget: y\n"
      "split: {method: sklearn, stratify: true, train: 0.8, val: 0, test: 0.2}\n");
  EXPECT_NE(st.message().find("split.stratify"), std::string::npos) << st;
  st = load_text("kind: table\nsources: [a.csv]\ntarget: y\nsplit: {method: numpy}\n");
  EXPECT_NE(st.message().find("split.method"), std::string::npos) << st;
  EXPECT_NE(st.message().find("sklearn"), std::string::npos) << st;
  st = load_text("kind: table\nsources: [a.csv]\ntarget: y\ncategories: {min_frequency: 0}\n");
  EXPECT_NE(st.message().find("line 4"), std::string::npos) << st;
  EXPECT_NE(st.message().find("categories.min_frequency: must be at least 1"), std::string::npos)
      << st;
  st = load_text("kind: table\nsources: [a.csv]\ntarget: y\ncategories: {columns: {sex: 1}}\n");
  EXPECT_NE(st.message().find("categories.columns"), std::string::npos) << st;
  st = load_text("kind: table\nsources: [a.csv]\ntarget: y\ncategories: {max: 3}\n");
  EXPECT_NE(st.message().find("categories.max"), std::string::npos) << st;
  st = load_text("kind: images\nsplits: {train: {images: a}}\n");
  EXPECT_NE(st.message().find("labels"), std::string::npos) << st;
  st = load_text("kind: [oops\n");
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("invalid YAML"), std::string::npos) << st;
}

TEST(SpecTest, ResolveChoosesByExtension) {
  EXPECT_EQ(resolve_dataset("data.txt", "").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(resolve_dataset("missing.csv", "y").status().code(), StatusCode::kNotFound);
  auto st = resolve_dataset((kiln::testing::shared_datasets_dir() / "diabetes.csv").string(), "");
  EXPECT_NE(st.status().message().find("--target"), std::string::npos);
  EXPECT_EQ(load_dataset_spec("/nonexistent/dataset.yaml").status().code(), StatusCode::kNotFound);
}

TEST(SpecTest, HashedFormHasNoMachinePaths) {
  auto spec = load_dataset_spec(source_dir() / "examples/breast-cancer/dataset.yaml");
  std::string text = spec->to_json().dump();
  EXPECT_EQ(text.find(source_dir().string()), std::string::npos);
  EXPECT_NE(text.find("breast_cancer.csv"), std::string::npos);
}

}  // namespace
}  // namespace kiln::data
