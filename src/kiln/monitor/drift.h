#pragma once
// Data drift of a model's inputs and predictions against what it was trained on: the reference
// profile a bundle records at training time (reference_profile.json), the features it is
// computed on, and the tests that compare a batch of live or offline rows with it (PSI on the
// reference's quantile bins, two-sample Kolmogorov–Smirnov, Jensen–Shannon distance).
// Torch-free: `kiln serve`, `kiln monitor drift` and the trainer share it. Pure functions and
// plain values; thread-compatible.

#include <cstdint>
#include <string>
#include <vector>

#include "kiln/core/expected.h"
#include "kiln/core/json.h"

namespace kiln::monitor {

/// The bundle file the reference profile lives in (an extra file, hashed like the others).
inline constexpr const char* kReferenceProfileFile = "reference_profile.json";

/// What is monitored of a model's raw inputs. Tables: every raw feature column (NaN = missing).
/// Images (C×H×W, values 0..255): per image the mean and standard deviation of its pixels and
/// the mean of each cell of a 4×4 grid (what a brightness change or a translation moves), plus
/// the pixel-intensity histogram of the whole batch (32 bins over 0..256).
struct FeatureSchema {
  std::string kind;                  ///< "table" or "image"
  std::vector<int64_t> input_shape;  ///< raw per-row shape
  std::vector<std::string> names;    ///< one per monitored feature

  int64_t row_numel() const;
  Json to_json() const;
  static Expected<FeatureSchema> from_json(const Json& j);
};

/// The schema for a raw input shape: "image" when it is C×H×W, else "table" with
/// `table_feature_names` (f0, f1, ... when empty).
FeatureSchema feature_schema(const std::vector<int64_t>& raw_shape,
                             const std::vector<std::string>& table_feature_names);

/// Appends the monitored features of `rows` raw rows (row-major, schema.row_numel() floats each)
/// to `features` (rows × names.size(), row-major), and for images adds each pixel to
/// `intensity_counts` (32 bins; resized as needed; may be null).
void extract_features(const FeatureSchema& schema, const float* x, int64_t rows,
                      std::vector<double>* features, std::vector<double>* intensity_counts);

/// One numeric quantity's reference: summary statistics, the inner edges of its (up to) 10
/// quantile bins with the reference share of each bin, and a sorted sample (up to 1000 values)
/// for the Kolmogorov–Smirnov test. A categorical feature (a table column holding a few integer
/// codes) keeps its categories instead of bins and is tested with χ².
struct NumericReference {
  std::string name;
  int64_t rows = 0;
  double missing_rate = 0.0;
  double mean = 0.0, stddev = 0.0, min = 0.0, max = 0.0;
  std::vector<double> edges;   ///< strictly increasing inner edges; bins = edges.size() + 1
  std::vector<double> shares;  ///< reference share of each bin
  std::vector<double> sample;  ///< sorted, NaN-free
  /// Categorical features: the codes seen in training, sorted; `shares` is then one per code
  /// and `edges` is empty. Empty for a numeric feature.
  std::vector<double> categories;

  bool categorical() const { return !categories.empty(); }
  Json to_json() const;
  static Expected<NumericReference> from_json(const Json& j);
};

/// The reference of `values` (NaN = missing). `sample_seed` picks the KS sample when there are
/// more than `sample_size` values. With `max_categories` > 0, values that are all integers with
/// between 2 and `max_categories` distinct codes (diabetes' sex 1/2, a label-encoded column)
/// make a categorical reference.
NumericReference numeric_reference(const std::string& name, const std::vector<double>& values,
                                   int64_t sample_size = 1000, uint64_t sample_seed = 0,
                                   int64_t max_categories = 0);

/// Shares of `values` (NaN skipped) in `ref`'s bins: its quantile bins, or its categories
/// (codes it never saw left out). Same length as ref.shares.
std::vector<double> shares_in_reference_bins(const NumericReference& ref,
                                             const std::vector<double>& values);

/// Distinct codes up to which the trainer profiles an integer-valued table column as categorical.
inline constexpr int64_t kMaxCategories = 10;

/// What the network's penultimate layer (the output of every top-level layer but the last)
/// gives on a sample of held-out rows: per unit the mean and the 5/25/50/75/95 % quantiles, and
/// the distribution of each row's L2 norm. A compact picture of the learned representation, to
/// compare a retrained or fine-tuned model's with, or live rows' when the weights are at hand.
struct EmbeddingSummary {
  std::string layer;       ///< module path of the layer whose output it is ("layers.4")
  std::string layer_type;  ///< spec layer type ("relu")
  int64_t rows = 0;
  int64_t units = 0;  ///< width of the (flattened) output; summarised up to kMaxEmbeddingUnits
  std::vector<double> mean, q05, q25, q50, q75, q95;  ///< per summarised unit
  NumericReference norm;                              ///< per-row L2 norm over every unit

  bool empty() const { return rows == 0; }
  Json to_json() const;
  static Expected<EmbeddingSummary> from_json(const Json& j);
};
inline constexpr int64_t kMaxEmbeddingUnits = 512;

/// The summary of `embedding` (rows × units, row-major).
EmbeddingSummary summarize_embedding(std::string layer, std::string layer_type,
                                     const std::vector<double>& embedding, int64_t rows,
                                     int64_t units, uint64_t sample_seed = 0);

/// What a model was trained on, as recorded in its bundle.
struct ReferenceProfile {
  FeatureSchema schema;
  int64_t rows = 0;                        ///< training rows profiled
  std::vector<NumericReference> features;  ///< one per schema name
  std::vector<double> intensity_shares;    ///< images: 32 bins
  std::vector<std::string> labels;         ///< classification: class names
  std::vector<double> class_prior;         ///< classification: training class shares
  std::vector<double> predicted_shares;    ///< classification: predicted-class shares (eval split)
  NumericReference confidence;             ///< classification: max probability (eval split)
  NumericReference prediction;             ///< regression: the predictions (eval split)
  std::string predictions_split;           ///< which split the predictions came from
  EmbeddingSummary embedding;              ///< on the predictions split; empty when unknown

