#pragma once

#include <string>
#include <vector>

#include "kiln/core/expected.h"

namespace kiln::loadtest {

class Histogram;

/// One service-level objective term: a latency percentile below a bound, or the error ratio
/// below a bound. Parsed from `p99<5ms`, `p99.9<250us`, `p50<1s`, `errors<0.1%`.
struct SloTerm {
  enum class Kind { kLatency, kErrors };
  Kind kind = Kind::kLatency;
  double percentile = 0;       ///< kLatency: 0..100
  double bound_ns = 0;         ///< kLatency: strict upper bound in nanoseconds
  double max_error_ratio = 0;  ///< kErrors: strict upper bound, 0..1
  std::string text;            ///< as written
};

/// The outcome of checking one term against a run.
struct SloCheck {
  SloTerm term;
  double observed = 0;  ///< latency in ns, or the error ratio
  bool ok = false;
};

/// Parses a comma-separated list of terms (`p99<5ms,p50<1ms,errors<0.1%`). Errors name the term
/// and what is expected; an empty list is an error.
Expected<std::vector<SloTerm>> parse_slo(const std::string& text);

/// Checks each term against a latency histogram (nanoseconds) and the error count out of
/// `requests` (an empty run fails every latency term).
std::vector<SloCheck> check_slo(const std::vector<SloTerm>& terms, const Histogram& latency_ns,
                                int64_t requests, int64_t errors);

/// True if every check holds.
bool slo_ok(const std::vector<SloCheck>& checks);

}  // namespace kiln::loadtest
