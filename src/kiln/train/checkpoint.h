#pragma once

#include <torch/types.h>

#include <cstdint>
#include <filesystem>
#include <limits>
#include <string>
#include <vector>

#include "kiln/core/expected.h"
#include "kiln/core/json.h"

namespace torch::nn {
class Module;
}  // namespace torch::nn
namespace torch::optim {
class Optimizer;
}  // namespace torch::optim

namespace kiln::train {

namespace fs = std::filesystem;

/// Format tag and version written into every checkpoint.
inline constexpr const char* kCheckpointFormat = "kiln.checkpoint";
inline constexpr int kCheckpointFormatVersion = 1;

/// Where a run stands: everything besides weights, optimizer state and RNG that a resumed run
/// needs to continue exactly. Plain value type.
struct TrainState {
  int64_t step = 0;   ///< optimizer steps done (the LR schedule's input)
  int64_t epoch = 0;  ///< the epoch in progress (0-based); == epochs when training finished
  int64_t batch = 0;  ///< batches of `epoch` done: the loader resumes at this batch
  // Running sums of the epoch in progress (so the epoch's train loss is exact after a resume).
  double epoch_loss_sum = 0;  ///< sum over batches of loss × batch size
  int64_t epoch_correct = 0;  ///< classification: correct train predictions so far
  int64_t epoch_samples = 0;
  double epoch_seconds = 0;  ///< wall time spent in this epoch before the checkpoint
  // Early stopping and the best epoch.
  double best_metric = std::numeric_limits<double>::quiet_NaN();
  int64_t best_epoch = -1;
  int64_t bad_epochs = 0;  ///< epochs since the best one
  bool stopped_early = false;
  bool finished = false;  ///< all epochs (or early stopping) done; only the final report is left
  Json history = Json::array();  ///< one entry per finished epoch (what metrics.jsonl holds)
  std::string config_hash;       ///< TrainConfig::hash() of the run that wrote it

  Json to_json() const;
  static Expected<TrainState> from_json(const Json& j);
};

/// Writes a checkpoint of `model` (parameters and buffers), `optimizer` (its torch::serialize
/// state), the default CPU generator's state, `state`, and the weight averages of `ema:` when
/// `averages` holds any (WeightAverage::averages()), as one torch archive. Atomic: the
/// bytes go to a temp file that is fsynced and renamed over `path` (core write_file_atomic), so a
/// crash or `kill -9` at any moment leaves the previous checkpoint intact. Blocks on I/O; not
/// thread-safe with respect to a concurrent training step on the same model.
///
///   KILN_RETURN_IF_ERROR(save_checkpoint(out / "checkpoint.pt", *net, *opt, state));
Status save_checkpoint(const fs::path& path, const torch::nn::Module& model,
                       const torch::optim::Optimizer& optimizer, const TrainState& state,
                       const std::vector<torch::Tensor>& averages = {});

/// Loads a checkpoint into an already-built `model` and `optimizer` (same architecture and
/// parameter order), onto the device the model's parameters are on, and, when `restore_rng`, sets
/// the default CPU generator's state. Returns the TrainState. NotFound when the file is missing;
/// DataLoss naming the path when it is not a readable Kiln checkpoint or does not match the model.
/// With `averages`, the checkpoint's weight averages are copied into them (in place, so a
/// WeightAverage's averages() resume); DataLoss when it holds none or another count.
Expected<TrainState> load_checkpoint(const fs::path& path, torch::nn::Module& model,
                                     torch::optim::Optimizer* optimizer, bool restore_rng = true,
                                     std::vector<torch::Tensor>* averages = nullptr);

/// Model parameters and buffers only (e.g. the best epoch's weights), written atomically.
Status save_weights(const fs::path& path, const torch::nn::Module& model);
/// Loads onto the device the model's parameters are on.
Status load_weights(const fs::path& path, torch::nn::Module& model);

}  // namespace kiln::train
