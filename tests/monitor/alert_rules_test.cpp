#include "kiln/monitor/alert_rules.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <stdexcept>
#include <string>
#include <vector>

#include "support/test_support.h"

namespace kiln::monitor {
namespace {

namespace fs = std::filesystem;
using kiln::testing::read_text;
using kiln::testing::TempDir;
using kiln::testing::write_text;

const char* const kPromtool = "/usr/bin/promtool";

struct PromtoolRun {
  int exit_code = -1;
  std::string output;  // stdout and stderr together
};

// Runs promtool with `args` in `dir`, capturing its output. Blocks until it exits.
PromtoolRun promtool(const std::vector<std::string>& args, const fs::path& dir) {
  const fs::path out_path = dir / "promtool.out";
  pid_t pid = ::fork();
  if (pid == 0) {
    if (::chdir(dir.c_str()) != 0) ::_exit(126);
    int fd = ::open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    int null_fd = ::open("/dev/null", O_RDONLY);
    ::dup2(null_fd, 0);
    ::dup2(fd, 1);
    ::dup2(fd, 2);
    std::vector<std::string> copy = args;
    std::vector<char*> argv{const_cast<char*>(kPromtool)};
    for (auto& a : copy) argv.push_back(a.data());
    argv.push_back(nullptr);
    ::execv(kPromtool, argv.data());
    ::_exit(127);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  PromtoolRun r;
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  r.output = read_text(out_path);
  return r;
}

class AlertRules : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::access(kPromtool, X_OK) != 0)
      GTEST_SKIP() << kPromtool << " not found: install Debian's `prometheus` package to run "
                   << "the promtool checks of the alerting rules";
  }

  struct Outcome {
    PromtoolRun check, test;
  };
  // Writes rules for `rules_opts` and tests for `test_opts` (with `edit_from` replaced by
  // `edit_to`), then runs `promtool check rules` (when `check`) and `promtool test rules`.
  Outcome check_and_test(const AlertRulesOptions& rules_opts, const AlertRulesOptions& test_opts,
                         const std::string& edit_from = "", const std::string& edit_to = "",
                         bool check = true) {
    write_text(dir_ / "kiln-alerts.yml", alert_rules_yaml(rules_opts));
    std::string tests = alert_rules_test_yaml(test_opts, "kiln-alerts.yml");
    if (!edit_from.empty()) {
      const size_t at = tests.find(edit_from);
      EXPECT_NE(at, std::string::npos) << edit_from;
      if (at != std::string::npos) tests.replace(at, edit_from.size(), edit_to);
    }
    write_text(dir_ / "kiln-alerts.test.yml", tests);
    Outcome o;
    if (check) o.check = promtool({"check", "rules", "kiln-alerts.yml"}, dir_.path());
    o.test = promtool({"test", "rules", "kiln-alerts.test.yml"}, dir_.path());
    return o;
  }

  TempDir dir_;
};

TEST_F(AlertRules, DefaultRulesPassPromtoolCheckAndTests) {
  const AlertRulesOptions opts;
  ASSERT_TRUE(opts.validate().ok());
  Outcome o = check_and_test(opts, opts);
  EXPECT_EQ(o.check.exit_code, 0) << o.check.output;
  EXPECT_NE(o.check.output.find("SUCCESS: 9 rules found"), std::string::npos) << o.check.output;
  EXPECT_EQ(o.test.exit_code, 0) << o.test.output << "\n"
                                 << read_text(dir_ / "kiln-alerts.test.yml");
  EXPECT_NE(o.test.output.find("SUCCESS"), std::string::npos) << o.test.output;
}

TEST_F(AlertRules, CustomOptionsPassPromtoolCheckAndTests) {
  const auto opts = AlertRulesOptions()
                        .slo_p99_ms(200)
                        .error_rate(0.05)
                        .drift_share(0.5)
                        .psi(0.1)
                        .prediction_psi(0.25)
                        .accuracy_margin(0.02)
                        .calibration_margin(0.03)
                        .min_labelled_rows(500)
                        .no_traffic_minutes(30)
                        .rate_window_minutes(2)
                        .load_failure_window_minutes(15)
                        .memory_bytes(4.0 * 1024 * 1024 * 1024)
                        .error_for_minutes(1)
                        .latency_for_minutes(0)
                        .drift_for_minutes(30)
                        .accuracy_for_minutes(5)
                        .memory_for_minutes(3);
  ASSERT_TRUE(opts.validate().ok());
  Outcome o = check_and_test(opts, opts);
  EXPECT_EQ(o.check.exit_code, 0) << o.check.output;
  EXPECT_NE(o.check.output.find("SUCCESS: 10 rules found"), std::string::npos) << o.check.output;
  EXPECT_EQ(o.test.exit_code, 0) << o.test.output << "\n"
                                 << read_text(dir_ / "kiln-alerts.test.yml");
}

