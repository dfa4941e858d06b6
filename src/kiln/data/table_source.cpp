#include "kiln/data/table_source.h"

#include <algorithm>

#include "kiln/core/hash.h"

namespace kiln::data {
namespace {

std::string join(const std::vector<std::string>& items) {
  std::string out;
  for (const auto& s : items) out += (out.empty() ? "" : ", ") + s;
  return out;
}

}  // namespace

std::string MergedTable::where(size_t row) const {
  std::string line = "line " + std::to_string(table.lines[row]);
  if (source_paths.size() <= 1) return line;
  return source_paths[row_source[row]].filename().string() + " " + line;
}

Expected<MergedTable> read_table_sources(const DatasetSpec& spec,
                                         const std::vector<std::string>& na_tokens) {
  if (spec.sources.empty()) return Status::InvalidArgument(spec.name + ": no sources");
  MergedTable merged;
  CsvOptions options;
  options.na_tokens(na_tokens);
  if (spec.limit > 0) options.max_rows(spec.limit);
  for (size_t s = 0; s < spec.sources.size(); ++s) {
    const fs::path& path = spec.sources[s];
    KILN_ASSIGN_OR_RETURN(CsvTable t, read_csv(path, options));
    if (t.column_index(spec.target) < 0)
      return Status::InvalidArgument(path.string() + ": no target column '" + spec.target +
                                     "' (columns: " + join(t.header) + ")");
    KILN_ASSIGN_OR_RETURN(std::string sha, sha256_file(path));
    merged.source_paths.push_back(path);
    merged.source_sha256.push_back(sha);
    if (s == 0) {
      merged.table.source = t.source;
      merged.table.header = t.header;
      merged.table.na_tokens = t.na_tokens;
    } else {
      // Map this source's columns onto the first's.
      std::vector<size_t> order;
      std::vector<std::string> missing, extra;
      for (const auto& name : merged.table.header) {
        int64_t idx = t.column_index(name);
        if (idx < 0)
          missing.push_back(name);
        else
          order.push_back(static_cast<size_t>(idx));
      }
      for (const auto& name : t.header)
        if (merged.table.column_index(name) < 0) extra.push_back(name);
      if (!missing.empty() || !extra.empty()) {
        std::string msg =
            path.string() + ": schema differs from " + spec.sources[0].filename().string();
        if (!missing.empty()) msg += "; missing columns: " + join(missing);
        if (!extra.empty()) msg += "; extra columns: " + join(extra);
        return Status::InvalidArgument(msg);
      }
      for (auto& row : t.rows) {
        std::vector<std::string> reordered(order.size());
        for (size_t c = 0; c < order.size(); ++c) reordered[c] = std::move(row[order[c]]);
        row = std::move(reordered);
      }
    }
    for (size_t r = 0; r < t.rows.size(); ++r) {
      merged.table.rows.push_back(std::move(t.rows[r]));
      merged.table.lines.push_back(t.lines[r]);
      merged.row_source.push_back(s);
    }
    for (const auto& rl : t.ragged) {
      merged.table.ragged.push_back(rl);
      merged.ragged_source.push_back(s);
    }
  }
  merged.target_column = static_cast<size_t>(merged.table.column_index(spec.target));
  return merged;
}

}  // namespace kiln::data
