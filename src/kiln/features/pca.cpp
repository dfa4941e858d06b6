#include "kiln/features/pca.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "kiln/features/json_fields.h"
#include "kiln/features/tensor_utils.h"

namespace kiln::features {

namespace in = internal;

Status Pca::fit(const torch::Tensor& x) {
  KILN_RETURN_IF_ERROR(options_.validate());
  KILN_RETURN_IF_ERROR(check_fit_input(x, /*min_rows=*/2));
  torch::Tensor x64 = in::to_cpu_double(x);
  torch::Tensor nan_cols = torch::isnan(x64).any(0);
  if (nan_cols.any().item<bool>()) {
    const int64_t col = nan_cols.to(torch::kInt64).argmax().item<int64_t>();
    return Status::InvalidArgument(std::string(kKind) + ": column " + std::to_string(col) +
                                   " has missing values (NaN); put an imputer before pca");
  }
  const int64_t n = x64.size(0);
  torch::Tensor mean = x64.mean(0);
  torch::Tensor centred = x64 - mean;
  torch::Tensor s, vh;
  std::tie(std::ignore, s, vh) = torch::linalg_svd(centred, /*full_matrices=*/false);

  // svd_flip, V-based: make the largest-magnitude entry of each component positive.
  torch::Tensor pivot = vh.abs().argmax(1, /*keepdim=*/true);
  torch::Tensor signs = torch::sign(vh.gather(1, pivot));
  vh = vh * signs;

  torch::Tensor ev_all = s * s / static_cast<double>(n - 1);
  const double total = ev_all.sum().item<double>();
  if (!(total > 0)) {
    return Status::InvalidArgument(std::string(kKind) +
                                   ": every column is constant in the training data");
  }
  torch::Tensor ratio_all = ev_all / total;
  const int64_t max_k = s.size(0);  // min(N, F)
  int64_t k = max_k;
  if (options_.n_components_ > 0) {
    if (options_.n_components_ > max_k) {
      return Status::InvalidArgument(std::string(kKind) + ": n_components " +
                                     std::to_string(options_.n_components_) +
                                     " exceeds min(rows, features) = " + std::to_string(max_k));
    }
    k = options_.n_components_;
  } else if (options_.variance_fraction_ > 0) {
    std::vector<double> cumsum = in::to_vector(ratio_all.cumsum(0));
    auto it = std::upper_bound(cumsum.begin(), cumsum.end(), options_.variance_fraction_);
    k = std::min<int64_t>(static_cast<int64_t>(it - cumsum.begin()) + 1, max_k);
  }

  n_samples_ = n;
  mean_ = in::to_vector(mean);
  components_ = in::to_vector(vh.slice(0, 0, k));
  explained_variance_ = in::to_vector(ev_all.slice(0, 0, k));
  explained_variance_ratio_ = in::to_vector(ratio_all.slice(0, 0, k));
  singular_values_ = in::to_vector(s.slice(0, 0, k));
  set_state();
  return Status::Ok();
}

void Pca::set_state() {
  const auto f = static_cast<int64_t>(mean_.size());
  const auto k = static_cast<int64_t>(explained_variance_.size());
  mean_t_ = in::to_tensor(mean_);
  torch::Tensor proj = in::to_tensor(components_, k, f).t().contiguous();  // F x K
  if (options_.whiten_) {
    std::vector<double> inv(static_cast<size_t>(k), 1.0);
    for (size_t i = 0; i < inv.size(); ++i) {
      if (explained_variance_[i] > std::numeric_limits<double>::min()) {
        inv[i] = 1.0 / std::sqrt(explained_variance_[i]);
      }
    }
    proj = proj * in::to_tensor(inv);
  }
  projection_t_ = proj;
  set_fitted(f, k);
}

Expected<torch::Tensor> Pca::apply(const torch::Tensor& x) const {
  KILN_RETURN_IF_ERROR(check_apply_input(x));
  auto opts = x.options();
  return torch::matmul(x - mean_t_.to(opts), projection_t_.to(opts));
}

torch::Tensor Pca::components() const {
  if (!fitted()) return torch::Tensor();
  return in::to_tensor(components_, output_features(), input_features());
}

torch::Tensor Pca::projection() const {
  return projection_t_.defined() ? projection_t_.clone() : torch::Tensor();
}

Json Pca::to_json() const {
  Json j = json_header(options_.to_json());
  if (fitted()) {
    const auto f = static_cast<size_t>(input_features());
    j["n_samples"] = n_samples_;
    j["mean"] = mean_;
    Json comps = Json::array();
    for (size_t r = 0; r < explained_variance_.size(); ++r) {
      comps.push_back(
          std::vector<double>(components_.begin() + static_cast<std::ptrdiff_t>(r * f),
                              components_.begin() + static_cast<std::ptrdiff_t>((r + 1) * f)));
    }
    j["components"] = std::move(comps);
    j["explained_variance"] = explained_variance_;
    j["explained_variance_ratio"] = explained_variance_ratio_;
    j["singular_values"] = singular_values_;
  }
  return j;
}

std::unique_ptr<Transform> Pca::clone() const { return std::make_unique<Pca>(*this); }

Expected<std::unique_ptr<Pca>> Pca::from_json(const Json& j) {
  KILN_ASSIGN_OR_RETURN(in::Header h, in::read_header(j, kKind));
  KILN_ASSIGN_OR_RETURN(PcaOptions options, PcaOptions::from_json(h.options));
  auto t = std::make_unique<Pca>(options);
  if (!h.fitted) return t;
  const int64_t f = h.input_features, k = h.output_features;
  if (k > f) {
    return Status::InvalidArgument(std::string(kKind) + " JSON: output_features (" +
                                   std::to_string(k) + ") exceeds input_features (" +
                                   std::to_string(f) + ")");
  }
  KILN_ASSIGN_OR_RETURN(t->n_samples_, in::get_int(j, kKind, "n_samples"));
  if (t->n_samples_ < 2) {
    return Status::InvalidArgument(std::string(kKind) + " JSON: field 'n_samples' must be >= 2");
  }
  KILN_ASSIGN_OR_RETURN(t->mean_, in::get_doubles(j, kKind, "mean", f));
  Json comps = j.contains("components") ? j.at("components") : Json();
  if (!comps.is_array() || static_cast<int64_t>(comps.size()) != k) {
    return Status::InvalidArgument(std::string(kKind) +
                                   " JSON: field 'components' must be an "
                                   "array of " +
                                   std::to_string(k) + " rows");
  }
  t->components_.clear();
  for (int64_t r = 0; r < k; ++r) {
    const std::string owner = std::string(kKind) + " components[" + std::to_string(r) + "]";
    Json row = Json{{"row", comps[static_cast<size_t>(r)]}};
    KILN_ASSIGN_OR_RETURN(std::vector<double> values, in::get_doubles(row, owner, "row", f));
    t->components_.insert(t->components_.end(), values.begin(), values.end());
  }
  KILN_ASSIGN_OR_RETURN(t->explained_variance_, in::get_doubles(j, kKind, "explained_variance", k));
  KILN_ASSIGN_OR_RETURN(t->explained_variance_ratio_,
                        in::get_doubles(j, kKind, "explained_variance_ratio", k));
  KILN_ASSIGN_OR_RETURN(t->singular_values_, in::get_doubles(j, kKind, "singular_values", k));
  t->set_state();
  return t;
}

}  // namespace kiln::features
