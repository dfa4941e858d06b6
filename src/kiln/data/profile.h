#pragma once

#include <string>

#include "kiln/core/expected.h"
#include "kiln/core/json.h"
#include "kiln/data/spec.h"

namespace kiln::data {

/// Settings of `kiln data profile`.
struct ProfileOptions {
  ProfileOptions& outlier_z(double z) {
    outlier_z_ = z;
    return *this;
  }
  ProfileOptions& limit(int64_t n) {
    limit_ = n;
    return *this;
  }
  ProfileOptions& na_tokens(std::vector<std::string> t) {
    na_tokens_ = std::move(t);
    return *this;
  }

  double outlier_z_ = 100.0;  ///< robust z-score above which a value is an extreme outlier
  int64_t limit_ = 0;         ///< records per split/source (0: all)
  std::vector<std::string> na_tokens_;  ///< empty: the spec's, else the defaults
};

/// |r| from which profile_dataset lists a pair of numeric columns under "correlated_pairs".
inline constexpr double kCorrelatedPairThreshold = 0.95;

/// Profiles a dataset without changing it: per split rows, shape, class counts and imbalance
/// ratio; per feature min/max/mean/std/missing/unique (images: pixel mean/std); and the issues
/// found: missing and non-numeric cells, exact duplicate rows, ragged lines, extreme outliers
/// (robust z-score), constant columns, identifier-like text columns; then a verdict. Tables also
/// list their strongly correlated numeric pairs (information, not an issue). The report's shape:
///   {"dataset", "kind", "sources": [{"path","sha256"}], "splits": {name: {"rows",
///    "class_counts", ...}}, "features": [...], "correlated_pairs": [{"columns": [a, b], "r"}],
///    "issues": {"missing_cells", "non_numeric_cells", "duplicate_rows", "ragged_lines": [line],
///    "outliers": [{"line","column","value","z"}], "constant_columns": [name],
///    "identifier_columns": [name]}, "verdict": {"status": "clean"|"needs_cleaning", "reasons"}}
/// Lines are 1-based physical lines of the CSV (the header is line 1). Read errors (missing or
/// corrupt files, no target column) are returned as Status.
Expected<Json> profile_dataset(const DatasetSpec& spec, const ProfileOptions& options = {});

/// profile_dataset() for tables only, free of LibTorch (what the torch-free `kiln` front binary
/// links); InvalidArgument for an image dataset.
Expected<Json> profile_table_dataset(const DatasetSpec& spec, const ProfileOptions& options = {});

/// The report's "verdict" from its "issues" and "splits" (shared by the table and image paths).
Json profile_verdict(const Json& issues, const Json& splits);

/// The report as readable tables for a terminal.
std::string render_profile(const Json& report);

}  // namespace kiln::data
