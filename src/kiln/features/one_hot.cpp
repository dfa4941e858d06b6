#include "kiln/features/one_hot.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>

#include "kiln/features/json_fields.h"
#include "kiln/features/tensor_utils.h"

namespace kiln::features {

namespace in = internal;

namespace {

std::string list_categories(const std::vector<std::string>& cats) {
  constexpr size_t kShown = 10;
  std::string out;
  for (size_t i = 0; i < cats.size() && i < kShown; ++i) {
    if (i > 0) out += ", ";
    out += "'" + cats[i] + "'";
  }
  if (cats.size() > kShown) out += ", ...";
  return out;
}

/// Per category (k of them) and target column (d), the mean of `targets` over `rows` shrunk
/// toward the rows' overall mean: λ·mean_c + (1 − λ)·mean, λ = n_c·σ² / (n_c·σ² + σ_c²)
/// (population variances; λ = 1 when both are 0), or λ = n_c / (n_c + smooth) for smooth >= 0.
/// A category without rows gets the overall mean. K x d, row-major.
std::vector<double> smoothed_means(const float* codes, const float* targets, int64_t d, int64_t k,
                                   const std::vector<int64_t>& rows, double smooth) {
  std::vector<double> count(static_cast<size_t>(k), 0.0);
  std::vector<double> sum(static_cast<size_t>(k * d), 0.0), sum_sq(sum.size(), 0.0);
  std::vector<double> total(static_cast<size_t>(d), 0.0), total_sq(total.size(), 0.0);
  for (int64_t i : rows) {
    const auto c = static_cast<int64_t>(codes[i]);
    const bool known = c >= 0 && c < k;
    if (known) count[static_cast<size_t>(c)] += 1;
    for (int64_t j = 0; j < d; ++j) {
      const double t = targets[i * d + j];
      total[static_cast<size_t>(j)] += t;
      total_sq[static_cast<size_t>(j)] += t * t;
      if (!known) continue;
      sum[static_cast<size_t>(c * d + j)] += t;
      sum_sq[static_cast<size_t>(c * d + j)] += t * t;
    }
  }
  const double n = static_cast<double>(rows.size());
  std::vector<double> out(static_cast<size_t>(k * d));
  for (int64_t j = 0; j < d; ++j) {
    const double mean = n > 0 ? total[static_cast<size_t>(j)] / n : 0.0;
    const double var =
        n > 0 ? std::max(0.0, total_sq[static_cast<size_t>(j)] / n - mean * mean) : 0.0;
    for (int64_t c = 0; c < k; ++c) {
      const size_t at = static_cast<size_t>(c * d + j);
      const double n_c = count[static_cast<size_t>(c)];
      if (n_c == 0) {
        out[at] = mean;
        continue;
      }
      const double mean_c = sum[at] / n_c;
      const double var_c = std::max(0.0, sum_sq[at] / n_c - mean_c * mean_c);
      double lambda = n_c / (n_c + smooth);  // a numeric smooth m; auto below
      if (smooth < 0) {
        const double denominator = n_c * var + var_c;
        lambda = denominator > 0 ? n_c * var / denominator : 1.0;
      }
      out[at] = lambda * mean_c + (1.0 - lambda) * mean;
    }
  }
  return out;
}

}  // namespace

Status OneHotEncoder::fit_categories(const std::vector<std::string>& column) {
  if (column.empty()) {
    return Status::InvalidArgument(std::string(kKind) + ": cannot fit on an empty column");
  }
  std::vector<std::string> cats = column;
  std::sort(cats.begin(), cats.end());
  cats.erase(std::unique(cats.begin(), cats.end()), cats.end());
  set_categories(std::move(cats));
  return Status::Ok();
}

void OneHotEncoder::set_categories(std::vector<std::string> categories) {
  categories_ = std::move(categories);
  set_fitted(1, static_cast<int64_t>(categories_.size()));
}

int64_t OneHotEncoder::index_of(std::string_view value) const {
  auto it = std::lower_bound(categories_.begin(), categories_.end(), value,
                             [](const std::string& a, std::string_view b) { return a < b; });
  if (it == categories_.end() || *it != value) return -1;
  return static_cast<int64_t>(it - categories_.begin());
}

Expected<torch::Tensor> OneHotEncoder::codes(const std::vector<std::string>& column) const {
  if (!fitted()) {
    return Status::FailedPrecondition(std::string(kKind) + ": codes() before fit_categories()");
  }
  torch::Tensor out = torch::empty({static_cast<int64_t>(column.size()), 1}, torch::kFloat32);
  float* p = out.data_ptr<float>();
  for (size_t r = 0; r < column.size(); ++r) {
    const int64_t code = index_of(column[r]);
    if (code < 0 && options_.handle_unknown_ == UnknownCategory::kError) {
      return Status::InvalidArgument(std::string(kKind) + ": unknown category '" + column[r] +
                                     "' at row " + std::to_string(r) + " (" +
                                     std::to_string(categories_.size()) +
                                     " known: " + list_categories(categories_) + ")");
    }
    p[r] = static_cast<float>(code);
  }
  return out;
}

Expected<torch::Tensor> OneHotEncoder::encode(const std::vector<std::string>& column) const {
  KILN_ASSIGN_OR_RETURN(torch::Tensor c, codes(column));
  return apply(c);
}

Expected<torch::Tensor> OneHotEncoder::fit_target(const torch::Tensor& codes,
                                                  const torch::Tensor& targets,
                                                  const std::vector<int64_t>& fold_of,
                                                  double smooth) {
  const std::string owner = std::string(kKind) + " (target encoding)";
  if (!fitted()) return Status::FailedPrecondition(owner + ": fit_categories() first");
  if (codes.dim() != 2 || codes.size(1) != 1 || targets.dim() != 2 || targets.size(1) < 1 ||
      targets.size(0) != codes.size(0) || static_cast<int64_t>(fold_of.size()) != codes.size(0) ||
      codes.size(0) == 0)
    return Status::InvalidArgument(
        owner + ": expected N x 1 codes, N x d targets and N folds, got " +
        std::to_string(codes.size(0)) + " codes, targets of " + std::to_string(targets.numel()) +
        " values, " + std::to_string(fold_of.size()) + " folds");
  const torch::Tensor c = codes.to(torch::kFloat32).contiguous();
  const torch::Tensor t = targets.to(torch::kFloat32).contiguous();
  if (!torch::isfinite(t).all().item<bool>())
    return Status::InvalidArgument(owner + ": the targets hold NaN or infinity");
  const int64_t n = c.size(0), d = t.size(1), k = static_cast<int64_t>(categories_.size());
  const float* cp = c.data_ptr<float>();
  const float* tp = t.data_ptr<float>();
  std::vector<int64_t> all(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) all[static_cast<size_t>(i)] = i;
  // Standardised with the training rows' target mean and std: an unknown category is 0.
  target_mean_.assign(static_cast<size_t>(d), 0.0);
  target_std_.assign(static_cast<size_t>(d), 0.0);
  for (int64_t j = 0; j < d; ++j) {
    const torch::Tensor column = t.select(1, j).to(torch::kFloat64);
    target_mean_[static_cast<size_t>(j)] = column.mean().item<double>();
    target_std_[static_cast<size_t>(j)] = column.std(/*unbiased=*/false).item<double>();
  }
  auto standardise = [&](double v, int64_t j) {
    const double sd = target_std_[static_cast<size_t>(j)];
    return sd > 0 ? (v - target_mean_[static_cast<size_t>(j)]) / sd : 0.0;
  };
  // Cross-fitted encodings of the training rows: fold f's rows from the other folds' table.
  torch::Tensor own = torch::zeros({n, d}, torch::kFloat32);
  float* op = own.data_ptr<float>();
  const int64_t folds = *std::max_element(fold_of.begin(), fold_of.end()) + 1;
  for (int64_t f = 0; f < folds; ++f) {
    std::vector<int64_t> others, members;
    for (int64_t i = 0; i < n; ++i)
      (fold_of[static_cast<size_t>(i)] == f ? members : others).push_back(i);
    if (members.empty() || others.empty()) continue;
    const std::vector<double> table = smoothed_means(cp, tp, d, k, others, smooth);
    for (int64_t i : members) {
      const auto code = static_cast<int64_t>(cp[i]);
      if (code < 0 || code >= k) continue;
      for (int64_t j = 0; j < d; ++j)
        op[i * d + j] =
            static_cast<float>(standardise(table[static_cast<size_t>(code * d + j)], j));
    }
  }
  target_table_ = smoothed_means(cp, tp, d, k, all, smooth);
  for (int64_t code = 0; code < k; ++code)
    for (int64_t j = 0; j < d; ++j) {
      double& v = target_table_[static_cast<size_t>(code * d + j)];
      v = standardise(v, j);
    }
  target_width_ = d;
  set_fitted(1, d);
  return own;
}

torch::Tensor OneHotEncoder::target_table() const {
  if (!target_encoded()) return {};
  return in::to_tensor(target_table_, static_cast<int64_t>(categories_.size()), target_width_)
      .to(torch::kFloat32);
}

Status OneHotEncoder::fit(const torch::Tensor& x) {
  return Status::FailedPrecondition(std::string(kKind) +
                                    ": categories are strings; fit with fit_categories()");
}

Expected<torch::Tensor> OneHotEncoder::apply(const torch::Tensor& x) const {
  KILN_RETURN_IF_ERROR(check_apply_input(x));
  const auto k = static_cast<int64_t>(categories_.size());
  if (options_.handle_unknown_ == UnknownCategory::kError) {
    torch::Tensor valid = (x >= 0) & (x < static_cast<double>(k)) & (x == torch::floor(x));
    if (!valid.all().item<bool>()) {
      const int64_t row = (~valid).reshape({-1}).to(torch::kInt64).argmax().item<int64_t>();
      return Status::InvalidArgument(std::string(kKind) + ": row " + std::to_string(row) +
                                     " has code " + Json(x[row][0].item<double>()).dump() +
                                     ", expected an integer in [0, " + std::to_string(k) + ")");
    }
  }
  torch::Tensor ids = torch::arange(k, x.options()).reshape({1, k});
  torch::Tensor onehot = (x == ids).to(x.scalar_type());
  if (!target_encoded()) return onehot;
  return torch::matmul(onehot, target_table().to(x.scalar_type()));
}

Json OneHotEncoder::to_json() const {
  Json j = json_header(options_.to_json());
  if (fitted()) j["categories"] = categories_;
  if (target_encoded()) {
    Json rows = Json::array();
    for (size_t c = 0; c < categories_.size(); ++c)
      rows.push_back(std::vector<double>(
          target_table_.begin() + static_cast<std::ptrdiff_t>(c * target_width_),
          target_table_.begin() + static_cast<std::ptrdiff_t>((c + 1) * target_width_)));
    j["target_encoding"] = {{"table", rows}, {"mean", target_mean_}, {"std", target_std_}};
  }
  return j;
}

std::unique_ptr<Transform> OneHotEncoder::clone() const {
  return std::make_unique<OneHotEncoder>(*this);
}

Expected<std::unique_ptr<OneHotEncoder>> OneHotEncoder::from_json(const Json& j) {
  KILN_ASSIGN_OR_RETURN(in::Header h, in::read_header(j, kKind));
  KILN_ASSIGN_OR_RETURN(OneHotEncoderOptions options, OneHotEncoderOptions::from_json(h.options));
  auto t = std::make_unique<OneHotEncoder>(options);
  if (!h.fitted) return t;
  if (h.input_features != 1) {
    return Status::InvalidArgument(std::string(kKind) + " JSON: input_features must be 1, got " +
                                   std::to_string(h.input_features));
  }
  const bool target = j.contains("target_encoding");
  KILN_ASSIGN_OR_RETURN(std::vector<std::string> cats,
                        in::get_strings(j, kKind, "categories", target ? -1 : h.output_features));
  for (size_t i = 1; i < cats.size(); ++i) {
    if (!(cats[i - 1] < cats[i])) {
      return Status::InvalidArgument(std::string(kKind) +
                                     " JSON: field 'categories' must be "
                                     "sorted and distinct; '" +
                                     cats[i] + "' at index " + std::to_string(i) +
                                     " is out of order");
    }
  }
  t->set_categories(std::move(cats));
  if (target) {
    const std::string owner = std::string(kKind) + " target_encoding";
    const Json& te = j.at("target_encoding");
    KILN_RETURN_IF_ERROR(in::require_object(te, owner));
    KILN_RETURN_IF_ERROR(in::reject_unknown_keys(te, owner, {"table", "mean", "std"}));
    const int64_t d = h.output_features;
    const Json table = te.contains("table") ? te.at("table") : Json();
    if (!table.is_array() || table.size() != t->categories_.size())
      return Status::InvalidArgument(owner + ": field 'table' must hold a row per category (" +
                                     std::to_string(t->categories_.size()) + ")");
    for (size_t c = 0; c < table.size(); ++c) {
      KILN_ASSIGN_OR_RETURN(std::vector<double> row,
                            in::get_doubles({{"row", table[c]}},
                                            owner + " table[" + std::to_string(c) + "]", "row", d));
      t->target_table_.insert(t->target_table_.end(), row.begin(), row.end());
    }
    KILN_ASSIGN_OR_RETURN(t->target_mean_, in::get_doubles(te, owner, "mean", d));
    KILN_ASSIGN_OR_RETURN(t->target_std_, in::get_doubles(te, owner, "std", d));
    t->target_width_ = d;
    t->set_fitted(1, d);
  }
  return t;
}

}  // namespace kiln::features
