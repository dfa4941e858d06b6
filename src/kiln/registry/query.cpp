#include "kiln/registry/query.h"

#include <algorithm>
#include <cstdlib>

namespace kiln::registry {
namespace {

bool as_number(const Json& j, double* out) {
  if (j.is_number()) {
    *out = j.get<double>();
    return true;
  }
  if (j.is_boolean()) {
    *out = j.get<bool>() ? 1 : 0;
    return true;
  }
  if (!j.is_string()) return false;
  const std::string& s = j.get_ref<const std::string&>();
  if (s.empty()) return false;
  char* end = nullptr;
  *out = std::strtod(s.c_str(), &end);
  return end && *end == '\0';
}

std::string as_text(const Json& j) { return j.is_string() ? j.get<std::string>() : j.dump(); }

std::string trim(const std::string& s) {
  size_t b = s.find_first_not_of(" \t"), e = s.find_last_not_of(" \t");
  return b == std::string::npos ? "" : s.substr(b, e - b + 1);
}

}  // namespace

const Json* json_at_path(const Json& record, const std::string& path) {
  const Json* cur = &record;
  size_t start = 0;
  while (start <= path.size()) {
    size_t dot = path.find('.', start);
    std::string part =
        path.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    if (!cur->is_object() || !cur->contains(part)) return nullptr;
    cur = &cur->at(part);
    if (dot == std::string::npos) break;
    start = dot + 1;
  }
  return cur;
}

Expected<WhereClause> parse_where(const std::string& text) {
  static const char* kOps[] = {"<=", ">=", "!=", "==", "=", "<", ">"};
  for (size_t i = 0; i < text.size(); ++i) {
    for (const char* op : kOps) {
      const std::string o = op;
      if (text.compare(i, o.size(), o) != 0) continue;
      WhereClause w{trim(text.substr(0, i)), o == "==" ? "=" : o, trim(text.substr(i + o.size()))};
      if (w.key.empty())
        return Status::InvalidArgument("--where '" + text + "': no key before '" + o + "'");
      return w;
    }
  }
  return Status::InvalidArgument("--where '" + text +
                                 "': expected KEY OP VALUE with OP one of = != < <= > >= (e.g. "
                                 "'metrics.accuracy>0.9', 'tags.stage=prod')");
}

bool WhereClause::matches(const Json& record) const {
  const Json* v = json_at_path(record, key);
  if (!v || v->is_null()) return false;
  double a = 0, b = 0;
  int cmp;
  if (as_number(*v, &a) && as_number(Json(value), &b)) {
    cmp = a < b ? -1 : (a > b ? 1 : 0);
  } else {
    const std::string s = as_text(*v);
    cmp = s < value ? -1 : (s > value ? 1 : 0);
  }
  if (op == "=") return cmp == 0;
  if (op == "!=") return cmp != 0;
  if (op == "<") return cmp < 0;
  if (op == "<=") return cmp <= 0;
  if (op == ">") return cmp > 0;
  return cmp >= 0;
}

Status sort_records(std::vector<Json>* records, const std::string& key_text) {
  if (key_text.empty() || key_text == "-")
    return Status::InvalidArgument("--sort: give a key, e.g. metrics.accuracy or -version");
  const bool desc = key_text[0] == '-';
  const std::string key = desc ? key_text.substr(1) : key_text;
  std::stable_sort(records->begin(), records->end(), [&](const Json& x, const Json& y) {
    const Json* a = json_at_path(x, key);
    const Json* b = json_at_path(y, key);
    if (!a || a->is_null()) return false;
    if (!b || b->is_null()) return true;
    double na, nb;
    int cmp;
    if (as_number(*a, &na) && as_number(*b, &nb))
      cmp = na < nb ? -1 : (na > nb ? 1 : 0);
    else
      cmp = as_text(*a).compare(as_text(*b));
    return desc ? cmp > 0 : cmp < 0;
  });
  return Status::Ok();
}

Json flatten_json(const Json& value, const std::string& prefix) {
  Json out = Json::object();
  if (value.is_object() && !value.empty()) {
    for (const auto& [k, v] : value.items()) {
      Json sub = flatten_json(v, prefix.empty() ? k : prefix + "." + k);
      for (const auto& [sk, sv] : sub.items()) out[sk] = sv;
    }
  } else if (!prefix.empty()) {
    out[prefix] = value;
  }
  return out;
}

}  // namespace kiln::registry
