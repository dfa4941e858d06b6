#pragma once

#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

#include "kiln/core/expected.h"

namespace kiln {

using Json = nlohmann::ordered_json;

/// Parses a JSON file; errors name the path and the parser's byte offset.
Expected<Json> read_json_file(const std::filesystem::path& path);

/// Writes JSON (2-space indent, trailing newline) atomically.
Status write_json_file_atomic(const std::filesystem::path& path, const Json& value);

/// Stable text for hashing: keys as inserted (ordered_json), no whitespace, floats round-trip.
std::string canonical_json(const Json& value);

/// Structural equality where two floating-point numbers match when they differ by at most
/// `relative_tolerance` of the larger magnitude (integers, strings, keys and order exactly).
/// For fitted statistics that may differ in the last bits between machines or thread counts.
bool json_nearly_equal(const Json& a, const Json& b, double relative_tolerance = 1e-9);

}  // namespace kiln
