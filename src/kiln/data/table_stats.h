#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "kiln/core/csv.h"
#include "kiln/core/expected.h"

namespace kiln::data {

/// Location and spread that ignore extreme values: median and MAD. `scale` is MAD/0.6745 (the
/// normal-consistent sigma), falling back to 1.2533 × mean absolute deviation when MAD is 0, and
/// 0 when the values are constant.
struct RobustStats {
  double median = 0.0;
  double mad = 0.0;
  double scale = 0.0;
  /// |x - median| / scale (the robust z-score), 0 when scale is 0.
  double z(double x) const;
};

/// Robust statistics of `values` (copied; order irrelevant). Empty input gives zeros.
RobustStats robust_stats(std::vector<double> values);

/// Per-column facts shared by profiling and cleaning. A column is numeric when at least 90% of
/// its non-missing cells parse as numbers; the rest of them are "non-numeric" (corrupt) cells.
struct ColumnFacts {
  std::string name;
  bool numeric = false;
  int64_t missing = 0;      ///< empty or NA cells
  int64_t present = 0;      ///< the other cells
  int64_t non_numeric = 0;  ///< numeric column, cell neither missing nor a number
  int64_t unique = 0;       ///< distinct non-missing cell texts
  // Numeric columns, over the parsed values:
  int64_t count = 0;
  double min = 0, max = 0, mean = 0, std = 0;
  RobustStats robust;
};

/// Computes ColumnFacts for every column of `table`. `values[c][r]` gets the parsed value of cell
/// (r, c) or NaN when it is missing or not a number (numeric columns only; empty otherwise).
/// Columns named in `categorical` (a spec's categories.columns) are categorical whatever their
/// cells look like.
std::vector<ColumnFacts> analyse_columns(const CsvTable& table,
                                         std::vector<std::vector<double>>* values = nullptr,
                                         const std::vector<std::string>& categorical = {});

/// The index of each column in `names`, or an error "SOURCE: FIELD names 'X', which is not a
/// column" (FIELD: the spec field that lists them, e.g. drop_columns).
Expected<std::vector<size_t>> column_indices(const CsvTable& table,
                                             const std::vector<std::string>& names,
                                             const std::string& field);

/// A categorical column with a distinct value in (nearly) every row: at least
/// kIdentifierMinRows non-missing cells, of which at least 95% distinct. Such a column (an id, a
/// name, a free-text note) carries no category to learn and widens one-hot encoding by a column
/// per row; it belongs in drop_columns.
bool looks_like_identifier(const ColumnFacts& column);
inline constexpr int64_t kIdentifierMinRows = 20;

/// Two numeric columns that move together: Pearson's r over the rows where both are present.
struct CorrelatedPair {
  std::string first, second;
  double r = 0;
};
inline constexpr int64_t kCorrelationMaxRows = 5000;   ///< rows sampled evenly beyond this
inline constexpr size_t kCorrelationMaxColumns = 200;  ///< the first ones, beyond this

/// The pairs among `columns` (indices into `facts` and `values`, numeric columns) whose |r| is at
/// least `threshold`, strongest first. Over at most kCorrelationMaxRows evenly spaced rows and
/// the first kCorrelationMaxColumns columns, so a wide or long table stays quick. Such pairs
/// carry the same information twice: PCA (a spec's features.pca) folds them.
std::vector<CorrelatedPair> correlated_pairs(const std::vector<ColumnFacts>& facts,
                                             const std::vector<std::vector<double>>& values,
                                             const std::vector<size_t>& columns, double threshold);

/// Indices of rows whose cells all equal those of an earlier row, in order.
std::vector<size_t> duplicate_row_indices(const CsvTable& table);

}  // namespace kiln::data

namespace kiln::data {

/// Classification when the target is non-numeric, or integer-valued with at most 20 distinct
/// values; regression otherwise.
bool looks_like_classification(const ColumnFacts& target, const CsvTable& table, size_t column);

}  // namespace kiln::data