// SLOs at, between and near the ends of the server's latency buckets.
TEST_F(AlertRules, LatencyTestsHoldAcrossTheBucketRange) {
  for (double slo : {0.05, 51.2, 1000.0, 1638.0}) {
    SCOPED_TRACE("slo_p99_ms " + std::to_string(slo));
    const auto opts = AlertRulesOptions().slo_p99_ms(slo);
    Outcome o = check_and_test(opts, opts, "", "", false);
    EXPECT_EQ(o.test.exit_code, 0) << o.test.output;
  }
}

// The tests can fail: an alert expected where the healthy server must stay silent.
TEST_F(AlertRules, PromtoolFailsWhenASilentAlertIsExpectedToFire) {
  const AlertRulesOptions opts;
  Outcome o =
      check_and_test(opts, opts, "        alertname: KilnHighErrorRate\n        exp_alerts: []\n",
                     "        alertname: KilnHighErrorRate\n        exp_alerts:\n"
                     "          - exp_labels:\n              severity: page\n"
                     "              model: healthy\n              version: '3'\n");
  EXPECT_EQ(o.check.exit_code, 0) << o.check.output;
  EXPECT_NE(o.test.exit_code, 0) << o.test.output;
  EXPECT_NE(o.test.output.find("KilnHighErrorRate"), std::string::npos) << o.test.output;
}

// The tests pin the thresholds: rules built with laxer thresholds than the tests plant for
// miss the faults, and rules with stricter ones fire on the healthy series.
TEST_F(AlertRules, PromtoolFailsWhenRulesAndTestsDisagreeOnThresholds) {
  const AlertRulesOptions defaults;
  const std::vector<std::pair<std::string, AlertRulesOptions>> cases = {
      {"KilnHighErrorRate", AlertRulesOptions().error_rate(0.5)},
      {"KilnHighErrorRate", AlertRulesOptions().error_rate(0.001)},
      {"KilnHighLatencyP99", AlertRulesOptions().slo_p99_ms(1000)},
      {"KilnHighLatencyP99", AlertRulesOptions().slo_p99_ms(1)},
      {"KilnDataDrift", AlertRulesOptions().drift_share(0.9)},
      {"KilnFeatureDrift", AlertRulesOptions().psi(1)},
      {"KilnPredictionDrift", AlertRulesOptions().prediction_psi(0.01)},
      {"KilnLiveAccuracyDrop", AlertRulesOptions().accuracy_margin(0.3)},
      {"KilnLiveAccuracyDrop", AlertRulesOptions().min_labelled_rows(1000)},
      {"KilnCalibrationDrift", AlertRulesOptions().calibration_margin(0.3)},
      {"KilnCalibrationDrift", AlertRulesOptions().calibration_margin(0.001)},
      {"KilnNoTraffic", AlertRulesOptions().no_traffic_minutes(60)},
  };
  for (const auto& [alert, rules_opts] : cases) {
    SCOPED_TRACE(alert + " " + rules_opts.to_string());
    Outcome o = check_and_test(rules_opts, defaults, "", "", false);
    EXPECT_NE(o.test.exit_code, 0) << o.test.output;
    EXPECT_NE(o.test.output.find(alert), std::string::npos) << o.test.output;
  }
}

