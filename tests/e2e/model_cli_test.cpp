// Drives the real `kiln` binary: `kiln model summary`.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "support/test_support.h"

namespace kiln {
namespace {

using testing::CommandResult;
using testing::run_kiln;
using testing::source_dir;
using testing::TempDir;
using testing::write_text;
using Json = nlohmann::json;

TEST(ModelCliTest, SummaryOfPeerCnnFileAndZooName) {
  TempDir home;
  std::string peer = (source_dir() / "examples/fashion-mnist/peer-cnn-model.yaml").string();
  CommandResult r =
      run_kiln({"model", "summary", peer, "--input", "1,28,28", "--outputs", "10"}, home.path());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("421,642"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("[64,7,7]"), std::string::npos) << r.out;

  r = run_kiln({"model", "summary", peer, "--json"}, home.path());  // defaults: 1,28,28 and 10
  ASSERT_EQ(r.exit_code, 0) << r.err;
  Json j = Json::parse(r.out);
  EXPECT_EQ(j["total_params"], 421642);
  EXPECT_EQ(j["layers"].size(), 10u);

  r = run_kiln(
      {"model", "summary", "resnet-small", "--input", "3,32,32", "--outputs", "100", "--json"},
      home.path());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  j = Json::parse(r.out);
  EXPECT_EQ(j["name"], "resnet-small");
  EXPECT_EQ(j["layers"].back()["output_shape"], Json::parse("[100]"));
}

TEST(ModelCliTest, BadSpecsExitTwoWithTheMessage) {
  TempDir home;
  write_text(home / "bad.yaml", "model:\n  layers:\n    - {type: conv3d, out: 4}\n");
  CommandResult r = run_kiln({"model", "summary", (home / "bad.yaml").string()}, home.path());
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("kiln: error: "), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("model.layers[0].type: unknown layer 'conv3d' (valid: "), std::string::npos)
      << r.err;

  r = run_kiln({"model", "summary", "cnn-small", "--input", "30"}, home.path());
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("layer 0 (conv2d): expects an image input [C,H,W], got shape [30]"),
            std::string::npos)
      << r.err;

  r = run_kiln({"model", "summary", "vgg16"}, home.path());
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("mlp, cnn-small, resnet-small"), std::string::npos) << r.err;

  r = run_kiln({"model", "summary", "mlp", "--input", "3,x"}, home.path());
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("--input"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace kiln
