#include "kiln/data/profile.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <sstream>
#include <unordered_set>

#include "kiln/core/hash.h"
#include "kiln/data/images.h"
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
  std::vector<ColumnFacts> facts = analyse_columns(t, &values);
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
  Json outliers = Json::array();
  int64_t missing = 0, non_numeric = 0;
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
  report["issues"] = issues;
  report["verdict"] = verdict(issues, report["splits"]);
  return report;
}

Expected<ImageSet> read_image_split(const DatasetSpec& spec, const ImageSplitSource& src,
                                    int64_t limit) {
  if (spec.image_format == ImageFormat::kIdx) return read_idx_images(src.images, src.labels, limit);
  return read_cifar10(src.batches, limit);
}

Expected<Json> profile_images(const DatasetSpec& spec, const ProfileOptions& options) {
  Json report;
  report["dataset"] = spec.name;
  report["kind"] = "images";
  report["task"] = "classification";
  report["sources"] = Json::array();
  Json splits = Json::object();
  int64_t total_dups = 0;
  Json dup_detail = Json::object();
  const int64_t limit = options.limit_ > 0 ? options.limit_ : spec.limit;
  for (const auto& src : spec.image_splits) {
    KILN_ASSIGN_OR_RETURN(ImageSet set, read_image_split(spec, src, limit));
    std::vector<fs::path> files = spec.image_format == ImageFormat::kIdx
                                      ? std::vector<fs::path>{src.images, src.labels}
                                      : src.batches;
    for (const auto& f : files) {
      KILN_ASSIGN_OR_RETURN(std::string sha, sha256_file(f));
      report["sources"].push_back({{"split", src.split}, {"path", f.string()}, {"sha256", sha}});
    }
    const int64_t n = set.size();
    Json split;
    split["rows"] = n;
    std::vector<int64_t> shape(set.images.sizes().begin(), set.images.sizes().end());
    split["shape"] = shape;
    auto labels = set.labels.accessor<int64_t, 1>();
    std::vector<int64_t> per_label;
    for (int64_t i = 0; i < n; ++i) {
      int64_t l = labels[i];
      if (l >= static_cast<int64_t>(per_label.size())) per_label.resize(static_cast<size_t>(l) + 1);
      per_label[static_cast<size_t>(l)]++;
    }
    Json counts = Json::object();  // in label order
    int64_t lo = INT64_MAX, hi = 0;
    for (size_t l = 0; l < per_label.size(); ++l) {
      counts[l < spec.classes.size() ? spec.classes[l] : std::to_string(l)] = per_label[l];
      lo = std::min(lo, per_label[l]);
      hi = std::max(hi, per_label[l]);
    }
    split["class_counts"] = counts;
    split["imbalance_ratio"] =
        lo > 0 ? static_cast<double>(hi) / static_cast<double>(lo) : INFINITY;
    torch::Tensor px = set.images.to(torch::kFloat64);
    split["pixel_mean"] = px.mean().item<double>();
    split["pixel_std"] = px.std().item<double>();
    split["pixel_min"] = set.images.min().item<int64_t>();
    split["pixel_max"] = set.images.max().item<int64_t>();
    // Exact duplicate images (pixels and label) within the split.
    const int64_t per_image = set.images[0].numel();
    torch::Tensor flat = set.images.reshape({n, per_image}).contiguous();
    const uint8_t* data = flat.data_ptr<uint8_t>();
    std::unordered_set<std::string> seen;
    int64_t dups = 0;
    for (int64_t i = 0; i < n; ++i) {
      std::string key(reinterpret_cast<const char*>(data + i * per_image),
                      static_cast<size_t>(per_image));
      key.push_back(static_cast<char>(labels[i]));
      if (!seen.insert(std::move(key)).second) ++dups;
    }
    split["duplicate_images"] = dups;
    total_dups += dups;
    splits[src.split] = split;
  }
  report["splits"] = splits;
  report["classes"] = spec.classes;
  Json issues;
  issues["missing_cells"] = 0;
  issues["non_numeric_cells"] = 0;
  issues["duplicate_rows"] = total_dups;
  issues["ragged_lines"] = Json::array();
  issues["outliers"] = Json::array();
  issues["constant_columns"] = Json::array();
  report["issues"] = issues;
  report["verdict"] = verdict(issues, splits);
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

Expected<Json> profile_dataset(const DatasetSpec& spec, const ProfileOptions& options) {
  if (spec.kind == DatasetKind::kImages) return profile_images(spec, options);
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
  out << "\nverdict: " << r["verdict"]["status"].get<std::string>();
  for (const auto& reason : r["verdict"]["reasons"]) out << "\n  - " << reason.get<std::string>();
  out << "\n";
  return out.str();
}

}  // namespace kiln::data
