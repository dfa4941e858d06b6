#pragma once

#include <string>
#include <vector>

#include "kiln/core/csv.h"
#include "kiln/core/expected.h"
#include "kiln/data/spec.h"

namespace kiln::data {

/// The CSV sources of a table dataset read and merged into one table. Every source must have
/// the same columns (order may differ; later sources are reordered to the first's). Lines stay
/// those of each row's own file: `row_source[i]` indexes `source_paths`.
struct MergedTable {
  CsvTable table;                     ///< rows of all sources; `ragged` of all sources
  std::vector<size_t> row_source;     ///< per row: which source it came from
  std::vector<size_t> ragged_source;  ///< per ragged line: which source it came from
  std::vector<fs::path> source_paths;
  std::vector<std::string> source_sha256;
  size_t target_column = 0;

  /// "file.csv line 12" (the file named only when there are several sources).
  std::string where(size_t row) const;
};

/// Reads and merges the spec's sources, checking that the target column exists in each.
/// Errors name the file: unreadable, empty, no target column (listing the columns there are),
/// mismatched schemas (naming the missing/extra columns).
Expected<MergedTable> read_table_sources(const DatasetSpec& spec,
                                         const std::vector<std::string>& na_tokens);

}  // namespace kiln::data
