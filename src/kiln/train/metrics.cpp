#include "kiln/train/metrics.h"

#include <torch/torch.h>

#include "kiln/monitor/calibration.h"
#include "kiln/train/calibration.h"

namespace kiln::train {

Expected<Json> classification_metrics(const torch::Tensor& predicted, const torch::Tensor& target,
                                      const std::vector<std::string>& labels) {
  if (!predicted.defined() || !target.defined() || predicted.numel() != target.numel())
    return Status::InvalidArgument(
        "classification metrics: predictions and targets differ in length");
  if (predicted.numel() == 0) return Status::InvalidArgument("classification metrics: no samples");
  torch::Tensor p = predicted.reshape({-1}).to(torch::kInt64).contiguous();
  torch::Tensor t = target.reshape({-1}).to(torch::kInt64).contiguous();
  const int64_t lo = std::min(p.min().item<int64_t>(), t.min().item<int64_t>());
  const int64_t hi = std::max(p.max().item<int64_t>(), t.max().item<int64_t>());
  int64_t k = static_cast<int64_t>(labels.size());
  if (lo < 0) return Status::InvalidArgument("classification metrics: negative class index");
  if (k == 0) {
    k = hi + 1;
  } else if (hi >= k) {
    return Status::InvalidArgument("classification metrics: class index " + std::to_string(hi) +
                                   " but only " + std::to_string(k) + " labels");
  }
  torch::Tensor cm = torch::bincount(t * k + p, {}, k * k).reshape({k, k}).contiguous();
  const int64_t* m = cm.data_ptr<int64_t>();
  Json per_class = Json::object();
  Json matrix = Json::array();
  int64_t correct = 0;
  double f1_sum = 0;
  int64_t f1_count = 0;
  for (int64_t c = 0; c < k; ++c) {
    int64_t support = 0, predicted_c = 0;
    Json row = Json::array();
    for (int64_t j = 0; j < k; ++j) {
      support += m[c * k + j];
      predicted_c += m[j * k + c];
      row.push_back(m[c * k + j]);
    }
    matrix.push_back(row);
    const int64_t tp = m[c * k + c];
    correct += tp;
    const double precision = predicted_c > 0 ? static_cast<double>(tp) / predicted_c : 0.0;
    const double recall = support > 0 ? static_cast<double>(tp) / support : 0.0;
    const double f1 =
        precision + recall > 0 ? 2.0 * precision * recall / (precision + recall) : 0.0;
    if (support > 0 || predicted_c > 0) {
      f1_sum += f1;
      ++f1_count;
    }
    const std::string name = labels.empty() ? std::to_string(c) : labels[static_cast<size_t>(c)];
    per_class[name] = {
        {"precision", precision}, {"recall", recall}, {"f1", f1}, {"support", support}};
  }
  Json out;
  out["accuracy"] = static_cast<double>(correct) / static_cast<double>(p.numel());
  out["macro_f1"] = f1_count > 0 ? f1_sum / static_cast<double>(f1_count) : 0.0;
  out["per_class"] = per_class;
  out["confusion_matrix"] = matrix;
  return out;
}

Expected<monitor::ReliabilityBins> reliability(const torch::Tensor& logits,
                                               const torch::Tensor& target, int64_t bins) {
  if (bins < 1) return Status::InvalidArgument("calibration error: bins must be >= 1");
  KILN_RETURN_IF_ERROR(check_classifier_logits(logits, target, "calibration error"));
  torch::NoGradGuard no_grad;
  const auto [top, predicted] = torch::softmax(logits.to(torch::kFloat64), 1).max(1);
  const torch::Tensor right = predicted.eq(target.reshape({-1}).to(torch::kLong)).contiguous();
  const torch::Tensor confidence = top.contiguous();
  const double* c = confidence.data_ptr<double>();
  const bool* r = right.data_ptr<bool>();
  const auto n = static_cast<size_t>(logits.size(0));
  return monitor::reliability_bins(std::vector<double>(c, c + n), std::vector<bool>(r, r + n),
                                   bins);
}

Expected<double> expected_calibration_error(const torch::Tensor& logits,
                                            const torch::Tensor& target, int64_t bins) {
  KILN_ASSIGN_OR_RETURN(monitor::ReliabilityBins b, reliability(logits, target, bins));
  return b.expected_calibration_error();
}

Expected<Json> classifier_metrics(const torch::Tensor& logits, const torch::Tensor& target,
                                  const std::vector<std::string>& labels) {
  KILN_ASSIGN_OR_RETURN(Json metrics, classification_metrics(logits.argmax(1), target, labels));
  if (logits.dim() == 2 && logits.size(1) >= 2) {
    metrics["nll"] = temperature_nll(logits, target);
    KILN_ASSIGN_OR_RETURN(monitor::ReliabilityBins bins, reliability(logits, target));
    metrics["ece"] = bins.expected_calibration_error();
    metrics["reliability"] = {
        {"count", bins.count}, {"confidence", bins.confidence}, {"accuracy", bins.accuracy}};
  }
  return metrics;
}

Expected<Json> regression_metrics(const torch::Tensor& predicted, const torch::Tensor& target) {
  if (!predicted.defined() || !target.defined() || predicted.numel() != target.numel())
    return Status::InvalidArgument("regression metrics: predictions and targets differ in length");
  if (predicted.numel() == 0) return Status::InvalidArgument("regression metrics: no samples");
  torch::Tensor p = predicted.reshape({-1}).to(torch::kFloat64);
  torch::Tensor t = target.reshape({-1}).to(torch::kFloat64);
  torch::Tensor err = p - t;
  const double sse = err.pow(2).sum().item<double>();
  const double n = static_cast<double>(p.numel());
  const double sst = (t - t.mean()).pow(2).sum().item<double>();
  Json out;
  out["mse"] = sse / n;
  out["mae"] = err.abs().sum().item<double>() / n;
  out["r2"] = sst > 0 ? 1.0 - sse / sst : 0.0;
  return out;
}

}  // namespace kiln::train
