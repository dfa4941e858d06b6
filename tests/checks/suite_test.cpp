#include "kiln/checks/suite.h"

#include <gtest/gtest.h>

#include <cstdlib>

#include "kiln/checks/report.h"
#include "support/test_support.h"

namespace kiln::checks {
namespace {

using testing::TempDir;
using testing::write_text;

TEST(SuiteTest, ReadsChecksAddsTheDefaultsAndNamesThem) {
  TempDir t;
  write_text(t / "suite.yaml",
             "name: release\n"
             "alpha: 0.01\n"
             "rows: 500\n"
             "checks:\n"
             "  - {kind: model, metric: accuracy, threshold: 0.9}\n"
             "  - kind: model\n"
             "    metric: recall\n"
             "    class: Shirt\n"
             "    threshold: 0.7\n"
             "  - {kind: invariance, perturbation: shift, pixels: 2, min_unchanged: 0.8}\n"
             "  - {kind: model, metric: accuracy, threshold: 0.8, slice: {class: Bag}}\n");
  Expected<Suite> s = read_suite(t / "suite.yaml");
  ASSERT_TRUE(s.ok()) << s.status().to_string();
  EXPECT_EQ(s->name, "release");
  EXPECT_EQ(s->alpha, 0.01);
  EXPECT_EQ(s->rows, 500);
  EXPECT_EQ(s->sha256.size(), 64u);
  ASSERT_EQ(s->checks.size(), 7u);  // smoke, trivial_baseline, recorded_metrics + 4
  EXPECT_EQ(s->checks[0].kind, "smoke");
  EXPECT_EQ(s->checks[3].name, "model/accuracy");
  EXPECT_EQ(s->checks[4].name, "model/recall/Shirt");
  EXPECT_EQ(s->checks[4].line, 6);
  EXPECT_EQ(s->where(s->checks[4]), (t / "suite.yaml").string() + ":6");
  EXPECT_EQ(s->checks[5].params["pixels"], 2);
  EXPECT_EQ(s->checks[6].name, "model/accuracy#2");
}

TEST(SuiteTest, BadInputNamesTheFileAndLine) {
  TempDir t;
  struct Case {
    std::string yaml, expect;
  } cases[] = {
      {"checks:\n  - {kind: smoke}\n  - {kind: vibes}\n",
       "suite.yaml:3: unknown check kind 'vibes'"},
      {"checks:\n  - kind: model\n    metric: accuracy\n    treshold: 0.9\n",
       "suite.yaml:4: unknown field 'treshold' for a model check"},
      {"checks:\n  - {kind: invariance, perturbation: shift}\n", "needs 'min_unchanged'"},
      {"checks:\n  - {kind: model, metric: accuracy}\n", "needs threshold, min_absolute_change"},
      {"checks:\n  - {kind: model, metric: accuracy, min_absolute_change: 0.01}\n",
       "need a baseline"},
      {"checks:\n  - {kind: model, metric: accuracy, min_relative_change: 2, baseline: a@1}\n",
       "min_relative_change must be in [0, 1]"},
      {"checks:\n  - {kind: smoke, rows: many}\n", "'rows' must be an integer"},
      {"alpha: 2\nchecks:\n  - {kind: smoke}\n", "suite.yaml:1: alpha must be in (0, 1)"},
      {"colour: blue\nchecks:\n  - {kind: smoke}\n", "suite.yaml:1: unknown field 'colour'"},
      {"name: x\n", "no checks"},
  };
  for (const auto& c : cases) {
    write_text(t / "suite.yaml", c.yaml);
    Expected<Suite> s = read_suite(t / "suite.yaml");
    ASSERT_FALSE(s.ok()) << c.yaml;
    EXPECT_EQ(s.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(s.status().message().find(c.expect), std::string::npos)
        << s.status().message() << "\nwanted: " << c.expect;
  }
  EXPECT_EQ(read_suite(t / "missing.yaml").status().code(), StatusCode::kNotFound);
}

TEST(MetricThresholdTest, FollowsMlflowsPassConditions) {
  auto t = [](const std::string& yaml_json) {
    return *MetricThreshold::from_json(Json::parse(yaml_json), true);
  };
  std::string why;
  EXPECT_TRUE(threshold_passes(t(R"({"threshold": 0.9})"), 0.9, std::nullopt, &why));
  EXPECT_FALSE(threshold_passes(t(R"({"threshold": 0.9})"), 0.89, std::nullopt, &why));
  EXPECT_NE(why.find("0.89 < 0.9"), std::string::npos) << why;
  // Lower is better: v <= threshold, v <= base - delta.
  MetricThreshold mae = t(R"({"threshold": 5, "greater_is_better": false})");
  EXPECT_TRUE(threshold_passes(mae, 4.0, std::nullopt, &why));
  EXPECT_FALSE(threshold_passes(mae, 6.0, std::nullopt, &why));
  MetricThreshold abs_change = t(R"({"min_absolute_change": 0.01, "baseline": "m@1"})");
  EXPECT_TRUE(threshold_passes(abs_change, 0.92, 0.91, &why));
  EXPECT_FALSE(threshold_passes(abs_change, 0.915, 0.91, &why));
  EXPECT_FALSE(threshold_passes(abs_change, 0.99, std::nullopt, &why));  // no baseline: fail
  MetricThreshold rel = t(R"({"min_relative_change": 0.1, "baseline": "m@1"})");
  EXPECT_TRUE(threshold_passes(rel, 0.55, 0.5, &why));
  EXPECT_FALSE(threshold_passes(rel, 0.54, 0.5, &why));
  EXPECT_TRUE(threshold_passes(rel, 1e-9, 0.0, &why));  // base 0: v >= base + 1e-10
  EXPECT_FALSE(threshold_passes(t(R"({"threshold": 0.5})"), std::nan(""), std::nullopt, &why));
}

TEST(SuiteReportTest, JunitXmlParsesAndCountsFailures) {
  SuiteResult r;
  r.suite = "release <1>";
  r.ref = "fmnist@candidate";
  r.checks.push_back({"smoke", "smoke", Outcome::kPass, "ok", "finite", "", 0.1, Json::object()});
  r.checks.push_back({"model/accuracy", "model", Outcome::kFail, "0.5", ">= 0.9",
                      "0.5 < 0.9 & \"quoted\"", 0.2, Json::object()});
  r.checks.push_back({"compare", "compare", Outcome::kInconclusive, "p=0.4", "", "no difference",
                      0.3, Json::object()});
  EXPECT_FALSE(r.passed());
  EXPECT_EQ(r.exit_code(), 1);
  TempDir t;
  write_text(t / "junit.xml", r.junit_xml());
  const std::string cmd =
      "/usr/bin/python3 -c \"import sys, xml.etree.ElementTree as ET; s = "
      "ET.parse(sys.argv[1]).getroot().find('testsuite'); cases = s.findall('testcase'); "
      "assert s.get('tests') == '3' and s.get('failures') == '1' and s.get('skipped') == '1', "
      "s.attrib; assert len(cases) == 3; assert cases[1].find('failure') is not None; "
      "assert cases[1].find('failure').get('message') == '0.5 < 0.9 & \\\"quoted\\\"'\" " +
      (t / "junit.xml").string();
  EXPECT_EQ(std::system(cmd.c_str()), 0) << r.junit_xml();
  EXPECT_NE(r.table().find("FAILED: 1 passed, 1 failed, 1 inconclusive"), std::string::npos)
      << r.table();
  r.checks.push_back({"serve", "serve", Outcome::kError, "-", "-", "no server", 0, Json::object()});
  EXPECT_EQ(r.exit_code(), 2);
}

}  // namespace
}  // namespace kiln::checks
