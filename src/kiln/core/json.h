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

}  // namespace kiln
