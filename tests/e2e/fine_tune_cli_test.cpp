// `kiln train --init REF`: fine-tuning from a registered model, with a frozen layer and a
// learning-rate group; the bundle's lineage names the parent version and the registry records
// it on push. Bad references and layer names are clear errors.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "support/test_support.h"

namespace kiln {
namespace {

using testing::example;
using testing::run_kiln;
using testing::TempDir;
using Json = nlohmann::json;

TEST(FineTuneCliTest, InitFromARegisteredVersionFreezesAndRecordsTheParent) {
  TempDir home;
  const auto parent = testing::train_breast_cancer_bundle(home.path(), home / "parent");
  ASSERT_EQ(run_kiln({"registry", "push", parent.string(), "--name", "bc"}, home.path()).exit_code,
            0);
  ASSERT_EQ(run_kiln({"registry", "alias", "set", "bc", "production", "1"}, home.path()).exit_code,
            0);
  auto r = run_kiln({"train", example("breast-cancer/train.yaml"), "--out",
                     (home / "child").string(), "--init", "bc@production", "--set", "freeze=[1]",
                     "--set", "param_groups=[{layers: [3], lr_scale: 2}]", "--set", "epochs=3"},
                    home.path());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("init from bc@1: loaded 4 tensors, re-initialised 0, new 0, dropped 0"),
            std::string::npos)
      << r.err;
  EXPECT_NE(r.err.find("frozen 3100"), std::string::npos) << r.err;
  const Json manifest =
      Json::parse(testing::read_text(home / "child" / "bundle" / "manifest.json"));
  EXPECT_EQ(manifest["lineage"]["parent"], "bc@1");
  EXPECT_EQ(manifest["training"]["init"], "bc@production");
  ASSERT_EQ(run_kiln({"registry", "push", (home / "child" / "bundle").string(), "--name", "bc"},
                     home.path())
                .exit_code,
            0);
  auto shown = run_kiln({"registry", "show", "bc@2", "--json"}, home.path());
  ASSERT_EQ(shown.exit_code, 0) << shown.err;
  EXPECT_EQ(Json::parse(shown.out)["lineage"]["parent"], "bc@1") << shown.out;

  auto bad = run_kiln({"train", example("breast-cancer/train.yaml"), "--out",
                       (home / "bad").string(), "--init", "bc@production", "--set", "freeze=[2]"},
                      home.path());
  EXPECT_EQ(bad.exit_code, 2) << bad.err;
  EXPECT_NE(
      bad.err.find("freeze: '2' names no layer with parameters (layers with parameters: 1, 3)"),
      std::string::npos)
      << bad.err;
  auto missing = run_kiln({"train", example("breast-cancer/train.yaml"), "--out",
                           (home / "missing").string(), "--init", "nobody@3"},
                          home.path());
  EXPECT_NE(missing.exit_code, 0);
  EXPECT_NE(missing.err.find("init: "), std::string::npos) << missing.err;
}

}  // namespace
}  // namespace kiln
