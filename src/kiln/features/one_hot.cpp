#include "kiln/features/one_hot.h"

#include <torch/torch.h>

#include <algorithm>

#include "kiln/features/json_fields.h"

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
  return (x == ids).to(x.scalar_type());
}

Json OneHotEncoder::to_json() const {
  Json j = json_header(options_.to_json());
  if (fitted()) j["categories"] = categories_;
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
  KILN_ASSIGN_OR_RETURN(std::vector<std::string> cats,
                        in::get_strings(j, kKind, "categories", h.output_features));
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
  return t;
}

}  // namespace kiln::features
