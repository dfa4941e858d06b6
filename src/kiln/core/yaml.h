#pragma once

#include <filesystem>
#include <map>
#include <string>

#include "kiln/core/expected.h"
#include "kiln/core/json.h"

namespace kiln {

/// Converts a YAML document to JSON, the one form configs are validated in. Quoted scalars stay
/// strings; plain scalars become null (~, null, empty), bool (true/false), integer, float
/// (.inf/.nan too) or string. `lines`, if given, receives the 1-based line of every dotted key
/// path ("optimizer.lr", "layers[2].type") for error messages. Errors: InvalidArgument with the
/// line ("line 4: ..."). Thread-safe.
Expected<Json> yaml_to_json(const std::string& text, std::map<std::string, int>* lines = nullptr);

/// yaml_to_json() of a file; errors name the file (NotFound, IoError, InvalidArgument with line).
Expected<Json> read_yaml_file(const std::filesystem::path& path,
                              std::map<std::string, int>* lines = nullptr);

}  // namespace kiln
