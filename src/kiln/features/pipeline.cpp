#include "kiln/features/pipeline.h"

#include <torch/torch.h>

#include "kiln/features/json_fields.h"

namespace kiln::features {

namespace in = internal;

namespace {

std::string step_context(size_t i, const Transform& t) {
  return std::string(Pipeline::kKind) + " step " + std::to_string(i) + " (" + t.kind() + ")";
}

}  // namespace

Pipeline::Pipeline(std::vector<std::unique_ptr<Transform>> steps) : steps_(std::move(steps)) {
  for (const auto& s : steps_) KILN_CHECK(s != nullptr, "pipeline step is null");
}

Pipeline::Pipeline(const Pipeline& other) : Transform(other) {
  for (const auto& s : other.steps_) steps_.push_back(s->clone());
}

Pipeline& Pipeline::operator=(const Pipeline& other) {
  if (this != &other) {
    Pipeline copy(other);
    *this = std::move(copy);
  }
  return *this;
}

Expected<std::unique_ptr<Pipeline>> Pipeline::Create(
    std::vector<std::unique_ptr<Transform>> steps) {
  if (steps.empty()) {
    return Status::InvalidArgument(std::string(kKind) + ": Create() needs at least one step");
  }
  for (size_t i = 0; i < steps.size(); ++i) {
    if (steps[i] == nullptr) {
      return Status::InvalidArgument(std::string(kKind) + " step " + std::to_string(i) +
                                     " is null");
    }
  }
  auto p = std::make_unique<Pipeline>(std::move(steps));
  KILN_RETURN_IF_ERROR(p->link_fitted_steps());
  return p;
}

Status Pipeline::link_fitted_steps() {
  for (size_t i = 0; i < steps_.size(); ++i) {
    const Transform& s = *steps_[i];
    if (!s.fitted()) {
      return Status::InvalidArgument(step_context(i, s) + " is not fitted");
    }
    if (i > 0 && steps_[i - 1]->output_features() != s.input_features()) {
      return Status::InvalidArgument(step_context(i, s) + " expects " +
                                     std::to_string(s.input_features()) +
                                     " features but the previous step produces " +
                                     std::to_string(steps_[i - 1]->output_features()));
    }
  }
  set_fitted(steps_.front()->input_features(), steps_.back()->output_features());
  return Status::Ok();
}

Pipeline& Pipeline::add(std::unique_ptr<Transform> step) {
  KILN_CHECK(step != nullptr, "pipeline step is null");
  steps_.push_back(std::move(step));
  reset_fitted();
  return *this;
}

Status Pipeline::fit(const torch::Tensor& x) {
  KILN_RETURN_IF_ERROR(check_fit_input(x));
  reset_fitted();
  torch::Tensor current = x;
  for (size_t i = 0; i < steps_.size(); ++i) {
    Transform& s = *steps_[i];
    Status st = s.fit(current);
    if (!st.ok()) return st.with_context(step_context(i, s));
    if (i + 1 == steps_.size()) break;  // the last step's output is not needed
    auto next = s.apply(current);
    if (!next.ok()) return next.status().with_context(step_context(i, s));
    current = std::move(next).value();
  }
  if (steps_.empty()) {
    set_fitted(x.size(1), x.size(1));
    return Status::Ok();
  }
  return link_fitted_steps();
}

Expected<torch::Tensor> Pipeline::apply(const torch::Tensor& x) const {
  KILN_RETURN_IF_ERROR(check_apply_input(x));
  torch::Tensor current = x;
  for (size_t i = 0; i < steps_.size(); ++i) {
    auto next = steps_[i]->apply(current);
    if (!next.ok()) return next.status().with_context(step_context(i, *steps_[i]));
    current = std::move(next).value();
  }
  return current;
}

Json Pipeline::to_json() const {
  Json j = json_header(Json::object());
  j.erase("options");
  Json steps = Json::array();
  for (const auto& s : steps_) steps.push_back(s->to_json());
  j["steps"] = std::move(steps);
  return j;
}

std::unique_ptr<Transform> Pipeline::clone() const { return std::make_unique<Pipeline>(*this); }

Expected<std::unique_ptr<Pipeline>> Pipeline::from_json(const Json& j) {
  KILN_ASSIGN_OR_RETURN(in::Header h, in::read_header(j, kKind));
  if (!j.contains("steps") || !j.at("steps").is_array()) {
    return Status::InvalidArgument(std::string(kKind) +
                                   " JSON: field 'steps' is missing or not an array");
  }
  const Json& list = j.at("steps");
  std::vector<std::unique_ptr<Transform>> steps;
  for (size_t i = 0; i < list.size(); ++i) {
    auto step = transform_from_json(list[i]);
    if (!step.ok()) {
      return step.status().with_context(std::string(kKind) + " JSON: steps[" + std::to_string(i) +
                                        "]");
    }
    steps.push_back(std::move(step).value());
  }
  auto p = std::make_unique<Pipeline>(std::move(steps));
  if (!h.fitted) return p;
  if (p->steps_.empty()) {
    if (h.input_features != h.output_features) {
      return Status::InvalidArgument(std::string(kKind) +
                                     " JSON: an empty pipeline must have input_features == "
                                     "output_features");
    }
    p->set_fitted(h.input_features, h.output_features);
    return p;
  }
  Status linked = p->link_fitted_steps();
  if (!linked.ok()) return linked.with_context(std::string(kKind) + " JSON");
  if (p->input_features() != h.input_features || p->output_features() != h.output_features) {
    return Status::InvalidArgument(
        std::string(kKind) + " JSON: steps map " + std::to_string(p->input_features()) + " -> " +
        std::to_string(p->output_features()) + " features but the pipeline records " +
        std::to_string(h.input_features) + " -> " + std::to_string(h.output_features));
  }
  return p;
}

}  // namespace kiln::features
