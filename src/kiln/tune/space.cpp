#include "kiln/tune/space.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "kiln/core/yaml.h"

namespace kiln::tune {
namespace {

const char* type_name(ParamSpec::Type t) {
  switch (t) {
    case ParamSpec::Type::kFloat:
      return "float";
    case ParamSpec::Type::kInt:
      return "int";
    case ParamSpec::Type::kCategorical:
      return "categorical";
  }
  return "?";
}

}  // namespace

Json ParamSpec::to_json() const {
  Json j = {{"type", type_name(type)}};
  if (type == Type::kCategorical) {
    j["choices"] = choices;
  } else {
    if (type == Type::kInt) {
      j["low"] = static_cast<int64_t>(std::llround(low));
      j["high"] = static_cast<int64_t>(std::llround(high));
      j["log"] = log;
      j["step"] = static_cast<int64_t>(std::llround(step));
    } else {
      j["low"] = low;
      j["high"] = high;
      j["log"] = log;
    }
  }
  if (!when.empty()) j["when"] = when;
  return j;
}

int64_t ParamSpec::cardinality() const {
  if (type == Type::kCategorical) return static_cast<int64_t>(choices.size());
  if (type == Type::kInt) return static_cast<int64_t>(std::floor((high - low) / step + 1e-9)) + 1;
  return 0;
}

Json ParamSpec::value_at(int64_t i) const {
  if (type == Type::kCategorical) return choices[static_cast<size_t>(i)];
  return static_cast<int64_t>(std::llround(low + static_cast<double>(i) * step));
}

Json SearchSpace::to_json() const {
  Json j = Json::object();
  for (const auto& p : params) j[p.name] = p.to_json();
  return Json{{"params", j}};
}

const ParamSpec* SearchSpace::find(const std::string& name) const {
  for (const auto& p : params)
    if (p.name == name) return &p;
  return nullptr;
}

bool SearchSpace::active(const ParamSpec& p, const Json& assigned) {
  for (auto it = p.when.begin(); it != p.when.end(); ++it) {
    auto v = assigned.find(it.key());
    if (v == assigned.end() || *v != it.value()) return false;
  }
  return true;
}

std::string SearchSpace::difference(const SearchSpace& other) const {
  std::string out;
  auto add = [&out](const std::string& s) { out += (out.empty() ? "" : "; ") + s; };
  for (const auto& p : params) {
    const ParamSpec* q = other.find(p.name);
    if (!q)
      add(p.name + ": only in the new space");
    else if (p.to_json() != q->to_json())
      add(p.name + ": " + p.to_json().dump() + " now, " + q->to_json().dump() + " in the study");
  }
  for (const auto& q : other.params)
    if (!find(q.name)) add(q.name + ": only in the study's space");
  return out;
}

Expected<SearchSpace> parse_space(const Json& j, const std::string& source,
                                  const std::map<std::string, int>& lines) {
  auto where = [&](const std::string& key) {
    auto it = lines.find(key);
    return source + (it != lines.end() ? " line " + std::to_string(it->second) : "") + ": ";
  };
  if (!j.is_object() || !j.contains("params") || !j["params"].is_object() || j["params"].empty())
    return Status::InvalidArgument(source + ": expected a `params:` mapping of parameter names");
  for (auto it = j.begin(); it != j.end(); ++it)
    if (it.key() != "params")
      return Status::InvalidArgument(where(it.key()) + it.key() + ": unknown key (valid: params)");
  SearchSpace space;
  for (auto it = j["params"].begin(); it != j["params"].end(); ++it) {
    const std::string key = "params." + it.key();
    auto bad = [&](const std::string& msg) {
      return Status::InvalidArgument(where(key) + "parameter " + it.key() + ": " + msg);
    };
    const Json& d = it.value();
    if (!d.is_object()) return bad("expected a mapping {type: float|int|categorical, ...}");
    ParamSpec p;
    p.name = it.key();
    const std::string type = d.value("type", std::string());
    std::vector<std::string> valid;
    if (type == "float") {
      p.type = ParamSpec::Type::kFloat;
      valid = {"type", "low", "high", "log", "when"};
    } else if (type == "int") {
      p.type = ParamSpec::Type::kInt;
      valid = {"type", "low", "high", "step", "log", "when"};
    } else if (type == "categorical") {
      p.type = ParamSpec::Type::kCategorical;
      valid = {"type", "choices", "when"};
    } else {
      return bad("type: expected float, int or categorical (got " +
                 (d.contains("type") ? d["type"].dump() : std::string("nothing")) + ")");
    }
    for (auto k = d.begin(); k != d.end(); ++k) {
      bool ok = false;
      for (const auto& v : valid) ok = ok || v == k.key();
      if (!ok) {
        std::string list;
        for (const auto& v : valid) list += (list.empty() ? "" : ", ") + v;
        return bad(k.key() + ": unknown key for a " + type + " parameter (valid: " + list + ")");
      }
    }
    if (p.type == ParamSpec::Type::kCategorical) {
      if (!d.contains("choices") || !d["choices"].is_array() || d["choices"].empty())
        return bad("choices: expected a non-empty list");
      for (const auto& c : d["choices"])
        if (c.is_object() || c.is_array() || c.is_null())
          return bad("choices: each choice must be a number, string or boolean");
      p.choices = d["choices"];
    } else {
      for (const char* k : {"low", "high"})
        if (!d.contains(k) || !d[k].is_number()) return bad(std::string(k) + ": required number");
      p.low = d["low"].get<double>();
      p.high = d["high"].get<double>();
      if (d.contains("log")) {
        if (!d["log"].is_boolean()) return bad("log: expected true or false");
        p.log = d["log"].get<bool>();
      }
      if (!(p.low < p.high))
        return bad("empty range: low (" + value_text(d["low"]) + ") must be below high (" +
                   value_text(d["high"]) + ")");
      if (p.log && p.low <= 0)
        return bad("log range needs low > 0 (got low " + value_text(d["low"]) + ")");
      if (p.type == ParamSpec::Type::kInt) {
        if (!d["low"].is_number_integer() || !d["high"].is_number_integer())
          return bad("low and high must be integers");
        p.step = 1;
        if (d.contains("step")) {
          if (!d["step"].is_number_integer() || d["step"].get<int64_t>() < 1)
            return bad("step: expected an integer >= 1");
          p.step = d["step"].get<double>();
        }
        if (p.log && p.step != 1) return bad("log and step > 1 cannot be combined");
      }
    }
    if (d.contains("when")) {
      if (!d["when"].is_object() || d["when"].empty())
        return bad("when: expected a mapping {other_param: value}");
      for (auto c = d["when"].begin(); c != d["when"].end(); ++c) {
        const ParamSpec* other = space.find(c.key());
        if (!other)
          return bad("when: " + c.key() +
                     " is not a parameter listed before this one (conditions may only name "
                     "earlier parameters)");
        if (other->type == ParamSpec::Type::kCategorical) {
          bool found = false;
          for (const auto& ch : other->choices) found = found || ch == c.value();
          if (!found)
            return bad("when: " + c.value().dump() + " is not one of " + c.key() + "'s choices " +
                       other->choices.dump());
        }
      }
      p.when = d["when"];
    }
    space.params.push_back(std::move(p));
  }
  return space;
}

Expected<SearchSpace> load_space(const std::string& path) {
  std::map<std::string, int> lines;
  KILN_ASSIGN_OR_RETURN(Json j, read_yaml_file(path, &lines));
  return parse_space(j, path, lines);
}

std::string value_text(const Json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_number_integer()) return std::to_string(v.get<int64_t>());
  if (v.is_number_float()) {
    char buf[40];
    std::snprintf(buf, sizeof buf, "%.17g", v.get<double>());
    // Prefer the shortest text that round-trips.
    for (int prec = 6; prec < 17; ++prec) {
      char shorter[40];
      std::snprintf(shorter, sizeof shorter, "%.*g", prec, v.get<double>());
      if (std::strtod(shorter, nullptr) == v.get<double>()) return shorter;
    }
    return buf;
  }
  if (v.is_boolean()) return v.get<bool>() ? "true" : "false";
  return v.dump();
}

}  // namespace kiln::tune
