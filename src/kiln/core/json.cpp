#include "kiln/core/json.h"

#include <algorithm>
#include <cmath>

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

bool json_nearly_equal(const Json& a, const Json& b, double relative_tolerance) {
  if (a.is_number_float() || b.is_number_float()) {
    if (!a.is_number() || !b.is_number()) return false;
    const double x = a.get<double>(), y = b.get<double>();
    return x == y || std::fabs(x - y) <= relative_tolerance * std::max(std::fabs(x), std::fabs(y));
  }
  if (a.type() != b.type() || a.size() != b.size()) return false;
  if (a.is_array()) {
    for (size_t i = 0; i < a.size(); ++i)
      if (!json_nearly_equal(a[i], b[i], relative_tolerance)) return false;
    return true;
  }
  if (a.is_object()) {
    auto i = a.begin();
    for (auto j = b.begin(); j != b.end(); ++i, ++j)
      if (i.key() != j.key() || !json_nearly_equal(i.value(), j.value(), relative_tolerance))
        return false;
    return true;
  }
  return a == b;
}

}  // namespace kiln
