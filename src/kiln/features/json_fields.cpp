#include "kiln/features/json_fields.h"

#include <cmath>

namespace kiln::features::internal {

namespace {

Status field_error(const std::string& owner, const char* field, const std::string& what) {
  return Status::InvalidArgument(owner + " JSON: field '" + field + "' " + what);
}

Expected<const Json*> find(const Json& j, const std::string& owner, const char* field) {
  KILN_RETURN_IF_ERROR(require_object(j, owner));
  auto it = j.find(field);
  if (it == j.end()) return field_error(owner, field, "is missing");
  return &*it;
}

Status check_array(const Json& v, const std::string& owner, const char* field,
                   int64_t expected_size) {
  if (!v.is_array()) return field_error(owner, field, "must be an array");
  if (expected_size >= 0 && static_cast<int64_t>(v.size()) != expected_size) {
    return field_error(
        owner, field,
        "has " + std::to_string(v.size()) + " values, expected " + std::to_string(expected_size));
  }
  return Status::Ok();
}

Expected<double> as_double(const Json& v, const std::string& owner, const std::string& where) {
  if (!v.is_number()) {
    return Status::InvalidArgument(owner + " JSON: field '" + where + "' must be a number");
  }
  double d = v.get<double>();
  if (!std::isfinite(d)) {
    return Status::InvalidArgument(owner + " JSON: field '" + where + "' must be finite");
  }
  return d;
}

Expected<int64_t> as_int(const Json& v, const std::string& owner, const std::string& where) {
  if (!v.is_number_integer()) {
    return Status::InvalidArgument(owner + " JSON: field '" + where + "' must be an integer");
  }
  return v.get<int64_t>();
}

}  // namespace

Status require_object(const Json& j, const std::string& owner) {
  if (!j.is_object()) {
    return Status::InvalidArgument(owner + " JSON: expected an object, got " +
                                   std::string(j.type_name()));
  }
  return Status::Ok();
}

Status reject_unknown_keys(const Json& j, const std::string& owner,
                           std::initializer_list<const char*> allowed) {
  KILN_RETURN_IF_ERROR(require_object(j, owner));
  for (auto it = j.begin(); it != j.end(); ++it) {
    bool known = false;
    for (const char* a : allowed) known = known || it.key() == a;
    if (!known) return Status::InvalidArgument(owner + " JSON: unknown field '" + it.key() + "'");
  }
  return Status::Ok();
}

Expected<bool> get_bool(const Json& j, const std::string& owner, const char* field) {
  KILN_ASSIGN_OR_RETURN(const Json* v, find(j, owner, field));
  if (!v->is_boolean()) return field_error(owner, field, "must be true or false");
  return v->get<bool>();
}

Expected<double> get_double(const Json& j, const std::string& owner, const char* field) {
  KILN_ASSIGN_OR_RETURN(const Json* v, find(j, owner, field));
  return as_double(*v, owner, field);
}

Expected<int64_t> get_int(const Json& j, const std::string& owner, const char* field) {
  KILN_ASSIGN_OR_RETURN(const Json* v, find(j, owner, field));
  return as_int(*v, owner, field);
}

Expected<std::string> get_string(const Json& j, const std::string& owner, const char* field) {
  KILN_ASSIGN_OR_RETURN(const Json* v, find(j, owner, field));
  if (!v->is_string()) return field_error(owner, field, "must be a string");
  return v->get<std::string>();
}

Status get_bool_opt(const Json& j, const std::string& owner, const char* field, bool* out) {
  KILN_RETURN_IF_ERROR(require_object(j, owner));
  if (!j.contains(field)) return Status::Ok();
  KILN_ASSIGN_OR_RETURN(*out, get_bool(j, owner, field));
  return Status::Ok();
}

Status get_double_opt(const Json& j, const std::string& owner, const char* field, double* out) {
  KILN_RETURN_IF_ERROR(require_object(j, owner));
  if (!j.contains(field)) return Status::Ok();
  KILN_ASSIGN_OR_RETURN(*out, get_double(j, owner, field));
  return Status::Ok();
}

Status get_int_opt(const Json& j, const std::string& owner, const char* field, int64_t* out) {
  KILN_RETURN_IF_ERROR(require_object(j, owner));
  if (!j.contains(field)) return Status::Ok();
  KILN_ASSIGN_OR_RETURN(*out, get_int(j, owner, field));
  return Status::Ok();
}

Status get_string_opt(const Json& j, const std::string& owner, const char* field,
                      std::string* out) {
  KILN_RETURN_IF_ERROR(require_object(j, owner));
  if (!j.contains(field)) return Status::Ok();
  KILN_ASSIGN_OR_RETURN(*out, get_string(j, owner, field));
  return Status::Ok();
}

Expected<std::vector<double>> get_doubles(const Json& j, const std::string& owner,
                                          const char* field, int64_t expected_size) {
  KILN_ASSIGN_OR_RETURN(const Json* v, find(j, owner, field));
  KILN_RETURN_IF_ERROR(check_array(*v, owner, field, expected_size));
  std::vector<double> out;
  out.reserve(v->size());
  for (size_t i = 0; i < v->size(); ++i) {
    KILN_ASSIGN_OR_RETURN(
        double d, as_double((*v)[i], owner, std::string(field) + "[" + std::to_string(i) + "]"));
    out.push_back(d);
  }
  return out;
}

Expected<std::vector<int64_t>> get_ints(const Json& j, const std::string& owner, const char* field,
                                        int64_t expected_size) {
  KILN_ASSIGN_OR_RETURN(const Json* v, find(j, owner, field));
  KILN_RETURN_IF_ERROR(check_array(*v, owner, field, expected_size));
  std::vector<int64_t> out;
  out.reserve(v->size());
  for (size_t i = 0; i < v->size(); ++i) {
    KILN_ASSIGN_OR_RETURN(
        int64_t n, as_int((*v)[i], owner, std::string(field) + "[" + std::to_string(i) + "]"));
    out.push_back(n);
  }
  return out;
}

Expected<std::vector<std::string>> get_strings(const Json& j, const std::string& owner,
                                               const char* field, int64_t expected_size) {
  KILN_ASSIGN_OR_RETURN(const Json* v, find(j, owner, field));
  KILN_RETURN_IF_ERROR(check_array(*v, owner, field, expected_size));
  std::vector<std::string> out;
  out.reserve(v->size());
  for (size_t i = 0; i < v->size(); ++i) {
    if (!(*v)[i].is_string()) {
      return field_error(owner, field, "[" + std::to_string(i) + "] must be a string");
    }
    out.push_back((*v)[i].get<std::string>());
  }
  return out;
}

Expected<Header> read_header(const Json& j, const std::string& kind) {
  KILN_RETURN_IF_ERROR(require_object(j, kind));
  KILN_ASSIGN_OR_RETURN(std::string got_kind, get_string(j, kind, "kind"));
  if (got_kind != kind) {
    return Status::InvalidArgument(kind + " JSON: field 'kind' is '" + got_kind + "', expected '" +
                                   kind + "'");
  }
  KILN_ASSIGN_OR_RETURN(int64_t version, get_int(j, kind, "version"));
  if (version != kFormatVersion) {
    return Status::InvalidArgument(kind + " JSON: unsupported version " + std::to_string(version) +
                                   " (this build reads version " + std::to_string(kFormatVersion) +
                                   ")");
  }
  Header h;
  KILN_ASSIGN_OR_RETURN(h.fitted, get_bool(j, kind, "fitted"));
  if (h.fitted) {
    KILN_ASSIGN_OR_RETURN(h.input_features, get_int(j, kind, "input_features"));
    KILN_ASSIGN_OR_RETURN(h.output_features, get_int(j, kind, "output_features"));
    if (h.input_features < 1 || h.output_features < 1) {
      return Status::InvalidArgument(kind +
                                     " JSON: fields 'input_features' and 'output_features' must "
                                     "be >= 1");
    }
  }
  if (j.contains("options")) {
    h.options = j.at("options");
    KILN_RETURN_IF_ERROR(require_object(h.options, kind + " options"));
  }
  return h;
}

}  // namespace kiln::features::internal
