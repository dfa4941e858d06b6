// The two binaries behind `kiln` (cli/commands.h): the front links no LibTorch and runs the
// tensor-free verbs itself; everything else reaches kiln-engine with its command line intact.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

#include "support/test_support.h"

namespace kiln {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;
using testing::CommandResult;
using testing::kiln_binary;
using testing::run_kiln;
using testing::shared_datasets_dir;
using testing::TempDir;

std::string command_output(const std::string& command) {
  std::string out;
  FILE* p = ::popen(command.c_str(), "r");
  if (p == nullptr) return out;
  char buf[4096];
  for (size_t n; (n = std::fread(buf, 1, sizeof buf, p)) > 0;) out.append(buf, n);
  ::pclose(p);
  return out;
}

TEST(CliFrontTest, FrontBinaryNeedsNoLibTorchAndTheEngineDoes) {
  const std::string front = command_output("readelf -d " + kiln_binary().string());
  ASSERT_NE(front.find("NEEDED"), std::string::npos) << front;
  EXPECT_EQ(front.find("libtorch"), std::string::npos) << front;
  EXPECT_EQ(front.find("libc10"), std::string::npos) << front;
  const fs::path engine = kiln_binary().parent_path() / "kiln-engine";
  const std::string back = command_output("readelf -d " + engine.string());
  EXPECT_NE(back.find("libtorch"), std::string::npos) << back;
}

TEST(CliFrontTest, HelpListsEveryVerbAndEngineVerbsGetTheirOwnHelp) {
  TempDir home;
  CommandResult top = run_kiln({"--help"}, home.path());
  ASSERT_EQ(top.exit_code, 0) << top.err;
  for (const char* verb : {"data", "model", "train", "eval", "predict", "export", "registry",
                           "serve", "tune"})
    EXPECT_NE(top.out.find(std::string("\n  ") + verb), std::string::npos) << verb << top.out;
  // `train --help` is kiln-engine's: the verb's own flags.
  CommandResult train = run_kiln({"train", "--help"}, home.path());
  ASSERT_EQ(train.exit_code, 0) << train.err;
  EXPECT_NE(train.out.find("--data"), std::string::npos) << train.out;
  EXPECT_NE(train.out.find("--target"), std::string::npos) << train.out;
  CommandResult data = run_kiln({"data", "prepare", "--help"}, home.path());
  ASSERT_EQ(data.exit_code, 0) << data.err;
  EXPECT_NE(data.out.find("--seed"), std::string::npos) << data.out;
  // Usage errors keep their exit code and message through the hand-off.
  CommandResult bad = run_kiln({"train", "--no-such-flag"}, home.path());
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_NE(bad.err.find("kiln train: error:"), std::string::npos) << bad.err;
  CommandResult bad_front = run_kiln({"registry", "list", "--no-such-flag"}, home.path());
  EXPECT_EQ(bad_front.exit_code, 2);
  EXPECT_NE(bad_front.err.find("kiln registry list: error:"), std::string::npos) << bad_front.err;
}

TEST(CliFrontTest, TableProfileRunsInTheFrontAndImagesInTheEngine) {
  TempDir home;
  const fs::path csv = shared_datasets_dir() / "breast_cancer_dirty.csv";
  CommandResult table = run_kiln(
      {"data", "profile", csv.string(), "--target", "diagnosis", "--json"}, home.path());
  ASSERT_EQ(table.exit_code, 0) << table.err;
  Json report = Json::parse(table.out);
  EXPECT_EQ(report["kind"], "table");
  EXPECT_EQ(report["verdict"]["status"], "needs_cleaning");

  CommandResult images = run_kiln({"data", "profile", testing::example("fashion-mnist/dataset.yaml"),
                                   "--limit", "500", "--json"},
                                  home.path());
  ASSERT_EQ(images.exit_code, 0) << images.err;
  Json image_report = Json::parse(images.out);
  EXPECT_EQ(image_report["kind"], "images");
  EXPECT_EQ(image_report["splits"]["train"]["rows"], 500);
}

TEST(CliFrontTest, AMissingEngineIsAClearErrorAndFrontVerbsStillWork) {
  TempDir home, alone;
  const fs::path copy = alone / "kiln";
  fs::copy_file(kiln_binary(), copy);
  const std::string prefix = "KILN_HOME=" + home.path().string() + " " + copy.string();
  EXPECT_NE(command_output(prefix + " --version").find("kiln "), std::string::npos);
  const std::string list = command_output(prefix + " registry list 2>&1; echo exit=$?");
  EXPECT_NE(list.find("NAME"), std::string::npos) << list;
  EXPECT_NE(list.find("exit=0"), std::string::npos) << list;
  const std::string out = command_output(prefix + " train --help 2>&1; echo exit=$?");
  EXPECT_NE(out.find("cannot run " + (alone / "kiln-engine").string()), std::string::npos) << out;
  EXPECT_NE(out.find("exit=1"), std::string::npos) << out;
}

}  // namespace
}  // namespace kiln
