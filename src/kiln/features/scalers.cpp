#include "kiln/features/scalers.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "kiln/features/json_fields.h"
#include "kiln/features/tensor_utils.h"

namespace kiln::features {

namespace in = internal;

// ---- AffineTransform

Expected<torch::Tensor> AffineTransform::apply(const torch::Tensor& x) const {
  KILN_RETURN_IF_ERROR(check_apply_input(x));
  auto opts = x.options();
  return (x - shift_t_.to(opts)) * scale_t_.to(opts);
}

void AffineTransform::set_affine(std::vector<double> shift, std::vector<double> scale) {
  shift_ = std::move(shift);
  scale_ = std::move(scale);
  shift_t_ = in::to_tensor(shift_);
  scale_t_ = in::to_tensor(scale_);
  const auto f = static_cast<int64_t>(shift_.size());
  set_fitted(f, f);
}

void AffineTransform::write_affine(Json* j) const {
  (*j)["shift"] = shift_;
  (*j)["scale"] = scale_;
}

Status AffineTransform::read_affine(const Json& j, const std::string& kind, int64_t features) {
  KILN_ASSIGN_OR_RETURN(std::vector<double> shift, in::get_doubles(j, kind, "shift", features));
  KILN_ASSIGN_OR_RETURN(std::vector<double> scale, in::get_doubles(j, kind, "scale", features));
  set_affine(std::move(shift), std::move(scale));
  return Status::Ok();
}

namespace {

/// Reads the header and checks the shape of an F -> F transform.
Expected<in::Header> read_square_header(const Json& j, const std::string& kind) {
  KILN_ASSIGN_OR_RETURN(in::Header h, in::read_header(j, kind));
  if (h.fitted && h.input_features != h.output_features) {
    return Status::InvalidArgument(
        kind + " JSON: input_features (" + std::to_string(h.input_features) +
        ") must equal output_features (" + std::to_string(h.output_features) + ")");
  }
  return h;
}

}  // namespace

// ---- StandardScaler

Status StandardScaler::fit(const torch::Tensor& x) {
  KILN_RETURN_IF_ERROR(check_fit_input(x));
  in::ColumnStats s = in::column_stats(in::to_cpu_double(x));
  KILN_RETURN_IF_ERROR(in::require_present(s, kKind));
  const size_t f = s.mean.size();
  std::vector<double> shift(f, 0.0), scale(f, 1.0);
  for (size_t i = 0; i < f; ++i) {
    if (options_.with_mean_) shift[i] = s.mean[i];
    const double sd = std::sqrt(s.var[i]);
    // A constant column's computed std is rounding noise, a few ulps of its magnitude at most.
    const double noise = 10 * std::numeric_limits<double>::epsilon() *
                         std::max(std::abs(s.min[i]), std::abs(s.max[i]));
    if (options_.with_std_ && sd > noise) scale[i] = 1.0 / sd;
  }
  mean_ = std::move(s.mean);
  var_ = std::move(s.var);
  set_affine(std::move(shift), std::move(scale));
  return Status::Ok();
}

Json StandardScaler::to_json() const {
  Json j = json_header(options_.to_json());
  if (fitted()) {
    j["mean"] = mean_;
    j["var"] = var_;
    write_affine(&j);
  }
  return j;
}

std::unique_ptr<Transform> StandardScaler::clone() const {
  return std::make_unique<StandardScaler>(*this);
}

Expected<std::unique_ptr<StandardScaler>> StandardScaler::from_json(const Json& j) {
  KILN_ASSIGN_OR_RETURN(in::Header h, read_square_header(j, kKind));
  KILN_ASSIGN_OR_RETURN(StandardScalerOptions options, StandardScalerOptions::from_json(h.options));
  auto t = std::make_unique<StandardScaler>(options);
  if (!h.fitted) return t;
  KILN_ASSIGN_OR_RETURN(t->mean_, in::get_doubles(j, kKind, "mean", h.input_features));
  KILN_ASSIGN_OR_RETURN(t->var_, in::get_doubles(j, kKind, "var", h.input_features));
  KILN_RETURN_IF_ERROR(t->read_affine(j, kKind, h.input_features));
  return t;
}

// ---- MinMaxScaler

Status MinMaxScaler::fit(const torch::Tensor& x) {
  KILN_RETURN_IF_ERROR(options_.validate());
  KILN_RETURN_IF_ERROR(check_fit_input(x));
  in::ColumnStats s = in::column_stats(in::to_cpu_double(x));
  KILN_RETURN_IF_ERROR(in::require_present(s, kKind));
  const size_t f = s.min.size();
  const double target = options_.feature_max_ - options_.feature_min_;
  std::vector<double> shift(f), scale(f);
  for (size_t i = 0; i < f; ++i) {
    const double range = s.max[i] - s.min[i];
    scale[i] = target / (range > 0 ? range : 1.0);
    // (x - shift) * scale == (x - min) * scale + feature_min.
    shift[i] = s.min[i] - options_.feature_min_ / scale[i];
  }
  data_min_ = std::move(s.min);
  data_max_ = std::move(s.max);
  set_affine(std::move(shift), std::move(scale));
  return Status::Ok();
}

Expected<torch::Tensor> MinMaxScaler::apply(const torch::Tensor& x) const {
  KILN_ASSIGN_OR_RETURN(torch::Tensor y, AffineTransform::apply(x));
  if (options_.clip_) y = torch::clamp(y, options_.feature_min_, options_.feature_max_);
  return y;
}

Json MinMaxScaler::to_json() const {
  Json j = json_header(options_.to_json());
  if (fitted()) {
    j["data_min"] = data_min_;
    j["data_max"] = data_max_;
    write_affine(&j);
  }
  return j;
}

std::unique_ptr<Transform> MinMaxScaler::clone() const {
  return std::make_unique<MinMaxScaler>(*this);
}

Expected<std::unique_ptr<MinMaxScaler>> MinMaxScaler::from_json(const Json& j) {
  KILN_ASSIGN_OR_RETURN(in::Header h, read_square_header(j, kKind));
  KILN_ASSIGN_OR_RETURN(MinMaxScalerOptions options, MinMaxScalerOptions::from_json(h.options));
  auto t = std::make_unique<MinMaxScaler>(options);
  if (!h.fitted) return t;
  KILN_ASSIGN_OR_RETURN(t->data_min_, in::get_doubles(j, kKind, "data_min", h.input_features));
  KILN_ASSIGN_OR_RETURN(t->data_max_, in::get_doubles(j, kKind, "data_max", h.input_features));
  KILN_RETURN_IF_ERROR(t->read_affine(j, kKind, h.input_features));
  return t;
}

// ---- RobustScaler

Status RobustScaler::fit(const torch::Tensor& x) {
  KILN_RETURN_IF_ERROR(options_.validate());
  KILN_RETURN_IF_ERROR(check_fit_input(x));
  std::vector<std::vector<double>> cols = in::sorted_columns(in::to_cpu_double(x));
  const size_t f = cols.size();
  std::vector<double> center(f), range(f), shift(f, 0.0), scale(f, 1.0);
  for (size_t i = 0; i < f; ++i) {
    if (cols[i].empty()) {
      return Status::InvalidArgument(std::string(kKind) + ": column " + std::to_string(i) +
                                     " has no non-missing training values");
    }
    center[i] = in::quantile_sorted(cols[i], 0.5);
    range[i] = in::quantile_sorted(cols[i], options_.quantile_high_ / 100.0) -
               in::quantile_sorted(cols[i], options_.quantile_low_ / 100.0);
    if (options_.with_centering_) shift[i] = center[i];
    if (options_.with_scaling_ && range[i] > 0) scale[i] = 1.0 / range[i];
  }
  center_ = std::move(center);
  range_ = std::move(range);
  set_affine(std::move(shift), std::move(scale));
  return Status::Ok();
}

Json RobustScaler::to_json() const {
  Json j = json_header(options_.to_json());
  if (fitted()) {
    j["center"] = center_;
    j["range"] = range_;
    write_affine(&j);
  }
  return j;
}

std::unique_ptr<Transform> RobustScaler::clone() const {
  return std::make_unique<RobustScaler>(*this);
}

Expected<std::unique_ptr<RobustScaler>> RobustScaler::from_json(const Json& j) {
  KILN_ASSIGN_OR_RETURN(in::Header h, read_square_header(j, kKind));
  KILN_ASSIGN_OR_RETURN(RobustScalerOptions options, RobustScalerOptions::from_json(h.options));
  auto t = std::make_unique<RobustScaler>(options);
  if (!h.fitted) return t;
  KILN_ASSIGN_OR_RETURN(t->center_, in::get_doubles(j, kKind, "center", h.input_features));
  KILN_ASSIGN_OR_RETURN(t->range_, in::get_doubles(j, kKind, "range", h.input_features));
  KILN_RETURN_IF_ERROR(t->read_affine(j, kKind, h.input_features));
  return t;
}

}  // namespace kiln::features
