#pragma once
// A test suite for a bundle (`kiln test REF --suite SUITE.yaml`): which checks run, on which
// rows, against which thresholds. Torch-free: parsing and the threshold arithmetic only.

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "kiln/core/expected.h"
#include "kiln/core/json.h"
#include "kiln/model/manifest.h"

namespace kiln::checks {

namespace fs = std::filesystem;

/// The check kinds a suite may name, in the order a default suite runs them.
///   smoke, model, trivial_baseline, recorded_metrics, boundary, invariance, directional,
///   ensemble, serve, compare, latency
const std::vector<std::string>& check_kinds();

/// One check of a suite: its kind, a display name, its fields (validated against the kind's
/// field list when read) and the suite line it came from (0 for derived checks).
struct CheckSpec {
  std::string kind;
  std::string name;
  Json params = Json::object();
  int line = 0;
};

/// A suite as read from YAML (or derived from a bundle by default_suite()):
///
///   name: fmnist-release
///   data: examples/fashion-mnist/dataset.yaml   # optional; --data overrides
///   split: test
///   alpha: 0.05          # significance of every statistical check
///   rows: 2000           # rows for the perturbation checks (a seeded sample; all for model)
///   seed: 0
///   defaults: true       # also run smoke, trivial_baseline and recorded_metrics
///   checks:
///     - {kind: model, metric: accuracy, threshold: 0.9}
///     - {kind: invariance, perturbation: shift, pixels: 1, min_unchanged: 0.9}
///
/// Plain value; thread-compatible.
struct Suite {
  std::string name;
  fs::path path;       ///< the YAML file (empty when derived)
  std::string sha256;  ///< of the YAML file's bytes (or of the derived suite's JSON)
  std::string data;
  std::string split = "test";
  double alpha = 0.05;
  int64_t rows = 2000;
  uint64_t seed = 0;
  std::vector<CheckSpec> checks;

  Json to_json() const;
  /// "file:LINE" for a check's error messages ("suite.yaml:12", or "default suite").
  std::string where(const CheckSpec& check) const;
};

/// Reads and validates a suite. InvalidArgument names the file and line of an unknown check kind,
/// an unknown or mistyped field, or a check without its required fields; NotFound for a missing
/// file. With `defaults: true` (the default) the checks every bundle must pass (smoke,
/// trivial_baseline, recorded_metrics) are added in front unless the suite names them.
Expected<Suite> read_suite(const fs::path& path);

/// The suite `kiln test` runs without --suite, derived from the bundle: smoke, trivial_baseline,
/// recorded_metrics, boundary (batch sizes, extreme and non-finite values, a noise curve),
/// invariance (images: ±1 px shifts, brightness ×0.9, a horizontal flip when the bundle was
/// trained or evaluated with flips; tables: features jittered by 1% of their spread), serve
/// (train/serve skew over OIP v2) and latency (offline p99 per batch size against a loose budget).
Suite default_suite(const model::Bundle& bundle);

/// A threshold in MLflow's form (MetricThreshold): pass when the value is at least `threshold`
/// (greater_is_better; at most otherwise), beats the baseline by `min_absolute_change`, or by the
/// fraction `min_relative_change` of it. At least one of the three is set.
struct MetricThreshold {
  std::optional<double> threshold;
  std::optional<double> min_absolute_change;
  std::optional<double> min_relative_change;
  bool greater_is_better = true;

  /// From a check's fields; InvalidArgument names the field (MLflow's constraints: absolute
  /// change > 0, relative change in [0, 1]).
  static Expected<MetricThreshold> from_json(const Json& params, bool default_greater_is_better);
  bool needs_baseline() const { return min_absolute_change || min_relative_change; }
  /// "≥ 0.9", "≥ baseline + 0.01", ... for the report.
  std::string describe() const;
};

/// The verdict of a MetricThreshold on `value`; `baseline` is required when a change threshold is
/// set (its absence fails the check, as in MLflow). `why` gets one line for a failure.
bool threshold_passes(const MetricThreshold& t, double value, std::optional<double> baseline,
                      std::string* why);

}  // namespace kiln::checks
