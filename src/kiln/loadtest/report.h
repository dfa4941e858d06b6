#pragma once

#include <string>
#include <vector>

#include "kiln/core/json.h"
#include "kiln/loadtest/generator.h"
#include "kiln/loadtest/slo.h"

namespace kiln::loadtest {

/// Machine-readable result. Every latency is in microseconds and says so in its key
/// (`p99_us`, ...); rates are per second.
Json result_json(const LoadResult& r);

/// The human report: rates, errors by kind and status, percentiles, the per-second timeline.
std::string result_text(const LoadResult& r);

/// Text lines for SLO checks ("ok   p99<5ms  observed 1.23 ms").
std::string slo_text(const std::vector<SloCheck>& checks);
Json slo_json(const std::vector<SloCheck>& checks);

/// A self-contained SVG plot of per-second p50, p99 and max latency (ms) over time.
std::string timeline_svg(const LoadResult& r, const std::string& title);

/// "1.23 ms" / "850 us" / "2.50 s".
std::string format_ns(double ns);

}  // namespace kiln::loadtest
