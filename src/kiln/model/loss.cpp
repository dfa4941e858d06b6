#include "kiln/model/loss.h"

#include <torch/nn/functional/loss.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>

namespace kiln::model {
namespace {

Status bad(const std::string& field, const std::string& what) {
  return Status::InvalidArgument("loss." + field + ": " + what);
}

std::string join(const std::vector<std::string>& items) {
  std::string out;
  for (const auto& s : items) out += (out.empty() ? "" : ", ") + s;
  return out;
}

torch::Tensor as_float(const torch::Tensor& t) {
  return t.scalar_type() == torch::kHalf || t.scalar_type() == torch::kBFloat16
             ? t.to(torch::kFloat)
             : t;
}

// Targets of mse / huber / bce: N (one output) or N x outputs, in the output's dtype.
torch::Tensor dense_target(const torch::Tensor& output, const torch::Tensor& target) {
  torch::Tensor t = target;
  if (output.dim() == 2 && output.size(1) == 1 && t.dim() == 1) t = t.unsqueeze(1);
  TORCH_CHECK(t.sizes() == output.sizes(), "loss: target shape ", t.sizes(),
              " does not match output shape ", output.sizes());
  return t.to(output.scalar_type());
}

}  // namespace

const std::vector<std::string>& loss_kinds() {
  static const std::vector<std::string> kinds = {"cross_entropy", "mse", "huber",
                                                 "bce_with_logits"};
  return kinds;
}

Status LossOptions::validate() const {
  if (std::find(loss_kinds().begin(), loss_kinds().end(), kind_) == loss_kinds().end())
    return bad("kind", "unknown loss '" + kind_ + "' (valid: " + join(loss_kinds()) + ")");
  if (!(label_smoothing_ >= 0 && label_smoothing_ < 1))
    return bad("label_smoothing",
               "expected a number in [0, 1), got " + Json(label_smoothing_).dump());
  if (!(huber_delta_ > 0 && std::isfinite(huber_delta_)))
    return bad("huber_delta", "expected a number > 0, got " + Json(huber_delta_).dump());
  for (size_t i = 0; i < class_weights_.size(); ++i) {
    if (!(class_weights_[i] >= 0 && std::isfinite(class_weights_[i])))
      return bad("class_weights[" + std::to_string(i) + "]",
                 "expected a finite number >= 0, got " + Json(class_weights_[i]).dump());
  }
  if (kind_ != "cross_entropy") {
    if (label_smoothing_ != 0) return bad("label_smoothing", "applies to cross_entropy only");
    if (!class_weights_.empty()) return bad("class_weights", "applies to cross_entropy only");
  }
  if (kind_ != "huber" && huber_delta_ != 1.0) return bad("huber_delta", "applies to huber only");
  return Status::Ok();
}

Json LossOptions::to_json() const {
  return Json{{"kind", kind_},
              {"label_smoothing", label_smoothing_},
              {"class_weights", class_weights_},
              {"huber_delta", huber_delta_}};
}

Expected<LossOptions> LossOptions::from_json(const Json& j) {
  if (!j.is_object())
    return Status::InvalidArgument("loss: expected an object, got " + std::string(j.type_name()));
  LossOptions o;
  for (const auto& [key, v] : j.items()) {
    if (key == "kind") {
      if (!v.is_string()) return bad(key, "expected a string (valid: " + join(loss_kinds()) + ")");
      o.kind_ = v.get<std::string>();
    } else if (key == "label_smoothing" || key == "huber_delta") {
      if (!v.is_number()) return bad(key, "expected a number, got " + v.dump());
      (key == "label_smoothing" ? o.label_smoothing_ : o.huber_delta_) = v.get<double>();
    } else if (key == "class_weights") {
      if (!v.is_array()) return bad(key, "expected a list of numbers, got " + v.dump());
      o.class_weights_.clear();
      for (size_t i = 0; i < v.size(); ++i) {
        if (!v[i].is_number())
          return bad(key + "[" + std::to_string(i) + "]", "expected a number, got " + v[i].dump());
        o.class_weights_.push_back(v[i].get<double>());
      }
    } else {
      return bad(key, "unknown key (valid: kind, label_smoothing, class_weights, huber_delta)");
    }
  }
  KILN_RETURN_IF_ERROR(o.validate());
  return o;
}

Expected<LossFn> make_loss(const LossOptions& options, int64_t outputs) {
  KILN_RETURN_IF_ERROR(options.validate());
  if (outputs < 1) return bad("outputs", "expected >= 1, got " + std::to_string(outputs));
  const std::string& kind = options.kind_;
  if (kind == "cross_entropy") {
    if (outputs < 2)
      return bad("kind", "cross_entropy needs at least 2 outputs (use bce_with_logits for one)");
    if (!options.class_weights_.empty() &&
        static_cast<int64_t>(options.class_weights_.size()) != outputs)
      return bad("class_weights", "expected " + std::to_string(outputs) +
                                      " weights (one per class), got " +
                                      std::to_string(options.class_weights_.size()));
    torch::Tensor weights;
    if (!options.class_weights_.empty())
      weights = torch::tensor(options.class_weights_, torch::kDouble).to(torch::kFloat);
    double smoothing = options.label_smoothing_;
    return LossFn([weights, smoothing](const torch::Tensor& output, const torch::Tensor& target) {
      TORCH_CHECK(output.dim() == 2, "loss: cross_entropy expects N x C outputs, got ",
                  output.sizes());
      TORCH_CHECK(target.dim() == 1 && target.size(0) == output.size(0),
                  "loss: cross_entropy expects N class indices, got target shape ", target.sizes(),
                  " for output shape ", output.sizes());
      torch::Tensor out = as_float(output);
      namespace F = torch::nn::functional;
      auto opts = F::CrossEntropyFuncOptions().label_smoothing(smoothing);
      if (weights.defined()) opts.weight(weights.to(out.device(), out.scalar_type()));
      return F::cross_entropy(out, target.to(torch::kLong), opts);
    });
  }
  if (kind == "mse") {
    return LossFn([](const torch::Tensor& output, const torch::Tensor& target) {
      torch::Tensor out = as_float(output);
      return torch::mse_loss(out, dense_target(out, target));
    });
  }
  if (kind == "huber") {
    double delta = options.huber_delta_;
    return LossFn([delta](const torch::Tensor& output, const torch::Tensor& target) {
      torch::Tensor out = as_float(output);
      return torch::huber_loss(out, dense_target(out, target), at::Reduction::Mean, delta);
    });
  }
  return LossFn([](const torch::Tensor& output, const torch::Tensor& target) {
    torch::Tensor out = as_float(output);
    return torch::binary_cross_entropy_with_logits(out, dense_target(out, target));
  });
}

}  // namespace kiln::model
