#include "kiln/checks/suite.h"

#include <cmath>
#include <cstdio>
#include <map>

#include "kiln/core/files.h"
#include "kiln/core/hash.h"
#include "kiln/core/yaml.h"

namespace kiln::checks {
namespace {

enum class FieldType { kNumber, kInteger, kString, kBool, kList, kObject, kNumberOrObject };

struct KindFields {
  std::map<std::string, FieldType> fields;  ///< besides kind and name
  std::vector<std::string> required;
};

const std::map<std::string, FieldType>& threshold_fields() {
  static const std::map<std::string, FieldType> f = {{"threshold", FieldType::kNumber},
                                                     {"min_absolute_change", FieldType::kNumber},
                                                     {"min_relative_change", FieldType::kNumber},
                                                     {"greater_is_better", FieldType::kBool}};
  return f;
}

const std::map<std::string, KindFields>& kind_fields() {
  using F = FieldType;
  static const std::map<std::string, KindFields> kinds = [] {
    std::map<std::string, KindFields> k;
    k["smoke"] = {{{"rows", F::kInteger}, {"tolerance", F::kNumber}}, {}};
    k["model"] = {{{"metric", F::kString},
                   {"class", F::kString},
                   {"per_class", F::kBool},
                   {"slice", F::kObject},
                   {"baseline", F::kString}},
                  {"metric"}};
    for (const auto& [f, t] : threshold_fields()) k["model"].fields[f] = t;
    k["trivial_baseline"] = {{{"alpha", F::kNumber}}, {}};
    k["recorded_metrics"] = {{{"max_drop", F::kNumber}, {"metrics", F::kList}}, {}};
    k["boundary"] = {{{"max_batch", F::kInteger},
                      {"noise", F::kList},
                      {"few_per_class", F::kObject},
                      {"rows", F::kInteger}},
                     {}};
    k["invariance"] = {{{"perturbation", F::kString},
                        {"pixels", F::kInteger},
                        {"factor", F::kNumber},
                        {"tolerance", F::kNumber},
                        {"min_unchanged", F::kNumber},
                        {"rows", F::kInteger}},
                       {"perturbation", "min_unchanged"}};
    k["directional"] = {{{"feature", F::kString},
                         {"delta", F::kNumber},
                         {"expect", F::kString},
                         {"output", F::kString},
                         {"tolerance", F::kNumber},
                         {"min_pass", F::kNumber},
                         {"rows", F::kInteger}},
                        {"feature", "expect"}};
    k["ensemble"] = {{{"members", F::kList}, {"tolerance", F::kNumber}}, {"members"}};
    k["serve"] = {{{"rows", F::kInteger}, {"batch", F::kInteger}, {"tolerance", F::kNumber}}, {}};
    k["compare"] = {{{"baseline", F::kString},
                     {"metric", F::kString},
                     {"alpha", F::kNumber},
                     {"expect", F::kString},
                     {"resamples", F::kInteger}},
                    {"baseline"}};
    k["latency"] = {{{"batch_sizes", F::kList},
                     {"p50_ms", F::kNumberOrObject},
                     {"p99_ms", F::kNumberOrObject},
                     {"seconds", F::kNumber}},
                    {}};
    return k;
  }();
  return kinds;
}

bool type_matches(const Json& v, FieldType t) {
  switch (t) {
    case FieldType::kNumber:
      return v.is_number();
    case FieldType::kInteger:
      return v.is_number_integer();
    case FieldType::kString:
      return v.is_string();
    case FieldType::kBool:
      return v.is_boolean();
    case FieldType::kList:
      return v.is_array();
    case FieldType::kObject:
      return v.is_object();
    case FieldType::kNumberOrObject:
      return v.is_number() || v.is_object();
  }
  return false;
}

const char* type_name(FieldType t) {
  switch (t) {
    case FieldType::kNumber:
      return "a number";
    case FieldType::kInteger:
      return "an integer";
    case FieldType::kString:
      return "a string";
    case FieldType::kBool:
      return "true or false";
    case FieldType::kList:
      return "a list";
    case FieldType::kObject:
      return "a mapping";
    case FieldType::kNumberOrObject:
      return "a number or a mapping of batch size to number";
  }
  return "";
}

std::string format_number(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.6g", v);
  return buf;
}

CheckSpec derived(const std::string& kind, const std::string& name, Json params = Json::object()) {
  return CheckSpec{kind, name, std::move(params), 0};
}

}  // namespace

const std::vector<std::string>& check_kinds() {
  static const std::vector<std::string> kinds = {
      "smoke",    "model",      "trivial_baseline", "recorded_metrics",
      "boundary", "invariance", "directional",      "ensemble",
      "serve",    "compare",    "latency"};
  return kinds;
}

Json Suite::to_json() const {
  Json checks_json = Json::array();
  for (const auto& c : checks) {
    Json j = c.params;
    j["kind"] = c.kind;
    j["name"] = c.name;
    checks_json.push_back(j);
  }
  return {{"name", name}, {"path", path.string()}, {"sha256", sha256},
          {"data", data}, {"split", split},        {"alpha", alpha},
          {"rows", rows}, {"seed", seed},          {"checks", checks_json}};
}

std::string Suite::where(const CheckSpec& check) const {
  if (path.empty() || check.line == 0) return path.empty() ? "default suite" : path.string();
  return path.string() + ":" + std::to_string(check.line);
}

Expected<Suite> read_suite(const fs::path& path) {
  std::map<std::string, int> lines;
  KILN_ASSIGN_OR_RETURN(Json doc, read_yaml_file(path, &lines));
  KILN_ASSIGN_OR_RETURN(std::string bytes, read_file(path));
  auto at = [&](const std::string& key) {
    auto it = lines.find(key);
    return path.string() + (it == lines.end() ? "" : ":" + std::to_string(it->second));
  };
  auto bad = [&](const std::string& key, const std::string& what) {
    return Status::InvalidArgument(at(key) + ": " + what);
  };
  if (!doc.is_object()) return Status::InvalidArgument(path.string() + ": a suite is a mapping");
  Suite suite;
  suite.path = path;
  suite.sha256 = sha256_hex(bytes);
  suite.name = path.stem().string();
  bool defaults = true;
  for (const auto& [key, value] : doc.items()) {
    if (key == "name" && value.is_string()) {
      suite.name = value.get<std::string>();
    } else if (key == "data" && value.is_string()) {
      suite.data = value.get<std::string>();
      // A relative path is relative to the suite file, like a config's.
      if (!suite.data.empty() && fs::path(suite.data).is_relative() &&
          fs::exists(path.parent_path() / suite.data))
        suite.data = (path.parent_path() / suite.data).string();
    } else if (key == "split" && value.is_string()) {
      suite.split = value.get<std::string>();
    } else if (key == "alpha" && value.is_number()) {
      suite.alpha = value.get<double>();
      if (!(suite.alpha > 0 && suite.alpha < 1)) return bad(key, "alpha must be in (0, 1)");
    } else if (key == "rows" && value.is_number_integer()) {
      suite.rows = value.get<int64_t>();
      if (suite.rows < 10) return bad(key, "rows must be at least 10");
    } else if (key == "seed" && value.is_number_integer()) {
      suite.seed = value.get<uint64_t>();
    } else if (key == "defaults" && value.is_boolean()) {
      defaults = value.get<bool>();
    } else if (key == "checks" && value.is_array()) {
      // read below
    } else if (key == "name" || key == "data" || key == "split" || key == "alpha" ||
               key == "rows" || key == "seed" || key == "defaults" || key == "checks") {
      return bad(key, "'" + key + "' has the wrong type");
    } else {
      return bad(key, "unknown field '" + key +
                          "' (fields: name, data, split, alpha, rows, seed, defaults, checks)");
    }
  }
  if (!doc.contains("checks") || doc["checks"].empty())
    return Status::InvalidArgument(path.string() + ": no checks (give a 'checks:' list)");
  std::map<std::string, int> name_count;
  for (size_t i = 0; i < doc["checks"].size(); ++i) {
    const std::string key = "checks[" + std::to_string(i) + "]";
    const Json& item = doc["checks"][i];
    if (!item.is_object()) return bad(key, key + " must be a mapping with a 'kind'");
    if (!item.contains("kind") || !item["kind"].is_string())
      return bad(key, key + " has no 'kind'");
    CheckSpec check;
    check.kind = item["kind"].get<std::string>();
    auto line_it = lines.find(key + ".kind");
    check.line = line_it == lines.end() ? 0 : line_it->second;
    auto kind_it = kind_fields().find(check.kind);
    if (kind_it == kind_fields().end()) {
      std::string known;
      for (const auto& k : check_kinds()) known += (known.empty() ? "" : ", ") + k;
      return bad(key + ".kind", "unknown check kind '" + check.kind + "' (kinds: " + known + ")");
    }
    for (const auto& [field, value] : item.items()) {
      if (field == "kind") continue;
      if (field == "name") {
        if (!value.is_string()) return bad(key + ".name", "'name' must be a string");
        check.name = value.get<std::string>();
        continue;
      }
      auto f = kind_it->second.fields.find(field);
      if (f == kind_it->second.fields.end()) {
        std::string known = "name";
        for (const auto& [k, t] : kind_it->second.fields) known += ", " + k;
        return bad(key + "." + field, "unknown field '" + field + "' for a " + check.kind +
                                          " check (fields: " + known + ")");
      }
      if (!type_matches(value, f->second))
        return bad(key + "." + field, "'" + field + "' must be " + type_name(f->second));
      check.params[field] = value;
    }
    for (const auto& req : kind_it->second.required)
      if (!check.params.contains(req))
        return bad(key + ".kind", "a " + check.kind + " check needs '" + req + "'");
    if (check.kind == "model") {
      Expected<MetricThreshold> t = MetricThreshold::from_json(check.params, true);
      if (!t.ok()) return bad(key + ".kind", t.status().message());
    }
    if (check.name.empty()) {
      check.name = check.kind;
      for (const char* detail : {"metric", "perturbation", "feature", "baseline"})
        if (check.params.contains(detail))
          check.name += "/" + check.params[detail].get<std::string>();
      if (check.params.contains("class"))
        check.name += "/" + check.params["class"].get<std::string>();
    }
    if (++name_count[check.name] > 1) check.name += "#" + std::to_string(name_count[check.name]);
    suite.checks.push_back(std::move(check));
  }
  if (defaults) {
    std::vector<CheckSpec> front;
    for (const char* kind : {"smoke", "trivial_baseline", "recorded_metrics"}) {
      bool named = false;
      for (const auto& c : suite.checks) named |= c.kind == kind;
      if (!named) front.push_back(derived(kind, kind));
    }
    suite.checks.insert(suite.checks.begin(), front.begin(), front.end());
  }
  return suite;
}

Suite default_suite(const model::Bundle& bundle) {
  Suite suite;
  suite.name = "default";
  const bool images = bundle.raw_input_shape().size() == 3;
  const bool classification = bundle.task() == "classification";
  suite.checks.push_back(derived("smoke", "smoke"));
  if (bundle.task() == "classification" || bundle.task() == "regression") {
    suite.checks.push_back(derived("trivial_baseline", "trivial_baseline"));
    suite.checks.push_back(derived("recorded_metrics", "recorded_metrics"));
    Json boundary = Json::object();
    if (classification)
      boundary["noise"] =
          Json::array({Json{{"sigma", 0.02}}, Json{{"sigma", 0.05}}, Json{{"sigma", 0.1}}});
    suite.checks.push_back(derived("boundary", "boundary", boundary));
    if (images) {
      suite.checks.push_back(
          derived("invariance", "invariance/shift",
                  {{"perturbation", "shift"}, {"pixels", 1}, {"min_unchanged", 0.8}}));
      suite.checks.push_back(
          derived("invariance", "invariance/brightness",
                  {{"perturbation", "brightness"}, {"factor", 0.9}, {"min_unchanged", 0.9}}));
      const bool flips = bundle.manifest.value("test_time_augmentation", "none") == "flip";
      if (flips)
        suite.checks.push_back(derived("invariance", "invariance/flip",
                                       {{"perturbation", "flip"}, {"min_unchanged", 0.9}}));
    } else {
      suite.checks.push_back(
          derived("invariance", "invariance/jitter",
                  {{"perturbation", "jitter"}, {"tolerance", 0.01}, {"min_unchanged", 0.95}}));
    }
  }
  suite.checks.push_back(derived("serve", "serve"));
  suite.checks.push_back(derived("latency", "latency"));
  suite.sha256 = sha256_hex(suite.to_json().dump());
  return suite;
}

Expected<MetricThreshold> MetricThreshold::from_json(const Json& params,
                                                     bool default_greater_is_better) {
  MetricThreshold t;
  t.greater_is_better = params.value("greater_is_better", default_greater_is_better);
  if (params.contains("threshold")) t.threshold = params["threshold"].get<double>();
  if (params.contains("min_absolute_change")) {
    t.min_absolute_change = params["min_absolute_change"].get<double>();
    if (!(*t.min_absolute_change > 0))
      return Status::InvalidArgument("min_absolute_change must be > 0");
  }
  if (params.contains("min_relative_change")) {
    t.min_relative_change = params["min_relative_change"].get<double>();
    if (!(*t.min_relative_change >= 0 && *t.min_relative_change <= 1))
      return Status::InvalidArgument("min_relative_change must be in [0, 1]");
  }
  if (!t.threshold && !t.min_absolute_change && !t.min_relative_change)
    return Status::InvalidArgument(
        "a model check needs threshold, min_absolute_change or min_relative_change");
  if (t.needs_baseline() && !params.contains("baseline"))
    return Status::InvalidArgument("min_absolute_change and min_relative_change need a baseline");
  return t;
}

std::string MetricThreshold::describe() const {
  const std::string op = greater_is_better ? ">= " : "<= ";
  std::string s;
  auto add = [&](const std::string& part) { s += (s.empty() ? "" : ", ") + part; };
  if (threshold) add(op + format_number(*threshold));
  if (min_absolute_change)
    add(op + "baseline " + (greater_is_better ? "+ " : "- ") + format_number(*min_absolute_change));
  if (min_relative_change)
    add(op + "baseline " + (greater_is_better ? "* (1 + " : "* (1 - ") +
        format_number(*min_relative_change) + ")");
  return s;
}

bool threshold_passes(const MetricThreshold& t, double value, std::optional<double> baseline,
                      std::string* why) {
  const bool gib = t.greater_is_better;
  std::string failure;
  auto fail = [&](const std::string& w) { failure += (failure.empty() ? "" : "; ") + w; };
  if (!std::isfinite(value)) fail("the metric is " + format_number(value));
  if (t.threshold && !(gib ? value >= *t.threshold : value <= *t.threshold))
    fail(format_number(value) + (gib ? " < " : " > ") + format_number(*t.threshold));
  if (t.needs_baseline() && !baseline) fail("no baseline value to compare with");
  if (baseline && t.min_absolute_change) {
    const double need =
        gib ? *baseline + *t.min_absolute_change : *baseline - *t.min_absolute_change;
    if (!(gib ? value >= need : value <= need))
      fail(format_number(value) + " does not beat baseline " + format_number(*baseline) + " by " +
           format_number(*t.min_absolute_change));
  }
  if (baseline && t.min_relative_change) {
    bool ok;
    if (*baseline == 0) {
      ok = gib ? value >= *baseline + 1e-10 : value <= *baseline - 1e-10;
    } else {
      const double change = gib ? (value - *baseline) / *baseline : (*baseline - value) / *baseline;
      ok = change >= *t.min_relative_change;
    }
    if (!ok)
      fail(format_number(value) + " does not beat baseline " + format_number(*baseline) +
           " by a relative " + format_number(*t.min_relative_change));
  }
  if (why) *why = failure;
  return failure.empty();
}

}  // namespace kiln::checks
