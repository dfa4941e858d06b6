#include "kiln/features/options.h"

#include <cmath>
#include <string>

#include "kiln/features/json_fields.h"

namespace kiln::features {

namespace in = internal;

namespace {

std::string fmt(double d) {
  Json j = d;
  return j.dump();
}

}  // namespace

const char* impute_strategy_name(ImputeStrategy strategy) {
  switch (strategy) {
    case ImputeStrategy::kMean:
      return "mean";
    case ImputeStrategy::kMedian:
      return "median";
    case ImputeStrategy::kMostFrequent:
      return "most_frequent";
    case ImputeStrategy::kConstant:
      return "constant";
  }
  return "unknown";
}

Expected<ImputeStrategy> parse_impute_strategy(std::string_view name) {
  for (auto s : {ImputeStrategy::kMean, ImputeStrategy::kMedian, ImputeStrategy::kMostFrequent,
                 ImputeStrategy::kConstant}) {
    if (name == impute_strategy_name(s)) return s;
  }
  return Status::InvalidArgument("unknown impute strategy '" + std::string(name) +
                                 "' (expected mean, median, most_frequent or constant)");
}

const char* unknown_category_name(UnknownCategory u) {
  return u == UnknownCategory::kError ? "error" : "ignore";
}

Expected<UnknownCategory> parse_unknown_category(std::string_view name) {
  if (name == "error") return UnknownCategory::kError;
  if (name == "ignore") return UnknownCategory::kIgnore;
  return Status::InvalidArgument("unknown handle_unknown '" + std::string(name) +
                                 "' (expected error or ignore)");
}

// ---- ImputerOptions

Status ImputerOptions::validate() const {
  if (!std::isfinite(fill_value_)) {
    return Status::InvalidArgument("imputer options: fill_value must be finite");
  }
  return Status::Ok();
}

Json ImputerOptions::to_json() const {
  return Json{{"strategy", impute_strategy_name(strategy_)}, {"fill_value", fill_value_}};
}

Expected<ImputerOptions> ImputerOptions::from_json(const Json& j) {
  const std::string owner = "imputer options";
  KILN_RETURN_IF_ERROR(in::reject_unknown_keys(j, owner, {"strategy", "fill_value"}));
  ImputerOptions o;
  std::string strategy = impute_strategy_name(o.strategy_);
  KILN_RETURN_IF_ERROR(in::get_string_opt(j, owner, "strategy", &strategy));
  KILN_ASSIGN_OR_RETURN(o.strategy_, parse_impute_strategy(strategy));
  KILN_RETURN_IF_ERROR(in::get_double_opt(j, owner, "fill_value", &o.fill_value_));
  KILN_RETURN_IF_ERROR(o.validate());
  return o;
}

// ---- StandardScalerOptions

Json StandardScalerOptions::to_json() const {
  return Json{{"with_mean", with_mean_}, {"with_std", with_std_}};
}

Expected<StandardScalerOptions> StandardScalerOptions::from_json(const Json& j) {
  const std::string owner = "standard_scaler options";
  KILN_RETURN_IF_ERROR(in::reject_unknown_keys(j, owner, {"with_mean", "with_std"}));
  StandardScalerOptions o;
  KILN_RETURN_IF_ERROR(in::get_bool_opt(j, owner, "with_mean", &o.with_mean_));
  KILN_RETURN_IF_ERROR(in::get_bool_opt(j, owner, "with_std", &o.with_std_));
  return o;
}

// ---- MinMaxScalerOptions

Status MinMaxScalerOptions::validate() const {
  if (!std::isfinite(feature_min_) || !std::isfinite(feature_max_) ||
      !(feature_min_ < feature_max_)) {
    return Status::InvalidArgument(
        "min_max_scaler options: range must be finite with min < max, "
        "got [" +
        fmt(feature_min_) + ", " + fmt(feature_max_) + "]");
  }
  return Status::Ok();
}

Json MinMaxScalerOptions::to_json() const {
  return Json{{"feature_min", feature_min_}, {"feature_max", feature_max_}, {"clip", clip_}};
}

Expected<MinMaxScalerOptions> MinMaxScalerOptions::from_json(const Json& j) {
  const std::string owner = "min_max_scaler options";
  KILN_RETURN_IF_ERROR(in::reject_unknown_keys(j, owner, {"feature_min", "feature_max", "clip"}));
  MinMaxScalerOptions o;
  KILN_RETURN_IF_ERROR(in::get_double_opt(j, owner, "feature_min", &o.feature_min_));
  KILN_RETURN_IF_ERROR(in::get_double_opt(j, owner, "feature_max", &o.feature_max_));
  KILN_RETURN_IF_ERROR(in::get_bool_opt(j, owner, "clip", &o.clip_));
  KILN_RETURN_IF_ERROR(o.validate());
  return o;
}

// ---- RobustScalerOptions

Status RobustScalerOptions::validate() const {
  if (!(quantile_low_ >= 0 && quantile_low_ < quantile_high_ && quantile_high_ <= 100)) {
    return Status::InvalidArgument(
        "robust_scaler options: quantile range must satisfy 0 <= low < "
        "high <= 100, got [" +
        fmt(quantile_low_) + ", " + fmt(quantile_high_) + "]");
  }
  return Status::Ok();
}

Json RobustScalerOptions::to_json() const {
  return Json{{"quantile_low", quantile_low_},
              {"quantile_high", quantile_high_},
              {"with_centering", with_centering_},
              {"with_scaling", with_scaling_}};
}

Expected<RobustScalerOptions> RobustScalerOptions::from_json(const Json& j) {
  const std::string owner = "robust_scaler options";
  KILN_RETURN_IF_ERROR(in::reject_unknown_keys(
      j, owner, {"quantile_low", "quantile_high", "with_centering", "with_scaling"}));
  RobustScalerOptions o;
  KILN_RETURN_IF_ERROR(in::get_double_opt(j, owner, "quantile_low", &o.quantile_low_));
  KILN_RETURN_IF_ERROR(in::get_double_opt(j, owner, "quantile_high", &o.quantile_high_));
  KILN_RETURN_IF_ERROR(in::get_bool_opt(j, owner, "with_centering", &o.with_centering_));
  KILN_RETURN_IF_ERROR(in::get_bool_opt(j, owner, "with_scaling", &o.with_scaling_));
  KILN_RETURN_IF_ERROR(o.validate());
  return o;
}

// ---- VarianceThresholdOptions

Status VarianceThresholdOptions::validate() const {
  if (!std::isfinite(threshold_) || threshold_ < 0) {
    return Status::InvalidArgument(
        "variance_threshold options: threshold must be finite and >= 0, "
        "got " +
        fmt(threshold_));
  }
  return Status::Ok();
}

Json VarianceThresholdOptions::to_json() const { return Json{{"threshold", threshold_}}; }

Expected<VarianceThresholdOptions> VarianceThresholdOptions::from_json(const Json& j) {
  const std::string owner = "variance_threshold options";
  KILN_RETURN_IF_ERROR(in::reject_unknown_keys(j, owner, {"threshold"}));
  VarianceThresholdOptions o;
  KILN_RETURN_IF_ERROR(in::get_double_opt(j, owner, "threshold", &o.threshold_));
  KILN_RETURN_IF_ERROR(o.validate());
  return o;
}

// ---- PcaOptions

Status PcaOptions::validate() const {
  if (n_components_ < 0) {
    return Status::InvalidArgument("pca options: n_components must be >= 1 (0: unset), got " +
                                   std::to_string(n_components_));
  }
  if (!(variance_fraction_ >= 0 && variance_fraction_ < 1)) {
    return Status::InvalidArgument(
        "pca options: variance_fraction must satisfy 0 < f < 1 (0: unset), got " +
        fmt(variance_fraction_));
  }
  if (n_components_ > 0 && variance_fraction_ > 0) {
    return Status::InvalidArgument("pca options: set n_components or variance_fraction, not both");
  }
  return Status::Ok();
}

Json PcaOptions::to_json() const {
  return Json{{"n_components", n_components_},
              {"variance_fraction", variance_fraction_},
              {"whiten", whiten_}};
}

Expected<PcaOptions> PcaOptions::from_json(const Json& j) {
  const std::string owner = "pca options";
  KILN_RETURN_IF_ERROR(
      in::reject_unknown_keys(j, owner, {"n_components", "variance_fraction", "whiten"}));
  PcaOptions o;
  KILN_RETURN_IF_ERROR(in::get_int_opt(j, owner, "n_components", &o.n_components_));
  KILN_RETURN_IF_ERROR(in::get_double_opt(j, owner, "variance_fraction", &o.variance_fraction_));
  KILN_RETURN_IF_ERROR(in::get_bool_opt(j, owner, "whiten", &o.whiten_));
  KILN_RETURN_IF_ERROR(o.validate());
  return o;
}

// ---- OneHotEncoderOptions

Json OneHotEncoderOptions::to_json() const {
  return Json{{"handle_unknown", unknown_category_name(handle_unknown_)}};
}

Expected<OneHotEncoderOptions> OneHotEncoderOptions::from_json(const Json& j) {
  const std::string owner = "one_hot_encoder options";
  KILN_RETURN_IF_ERROR(in::reject_unknown_keys(j, owner, {"handle_unknown"}));
  OneHotEncoderOptions o;
  std::string handle = unknown_category_name(o.handle_unknown_);
  KILN_RETURN_IF_ERROR(in::get_string_opt(j, owner, "handle_unknown", &handle));
  KILN_ASSIGN_OR_RETURN(o.handle_unknown_, parse_unknown_category(handle));
  return o;
}

}  // namespace kiln::features
