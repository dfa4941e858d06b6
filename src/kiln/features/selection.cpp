#include "kiln/features/selection.h"

#include <torch/torch.h>

#include <algorithm>

#include "kiln/features/json_fields.h"
#include "kiln/features/tensor_utils.h"

namespace kiln::features {

namespace in = internal;

Status VarianceThreshold::fit(const torch::Tensor& x) {
  KILN_RETURN_IF_ERROR(options_.validate());
  KILN_RETURN_IF_ERROR(check_fit_input(x));
  in::ColumnStats s = in::column_stats(in::to_cpu_double(x));
  KILN_RETURN_IF_ERROR(in::require_present(s, kKind));
  std::vector<int64_t> kept;
  for (size_t i = 0; i < s.var.size(); ++i) {
    if (s.min[i] == s.max[i]) s.var[i] = 0.0;  // rounding can leave a constant column at ~1e-33
    if (s.var[i] > options_.threshold_) kept.push_back(static_cast<int64_t>(i));
  }
  if (kept.empty()) {
    const double max_var = *std::max_element(s.var.begin(), s.var.end());
    return Status::InvalidArgument(std::string(kKind) + ": no column has variance above " +
                                   Json(options_.threshold_).dump() + " (largest is " +
                                   Json(max_var).dump() + ")");
  }
  set_state(std::move(s.var), std::move(kept));
  return Status::Ok();
}

void VarianceThreshold::set_state(std::vector<double> variances, std::vector<int64_t> kept) {
  variances_ = std::move(variances);
  kept_ = std::move(kept);
  kept_t_ = torch::tensor(torch::ArrayRef<int64_t>(kept_), torch::kInt64);
  set_fitted(static_cast<int64_t>(variances_.size()), static_cast<int64_t>(kept_.size()));
}

Expected<torch::Tensor> VarianceThreshold::apply(const torch::Tensor& x) const {
  KILN_RETURN_IF_ERROR(check_apply_input(x));
  return x.index_select(1, kept_t_.to(x.device()));
}

Json VarianceThreshold::to_json() const {
  Json j = json_header(options_.to_json());
  if (fitted()) {
    j["variances"] = variances_;
    j["kept"] = kept_;
  }
  return j;
}

std::unique_ptr<Transform> VarianceThreshold::clone() const {
  return std::make_unique<VarianceThreshold>(*this);
}

Expected<std::unique_ptr<VarianceThreshold>> VarianceThreshold::from_json(const Json& j) {
  KILN_ASSIGN_OR_RETURN(in::Header h, in::read_header(j, kKind));
  KILN_ASSIGN_OR_RETURN(VarianceThresholdOptions options,
                        VarianceThresholdOptions::from_json(h.options));
  auto t = std::make_unique<VarianceThreshold>(options);
  if (!h.fitted) return t;
  KILN_ASSIGN_OR_RETURN(std::vector<double> variances,
                        in::get_doubles(j, kKind, "variances", h.input_features));
  KILN_ASSIGN_OR_RETURN(std::vector<int64_t> kept,
                        in::get_ints(j, kKind, "kept", h.output_features));
  for (size_t i = 0; i < kept.size(); ++i) {
    if (kept[i] < 0 || kept[i] >= h.input_features || (i > 0 && kept[i] <= kept[i - 1])) {
      return Status::InvalidArgument(std::string(kKind) +
                                     " JSON: field 'kept' must hold ascending "
                                     "column indices in [0, " +
                                     std::to_string(h.input_features) + "); kept[" +
                                     std::to_string(i) + "] is " + std::to_string(kept[i]));
    }
  }
  t->set_state(std::move(variances), std::move(kept));
  return t;
}

}  // namespace kiln::features
