#include "kiln/features/imputer.h"

#include <torch/torch.h>

#include "kiln/features/json_fields.h"
#include "kiln/features/tensor_utils.h"

namespace kiln::features {

namespace in = internal;

Status Imputer::fit(const torch::Tensor& x) {
  KILN_RETURN_IF_ERROR(options_.validate());
  KILN_RETURN_IF_ERROR(check_fit_input(x));
  torch::Tensor x64 = in::to_cpu_double(x);
  const auto f = static_cast<size_t>(x64.size(1));
  std::vector<double> fill(f, options_.fill_value_);
  switch (options_.strategy_) {
    case ImputeStrategy::kConstant:
      break;
    case ImputeStrategy::kMean: {
      in::ColumnStats s = in::column_stats(x64);
      KILN_RETURN_IF_ERROR(in::require_present(s, kKind));
      fill = std::move(s.mean);
      break;
    }
    case ImputeStrategy::kMedian:
    case ImputeStrategy::kMostFrequent: {
      std::vector<std::vector<double>> cols = in::sorted_columns(x64);
      for (size_t i = 0; i < f; ++i) {
        if (cols[i].empty()) {
          return Status::InvalidArgument(std::string(kKind) + ": column " + std::to_string(i) +
                                         " has no non-missing training values (strategy " +
                                         impute_strategy_name(options_.strategy_) + ")");
        }
        fill[i] = options_.strategy_ == ImputeStrategy::kMedian ? in::quantile_sorted(cols[i], 0.5)
                                                                : in::mode_sorted(cols[i]);
      }
      break;
    }
  }
  set_fill(std::move(fill));
  return Status::Ok();
}

void Imputer::set_fill(std::vector<double> fill) {
  fill_ = std::move(fill);
  fill_t_ = in::to_tensor(fill_);
  const auto f = static_cast<int64_t>(fill_.size());
  set_fitted(f, f);
}

Expected<torch::Tensor> Imputer::apply(const torch::Tensor& x) const {
  KILN_RETURN_IF_ERROR(check_apply_input(x));
  return torch::where(torch::isnan(x), fill_t_.to(x.options()), x);
}

Json Imputer::to_json() const {
  Json j = json_header(options_.to_json());
  if (fitted()) j["fill"] = fill_;
  return j;
}

std::unique_ptr<Transform> Imputer::clone() const { return std::make_unique<Imputer>(*this); }

Expected<std::unique_ptr<Imputer>> Imputer::from_json(const Json& j) {
  KILN_ASSIGN_OR_RETURN(in::Header h, in::read_header(j, kKind));
  KILN_ASSIGN_OR_RETURN(ImputerOptions options, ImputerOptions::from_json(h.options));
  auto t = std::make_unique<Imputer>(options);
  if (!h.fitted) return t;
  if (h.input_features != h.output_features) {
    return Status::InvalidArgument(std::string(kKind) +
                                   " JSON: input_features must equal output_features");
  }
  KILN_ASSIGN_OR_RETURN(std::vector<double> fill,
                        in::get_doubles(j, kKind, "fill", h.input_features));
  t->set_fill(std::move(fill));
  return t;
}

}  // namespace kiln::features
