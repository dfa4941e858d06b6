#pragma once

// Internal to kiln::features: strict readers for the fields of a serialised transform. Every error
// is InvalidArgument and names the owner ("standard_scaler") and the field.

#include <cstdint>
#include <initializer_list>
#include <string>
#include <vector>

#include "kiln/core/expected.h"
#include "kiln/core/json.h"

namespace kiln::features::internal {

/// The format version every transform writes as "version".
inline constexpr int64_t kFormatVersion = 1;

/// OK when `j` is an object; otherwise names `owner`.
Status require_object(const Json& j, const std::string& owner);
/// Rejects keys of `j` not in `allowed` (catches typos in hand-written configs).
Status reject_unknown_keys(const Json& j, const std::string& owner,
                           std::initializer_list<const char*> allowed);

Expected<bool> get_bool(const Json& j, const std::string& owner, const char* field);
Expected<double> get_double(const Json& j, const std::string& owner, const char* field);
Expected<int64_t> get_int(const Json& j, const std::string& owner, const char* field);
Expected<std::string> get_string(const Json& j, const std::string& owner, const char* field);

/// Optional variants: `*out` keeps its value when the field is absent.
Status get_bool_opt(const Json& j, const std::string& owner, const char* field, bool* out);
Status get_double_opt(const Json& j, const std::string& owner, const char* field, double* out);
Status get_int_opt(const Json& j, const std::string& owner, const char* field, int64_t* out);
Status get_string_opt(const Json& j, const std::string& owner, const char* field, std::string* out);

/// An array of finite numbers; `expected_size` < 0 accepts any length.
Expected<std::vector<double>> get_doubles(const Json& j, const std::string& owner,
                                          const char* field, int64_t expected_size);
Expected<std::vector<int64_t>> get_ints(const Json& j, const std::string& owner, const char* field,
                                        int64_t expected_size);
Expected<std::vector<std::string>> get_strings(const Json& j, const std::string& owner,
                                               const char* field, int64_t expected_size);

/// Common fields of every serialised transform.
struct Header {
  bool fitted = false;
  int64_t input_features = 0;
  int64_t output_features = 0;
  Json options = Json::object();
};

/// Checks "kind" == kind and "version" == kFormatVersion, reads "fitted" and, when fitted,
/// "input_features" / "output_features" (>= 1). "options" defaults to {} when absent.
Expected<Header> read_header(const Json& j, const std::string& kind);

}  // namespace kiln::features::internal
