#include "kiln/train/evaluate.h"

#include <torch/torch.h>

#include "kiln/model/network.h"
#include "kiln/train/metrics.h"

namespace kiln::train {
namespace {

torch::Tensor prepare(const torch::Tensor& raw, const EvalOptions& o, const torch::Tensor& mean,
                      const torch::Tensor& stdev) {
  torch::Tensor x = raw.to(torch::kFloat32);
  if (raw.scalar_type() == torch::kUInt8 && o.scale_uint8_) x.div_(255.0);
  if (mean.defined()) x = (x - mean) / stdev;
  if (x.dim() == 4 && o.channels_last_) x = x.contiguous(at::MemoryFormat::ChannelsLast);
  return x;
}

}  // namespace

torch::Tensor predict_with_mirror(const Predictor& predict, const torch::Tensor& x) {
  const int64_t n = x.size(0);
  const torch::Tensor both = torch::cat({x, x.flip({3})}, 0).contiguous(x.suggest_memory_format());
  const torch::Tensor out = predict(both).to(torch::kFloat32);
  return (out.slice(0, 0, n) + out.slice(0, n)) * 0.5;
}

Expected<Json> evaluate(const Predictor& predict, const data::SplitTensors& split,
                        const EvalOptions& o) {
  if (o.task_ != "classification" && o.task_ != "regression")
    return Status::InvalidArgument("evaluate: task '" + o.task_ +
                                   "' is not one of: classification, regression");
  if (o.tta_ != "none" && o.tta_ != "flip")
    return Status::InvalidArgument("evaluate: tta '" + o.tta_ + "' is not one of: none, flip");
  if (!split.x.defined() || !split.y.defined() || split.x.size(0) != split.y.size(0) ||
      split.x.size(0) == 0)
    return Status::InvalidArgument("evaluate: empty split or inputs and targets differ in length");
  if (o.tta_ == "flip" && split.x.dim() != 4)
    return Status::InvalidArgument("evaluate: tta flip needs N×C×H×W images, got a " +
                                   std::to_string(split.x.dim()) + "-D input");
  if (o.mean_.size() != o.std_.size())
    return Status::InvalidArgument("evaluate: normalize mean and std differ in length");
  if (o.batch_size_ < 1) return Status::InvalidArgument("evaluate: batch_size must be >= 1");

  torch::Tensor mean, stdev;
  if (!o.mean_.empty()) {
    std::vector<int64_t> shape(static_cast<size_t>(split.x.dim()), 1);
    shape[1] = static_cast<int64_t>(o.mean_.size());
    mean = torch::tensor(o.mean_, torch::kFloat32).reshape(shape);
    stdev = torch::tensor(o.std_, torch::kFloat32).reshape(shape);
  }

  torch::NoGradGuard no_grad;
  const int64_t n = split.x.size(0);
  std::vector<torch::Tensor> outputs;
  torch::Tensor loss_sum = torch::zeros({}, torch::kFloat64);
  try {
    for (int64_t start = 0; start < n; start += o.batch_size_) {
      const int64_t b = std::min(o.batch_size_, n - start);
      torch::Tensor x = prepare(split.x.narrow(0, start, b), o, mean, stdev);
      const torch::Tensor out =
          o.tta_ == "flip" ? predict_with_mirror(predict, x) : predict(x).to(torch::kFloat32);
      if (o.loss_) loss_sum += o.loss_(out, split.y.narrow(0, start, b)).to(torch::kFloat64) * b;
      outputs.push_back(out);
    }
  } catch (const std::exception& e) {
    return Status::InvalidArgument(std::string("evaluate: the model failed: ") + e.what());
  }
  torch::Tensor all = torch::cat(outputs, 0);
  Json metrics;
  if (o.task_ == "classification") {
    const int64_t k = static_cast<int64_t>(o.labels_.size());
    if (all.dim() != 2 || (k > 0 && all.size(1) != k))
      return Status::InvalidArgument("evaluate: the model gives outputs of shape " +
                                     model::shape_to_string(all.sizes().vec()) + " but there are " +
                                     std::to_string(k) + " classes");
    KILN_ASSIGN_OR_RETURN(metrics, classifier_metrics(all, split.y, o.labels_));
  } else {
    if (all.numel() != n)
      return Status::InvalidArgument(
          "evaluate: regression needs one output per sample, got shape " +
          model::shape_to_string(all.sizes().vec()));
    KILN_ASSIGN_OR_RETURN(metrics, regression_metrics(all.reshape({-1}), split.y));
  }
  Json out;
  out["samples"] = n;
  if (o.loss_) out["loss"] = loss_sum.item<double>() / static_cast<double>(n);
  for (auto& [key, value] : metrics.items()) out[key] = value;
  return out;
}

Expected<Json> evaluate(model::NetworkImpl& net, const data::SplitTensors& split,
                        const EvalOptions& options) {
  const bool was_training = net.is_training();
  net.eval();
  Expected<Json> result =
      evaluate([&](const torch::Tensor& x) { return net.forward(x); }, split, options);
  net.train(was_training);
  return result;
}

EvalOptions eval_options_for(const data::Snapshot& snapshot) {
  const Json& m = snapshot.manifest;
  EvalOptions o(m.value("task", "classification"));
  if (m.contains("schema") && m["schema"].contains("target") &&
      m["schema"]["target"].contains("classes"))
    o.labels(m["schema"]["target"]["classes"].get<std::vector<std::string>>());
  if (m.value("kind", "") == "images" && m.contains("transforms") &&
      m["transforms"].value("kind", "") == "image_normalize") {
    std::vector<float> mean, stdev;
    for (const auto& v : m["transforms"]["mean"]) mean.push_back(v.get<float>());
    for (const auto& v : m["transforms"]["std"]) stdev.push_back(v.get<float>());
    o.normalize(mean, stdev);
  }
  return o;
}

}  // namespace kiln::train
