#pragma once

// Options for every fitted transform in kiln::features. This header pulls in no tensor code, so
// the CLI and config readers can build, print and validate options without LibTorch.
//
// Every Options struct: required values in the constructor (none here; all have defaults),
// chained setters, `validate()`, `to_json()` and `from_json()`. from_json() fills absent keys
// with defaults and rejects unknown keys (so a typo in a config is an error, not a silent default).

#include <cstdint>
#include <string>
#include <string_view>

#include "kiln/core/expected.h"
#include "kiln/core/json.h"

namespace kiln::features {

/// How an Imputer chooses the value that replaces a missing (NaN) cell, per column.
enum class ImputeStrategy {
  kMean,          ///< mean of the column's non-missing training values
  kMedian,        ///< median (linear interpolation between the two middle values, as numpy)
  kMostFrequent,  ///< most frequent value; ties go to the smallest value (as scikit-learn)
  kConstant,      ///< ImputerOptions::fill_value_ for every column
};

/// "mean", "median", "most_frequent", "constant".
const char* impute_strategy_name(ImputeStrategy strategy);
/// Inverse of impute_strategy_name(); InvalidArgument naming the bad value otherwise.
Expected<ImputeStrategy> parse_impute_strategy(std::string_view name);

/// Options for Imputer.
///
///   Imputer imp(ImputerOptions().strategy(ImputeStrategy::kConstant).fill_value(-1));
struct ImputerOptions {
  ImputerOptions& strategy(ImputeStrategy s) {
    strategy_ = s;
    return *this;
  }
  /// Used only by ImputeStrategy::kConstant; must be finite.
  ImputerOptions& fill_value(double v) {
    fill_value_ = v;
    return *this;
  }

  Status validate() const;
  Json to_json() const;
  static Expected<ImputerOptions> from_json(const Json& j);

  ImputeStrategy strategy_ = ImputeStrategy::kMean;
  double fill_value_ = 0.0;
};

/// Options for StandardScaler: y = (x - mean) / std, either part can be switched off.
///
///   StandardScaler s(StandardScalerOptions().with_mean(false));
struct StandardScalerOptions {
  StandardScalerOptions& with_mean(bool b) {
    with_mean_ = b;
    return *this;
  }
  StandardScalerOptions& with_std(bool b) {
    with_std_ = b;
    return *this;
  }

  Status validate() const { return Status::Ok(); }
  Json to_json() const;
  static Expected<StandardScalerOptions> from_json(const Json& j);

  bool with_mean_ = true;
  bool with_std_ = true;
};

/// Options for MinMaxScaler: maps each column's training [min, max] onto [feature_min,
/// feature_max].
///
///   MinMaxScaler s(MinMaxScalerOptions().range(-1, 1).clip(true));
struct MinMaxScalerOptions {
  /// Target range; requires lo < hi, both finite.
  MinMaxScalerOptions& range(double lo, double hi) {
    feature_min_ = lo;
    feature_max_ = hi;
    return *this;
  }
  /// Clamp apply() output to the target range (values outside the training range otherwise map
  /// outside it).
  MinMaxScalerOptions& clip(bool b) {
    clip_ = b;
    return *this;
  }

  Status validate() const;
  Json to_json() const;
  static Expected<MinMaxScalerOptions> from_json(const Json& j);

  double feature_min_ = 0.0;
  double feature_max_ = 1.0;
  bool clip_ = false;
};

/// Options for RobustScaler: y = (x - median) / (q_high - q_low), quantiles in percent.
///
///   RobustScaler s(RobustScalerOptions().quantile_range(10, 90));
struct RobustScalerOptions {
  /// Percentiles for the spread; requires 0 <= lo < hi <= 100.
  RobustScalerOptions& quantile_range(double lo, double hi) {
    quantile_low_ = lo;
    quantile_high_ = hi;
    return *this;
  }
  RobustScalerOptions& with_centering(bool b) {
    with_centering_ = b;
    return *this;
  }
  RobustScalerOptions& with_scaling(bool b) {
    with_scaling_ = b;
    return *this;
  }

  Status validate() const;
  Json to_json() const;
  static Expected<RobustScalerOptions> from_json(const Json& j);

  double quantile_low_ = 25.0;
  double quantile_high_ = 75.0;
  bool with_centering_ = true;
  bool with_scaling_ = true;
};

/// Options for VarianceThreshold: keeps columns whose training variance (population, NaN
/// ignored) is strictly greater than the threshold; the default 0 drops constant columns.
///
///   VarianceThreshold vt(VarianceThresholdOptions().threshold(1e-3));
struct VarianceThresholdOptions {
  VarianceThresholdOptions& threshold(double t) {
    threshold_ = t;
    return *this;
  }

  Status validate() const;
  Json to_json() const;
  static Expected<VarianceThresholdOptions> from_json(const Json& j);

  double threshold_ = 0.0;
};

/// Options for Pca. Set at most one of n_components / variance_fraction; with neither, every
/// component (min(rows, features)) is kept.
///
///   Pca pca(PcaOptions().variance_fraction(0.95));
///   Pca pca2(PcaOptions().n_components(5).whiten(true));
struct PcaOptions {
  /// Keep exactly n components (n >= 1; fit fails if n > min(rows, features)). 0: unset.
  PcaOptions& n_components(int64_t n) {
    n_components_ = n;
    return *this;
  }
  /// Keep the fewest components whose explained-variance ratios sum to more than f, 0 < f < 1
  /// (scikit-learn's rule for a float n_components). 0: unset.
  PcaOptions& variance_fraction(double f) {
    variance_fraction_ = f;
    return *this;
  }
  /// Scale each component to unit variance on the training data.
  PcaOptions& whiten(bool b) {
    whiten_ = b;
    return *this;
  }

  Status validate() const;
  Json to_json() const;
  static Expected<PcaOptions> from_json(const Json& j);

  int64_t n_components_ = 0;
  double variance_fraction_ = 0.0;
  bool whiten_ = false;
};

/// The category a missing cell of a categorical table column is (`kiln data prepare` encodes it
/// as its own category; predict and serve map a missing cell to it the same way).
inline constexpr const char* kMissingCategory = "<missing>";
/// The category that categories rarer than a dataset's categories.min_frequency join; when a
/// column has it, a category training never saw is it too.
inline constexpr const char* kInfrequentCategory = "<infrequent>";

/// What OneHotEncoder does with a category it did not see in training.
enum class UnknownCategory {
  kError,   ///< InvalidArgument naming the value and its row
  kIgnore,  ///< encode as all zeros
};

/// "error", "ignore".
const char* unknown_category_name(UnknownCategory u);
Expected<UnknownCategory> parse_unknown_category(std::string_view name);

/// Options for OneHotEncoder.
///
///   OneHotEncoder enc(OneHotEncoderOptions().handle_unknown(UnknownCategory::kIgnore));
struct OneHotEncoderOptions {
  OneHotEncoderOptions& handle_unknown(UnknownCategory u) {
    handle_unknown_ = u;
    return *this;
  }

  Status validate() const { return Status::Ok(); }
  Json to_json() const;
  static Expected<OneHotEncoderOptions> from_json(const Json& j);

  UnknownCategory handle_unknown_ = UnknownCategory::kError;
};

}  // namespace kiln::features
