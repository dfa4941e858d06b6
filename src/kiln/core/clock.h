#pragma once

#include <string>

namespace kiln {

/// The current UTC time as ISO 8601 to the second, e.g. "2026-11-28T11:32:17Z" (manifests,
/// registry rows, run records). Thread-safe.
std::string utc_now_iso8601();

}  // namespace kiln
