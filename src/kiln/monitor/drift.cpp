#include "kiln/monitor/drift.h"

#include <algorithm>
#include <cmath>
#include <iterator>
#include <numeric>

#include "kiln/core/random.h"

namespace kiln::monitor {
namespace {

constexpr int kGrid = 4;
constexpr int kIntensityBins = 32;
constexpr int kQuantileBins = 10;

Json numbers(const std::vector<double>& v) {
  Json a = Json::array();
  for (double x : v) a.push_back(x);
  return a;
}

Expected<std::vector<double>> read_numbers(const Json& j, const std::string& key) {
  if (!j.contains(key)) return std::vector<double>{};
  if (!j[key].is_array())
    return Status::InvalidArgument("reference profile: '" + key + "' is not a list");
  std::vector<double> out;
  for (const auto& x : j[key]) {
    if (!x.is_number())
      return Status::InvalidArgument("reference profile: '" + key + "' holds a non-number");
    out.push_back(x.get<double>());
  }
  return out;
}

/// numpy.quantile's default (linear interpolation) on sorted values.
double quantile_sorted(const std::vector<double>& sorted, double q) {
  const double pos = q * static_cast<double>(sorted.size() - 1);
  const size_t lo = static_cast<size_t>(std::floor(pos));
  const size_t hi = std::min(lo + 1, sorted.size() - 1);
  return sorted[lo] + (pos - static_cast<double>(lo)) * (sorted[hi] - sorted[lo]);
}

std::vector<double> normalised(const std::vector<double>& counts) {
  const double total = std::accumulate(counts.begin(), counts.end(), 0.0);
  std::vector<double> out(counts.size(), 0.0);
  if (total > 0)
    for (size_t i = 0; i < counts.size(); ++i) out[i] = counts[i] / total;
  return out;
}

/// Shares of `values` (NaN skipped) among sorted `categories`; values outside them are counted
/// in `*unknown` (when given) and left out of the shares' total. With `counts_only`, the raw
/// counts instead of shares.
std::vector<double> category_shares(const std::vector<double>& categories,
                                    const std::vector<double>& values, int64_t* unknown,
                                    bool counts_only = false) {
  std::vector<double> counts(categories.size(), 0.0);
  for (double v : values) {
    if (std::isnan(v)) continue;
    auto it = std::lower_bound(categories.begin(), categories.end(), v);
    if (it != categories.end() && *it == v)
      counts[static_cast<size_t>(it - categories.begin())] += 1;
    else if (unknown)
      ++*unknown;
  }
  return counts_only ? counts : normalised(counts);
}

/// Q(a, x), the regularised upper incomplete gamma function (Numerical Recipes' gammq: series
/// below x < a + 1, continued fraction above).
double gamma_q(double a, double x) {
  if (x <= 0) return 1.0;
  const double log_prefix = -x + a * std::log(x) - std::lgamma(a);
  if (x < a + 1) {
    double term = 1.0 / a, sum = term;
    for (int n = 1; n < 1000; ++n) {
      term *= x / (a + n);
      sum += term;
      if (std::fabs(term) < std::fabs(sum) * 1e-15) break;
    }
    return std::max(0.0, 1.0 - sum * std::exp(log_prefix));
  }
  const double tiny = 1e-300;
  double b = x + 1 - a, c = 1 / tiny, d = 1 / b, h = d;
  for (int i = 1; i < 1000; ++i) {
    const double an = -i * (i - a);
    b += 2;
    d = an * d + b;
    if (std::fabs(d) < tiny) d = tiny;
    c = b + an / c;
    if (std::fabs(c) < tiny) c = tiny;
    d = 1 / d;
    const double delta = d * c;
    h *= delta;
    if (std::fabs(delta - 1) < 1e-15) break;
  }
  return std::min(1.0, std::exp(log_prefix) * h);
}

}  // namespace

double chi_square_survival(double x, double dof) {
  if (dof <= 0) return 1.0;
  return gamma_q(dof / 2, x / 2);
}

ChiSquareResult chi_square_test(const std::vector<double>& shares,
                                const std::vector<double>& counts) {
  ChiSquareResult r;
  double n = 0;
  for (size_t i = 0; i < counts.size() && i < shares.size(); ++i)
    if (shares[i] > 0) n += counts[i];
  if (n <= 0) return r;
  // Cells as (expected, observed); those expected fewer than kMinExpectedCount times pool into
  // one, which joins the smallest other cell while it is still short.
  std::vector<std::pair<double, double>> cells;
  std::pair<double, double> pool{0.0, 0.0};
  for (size_t i = 0; i < counts.size() && i < shares.size(); ++i) {
    if (shares[i] <= 0) continue;
    const double expected = shares[i] * n;
    if (expected >= kMinExpectedCount) {
      cells.emplace_back(expected, counts[i]);
    } else {
      pool.first += expected;
      pool.second += counts[i];
      ++r.pooled_categories;
    }
  }
  if (r.pooled_categories > 0) {
    if (pool.first < kMinExpectedCount && !cells.empty()) {
      auto smallest = std::min_element(cells.begin(), cells.end());
      smallest->first += pool.first;
      smallest->second += pool.second;
    } else {
      cells.push_back(pool);
    }
  }
  for (const auto& [expected, observed] : cells)
    r.statistic += (observed - expected) * (observed - expected) / expected;
  r.p_value = chi_square_survival(r.statistic, static_cast<double>(cells.size()) - 1);
  return r;
}

int64_t FeatureSchema::row_numel() const {
  int64_t n = 1;
  for (int64_t d : input_shape) n *= d;
  return n;
}

Json FeatureSchema::to_json() const {
  return {{"kind", kind}, {"input_shape", input_shape}, {"names", names}};
}

Expected<FeatureSchema> FeatureSchema::from_json(const Json& j) {
  if (!j.is_object() || !j.contains("kind") || !j.contains("input_shape") || !j.contains("names"))
    return Status::InvalidArgument("reference profile: 'schema' needs kind, input_shape, names");
  FeatureSchema s;
  s.kind = j["kind"].get<std::string>();
  s.input_shape = j["input_shape"].get<std::vector<int64_t>>();
  s.names = j["names"].get<std::vector<std::string>>();
  if (s.kind != "table" && s.kind != "image")
    return Status::InvalidArgument("reference profile: schema kind '" + s.kind + "'");
  if (s.kind == "image" && s.input_shape.size() != 3)
    return Status::InvalidArgument("reference profile: an image schema needs C×H×W");
  return s;
}

FeatureSchema feature_schema(const std::vector<int64_t>& raw_shape,
                             const std::vector<std::string>& table_feature_names) {
  FeatureSchema s;
  s.input_shape = raw_shape;
  if (raw_shape.size() == 3) {
    s.kind = "image";
    s.names = {"mean", "std"};
    for (int r = 0; r < kGrid; ++r)
      for (int c = 0; c < kGrid; ++c)
        s.names.push_back("cell_" + std::to_string(r) + "_" + std::to_string(c));
    return s;
  }
  s.kind = "table";
  const int64_t n = s.row_numel();
  for (int64_t i = 0; i < n; ++i)
    s.names.push_back(static_cast<size_t>(i) < table_feature_names.size()
                          ? table_feature_names[static_cast<size_t>(i)]
                          : "f" + std::to_string(i));
  return s;
}

void extract_features(const FeatureSchema& schema, const float* x, int64_t rows,
                      std::vector<double>* features, std::vector<double>* intensity_counts) {
  const int64_t numel = schema.row_numel();
  if (schema.kind == "table") {
    features->reserve(features->size() + static_cast<size_t>(rows * numel));
    for (int64_t i = 0; i < rows * numel; ++i) features->push_back(x[i]);
    return;
  }
  const int64_t channels = schema.input_shape[0], h = schema.input_shape[1],
                w = schema.input_shape[2];
  if (intensity_counts && intensity_counts->size() != kIntensityBins)
    intensity_counts->assign(kIntensityBins, 0.0);
  // Cell of each column and row, computed once (no division per pixel).
  std::vector<int> cell_of_x(static_cast<size_t>(w)), cell_of_y(static_cast<size_t>(h));
  for (int64_t xx = 0; xx < w; ++xx)
    cell_of_x[static_cast<size_t>(xx)] = static_cast<int>(xx * kGrid / w);
  for (int64_t y = 0; y < h; ++y)
    cell_of_y[static_cast<size_t>(y)] = static_cast<int>(y * kGrid / h) * kGrid;
  std::vector<double> cell_n(kGrid * kGrid, 0.0);
  for (int64_t y = 0; y < h; ++y)
    for (int64_t xx = 0; xx < w; ++xx)
      cell_n[static_cast<size_t>(cell_of_y[static_cast<size_t>(y)] +
                                 cell_of_x[static_cast<size_t>(xx)])] +=
          static_cast<double>(channels);
  double* counts = intensity_counts ? intensity_counts->data() : nullptr;
  std::vector<double> cell_sum(kGrid * kGrid);
  for (int64_t r = 0; r < rows; ++r) {
    const float* img = x + r * numel;
    double sum = 0, sum2 = 0;
    std::fill(cell_sum.begin(), cell_sum.end(), 0.0);
    for (int64_t c = 0; c < channels; ++c)
      for (int64_t y = 0; y < h; ++y) {
        const float* line = img + (c * h + y) * w;
        double* cells = cell_sum.data() + cell_of_y[static_cast<size_t>(y)];
        for (int64_t xx = 0; xx < w; ++xx) {
          const double v = line[xx];
          sum += v;
          sum2 += v * v;
          cells[cell_of_x[static_cast<size_t>(xx)]] += v;
          if (counts) {
            // 32 bins over 0..256: v / 8, clamped (values outside 0..255 land in the end bins).
            const int bin =
                v <= 0 ? 0 : (v >= 255.0 ? kIntensityBins - 1 : static_cast<int>(v * 0.125));
            counts[bin] += 1;
          }
        }
      }
    const double n = static_cast<double>(numel);
    const double mean = sum / n;
    features->push_back(mean);
    features->push_back(std::sqrt(std::max(0.0, sum2 / n - mean * mean)));
    for (size_t cell = 0; cell < cell_sum.size(); ++cell)
      features->push_back(cell_n[cell] > 0 ? cell_sum[cell] / cell_n[cell] : 0.0);
  }
}

Json NumericReference::to_json() const {
  Json j = {{"name", name},
            {"rows", rows},
            {"missing_rate", missing_rate},
            {"mean", mean},
            {"std", stddev},
            {"min", min},
            {"max", max},
            {"edges", numbers(edges)},
            {"shares", numbers(shares)},
            {"sample", numbers(sample)}};
  if (!categories.empty()) j["categories"] = numbers(categories);
  return j;
}

Expected<NumericReference> NumericReference::from_json(const Json& j) {
  if (!j.is_object())
    return Status::InvalidArgument("reference profile: a feature is not an object");
  NumericReference r;
  r.name = j.value("name", "");
  r.rows = j.value("rows", int64_t{0});
  r.missing_rate = j.value("missing_rate", 0.0);
  r.mean = j.value("mean", 0.0);
  r.stddev = j.value("std", 0.0);
  r.min = j.value("min", 0.0);
  r.max = j.value("max", 0.0);
  KILN_ASSIGN_OR_RETURN(r.edges, read_numbers(j, "edges"));
  KILN_ASSIGN_OR_RETURN(r.shares, read_numbers(j, "shares"));
  KILN_ASSIGN_OR_RETURN(r.sample, read_numbers(j, "sample"));
  KILN_ASSIGN_OR_RETURN(r.categories, read_numbers(j, "categories"));
  if (r.categorical()) {
    if (r.shares.size() != r.categories.size() || !r.edges.empty())
      return Status::InvalidArgument("reference profile: categorical feature '" + r.name +
                                     "' needs one share per category and no edges");
    return r;
  }
  if (r.shares.size() != r.edges.size() + 1)
    return Status::InvalidArgument("reference profile: feature '" + r.name + "' has " +
                                   std::to_string(r.shares.size()) + " shares for " +
                                   std::to_string(r.edges.size() + 1) + " bins");
  return r;
}

NumericReference numeric_reference(const std::string& name, const std::vector<double>& values,
                                   int64_t sample_size, uint64_t sample_seed,
                                   int64_t max_categories) {
  NumericReference r;
  r.name = name;
  std::vector<double> present;
  present.reserve(values.size());
  for (double v : values)
    if (!std::isnan(v)) present.push_back(v);
  r.rows = static_cast<int64_t>(values.size());
  r.missing_rate = values.empty() ? 0.0
                                  : 1.0 - static_cast<double>(present.size()) /
                                              static_cast<double>(values.size());
  if (present.empty()) {
    r.shares = {1.0};
    return r;
  }
  std::vector<double> sorted = present;
  std::sort(sorted.begin(), sorted.end());
  r.min = sorted.front();
  r.max = sorted.back();
  double sum = 0, sum2 = 0;
  for (double v : sorted) sum += v;
  r.mean = sum / static_cast<double>(sorted.size());
  for (double v : sorted) sum2 += (v - r.mean) * (v - r.mean);
  r.stddev = sorted.size() > 1 ? std::sqrt(sum2 / static_cast<double>(sorted.size() - 1)) : 0.0;
  std::vector<double> distinct;
  if (max_categories > 0 &&
      std::all_of(sorted.begin(), sorted.end(), [](double v) { return v == std::round(v); })) {
    std::unique_copy(sorted.begin(), sorted.end(), std::back_inserter(distinct));
    if (distinct.size() < 2 || static_cast<int64_t>(distinct.size()) > max_categories)
      distinct.clear();
  }
  if (!distinct.empty()) {
    r.categories = distinct;
    r.shares = category_shares(distinct, sorted, nullptr);
  } else {
    for (int k = 1; k < kQuantileBins; ++k) {
      const double e = quantile_sorted(sorted, static_cast<double>(k) / kQuantileBins);
      if (r.edges.empty() || e > r.edges.back()) r.edges.push_back(e);
    }
    r.shares = bin_shares(r.edges, sorted);
  }
  if (static_cast<int64_t>(present.size()) <= sample_size) {
    r.sample = sorted;
  } else {
    // A seeded sample without replacement (partial Fisher–Yates), then sorted.
    Rng rng(sample_seed);
    std::vector<double> pool = present;
    for (int64_t i = 0; i < sample_size; ++i) {
      const uint64_t j = static_cast<uint64_t>(i) + rng.below(pool.size() - static_cast<size_t>(i));
      std::swap(pool[static_cast<size_t>(i)], pool[j]);
    }
    r.sample.assign(pool.begin(), pool.begin() + sample_size);
    std::sort(r.sample.begin(), r.sample.end());
  }
  return r;
}

EmbeddingSummary summarize_embedding(std::string layer, std::string layer_type,
                                     const std::vector<double>& embedding, int64_t rows,
                                     int64_t units, uint64_t sample_seed) {
  EmbeddingSummary e;
  e.layer = std::move(layer);
  e.layer_type = std::move(layer_type);
  e.rows = rows;
  e.units = units;
  if (rows <= 0 || units <= 0 || static_cast<int64_t>(embedding.size()) != rows * units) {
    e.rows = 0;
    return e;
  }
  const auto r_count = static_cast<size_t>(rows), u_count = static_cast<size_t>(units);
  std::vector<double> column(r_count), norms(r_count, 0.0);
  for (size_t r = 0; r < r_count; ++r)
    for (size_t u = 0; u < u_count; ++u)
      norms[r] += embedding[r * u_count + u] * embedding[r * u_count + u];
  for (double& n : norms) n = std::sqrt(n);
  e.norm = numeric_reference("embedding_norm", norms, 1000, sample_seed);
  const size_t summarised = std::min<size_t>(u_count, kMaxEmbeddingUnits);
  for (size_t u = 0; u < summarised; ++u) {
    for (size_t r = 0; r < r_count; ++r) column[r] = embedding[r * u_count + u];
    std::sort(column.begin(), column.end());
    e.mean.push_back(std::accumulate(column.begin(), column.end(), 0.0) /
                     static_cast<double>(r_count));
    e.q05.push_back(quantile_sorted(column, 0.05));
    e.q25.push_back(quantile_sorted(column, 0.25));
    e.q50.push_back(quantile_sorted(column, 0.50));
    e.q75.push_back(quantile_sorted(column, 0.75));
    e.q95.push_back(quantile_sorted(column, 0.95));
  }
  return e;
}

Json EmbeddingSummary::to_json() const {
  return {{"layer", layer},      {"layer_type", layer_type}, {"rows", rows},
          {"units", units},      {"mean", numbers(mean)},    {"q05", numbers(q05)},
          {"q25", numbers(q25)}, {"q50", numbers(q50)},      {"q75", numbers(q75)},
          {"q95", numbers(q95)}, {"norm", norm.to_json()}};
}

Expected<EmbeddingSummary> EmbeddingSummary::from_json(const Json& j) {
  if (!j.is_object())
    return Status::InvalidArgument("reference profile: 'embedding' is not an object");
  EmbeddingSummary e;
  e.layer = j.value("layer", "");
  e.layer_type = j.value("layer_type", "");
  e.rows = j.value("rows", int64_t{0});
  e.units = j.value("units", int64_t{0});
  KILN_ASSIGN_OR_RETURN(e.mean, read_numbers(j, "mean"));
  KILN_ASSIGN_OR_RETURN(e.q05, read_numbers(j, "q05"));
  KILN_ASSIGN_OR_RETURN(e.q25, read_numbers(j, "q25"));
  KILN_ASSIGN_OR_RETURN(e.q50, read_numbers(j, "q50"));
  KILN_ASSIGN_OR_RETURN(e.q75, read_numbers(j, "q75"));
  KILN_ASSIGN_OR_RETURN(e.q95, read_numbers(j, "q95"));
  const size_t n = e.mean.size();
  if (static_cast<int64_t>(n) != std::min(e.units, kMaxEmbeddingUnits) || e.q05.size() != n ||
      e.q25.size() != n || e.q50.size() != n || e.q75.size() != n || e.q95.size() != n)
    return Status::InvalidArgument(
        "reference profile: 'embedding' needs mean and quantiles for each of its units");
  if (j.contains("norm")) {
    KILN_ASSIGN_OR_RETURN(e.norm, NumericReference::from_json(j["norm"]));
  }
  return e;
}

std::vector<double> shares_in_reference_bins(const NumericReference& ref,
                                             const std::vector<double>& values) {
  return ref.categorical() ? category_shares(ref.categories, values, nullptr)
                           : bin_shares(ref.edges, values);
}

Json ReferenceProfile::to_json() const {
  Json f = Json::array();
  for (const auto& x : features) f.push_back(x.to_json());
  Json j = {{"format", "kiln.reference_profile"},
            {"format_version", 1},
            {"schema", schema.to_json()},
            {"rows", rows},
            {"features", f}};
  if (!intensity_shares.empty()) j["intensity_shares"] = numbers(intensity_shares);
  if (!labels.empty()) {
    j["labels"] = labels;
    j["class_prior"] = numbers(class_prior);
    j["predicted_shares"] = numbers(predicted_shares);
    j["confidence"] = confidence.to_json();
  } else if (prediction.rows > 0) {
    j["prediction"] = prediction.to_json();
  }
  j["predictions_split"] = predictions_split;
  if (!embedding.empty()) j["embedding"] = embedding.to_json();
  return j;
}

Expected<ReferenceProfile> ReferenceProfile::from_json(const Json& j) {
  if (!j.is_object() || j.value("format", "") != "kiln.reference_profile")
    return Status::InvalidArgument("not a Kiln reference profile");
  ReferenceProfile p;
  KILN_ASSIGN_OR_RETURN(p.schema, FeatureSchema::from_json(j.value("schema", Json())));
  p.rows = j.value("rows", int64_t{0});
  if (!j.contains("features") || !j["features"].is_array() ||
      j["features"].size() != p.schema.names.size())
    return Status::InvalidArgument("reference profile: one 'features' entry per schema name");
  for (const auto& f : j["features"]) {
    KILN_ASSIGN_OR_RETURN(NumericReference r, NumericReference::from_json(f));
    p.features.push_back(std::move(r));
  }
  KILN_ASSIGN_OR_RETURN(p.intensity_shares, read_numbers(j, "intensity_shares"));
  if (j.contains("labels")) {
    p.labels = j["labels"].get<std::vector<std::string>>();
    KILN_ASSIGN_OR_RETURN(p.class_prior, read_numbers(j, "class_prior"));
    KILN_ASSIGN_OR_RETURN(p.predicted_shares, read_numbers(j, "predicted_shares"));
    KILN_ASSIGN_OR_RETURN(p.confidence,
                          NumericReference::from_json(j.value("confidence", Json::object())));
  }
  if (j.contains("prediction")) {
    KILN_ASSIGN_OR_RETURN(p.prediction, NumericReference::from_json(j["prediction"]));
  }
  p.predictions_split = j.value("predictions_split", "");
  if (j.contains("embedding")) {
    KILN_ASSIGN_OR_RETURN(p.embedding, EmbeddingSummary::from_json(j["embedding"]));
  }
  return p;
}

std::vector<double> bin_shares(const std::vector<double>& edges,
                               const std::vector<double>& values) {
  std::vector<double> counts(edges.size() + 1, 0.0);
  for (double v : values) {
    if (std::isnan(v)) continue;
    counts[static_cast<size_t>(std::upper_bound(edges.begin(), edges.end(), v) - edges.begin())] +=
        1;
  }
  return normalised(counts);
}

double population_stability_index(const std::vector<double>& reference,
                                  const std::vector<double>& current) {
  auto floor_of = [](const std::vector<double>& shares) {
    double smallest = 1.0;
    for (double s : shares)
      if (s > 0) smallest = std::min(smallest, s);
    return smallest <= 1e-4 ? smallest / 1e6 : 1e-4;
  };
  const double ref_floor = floor_of(reference), cur_floor = floor_of(current);
  double psi = 0.0;
  for (size_t i = 0; i < reference.size() && i < current.size(); ++i) {
    const double e = reference[i] > 0 ? reference[i] : ref_floor;
    const double a = current[i] > 0 ? current[i] : cur_floor;
    psi += (a - e) * std::log(a / e);
  }
  return psi;
}

double kolmogorov_sf(double lambda) {
  if (lambda <= 0) return 1.0;
  const double a2 = -2.0 * lambda * lambda;
  double fac = 2.0, sum = 0.0, previous = 0.0;
  for (int j = 1; j <= 100; ++j) {
    const double term = fac * std::exp(a2 * j * j);
    sum += term;
    if (std::fabs(term) <= 0.001 * previous || std::fabs(term) <= 1e-8 * sum)
      return std::clamp(sum, 0.0, 1.0);
    fac = -fac;
    previous = std::fabs(term);
  }
  return 1.0;  // the series did not converge: lambda is tiny, the distributions agree
}

KsResult ks_two_sample(const std::vector<double>& sorted_reference, std::vector<double> current) {
  KsResult r;
  current.erase(
      std::remove_if(current.begin(), current.end(), [](double v) { return std::isnan(v); }),
      current.end());
  if (sorted_reference.empty() || current.empty()) return r;
  std::sort(current.begin(), current.end());
  const double n1 = static_cast<double>(sorted_reference.size());
  const double n2 = static_cast<double>(current.size());
  size_t i = 0, j = 0;
  double d = 0.0;
  // Walk both sorted samples; at each distinct value both empirical CDFs include it (side right).
  while (i < sorted_reference.size() || j < current.size()) {
    double v;
    if (j >= current.size() || (i < sorted_reference.size() && sorted_reference[i] <= current[j]))
      v = sorted_reference[i];
    else
      v = current[j];
    while (i < sorted_reference.size() && sorted_reference[i] <= v) ++i;
    while (j < current.size() && current[j] <= v) ++j;
    d = std::max(d, std::fabs(static_cast<double>(i) / n1 - static_cast<double>(j) / n2));
  }
  r.statistic = d;
  const double en = std::sqrt(n1 * n2 / (n1 + n2));
  r.p_value = kolmogorov_sf((en + 0.12 + 0.11 / en) * d);
  return r;
}

double jensen_shannon_distance(const std::vector<double>& p_counts,
                               const std::vector<double>& q_counts) {
  const std::vector<double> p = normalised(p_counts), q = normalised(q_counts);
  double js = 0.0;
  for (size_t i = 0; i < p.size() && i < q.size(); ++i) {
    const double m = 0.5 * (p[i] + q[i]);
    if (p[i] > 0) js += 0.5 * p[i] * std::log(p[i] / m);
    if (q[i] > 0) js += 0.5 * q[i] * std::log(q[i] / m);
  }
  return std::sqrt(std::max(0.0, js));
}

Json DriftReport::to_json() const {
  Json f = Json::array();
  for (const auto& d : features)
    f.push_back({{"name", d.name},
                 {"test", d.test},
                 {"rows", d.rows},
                 {"missing", d.missing},
                 {"out_of_range", d.out_of_range},
                 {"out_of_vocabulary", d.out_of_vocabulary},
                 {"psi", d.psi},
                 {"statistic", d.statistic},
                 {"p_value", d.p_value},
                 {"drifted", d.drifted}});
  Json j = {{"rows", rows},
            {"features", f},
            {"drift_share", drift_share},
            {"dataset_drift", dataset_drift},
            {"prediction_psi", prediction_psi},
            {"prediction_drift", prediction_drift},
            {"confidence_p_value", confidence_p_value}};
  if (!predicted_shares.empty()) j["predicted_shares"] = numbers(predicted_shares);
  return j;
}

DriftReport compare_to_reference(const ReferenceProfile& ref, const std::vector<double>& features,
                                 const std::vector<double>& intensity_counts,
                                 const std::vector<int64_t>& predicted,
                                 const std::vector<double>& confidence,
                                 const std::vector<double>& predictions,
                                 const DriftOptions& options) {
  DriftReport report;
  const size_t f = ref.features.size();
  const size_t rows = f == 0 ? 0 : features.size() / f;
  report.rows = static_cast<int64_t>(rows);
  std::vector<double> column(rows);
  int64_t drifted = 0;
  for (size_t k = 0; k < f; ++k) {
    const NumericReference& nr = ref.features[k];
    FeatureDrift d;
    d.name = nr.name;
    d.test = "ks";
    for (size_t r = 0; r < rows; ++r) {
      const double v = features[r * f + k];
      column[r] = v;
      if (std::isnan(v)) {
        ++d.missing;
      } else if (v < nr.min || v > nr.max) {
        ++d.out_of_range;
      }
    }
    d.rows = static_cast<int64_t>(rows) - d.missing;
    if (nr.categorical()) {
      // χ² over the known codes; unknown codes are counted, and weigh in the PSI as a bin the
      // reference never filled.
      d.test = "chi_square";
      d.out_of_range = 0;
      const std::vector<double> counts =
          category_shares(nr.categories, column, &d.out_of_vocabulary, true);
      const ChiSquareResult chi = chi_square_test(nr.shares, counts);
      std::vector<double> ref_shares = nr.shares, cur_counts = counts;
      ref_shares.push_back(0.0);
      cur_counts.push_back(static_cast<double>(d.out_of_vocabulary));
      d.psi = population_stability_index(ref_shares, normalised(cur_counts));
      d.statistic = chi.statistic;
      d.p_value = chi.p_value;
      d.drifted = d.rows > 0 && (chi.p_value <= options.alpha || d.out_of_vocabulary * 2 > d.rows);
    } else {
      d.psi = population_stability_index(nr.shares, bin_shares(nr.edges, column));
      const KsResult ks = ks_two_sample(nr.sample, column);
      d.statistic = ks.statistic;
      d.p_value = ks.p_value;
      d.drifted = d.rows > 0 && ks.p_value <= options.alpha;
    }
    drifted += d.drifted;
    report.features.push_back(d);
  }
  if (!ref.intensity_shares.empty() && !intensity_counts.empty()) {
    FeatureDrift d;
    d.name = "pixel_intensity";
    d.test = "jensen_shannon";
    d.rows = static_cast<int64_t>(rows);
    d.statistic = jensen_shannon_distance(ref.intensity_shares, intensity_counts);
    d.psi = population_stability_index(ref.intensity_shares, normalised(intensity_counts));
    d.drifted = d.statistic >= options.js_threshold;
    drifted += d.drifted;
    report.features.push_back(d);
  }
  report.drift_share = report.features.empty() ? 0.0
                                               : static_cast<double>(drifted) /
                                                     static_cast<double>(report.features.size());
  report.dataset_drift = rows > 0 && report.drift_share >= options.drift_share;
  if (!ref.labels.empty() && !predicted.empty()) {
    std::vector<double> counts(ref.labels.size(), 0.0);
    for (int64_t c : predicted)
      if (c >= 0 && static_cast<size_t>(c) < counts.size()) counts[static_cast<size_t>(c)] += 1;
    report.predicted_shares = normalised(counts);
    report.prediction_psi =
        population_stability_index(ref.predicted_shares, report.predicted_shares);
    report.prediction_drift = report.prediction_psi >= options.psi_threshold;
    if (!confidence.empty())
      report.confidence_p_value = ks_two_sample(ref.confidence.sample, confidence).p_value;
  } else if (ref.prediction.rows > 0 && !predictions.empty()) {
    report.prediction_psi = population_stability_index(
        ref.prediction.shares, bin_shares(ref.prediction.edges, predictions));
    report.prediction_drift = report.prediction_psi >= options.psi_threshold;
  }
  return report;
}

}  // namespace kiln::monitor
