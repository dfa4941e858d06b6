#pragma once

// The small expression language of `kiln registry list --where/--sort`, over the JSON form of a
// version (VersionInfo::to_json()).

#include <string>
#include <vector>

#include "kiln/core/expected.h"
#include "kiln/core/json.h"

namespace kiln::registry {

/// A parsed "KEY OP VALUE" filter, e.g. "metrics.accuracy>0.9", "tags.stage=prod".
struct WhereClause {
  std::string key;  ///< dotted path into the version's JSON
  std::string op;   ///< = == != < <= > >=
  std::string value;

  /// True when the key exists and the comparison holds (numerically when both sides are
  /// numbers, else as strings).
  bool matches(const Json& record) const;
};

/// Parses one filter. InvalidArgument shows the expected form.
Expected<WhereClause> parse_where(const std::string& text);

/// The value at a dotted path ("metrics.accuracy"), or nullptr.
const Json* json_at_path(const Json& record, const std::string& path);

/// Sorts records by a dotted key ("-key" descending; records lacking the key go last), stably.
Status sort_records(std::vector<Json>* records, const std::string& key);

/// Dotted paths of every scalar (and array) leaf: {"a": {"b": 1}} -> {"a.b": 1}.
Json flatten_json(const Json& value, const std::string& prefix = "");

}  // namespace kiln::registry
