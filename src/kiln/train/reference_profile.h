#pragma once
// The reference profile a bundle records at training time (monitor/drift.h): what the model was
// trained on, and what it predicted on held-out rows, for drift monitoring in `kiln serve` and
// `kiln monitor drift`.

#include <torch/script.h>

#include <string>
#include <vector>

#include "kiln/core/expected.h"
#include "kiln/data/snapshot.h"
#include "kiln/model/network.h"
#include "kiln/monitor/drift.h"
#include "kiln/train/evaluate.h"

namespace kiln::train {

/// Rows profiled at most (a seeded sample of larger splits): enough for quantile bins and the KS
/// sample, cheap for 60,000 images.
inline constexpr int64_t kProfileRows = 10000;

/// Profiles the served inputs of `train` (raw features, or the stored pixels) and the outputs of
/// `module` (the bundle's model.pt) on `eval` (the validation split, else test, else train).
/// `feature_names`: the table's raw feature columns (empty for images). Blocks (one forward pass
/// over up to kProfileRows eval rows). Not thread-safe against other users of `module`.
Expected<monitor::ReferenceProfile> build_reference_profile(
    torch::jit::Module& module, const data::SplitTensors& train, const data::SplitTensors& eval,
    const std::string& eval_split_name, const std::string& task,
    const std::vector<std::string>& labels, const std::vector<std::string>& feature_names,
    uint64_t seed, const std::vector<bool>& categorical_columns = {});

/// The summary of `net`'s penultimate layer (every top-level layer but the last) on up to
/// `max_rows` rows of `eval` (a seeded sample), each batch prepared exactly as evaluate() prepares
/// it with `options` (scaling, normalisation; test-time augmentation off). Runs `net` in eval
/// mode and restores its mode. Not thread-safe against other users of `net`.
Expected<monitor::EmbeddingSummary> embedding_summary(model::NetworkImpl& net,
                                                      const data::SplitTensors& eval,
                                                      const EvalOptions& options, uint64_t seed,
                                                      int64_t max_rows = 2000);

/// Monitored features, intensity counts (images) and the module's class predictions,
/// confidences (classification) or predictions (regression) for raw rows `x` (float32, N × raw
/// shape): what a drift comparison takes. Used for live and offline rows alike.
struct MonitoredRows {
  std::vector<double> features;
  std::vector<double> intensity_counts;
  std::vector<int64_t> predicted;
  std::vector<double> confidence;
  std::vector<double> predictions;
};
Expected<MonitoredRows> monitored_rows(torch::jit::Module& module,
                                       const monitor::FeatureSchema& schema, const torch::Tensor& x,
                                       const std::string& task);

}  // namespace kiln::train
