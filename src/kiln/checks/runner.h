#pragma once
// Runs a test suite against a bundle: `kiln test`'s engine.

#include <filesystem>
#include <functional>
#include <string>

#include "kiln/checks/report.h"
#include "kiln/checks/suite.h"
#include "kiln/core/expected.h"

namespace kiln::checks {

/// How run_suite() finds the model, its rows and the tools the serving checks start.
struct RunOptions {
  /// The model under test: a bundle (or run) directory, NAME@VERSION or NAME@ALIAS.
  RunOptions& ref(std::string v) {
    ref_ = std::move(v);
    return *this;
  }
  /// Labelled rows (CSV, snapshot directory or dataset spec); overrides the suite's `data`.
  /// Neither given: the snapshot the bundle was trained on, when it is in $KILN_HOME/snapshots.
  RunOptions& data(std::string v) {
    data_ = std::move(v);
    return *this;
  }
  /// Split of a snapshot or spec; overrides the suite's `split`.
  RunOptions& split(std::string v) {
    split_ = std::move(v);
    return *this;
  }
  /// The `kiln` (or kiln-engine) executable the serve check starts as `kiln serve`.
  RunOptions& kiln_binary(std::filesystem::path v) {
    kiln_binary_ = std::move(v);
    return *this;
  }
  /// Called after each check, from the caller's thread (progress output).
  RunOptions& on_check(std::function<void(const CheckResult&)> f) {
    on_check_ = std::move(f);
    return *this;
  }

  std::string ref_;
  std::string data_;
  std::string split_;
  std::filesystem::path kiln_binary_;
  std::function<void(const CheckResult&)> on_check_;
};

/// Loads the bundle and the labelled rows, then runs every check of `suite` in order; a check
/// that cannot run is recorded as an error and the rest still run. Errors (bad input, exit 2 at
/// the CLI): the bundle does not resolve or verify, no rows (no --data and no training snapshot),
/// rows the bundle cannot read, or a bundle whose task has no labels to test against ("custom").
/// Blocks; uses LibTorch's intra-op threads; the serve check starts and stops a child process.
Expected<SuiteResult> run_suite(const Suite& suite, const RunOptions& options);

}  // namespace kiln::checks
