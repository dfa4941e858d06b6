#include "kiln/data/profile.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <sstream>
#include <unordered_set>

#include "kiln/core/hash.h"
#include "kiln/data/table_source.h"
#include "kiln/data/table_stats.h"

namespace kiln::data {
namespace {

double imbalance_ratio(const std::map<std::string, int64_t>& counts) {
  if (counts.empty()) return 0.0;
  int64_t lo = INT64_MAX, hi = 0;
  for (const auto& [k, n] : counts) {
    lo = std::min(lo, n);
    hi = std::max(hi, n);
  }
  return lo > 0 ? static_cast<double>(hi) / static_cast<double>(lo) : INFINITY;
}

Json counts_json(const std::map<std::string, int64_t>& counts) {
  Json j = Json::object();
  for (const auto& [k, n] : counts) j[k] = n;
  return j;
}

Json verdict(const Json& issues, const Json& splits) {
  Json reasons = Json::array();
  auto add = [&](int64_t n, const std::string& what) {
    if (n > 0) reasons.push_back(std::to_string(n) + " " + what);
  };
  add(issues["missing_cells"].get<int64_t>(), "missing cells");
  add(issues["non_numeric_cells"].get<int64_t>(), "non-numeric cells in numeric columns");
  add(issues["duplicate_rows"].get<int64_t>(), "duplicate rows");
  add(static_cast<int64_t>(issues["ragged_lines"].size()), "ragged lines");
  add(static_cast<int64_t>(issues["outliers"].size()), "extreme outliers");
  add(static_cast<int64_t>(issues["constant_columns"].size()), "constant columns");
  if (issues.contains("identifier_columns"))
    add(static_cast<int64_t>(issues["identifier_columns"].size()),
        "identifier-like text columns (a distinct value in nearly every row: list them under "
        "drop_columns)");
  if (issues.contains("corrupt_files"))
    add(static_cast<int64_t>(issues["corrupt_files"].size()), "corrupt image files (skipped)");
  for (const auto& [name, split] : splits.items()) {
    if (split.contains("imbalance_ratio") && split["imbalance_ratio"].is_number() &&
        split["imbalance_ratio"].get<double>() > 3.0)
      reasons.push_back("split " + name + " is imbalanced (ratio " +
                        std::to_string(split["imbalance_ratio"].get<double>()) + ")");
  }
  return {{"status", reasons.empty() ? "clean" : "needs_cleaning"}, {"reasons", reasons}};
}

Expected<Json> profile_table(const DatasetSpec& spec, const ProfileOptions& options) {
  std::vector<std::string> na = !options.na_tokens_.empty() ? options.na_tokens_
                                : !spec.na_tokens.empty()   ? spec.na_tokens
                                                            : default_na_tokens();
  DatasetSpec s = spec;
  if (options.limit_ > 0) s.limit = options.limit_;
  KILN_ASSIGN_OR_RETURN(MergedTable merged, read_table_sources(s, na));
  const CsvTable& t = merged.table;
  std::vector<std::vector<double>> values;
  KILN_RETURN_IF_ERROR(column_indices(t, spec.categorical_columns, "categories.columns").status());
  KILN_RETURN_IF_ERROR(
      column_indices(t, spec.target_encoded_columns, "categories.target_encode").status());
  std::vector<ColumnFacts> facts = analyse_columns(t, &values, spec.category_column_names());
  const size_t target = merged.target_column;
  const bool multi = merged.source_paths.size() > 1;

  Json report;
  report["dataset"] = spec.name;
  report["kind"] = "table";
  report["sources"] = Json::array();
  for (size_t i = 0; i < merged.source_paths.size(); ++i)
    report["sources"].push_back(
        {{"path", merged.source_paths[i].string()}, {"sha256", merged.source_sha256[i]}});
  report["target"] = spec.target;
  bool classification =
      spec.task == TaskKind::kClassification ||
      (spec.task == TaskKind::kAuto && looks_like_classification(facts[target], t, target));
  report["task"] = classification ? "classification" : "regression";

  Json split;
  split["rows"] = static_cast<int64_t>(t.rows.size());
  split["shape"] = {static_cast<int64_t>(t.rows.size()), static_cast<int64_t>(t.header.size() - 1)};
  std::map<std::string, int64_t> counts;
  if (classification) {
    for (const auto& row : t.rows)
      if (!t.is_missing(row[target])) counts[row[target]]++;
    split["imbalance_ratio"] = imbalance_ratio(counts);
  } else {
    const ColumnFacts& f = facts[target];
    split["target_stats"] = {{"min", f.min}, {"max", f.max}, {"mean", f.mean}, {"std", f.std}};
  }
  split["class_counts"] = counts_json(counts);
  report["splits"] = {{"all", split}};

  Json features = Json::array();
  Json constant = Json::array();
  Json identifiers = Json::array();
  Json outliers = Json::array();
  int64_t missing = 0, non_numeric = 0;
  auto dropped = [&](const std::string& name) {
    return std::find(spec.drop_columns.begin(), spec.drop_columns.end(), name) !=
           spec.drop_columns.end();
  };
  for (size_t c = 0; c < facts.size(); ++c) {
    const ColumnFacts& f = facts[c];
    missing += f.missing;
    non_numeric += f.non_numeric;
    if (c == target) continue;
    Json fj;
    fj["name"] = f.name;
    fj["type"] = f.numeric ? "numeric" : "categorical";
    fj["missing"] = f.missing;
    fj["unique"] = f.unique;
    if (f.numeric) {
      fj["non_numeric"] = f.non_numeric;
      fj["min"] = f.min;
      fj["max"] = f.max;
      fj["mean"] = f.mean;
      fj["std"] = f.std;
      fj["median"] = f.robust.median;
    }
    bool is_constant = f.unique <= 1;
    fj["constant"] = is_constant;
    if (is_constant) constant.push_back(f.name);
    // An identifier, unless dropped or target-encoded (then its values recur by choice).
    if (looks_like_identifier(f) && !dropped(f.name) &&
        std::find(spec.target_encoded_columns.begin(), spec.target_encoded_columns.end(), f.name) ==
            spec.target_encoded_columns.end())
      identifiers.push_back(f.name);
    features.push_back(fj);
    if (!f.numeric || f.robust.scale <= 0) continue;
    for (size_t r = 0; r < t.rows.size(); ++r) {
      double v = values[c][r];
      if (std::isnan(v)) continue;
      double z = f.robust.z(v);
      if (z > options.outlier_z_) {
        Json o = {{"line", t.lines[r]}, {"column", f.name}, {"value", v}, {"z", z}};
        if (multi) o["source"] = merged.source_paths[merged.row_source[r]].filename().string();
        outliers.push_back(o);
      }
    }
  }
  {
    std::vector<size_t> numeric_features;
    for (size_t c = 0; c < facts.size(); ++c)
      if (c != target && facts[c].numeric && !dropped(facts[c].name)) numeric_features.push_back(c);
    Json pairs = Json::array();
    for (const CorrelatedPair& p :
         correlated_pairs(facts, values, numeric_features, kCorrelatedPairThreshold))
      pairs.push_back({{"columns", {p.first, p.second}}, {"r", p.r}});
    report["correlated_pairs"] = pairs;
  }
  std::sort(outliers.begin(), outliers.end(), [](const Json& a, const Json& b) {
    return a["line"].get<int64_t>() < b["line"].get<int64_t>();
  });
  report["features"] = features;

  std::vector<size_t> dups = duplicate_row_indices(t);
  Json dup_lines = Json::array();
  for (size_t r : dups) dup_lines.push_back(t.lines[r]);
  Json ragged = Json::array();
  Json ragged_detail = Json::array();
  for (size_t i = 0; i < t.ragged.size(); ++i) {
    ragged.push_back(t.ragged[i].line);
    Json d = {
        {"line", t.ragged[i].line}, {"fields", t.ragged[i].fields}, {"expected", t.header.size()}};
    if (multi) d["source"] = merged.source_paths[merged.ragged_source[i]].filename().string();
    ragged_detail.push_back(d);
  }
  Json issues;
  issues["missing_cells"] = missing;
  issues["non_numeric_cells"] = non_numeric;
  issues["duplicate_rows"] = static_cast<int64_t>(dups.size());
  issues["duplicate_lines"] = dup_lines;
  issues["ragged_lines"] = ragged;
  issues["ragged"] = ragged_detail;
  issues["outliers"] = outliers;
  issues["outlier_z"] = options.outlier_z_;
  issues["constant_columns"] = constant;
  issues["identifier_columns"] = identifiers;
  report["issues"] = issues;
  report["verdict"] = verdict(issues, report["splits"]);
  return report;
}

std::string fmt_num(double v) {
  char buf[64];
  if (std::fabs(v) >= 1e6 || (std::fabs(v) < 1e-3 && v != 0))
    std::snprintf(buf, sizeof buf, "%.3g", v);
  else
    std::snprintf(buf, sizeof buf, "%.4g", v);
  return buf;
}

}  // namespace

Json profile_verdict(const Json& issues, const Json& splits) { return verdict(issues, splits); }

Expected<Json> profile_table_dataset(const DatasetSpec& spec, const ProfileOptions& options) {
  if (spec.kind == DatasetKind::kImages)
    return Status::InvalidArgument(spec.name + ": an image dataset (profile_dataset reads it)");
  return profile_table(spec, options);
}

std::string render_profile(const Json& r) {
  std::ostringstream out;
  char line[512];
  out << "dataset " << r["dataset"].get<std::string>() << " (" << r["kind"].get<std::string>()
      << ", " << r["task"].get<std::string>() << ")\n\n";
  out << "split      rows    classes  imbalance\n";
  for (const auto& [name, s] : r["splits"].items()) {
    std::snprintf(
        line, sizeof line, "%-8s %7lld  %7zu  %9s\n", name.c_str(),
        static_cast<long long>(s["rows"].get<int64_t>()), s["class_counts"].size(),
        s.contains("imbalance_ratio") ? fmt_num(s["imbalance_ratio"].get<double>()).c_str() : "-");
    out << line;
  }
  for (const auto& [name, s] : r["splits"].items()) {
    if (s["class_counts"].empty()) continue;
    out << "\nclass counts (" << name << "): ";
    bool first = true;
    for (const auto& [k, v] : s["class_counts"].items()) {
      out << (first ? "" : ", ") << k << "=" << v.get<int64_t>();
      first = false;
    }
    out << "\n";
    if (s.contains("pixel_mean"))
      out << "pixels (" << name << "): mean " << fmt_num(s["pixel_mean"].get<double>()) << ", std "
          << fmt_num(s["pixel_std"].get<double>()) << ", duplicates "
          << s["duplicate_images"].get<int64_t>() << "\n";
  }
  if (r.contains("features") && !r["features"].empty()) {
    out << "\nfeature                       type         min         max        mean         std  "
           "missing  unique\n";
    for (const auto& f : r["features"]) {
      bool numeric = f["type"] == "numeric";
      std::snprintf(line, sizeof line, "%-28.28s  %-11s %11s %11s %11s %11s  %7lld  %6lld%s\n",
                    f["name"].get<std::string>().c_str(), f["type"].get<std::string>().c_str(),
                    numeric ? fmt_num(f["min"].get<double>()).c_str() : "-",
                    numeric ? fmt_num(f["max"].get<double>()).c_str() : "-",
                    numeric ? fmt_num(f["mean"].get<double>()).c_str() : "-",
                    numeric ? fmt_num(f["std"].get<double>()).c_str() : "-",
                    static_cast<long long>(f["missing"].get<int64_t>()),
                    static_cast<long long>(f["unique"].get<int64_t>()),
                    f["constant"].get<bool>() ? "  constant" : "");
      out << line;
    }
  }
  const Json& i = r["issues"];
  out << "\nissues\n";
  out << "  missing cells:       " << i["missing_cells"].get<int64_t>() << "\n";
  out << "  non-numeric cells:   " << i["non_numeric_cells"].get<int64_t>() << "\n";
  out << "  duplicate rows:      " << i["duplicate_rows"].get<int64_t>() << "\n";
  out << "  ragged lines:        " << i["ragged_lines"].size();
  if (!i["ragged_lines"].empty()) out << "  " << i["ragged_lines"].dump();
  out << "\n  extreme outliers:    " << i["outliers"].size() << "\n";
  if (i.contains("corrupt_files")) {
    out << "  corrupt files:       " << i["corrupt_files"].size() << "\n";
    for (const auto& f : i["corrupt_files"])
      out << "    " << f["file"].get<std::string>() << ": " << f["reason"].get<std::string>()
          << "\n";
  }
  size_t shown = 0;
  for (const auto& o : i["outliers"]) {
    if (++shown > 20) {
      out << "    ... " << i["outliers"].size() - 20 << " more in the JSON report\n";
      break;
    }
    out << "    line " << o["line"].get<int64_t>() << " " << o["column"].get<std::string>() << " = "
        << fmt_num(o["value"].get<double>()) << " (robust z " << fmt_num(o["z"].get<double>())
        << ")\n";
  }
  out << "  constant columns:    " << i["constant_columns"].size() << "\n";
  if (i.contains("identifier_columns")) {
    out << "  identifier columns:  " << i["identifier_columns"].size();
    if (!i["identifier_columns"].empty()) out << "  " << i["identifier_columns"].dump();
    out << "\n";
  }
  if (r.contains("correlated_pairs") && !r["correlated_pairs"].empty()) {
    const Json& pairs = r["correlated_pairs"];
    out << "\ncorrelated pairs (|r| >= " << fmt_num(kCorrelatedPairThreshold)
        << ", the same information twice; features.pca folds them): " << pairs.size() << "\n";
    for (size_t k = 0; k < pairs.size() && k < 10; ++k)
      out << "  " << pairs[k]["columns"][0].get<std::string>() << " ~ "
          << pairs[k]["columns"][1].get<std::string>() << "  r "
          << fmt_num(pairs[k]["r"].get<double>()) << "\n";
    if (pairs.size() > 10) out << "  ... " << pairs.size() - 10 << " more in the JSON report\n";
  }
  out << "\nverdict: " << r["verdict"]["status"].get<std::string>();
  for (const auto& reason : r["verdict"]["reasons"]) out << "\n  - " << reason.get<std::string>();
  out << "\n";
  return out.str();
}

}  // namespace kiln::data
