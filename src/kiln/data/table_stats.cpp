#include "kiln/data/table_stats.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <unordered_map>
#include <unordered_set>

namespace kiln::data {
namespace {

double median_of(std::vector<double>& v) {
  if (v.empty()) return 0.0;
  size_t mid = v.size() / 2;
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(mid), v.end());
  double hi = v[mid];
  if (v.size() % 2 == 1) return hi;
  double lo = *std::max_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(mid));
  return (lo + hi) / 2.0;
}

}  // namespace

double RobustStats::z(double x) const { return scale > 0 ? std::fabs(x - median) / scale : 0.0; }

RobustStats robust_stats(std::vector<double> values) {
  RobustStats s;
  if (values.empty()) return s;
  s.median = median_of(values);
  std::vector<double> dev(values.size());
  double mean_dev = 0;
  for (size_t i = 0; i < values.size(); ++i) {
    dev[i] = std::fabs(values[i] - s.median);
    mean_dev += dev[i];
  }
  mean_dev /= static_cast<double>(values.size());
  s.mad = median_of(dev);
  if (s.mad > 0)
    s.scale = s.mad / 0.6745;
  else if (mean_dev > 0)
    s.scale = 1.2533 * mean_dev;
  return s;
}

std::vector<ColumnFacts> analyse_columns(const CsvTable& table,
                                         std::vector<std::vector<double>>* values,
                                         const std::vector<std::string>& categorical) {
  const size_t ncols = table.header.size();
  std::vector<ColumnFacts> facts(ncols);
  if (values) values->assign(ncols, {});
  for (size_t c = 0; c < ncols; ++c) {
    ColumnFacts& f = facts[c];
    f.name = table.header[c];
    std::vector<double> parsed(table.rows.size(), std::numeric_limits<double>::quiet_NaN());
    std::unordered_set<std::string> distinct;
    int64_t present = 0, numbers = 0;
    for (size_t r = 0; r < table.rows.size(); ++r) {
      const std::string& cell = table.rows[r][c];
      if (table.is_missing(cell)) {
        ++f.missing;
        continue;
      }
      ++present;
      distinct.insert(cell);
      double v;
      if (parse_double(cell, &v)) {
        parsed[r] = v;
        ++numbers;
      }
    }
    f.unique = static_cast<int64_t>(distinct.size());
    f.present = present;
    f.numeric = numbers > 0 && numbers * 10 >= present * 9 &&
                std::find(categorical.begin(), categorical.end(), f.name) == categorical.end();
    if (!f.numeric) continue;
    f.non_numeric = present - numbers;
    std::vector<double> finite;
    finite.reserve(static_cast<size_t>(numbers));
    double sum = 0;
    for (double v : parsed)
      if (!std::isnan(v)) {
        finite.push_back(v);
        sum += v;
      }
    f.count = static_cast<int64_t>(finite.size());
    f.min = *std::min_element(finite.begin(), finite.end());
    f.max = *std::max_element(finite.begin(), finite.end());
    f.mean = sum / static_cast<double>(f.count);
    double ss = 0;
    for (double v : finite) ss += (v - f.mean) * (v - f.mean);
    f.std = f.count > 1 ? std::sqrt(ss / static_cast<double>(f.count - 1)) : 0.0;
    f.robust = robust_stats(std::move(finite));
    if (values) (*values)[c] = std::move(parsed);
  }
  return facts;
}

bool looks_like_identifier(const ColumnFacts& column) {
  if (column.numeric) return false;
  return column.present >= kIdentifierMinRows && column.unique * 100 >= column.present * 95;
}

Expected<std::vector<size_t>> column_indices(const CsvTable& table,
                                             const std::vector<std::string>& names,
                                             const std::string& field) {
  std::vector<size_t> at;
  for (const std::string& name : names) {
    const int64_t c = table.column_index(name);
    if (c < 0)
      return Status::InvalidArgument(table.source + ": " + field + " names '" + name +
                                     "', which is not a column");
    at.push_back(static_cast<size_t>(c));
  }
  return at;
}

std::vector<CorrelatedPair> correlated_pairs(const std::vector<ColumnFacts>& facts,
                                             const std::vector<std::vector<double>>& values,
                                             const std::vector<size_t>& columns, double threshold) {
  std::vector<size_t> cols;
  for (size_t c : columns)
    if (cols.size() < kCorrelationMaxColumns && c < values.size() && !values[c].empty() &&
        facts[c].numeric)
      cols.push_back(c);
  std::vector<CorrelatedPair> pairs;
  if (cols.empty()) return pairs;
  const size_t rows = values[cols[0]].size();
  const size_t stride = std::max<size_t>(
      1, (rows + kCorrelationMaxRows - 1) / static_cast<size_t>(kCorrelationMaxRows));
  for (size_t i = 0; i < cols.size(); ++i)
    for (size_t j = i + 1; j < cols.size(); ++j) {
      const std::vector<double>& x = values[cols[i]];
      const std::vector<double>& y = values[cols[j]];
      // Sums about the columns' means (the whole column's: close to the pair's), so large
      // offsets cost no precision.
      const double mx = facts[cols[i]].mean, my = facts[cols[j]].mean;
      double n = 0, sx = 0, sy = 0, sxx = 0, syy = 0, sxy = 0;
      for (size_t r = 0; r < rows; r += stride) {
        if (std::isnan(x[r]) || std::isnan(y[r])) continue;
        const double dx = x[r] - mx, dy = y[r] - my;
        n += 1;
        sx += dx;
        sy += dy;
        sxx += dx * dx;
        syy += dy * dy;
        sxy += dx * dy;
      }
      if (n < 3) continue;
      const double vx = sxx - sx * sx / n, vy = syy - sy * sy / n;
      if (!(vx > 0) || !(vy > 0)) continue;
      const double r = std::clamp((sxy - sx * sy / n) / std::sqrt(vx * vy), -1.0, 1.0);
      if (std::fabs(r) >= threshold) pairs.push_back({facts[cols[i]].name, facts[cols[j]].name, r});
    }
  std::stable_sort(pairs.begin(), pairs.end(),
                   [](const CorrelatedPair& a, const CorrelatedPair& b) {
                     return std::fabs(a.r) > std::fabs(b.r);
                   });
  return pairs;
}

std::vector<size_t> duplicate_row_indices(const CsvTable& table) {
  std::unordered_map<std::string, size_t> seen;
  std::vector<size_t> dups;
  std::string key;
  for (size_t r = 0; r < table.rows.size(); ++r) {
    key.clear();
    for (const auto& cell : table.rows[r]) {
      key += cell;
      key += '\x1f';  // unit separator: cannot appear inside a parsed cell boundary ambiguity
      key += std::to_string(cell.size());
    }
    if (!seen.emplace(key, r).second) dups.push_back(r);
  }
  return dups;
}

}  // namespace kiln::data

namespace kiln::data {

bool looks_like_classification(const ColumnFacts& target, const CsvTable& table, size_t column) {
  if (!target.numeric) return true;
  if (target.unique > 20) return false;
  for (const auto& row : table.rows) {
    double v;
    if (parse_double(row[column], &v) && std::floor(v) != v) return false;
  }
  return true;
}

}  // namespace kiln::data
