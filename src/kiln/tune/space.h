#pragma once

#include <map>
#include <string>
#include <vector>

#include "kiln/core/expected.h"
#include "kiln/core/json.h"

namespace kiln::tune {

/// One searchable parameter of a space file:
///
/// ```yaml
/// params:
///   optimizer.lr: {type: float, low: 1e-4, high: 1e-1, log: true}
///   batch_size: {type: int, low: 32, high: 256, step: 32}
///   optimizer.name: {type: categorical, choices: [sgd, adamw]}
///   optimizer.momentum: {type: float, low: 0.5, high: 0.99, when: {optimizer.name: sgd}}
/// ```
///
/// A parameter with `when` is active only in trials whose named parameters took those values.
/// Plain value type; thread-compatible.
struct ParamSpec {
  enum class Type { kFloat, kInt, kCategorical };
  std::string name;
  Type type = Type::kFloat;
  double low = 0, high = 0;
  bool log = false;
  double step = 0;               ///< int: step (default 1); float: 0 (continuous)
  Json choices = Json::array();  ///< categorical
  Json when = Json::object();    ///< {other_param: value}; empty: always active

  Json to_json() const;
  /// Number of distinct values (int, categorical); 0 for continuous floats.
  int64_t cardinality() const;
  /// The i-th value of a discrete parameter (i < cardinality()).
  Json value_at(int64_t i) const;
};

/// A search space: parameters in file order (a parameter's `when` may name only parameters listed
/// before it, so sampling in order always knows the values a condition looks at).
struct SearchSpace {
  std::vector<ParamSpec> params;

  Json to_json() const;
  const ParamSpec* find(const std::string& name) const;
  /// True when `p`'s `when` conditions hold for the values in `assigned`.
  static bool active(const ParamSpec& p, const Json& assigned);
  /// Human-readable difference from `other` ("" when equal), e.g. for a study reused with another
  /// space: "optimizer.lr: {low: 0.001} here, {low: 0.0001} in the study; dropout: only here".
  std::string difference(const SearchSpace& other) const;
};

/// Parses a space from JSON (as yaml_to_json gives it). Errors are InvalidArgument naming
/// `source`, the line (when `lines` has it) and the parameter: empty ranges, log ranges with
/// low <= 0, unknown types or keys, conditions on unknown or later parameters.
Expected<SearchSpace> parse_space(const Json& j, const std::string& source = "space",
                                  const std::map<std::string, int>& lines = {});

/// Reads a YAML space file. Blocks (file I/O); thread-safe.
Expected<SearchSpace> load_space(const std::string& path);

/// The value as text for a command line: integers without a decimal point, floats with enough
/// digits to round-trip, strings unquoted.
std::string value_text(const Json& v);

}  // namespace kiln::tune
