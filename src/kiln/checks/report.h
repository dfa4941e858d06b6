#pragma once
// What a suite run found, and its three renderings: the terminal table, JSON and JUnit XML.
// Torch-free.

#include <string>
#include <vector>

#include "kiln/core/json.h"

namespace kiln::checks {

/// The outcome of one check. "inconclusive" (a statistical comparison without a significant
/// difference, where the suite did not ask for one) does not fail a suite; "error" (the check could
/// not run: a baseline that does not resolve, a field the model cannot use) does.
enum class Outcome { kPass, kFail, kInconclusive, kError };
const char* to_string(Outcome o);

/// One check's result. Plain value.
struct CheckResult {
  std::string name;
  std::string kind;
  Outcome outcome = Outcome::kPass;
  std::string measured;   ///< the value that decided it, formatted ("0.9279", "p=0.041 better")
  std::string threshold;  ///< what it was held to (">= 0.85")
  std::string message;    ///< why it failed or errored, or a note
  double seconds = 0.0;
  Json details = Json::object();  ///< everything measured (curves, per-class values, p-values)
};

/// A suite run. Plain value.
struct SuiteResult {
  std::string suite;         ///< suite name
  std::string suite_sha256;  ///< of the suite file (or derived suite)
  std::string ref;           ///< as the user gave it
  std::string bundle_dir;
  std::string data;  ///< where the labelled rows came from
  int64_t rows = 0;
  std::string started_at;  ///< ISO 8601 UTC
  double seconds = 0.0;
  std::vector<CheckResult> checks;

  int64_t count(Outcome o) const;
  bool passed() const { return count(Outcome::kFail) == 0 && count(Outcome::kError) == 0; }
  /// 0 when every check passed (or was inconclusive), 2 when one errored, else 1.
  int exit_code() const;
  Json to_json() const;
  /// JUnit XML (one <testsuite>, one <testcase> per check with classname "kiln.<kind>";
  /// <failure> for fail, <error> for error, <skipped> for inconclusive), as CI systems read it.
  std::string junit_xml() const;
  /// The terminal table: check, kind, measured, threshold, result, time; failures explained below.
  std::string table() const;
};

}  // namespace kiln::checks
