#include "kiln/core/json.h"

#include "kiln/core/files.h"

namespace kiln {

Expected<Json> read_json_file(const std::filesystem::path& path) {
  KILN_ASSIGN_OR_RETURN(std::string text, read_file(path));
  try {
    return Json::parse(text);
  } catch (const nlohmann::json::parse_error& e) {
    return Status::InvalidArgument(path.string() + ": invalid JSON at byte " +
                                   std::to_string(e.byte) + ": " + e.what());
  }
}

Status write_json_file_atomic(const std::filesystem::path& path, const Json& value) {
  return write_file_atomic(path, value.dump(2) + "\n");
}

std::string canonical_json(const Json& value) { return value.dump(); }

}  // namespace kiln