TEST(AlertRulesYaml, OptionsSetTheThresholdsAndDurations) {
  const std::string d = alert_rules_yaml(AlertRulesOptions());
  EXPECT_NE(d.find("sum by (model, version) "
                   "(rate(kiln_inference_requests_total{outcome!=\"success\"}[5m]))"),
            std::string::npos)
      << d;
  EXPECT_NE(
      d.find("(rate(kiln_inference_request_duration_seconds_bucket[5m])))\n          > 0.05\n"),
      std::string::npos)
      << d;
  EXPECT_NE(d.find("max by (model, version) (kiln_drift_share) > 0.3\n"), std::string::npos);
  EXPECT_NE(d.find("(kiln_feature_psi) > 0.2\n"), std::string::npos);
  EXPECT_NE(d.find("(kiln_prediction_psi) > 0.2\n"), std::string::npos);
  EXPECT_NE(d.find("(kiln_reference_accuracy) - 0.05\n"), std::string::npos);
  EXPECT_NE(d.find("(kiln_live_labelled_rows) >= 100)"), std::string::npos);
  EXPECT_NE(d.find("kiln_model_load_failures_total offset 10m"), std::string::npos);
  EXPECT_NE(d.find("[10m])) > 0)"), std::string::npos);
  EXPECT_EQ(d.find("KilnHighMemory"), std::string::npos) << "off unless memory_bytes > 0";
  EXPECT_NE(d.find("for: 5m\n"), std::string::npos);
  EXPECT_NE(d.find("for: 10m\n"), std::string::npos);
  EXPECT_NE(d.find("for: 15m\n"), std::string::npos);
  EXPECT_NE(d.find("severity: page"), std::string::npos);
  EXPECT_NE(d.find("summary: '{{ $labels.model }} v{{ $labels.version }}: p99 latency {{ $value | "
                   "humanizeDuration }}'"),
            std::string::npos)
      << d;

  const std::string c = alert_rules_yaml(AlertRulesOptions()
                                             .slo_p99_ms(250)
                                             .error_rate(0.02)
                                             .drift_share(0.4)
                                             .psi(0.25)
                                             .prediction_psi(0.3)
                                             .accuracy_margin(0.1)
                                             .min_labelled_rows(1000)
                                             .no_traffic_minutes(30)
                                             .rate_window_minutes(2)
                                             .memory_bytes(1e9)
                                             .latency_for_minutes(0));
  EXPECT_NE(c.find("rate(kiln_inference_requests_total[2m]))\n          > 0.02\n"),
            std::string::npos)
      << c;
  EXPECT_NE(c.find("_bucket[2m])))\n          > 0.25\n"), std::string::npos) << c;
  EXPECT_NE(c.find("(kiln_drift_share) > 0.4\n"), std::string::npos);
  EXPECT_NE(c.find("(kiln_feature_psi) > 0.25\n"), std::string::npos);
  EXPECT_NE(c.find("(kiln_prediction_psi) > 0.3\n"), std::string::npos);
  EXPECT_NE(c.find("(kiln_reference_accuracy) - 0.1\n"), std::string::npos);
  EXPECT_NE(c.find(">= 1000)"), std::string::npos);
  EXPECT_NE(c.find("kiln_model_loads_total offset 30m"), std::string::npos);
  EXPECT_NE(c.find("> 1000000000\n"), std::string::npos) << c;
  EXPECT_NE(c.find("KilnHighMemory"), std::string::npos);
  // latency_for 0: the latency rule has no `for` line.
  const size_t lat = c.find("alert: KilnHighLatencyP99");
  const size_t next = c.find("- alert:", lat + 1);
  EXPECT_EQ(c.substr(lat, next - lat).find("for:"), std::string::npos) << c;
  EXPECT_EQ(alert_rules_yaml(AlertRulesOptions()), d) << "deterministic";
}

TEST(AlertRulesYaml, ValidateNamesTheFieldAndGeneratorsRefuseInvalidOptions) {
  struct Case {
    AlertRulesOptions opts;
    std::string field;
  };
  const std::vector<Case> cases = {
      {AlertRulesOptions().slo_p99_ms(0.01), "slo_p99_ms"},
      {AlertRulesOptions().slo_p99_ms(5000), "slo_p99_ms"},
      {AlertRulesOptions().error_rate(0), "error_rate"},
      {AlertRulesOptions().error_rate(1), "error_rate"},
      {AlertRulesOptions().drift_share(1.5), "drift_share"},
      {AlertRulesOptions().psi(0), "psi"},
      {AlertRulesOptions().prediction_psi(-1), "prediction_psi"},
      {AlertRulesOptions().accuracy_margin(0.6), "accuracy_margin"},
      {AlertRulesOptions().calibration_margin(-0.1), "calibration_margin"},
      {AlertRulesOptions().min_labelled_rows(-1), "min_labelled_rows"},
      {AlertRulesOptions().no_traffic_minutes(0), "no_traffic_minutes"},
      {AlertRulesOptions().rate_window_minutes(0), "rate_window_minutes"},
      {AlertRulesOptions().error_for_minutes(-1), "error_for_minutes"},
      {AlertRulesOptions().memory_bytes(-5), "memory_bytes"},
  };
  for (const auto& c : cases) {
    const Status s = c.opts.validate();
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << c.field;
    EXPECT_NE(s.message().find(c.field), std::string::npos) << s.message();
  }
  EXPECT_THROW(alert_rules_yaml(AlertRulesOptions().psi(0)), std::logic_error);
  EXPECT_THROW(alert_rules_test_yaml(AlertRulesOptions().psi(0), "r.yml"), std::logic_error);
}

}  // namespace
}  // namespace kiln::monitor
