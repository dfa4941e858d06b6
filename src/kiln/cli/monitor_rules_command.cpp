// `kiln monitor rules` (both binaries, torch-free): Prometheus alerting rules for `kiln serve`,
// and the `promtool test rules` file that proves each alert fires and stays silent as it should.
#include <iostream>

#include "kiln/cli/commands.h"
#include "kiln/core/files.h"
#include "kiln/monitor/alert_rules.h"

namespace kiln::cli {
namespace {

namespace fs = std::filesystem;

struct RulesArgs {
  monitor::AlertRulesOptions options;
  double memory_mib = 0;
  std::string out;
  std::string tests;
};

int run_rules(RulesArgs a) {
  a.options.memory_bytes(a.memory_mib * 1024 * 1024);
  if (Status st = a.options.validate(); !st.ok()) return report_failure(st);
  const std::string rules = monitor::alert_rules_yaml(a.options);
  if (a.out.empty()) {
    if (!a.tests.empty())
      return report_failure(
          Status::InvalidArgument("--tests: give --out too (the tests name the rules file)"));
    std::cout << rules;
    return 0;
  }
  if (Status st = write_file_atomic(a.out, rules); !st.ok()) return report_failure(st);
  std::cerr << "wrote " << a.out << " (check: promtool check rules " << a.out << ")\n";
  if (!a.tests.empty()) {
    // promtool resolves rule_files relative to the test file's directory.
    const fs::path tests_dir = fs::absolute(a.tests).parent_path();
    const std::string rules_name = fs::absolute(a.out).lexically_relative(tests_dir).string();
    if (Status st =
            write_file_atomic(a.tests, monitor::alert_rules_test_yaml(a.options, rules_name));
        !st.ok())
      return report_failure(st);
    std::cerr << "wrote " << a.tests << " (run: promtool test rules " << a.tests << ")\n";
  }
  return 0;
}

}  // namespace

CLI::App* register_monitor_rules_command(CLI::App& monitor, int* exit_code) {
  auto ra = std::make_shared<RulesArgs>();
  monitor::AlertRulesOptions& o = ra->options;
  CLI::App* rules = add_verb_subcommand(
      monitor, "rules",
      "Prometheus alerting rules for kiln serve (error rate, p99 latency, drift, feature PSI, "
      "prediction drift, live accuracy, load failures, no traffic) and their promtool tests");
  rules->add_option("--slo-p99-ms", o.slo_p99_ms_, "p99 latency objective, ms")
      ->default_val(o.slo_p99_ms_);
  rules->add_option("--error-rate", o.error_rate_, "non-success share of requests that pages")
      ->default_val(o.error_rate_);
  rules->add_option("--drift-share", o.drift_share_, "share of drifted features that alerts")
      ->default_val(o.drift_share_);
  rules->add_option("--psi", o.psi_, "a feature's PSI that alerts")->default_val(o.psi_);
  rules->add_option("--prediction-psi", o.prediction_psi_, "the predicted classes' PSI that alerts")
      ->default_val(o.prediction_psi_);
  rules
      ->add_option("--accuracy-margin", o.accuracy_margin_,
                   "live accuracy this far below the bundle's test accuracy alerts")
      ->default_val(o.accuracy_margin_);
  rules
      ->add_option("--calibration-margin", o.calibration_margin_,
                   "live calibration error this far above the bundle's test one alerts")
      ->default_val(o.calibration_margin_);
  rules
      ->add_option("--min-labelled-rows", o.min_labelled_rows_,
                   "labelled rows live accuracy and calibration error need before they may alert")
      ->default_val(o.min_labelled_rows_);
  rules
      ->add_option("--no-traffic-minutes", o.no_traffic_minutes_,
                   "minutes without a successful request that alert")
      ->default_val(o.no_traffic_minutes_);
  rules->add_option("--memory-mib", ra->memory_mib, "resident memory that alerts (0: no rule)")
      ->default_val(0);
  rules->add_option("--out", ra->out, "write the rules here (default: stdout)");
  rules->add_option("--tests", ra->tests, "also write the promtool test file here (needs --out)");
  rules->callback([ra, exit_code] { *exit_code = run_rules(*ra); });
  return rules;
}

}  // namespace kiln::cli
