#include "kiln/features/transform.h"

#include <torch/torch.h>

#include <functional>
#include <map>
#include <sstream>

#include "kiln/features/imputer.h"
#include "kiln/features/json_fields.h"
#include "kiln/features/one_hot.h"
#include "kiln/features/pca.h"
#include "kiln/features/pipeline.h"
#include "kiln/features/scalers.h"
#include "kiln/features/selection.h"

namespace kiln::features {

namespace in = internal;

namespace {

std::string shape_of(const torch::Tensor& x) {
  std::ostringstream os;
  os << x.sizes();
  return os.str();
}

Status check_matrix(const torch::Tensor& x, const std::string& kind) {
  if (!x.defined()) return Status::InvalidArgument(kind + ": input tensor is undefined");
  if (x.dim() != 2) {
    return Status::InvalidArgument(kind + ": expected a 2-D tensor (rows x features), got shape " +
                                   shape_of(x));
  }
  if (x.scalar_type() != torch::kFloat32 && x.scalar_type() != torch::kFloat64) {
    return Status::InvalidArgument(kind + ": expected float32 or float64 values, got " +
                                   std::string(c10::toString(x.scalar_type())));
  }
  return Status::Ok();
}

template <typename T>
Expected<std::unique_ptr<Transform>> upcast(Expected<std::unique_ptr<T>> t) {
  if (!t.ok()) return t.status();
  return std::unique_ptr<Transform>(std::move(t).value());
}

}  // namespace

Expected<torch::Tensor> Transform::fit_apply(const torch::Tensor& x) {
  KILN_RETURN_IF_ERROR(fit(x));
  return apply(x);
}

void Transform::set_fitted(int64_t input_features, int64_t output_features) {
  fitted_ = true;
  input_features_ = input_features;
  output_features_ = output_features;
}

void Transform::reset_fitted() {
  fitted_ = false;
  input_features_ = 0;
  output_features_ = 0;
}

Status Transform::check_apply_input(const torch::Tensor& x) const {
  if (!fitted_) return Status::FailedPrecondition(kind() + ": apply() before fit()");
  KILN_RETURN_IF_ERROR(check_matrix(x, kind()));
  if (x.size(1) != input_features_) {
    return Status::InvalidArgument(kind() + ": expected " + std::to_string(input_features_) +
                                   " features, got " + std::to_string(x.size(1)));
  }
  return Status::Ok();
}

Status Transform::check_fit_input(const torch::Tensor& x, int64_t min_rows) const {
  KILN_RETURN_IF_ERROR(check_matrix(x, kind()));
  if (x.size(0) < min_rows || x.size(1) < 1) {
    return Status::InvalidArgument(kind() + ": fit needs at least " + std::to_string(min_rows) +
                                   " row(s) and 1 column, got shape " + shape_of(x));
  }
  torch::Tensor inf_cols = torch::isinf(x).any(0);
  if (inf_cols.any().item<bool>()) {
    const int64_t col = inf_cols.to(torch::kInt64).argmax().item<int64_t>();
    return Status::InvalidArgument(kind() + ": column " + std::to_string(col) +
                                   " has infinite training values");
  }
  return Status::Ok();
}

Json Transform::json_header(Json options) const {
  Json j;
  j["kind"] = kind();
  j["version"] = in::kFormatVersion;
  j["fitted"] = fitted_;
  if (fitted_) {
    j["input_features"] = input_features_;
    j["output_features"] = output_features_;
  }
  j["options"] = std::move(options);
  return j;
}

Expected<std::unique_ptr<Transform>> transform_from_json(const Json& j) {
  using Factory = std::function<Expected<std::unique_ptr<Transform>>(const Json&)>;
  static const std::map<std::string, Factory> kFactories = {
      {Imputer::kKind, [](const Json& v) { return upcast(Imputer::from_json(v)); }},
      {StandardScaler::kKind, [](const Json& v) { return upcast(StandardScaler::from_json(v)); }},
      {MinMaxScaler::kKind, [](const Json& v) { return upcast(MinMaxScaler::from_json(v)); }},
      {RobustScaler::kKind, [](const Json& v) { return upcast(RobustScaler::from_json(v)); }},
      {OneHotEncoder::kKind, [](const Json& v) { return upcast(OneHotEncoder::from_json(v)); }},
      {VarianceThreshold::kKind,
       [](const Json& v) { return upcast(VarianceThreshold::from_json(v)); }},
      {Pca::kKind, [](const Json& v) { return upcast(Pca::from_json(v)); }},
      {Pipeline::kKind, [](const Json& v) { return upcast(Pipeline::from_json(v)); }},
  };
  KILN_RETURN_IF_ERROR(in::require_object(j, "transform"));
  KILN_ASSIGN_OR_RETURN(std::string kind, in::get_string(j, "transform", "kind"));
  auto it = kFactories.find(kind);
  if (it == kFactories.end()) {
    std::string known;
    for (const auto& [name, factory] : kFactories) known += (known.empty() ? "" : ", ") + name;
    return Status::InvalidArgument("transform JSON: unknown kind '" + kind + "' (known: " + known +
                                   ")");
  }
  return it->second(j);
}

}  // namespace kiln::features