  Json to_json() const;
  static Expected<ReferenceProfile> from_json(const Json& j);
};

/// Options of compare_to_reference(), Evidently's defaults.
struct DriftOptions {
  double alpha = 0.05;         ///< KS p-value at or below which a numeric feature drifted
  double psi_threshold = 0.1;  ///< PSI at or above which the predicted classes drifted
  double js_threshold = 0.1;   ///< Jensen–Shannon distance for the intensity histogram
  double drift_share = 0.5;    ///< dataset drift: at least this share of features drifted
};

/// One feature's comparison.
struct FeatureDrift {
  std::string name;
  std::string test;  ///< "ks", "chi_square" (categorical) or "jensen_shannon" (intensity)
  int64_t rows = 0;  ///< non-missing current values
  int64_t missing = 0;
  int64_t out_of_range = 0;       ///< values outside the reference's [min, max]
  int64_t out_of_vocabulary = 0;  ///< categorical: codes the reference never saw
  double psi = 0.0;
  double statistic = 0.0;  ///< KS D, or the JS distance
  double p_value = 1.0;    ///< KS only (1 for JS)
  bool drifted = false;
};

/// A batch compared with the reference.
struct DriftReport {
  int64_t rows = 0;
  std::vector<FeatureDrift> features;
  double drift_share = 0.0;  ///< share of drifted features
  bool dataset_drift = false;
  double prediction_psi = 0.0;  ///< predicted classes (or the regression output's bins)
  bool prediction_drift = false;
  double confidence_p_value = 1.0;       ///< KS of the max probability (classification)
  std::vector<double> predicted_shares;  ///< classification: current predicted-class shares

  Json to_json() const;
};

/// Compares a batch with `ref`: `features` rows × ref.features.size() (NaN = missing),
/// `intensity_counts` (images, may be empty), and the model's outputs for the same rows:
/// classification `predicted` class indices and `confidence` (max probability); regression
/// `predictions`. Outputs may be empty (input drift only).
DriftReport compare_to_reference(const ReferenceProfile& ref, const std::vector<double>& features,
                                 const std::vector<double>& intensity_counts,
                                 const std::vector<int64_t>& predicted,
                                 const std::vector<double>& confidence,
                                 const std::vector<double>& predictions,
                                 const DriftOptions& options = {});

/// Population stability index Σ (cur − ref)·ln(cur/ref) of two share vectors of equal length;
/// empty bins take 1e-4 (or min/1e6 when a share is already below that), as Evidently.
double population_stability_index(const std::vector<double>& reference,
                                  const std::vector<double>& current);
/// Shares of `values` (NaN skipped) in the bins of `edges` (value v goes to the number of edges
/// <= v).
std::vector<double> bin_shares(const std::vector<double>& edges, const std::vector<double>& values);

/// Two-sample Kolmogorov–Smirnov test: D = max |F_ref − F_cur| (as scipy.stats.ks_2samp), p from
/// the asymptotic Kolmogorov distribution with Stephens' small-sample correction,
/// Q((√n_e + 0.12 + 0.11/√n_e)·D), n_e = n·m/(n + m) (Numerical Recipes' probks).
struct KsResult {
  double statistic = 0.0;
  double p_value = 1.0;
};
KsResult ks_two_sample(const std::vector<double>& sorted_reference, std::vector<double> current);
/// Q_KS(λ) = 2 Σ_{j≥1} (−1)^{j−1} exp(−2 j² λ²), clamped to [0, 1].
double kolmogorov_sf(double lambda);
/// Jensen–Shannon distance (natural log; scipy.spatial.distance.jensenshannon) of two
/// histograms, normalised first.
/// Pearson's χ² goodness-of-fit of category `counts` against the reference `shares` (expected
/// count shares[i]·n), as scipy.stats.chisquare when every category is expected at least
/// kMinExpectedCount times; p from the χ² distribution with cells − 1 degrees of freedom
/// (categories with a zero reference share are left out). Rarer categories are pooled into one
/// cell (Cochran's rule), which joins the smallest other cell if it is still short: unpooled, a
/// column of many rare categories raises false alarms (1,000 Zipf-distributed categories in
/// 1,000-row windows drawn from the reference itself, 2,000 of them with scipy: 19% at alpha
/// 0.05 unpooled, 5% pooled).
struct ChiSquareResult {
  double statistic = 0.0;
  double p_value = 1.0;
  int64_t pooled_categories = 0;  ///< categories expected fewer than kMinExpectedCount times
};
inline constexpr double kMinExpectedCount = 5.0;
ChiSquareResult chi_square_test(const std::vector<double>& shares,
                                const std::vector<double>& counts);
/// P(X ≥ x) for X ~ χ²(dof): the regularised upper incomplete gamma Q(dof/2, x/2).
double chi_square_survival(double x, double dof);
double jensen_shannon_distance(const std::vector<double>& p, const std::vector<double>& q);

}  // namespace kiln::monitor
