#include "kiln/train/reference_profile.h"

#include <torch/torch.h>

#include <limits>

#include "kiln/train/eval_inputs.h"

namespace kiln::train {
namespace {

/// At most `limit` rows of `x`, a seeded sample in row order when there are more.
torch::Tensor sample_rows(const torch::Tensor& x, int64_t limit, uint64_t seed) {
  if (x.size(0) <= limit) return x;
  torch::Generator gen = at::detail::createCPUGenerator(seed);
  torch::Tensor idx =
      std::get<0>(torch::randperm(x.size(0), gen, torch::kLong).slice(0, 0, limit).sort());
  return x.index_select(0, idx);
}

std::vector<double> column_of(const std::vector<double>& matrix, size_t columns, size_t k) {
  std::vector<double> out(matrix.size() / columns);
  for (size_t r = 0; r < out.size(); ++r) out[r] = matrix[r * columns + k];
  return out;
}

}  // namespace

Expected<MonitoredRows> monitored_rows(torch::jit::Module& module,
                                       const monitor::FeatureSchema& schema, const torch::Tensor& x,
                                       const std::string& task) {
  MonitoredRows out;
  torch::Tensor rows = x.to(torch::kFloat32).contiguous();
  monitor::extract_features(schema, rows.data_ptr<float>(), rows.size(0), &out.features,
                            schema.kind == "image" ? &out.intensity_counts : nullptr);
  KILN_ASSIGN_OR_RETURN(torch::Tensor outputs, run_module(module, rows, 256));
  outputs = outputs.to(torch::kFloat64);
  if (task == "classification") {
    torch::Tensor probs = torch::softmax(outputs, 1);
    auto [conf, cls] = probs.max(1);
    out.predicted.assign(cls.data_ptr<int64_t>(), cls.data_ptr<int64_t>() + cls.numel());
    conf = conf.contiguous();
    out.confidence.assign(conf.data_ptr<double>(), conf.data_ptr<double>() + conf.numel());
  } else {
    torch::Tensor p = outputs.reshape({-1}).contiguous();
    out.predictions.assign(p.data_ptr<double>(), p.data_ptr<double>() + p.numel());
  }
  return out;
}

Expected<monitor::EmbeddingSummary> embedding_summary(model::NetworkImpl& net,
                                                      const data::SplitTensors& eval,
                                                      const EvalOptions& options, uint64_t seed,
                                                      int64_t max_rows) {
  std::vector<torch::nn::AnyModule> layers(net.layers()->begin(), net.layers()->end());
  if (layers.size() < 2 || !eval.x.defined() || eval.x.size(0) == 0)
    return monitor::EmbeddingSummary{};
  const std::string layer = "layers." + std::to_string(layers.size() - 2);
  std::string layer_type;
  for (const model::LayerInfo& info : net.layer_infos())
    if (info.name == layer) layer_type = info.type;
  // A seeded sample of rows (targets with them: evaluate() scores them, and that is discarded).
  data::SplitTensors sample;
  const int64_t n = eval.x.size(0);
  torch::Tensor idx = torch::arange(n);
  if (n > max_rows) {
    torch::Generator gen = at::detail::createCPUGenerator(seed);
    idx = std::get<0>(torch::randperm(n, gen, torch::kLong).slice(0, 0, max_rows).sort());
  }
  sample.x = eval.x.index_select(0, idx);
  sample.y = eval.y.index_select(0, idx);
  EvalOptions opts = options;
  opts.tta("none");
  std::vector<torch::Tensor> parts;
  const bool was_training = net.is_training();
  net.eval();
  Expected<Json> scored = evaluate(
      [&](const torch::Tensor& x) {
        torch::Tensor h = x;
        for (size_t i = 0; i + 1 < layers.size(); ++i) h = layers[i].forward(h);
        parts.push_back(h.flatten(1).to(torch::kFloat64).contiguous());
        return layers.back().forward(h);
      },
      sample, opts);
  net.train(was_training);
  if (!scored.ok()) return scored.status().with_context("embedding summary");
  torch::Tensor all = torch::cat(parts, 0).contiguous();
  std::vector<double> values(all.data_ptr<double>(), all.data_ptr<double>() + all.numel());
  return monitor::summarize_embedding(layer, layer_type, values, all.size(0), all.size(1), seed);
}

Expected<monitor::ReferenceProfile> build_reference_profile(
    torch::jit::Module& module, const data::SplitTensors& train, const data::SplitTensors& eval,
    const std::string& eval_split_name, const std::string& task,
    const std::vector<std::string>& labels, const std::vector<std::string>& feature_names,
    uint64_t seed, const std::vector<bool>& categorical_columns) {
  monitor::ReferenceProfile p;
  const torch::Tensor& train_x = train.served_inputs();
  std::vector<int64_t> raw_shape(train_x.sizes().begin() + 1, train_x.sizes().end());
  p.schema = monitor::feature_schema(raw_shape, feature_names);
  torch::Tensor rows = sample_rows(train_x, kProfileRows, seed).to(torch::kFloat32).contiguous();
  p.rows = rows.size(0);
  std::vector<double> features, intensity;
  monitor::extract_features(p.schema, rows.data_ptr<float>(), rows.size(0), &features,
                            p.schema.kind == "image" ? &intensity : nullptr);
  const size_t columns = p.schema.names.size();
  for (size_t k = 0; k < columns; ++k) {
    // A categorical column's codes are categories however many there are.
    const bool codes = k < categorical_columns.size() && categorical_columns[k];
    p.features.push_back(monitor::numeric_reference(
        p.schema.names[k], column_of(features, columns, k), 1000, seed + k,
        codes                      ? std::numeric_limits<int64_t>::max()
        : p.schema.kind == "table" ? monitor::kMaxCategories
                                   : 0));
  }
  if (!intensity.empty()) {
    double total = 0;
    for (double c : intensity) total += c;
    for (double c : intensity) p.intensity_shares.push_back(total > 0 ? c / total : 0.0);
  }
  torch::Tensor eval_x = sample_rows(eval.served_inputs(), kProfileRows, seed + 1);
  KILN_ASSIGN_OR_RETURN(MonitoredRows predicted, monitored_rows(module, p.schema, eval_x, task));
  p.predictions_split = eval_split_name;
  if (task == "classification") {
    p.labels = labels;
    torch::Tensor counts =
        torch::bincount(train.y, {}, static_cast<int64_t>(labels.size())).to(torch::kFloat64);
    counts = counts / counts.sum();
    p.class_prior.assign(counts.data_ptr<double>(), counts.data_ptr<double>() + counts.numel());
    std::vector<double> shares(labels.size(), 0.0);
    for (int64_t c : predicted.predicted) shares[static_cast<size_t>(c)] += 1;
    for (double& s : shares)
      s /= static_cast<double>(std::max<size_t>(1, predicted.predicted.size()));
    p.predicted_shares = shares;
    p.confidence = monitor::numeric_reference("confidence", predicted.confidence, 1000, seed + 2);
  } else {
    p.prediction = monitor::numeric_reference("prediction", predicted.predictions, 1000, seed + 2);
  }
  return p;
}

}  // namespace kiln::train
