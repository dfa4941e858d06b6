// `kiln test REF`: a suite of checks against a bundle before it is deployed (see kiln/checks).
#include <cstdio>
#include <iostream>

#include "kiln/checks/runner.h"
#include "kiln/checks/suite.h"
#include "kiln/cli/commands.h"
#include "kiln/cli/flags.h"
#include "kiln/core/clock.h"
#include "kiln/core/files.h"
#include "kiln/core/hash.h"
#include "kiln/loadtest/serve_process.h"
#include "kiln/model/manifest.h"
#include "kiln/registry/model_store.h"
#include "kiln/registry/ref.h"
#include "kiln/train/eval_inputs.h"

namespace kiln::cli {
namespace {

struct TestArgs {
  std::string ref;
  std::string suite;
  std::string data;
  std::string split;
  std::string junit;
  std::string report;
  bool json = false;
  bool push = false;
  bool quiet = false;
};

/// Records the run on the registry version: tags test.result, test.suite, test.checks, test.at.
Status push_result(const std::string& ref, const checks::SuiteResult& r) {
  KILN_ASSIGN_OR_RETURN(registry::ModelRef parsed, registry::parse_model_ref(ref));
  (void)parsed;
  KILN_ASSIGN_OR_RETURN(std::unique_ptr<registry::ModelStore> store, registry::open_model_store());
  const std::string summary = std::to_string(r.count(checks::Outcome::kPass)) + " pass, " +
                              std::to_string(r.count(checks::Outcome::kFail)) + " fail, " +
                              std::to_string(r.count(checks::Outcome::kInconclusive)) +
                              " inconclusive, " + std::to_string(r.count(checks::Outcome::kError)) +
                              " error";
  KILN_RETURN_IF_ERROR(store->tag(ref, "test.result", r.passed() ? "passed" : "failed"));
  KILN_RETURN_IF_ERROR(store->tag(ref, "test.suite", r.suite + "@" + r.suite_sha256.substr(0, 12)));
  KILN_RETURN_IF_ERROR(store->tag(ref, "test.checks", summary));
  KILN_RETURN_IF_ERROR(store->tag(ref, "test.at", r.started_at));
  return Status::Ok();
}

int run_test(const TestArgs& a) {
  if (a.push) {
    // Only a registry version can carry the result: fail before the work, not after.
    Expected<registry::ModelRef> parsed = registry::parse_model_ref(a.ref);
    if (!parsed.ok() || fs::exists(a.ref))
      return report_failure(Status::InvalidArgument(
          "--push: '" + a.ref + "' is not a registry reference (NAME@VERSION or NAME@ALIAS)"));
  }
  checks::Suite suite;
  if (!a.suite.empty()) {
    Expected<checks::Suite> read = checks::read_suite(a.suite);
    if (!read.ok()) return report_failure(read.status());
    suite = std::move(*read);
  } else {
    Expected<model::Bundle> bundle = train::read_model_ref(a.ref);
    if (!bundle.ok()) return report_failure(bundle.status());
    suite = checks::default_suite(*bundle);
  }
  checks::RunOptions options;
  options.ref(a.ref).data(a.data).split(a.split).kiln_binary(loadtest::self_executable());
  if (!a.json && !a.quiet)
    options.on_check([](const checks::CheckResult& r) {
      std::fprintf(stderr, "  %-12s %s (%.2f s)\n", checks::to_string(r.outcome), r.name.c_str(),
                   r.seconds);
    });
  Expected<checks::SuiteResult> result = checks::run_suite(suite, options);
  if (!result.ok()) return report_failure(result.status());
  if (!a.junit.empty()) {
    Status st = write_file_atomic(a.junit, result->junit_xml());
    if (!st.ok()) return report_failure(st);
  }
  Json report = result->to_json();
  report["suite_definition"] = suite.to_json();
  if (!a.report.empty()) {
    Status st = write_json_file_atomic(a.report, report);
    if (!st.ok()) return report_failure(st);
  }
  if (a.push) {
    Status st = push_result(a.ref, *result);
    if (!st.ok()) return report_failure(st);
  }
  if (a.json)
    std::cout << report.dump(2) << "\n";
  else
    std::cout << result->table();
  return result->exit_code();
}

}  // namespace

void register_test_command(CLI::App& app, int* exit_code) {
  auto ta = std::make_shared<TestArgs>();
  CLI::App* test = app.add_subcommand("test", kTestHelp);
  test->add_option("ref", ta->ref, "bundle directory, NAME@VERSION or NAME@ALIAS")->required();
  test->add_option(
      "--suite", ta->suite,
      "suite YAML (default: a suite derived from the bundle; see examples/*/suite.yaml)");
  test->add_option("--data", ta->data,
                   "labelled rows: CSV, snapshot directory or dataset spec (default: the suite's "
                   "data, else the snapshot the bundle was trained on)");
  test->add_option("--split", ta->split,
                   "split of a snapshot or spec (default: the suite's, test)");
  test->add_option("--junit", ta->junit, "write JUnit XML here (one testcase per check)");
  add_flag(*test, Flag::kReport, &ta->report)->description("write the JSON report here");
  add_flag(*test, Flag::kJson, &ta->json);
  test->add_flag("--push", ta->push,
                 "record the result as tags (test.result, test.suite, test.checks, test.at) on "
                 "the registry version REF names");
  test->add_flag("--quiet", ta->quiet, "no per-check progress on stderr");
  test->callback([ta, exit_code] { *exit_code = run_test(*ta); });
}

}  // namespace kiln::cli
