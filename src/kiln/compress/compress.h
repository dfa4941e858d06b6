#pragma once

// `kiln compress REF`: a new bundle whose model.pt is a compressed form of REF's network, with the
// metrics of that module on the same test rows, its size and speed before and after, and REF as
// its lineage parent, so it can be pushed, tested and served like any bundle.

#include <cstdint>
#include <filesystem>
#include <ostream>
#include <string>

#include "kiln/core/expected.h"
#include "kiln/core/json.h"
#include "kiln/model/export.h"
#include "kiln/model/spec.h"

namespace kiln::compress {

namespace fs = std::filesystem;

/// What to compress and how. Plain value.
struct CompressOptions {
  /// The model: NAME@VERSION, NAME@ALIAS or a bundle (or run) directory. A bundle Kiln trained
  /// (model spec + weights.pt); TorchScript-only bundles cannot be compressed.
  std::string model_ref;
  /// Calibration and evaluation rows: a dataset spec, a snapshot directory; empty: the snapshot
  /// the bundle was trained on (lineage), when it is still in $KILN_HOME/snapshots.
  std::string data;
  /// "int8": post-training static quantisation (model::export_int8).
  std::string quantize;
  /// Structured pruning: the fraction of each hidden conv2d / linear layer's output channels to
  /// remove (prune_l1), then `fine_tune_epochs` of the model's own training recipe; 0: none.
  double prune = 0;
  int64_t fine_tune_epochs = 3;
  /// Distillation: a student YAML ({model: {...}, epochs, seed, temperature, alpha}) trained with
  /// the model's own recipe and data on its softened outputs as well as the labels (the trainer's
  /// `distill:`); "" = none. Not with `prune`.
  std::string distill;
  /// More teachers for `distill` (references as in model_ref): the student then learns the mean
  /// of the model's and these teachers' softened outputs (an ensemble teacher).
  std::vector<std::string> ensemble;
  /// An accuracy budget in percentage points (0.5: half a point) instead of prune/quantize:
  /// the strongest of pruning 0.75, 0.5, 0.25 (each with and without int8, int8 first) and int8
  /// alone whose validation accuracy is within the budget of the parent's; negative: off.
  double max_drop = -1;
  /// Training rows the int8 activation ranges are observed on (a seeded sample).
  int64_t calibration_rows = 1000;
  int64_t seed = 42;
  /// Where fine-tuning and distillation train (train's `device:`, replacing the parent's):
  /// auto, cpu, cuda or cuda:N. Quantisation, evaluation and timing stay on the CPU, where the
  /// compressed module is measured as `kiln serve` runs it by default.
  std::string device = "auto";
  /// Seconds each throughput measurement runs (batch 1 and 64, one thread); 0: skip timing.
  double timing_seconds = 1.0;
  /// Where the new bundle goes (must not exist or be empty).
  fs::path out;
};

/// The new bundle and what compression did: {"parent", "quantize", "engine", "calibration":
/// {"rows", "split", "observer"}, "before": Module, "after": Module, "accuracy_drop"}, where a
/// Module is {"precision", "test": metrics, "model_bytes", "samples_per_s": {"batch_1",
/// "batch_64"}} ("before" is the module `kiln serve` would serve for the parent on this CPU).
struct CompressResult {
  fs::path bundle_dir;
  Json report;
};

/// A network after L1-norm structured pruning: a narrower spec and its weights, before any
/// fine-tuning. Plain value.
struct PrunedNetwork {
  model::ModelSpec spec;   ///< layers with smaller "out" (the head keeps its outputs)
  model::TensorMap state;  ///< weights and batch-norm statistics sliced to the kept channels
  Json report;             ///< [{"layer", "type", "outputs", "kept"}] per pruned layer
  int64_t params_before = 0, params_after = 0;
  int64_t flops_before = 0, flops_after = 0;  ///< per sample (model::summary_json)
};

/// One-shot L1-norm filter pruning: every conv2d and linear layer but the last (the head) keeps
/// the round((1 - ratio) * outputs) output channels (at least 1) whose weights have the largest
/// L1 norms; the batch norm after it and the next conv2d / linear layer's inputs (through
/// flatten: the kept channels' H x W blocks) are sliced to match. Sequential networks only
/// (conv2d, linear, batch norm, pooling, flatten, dropout, activations); anything else, or a
/// ratio outside (0, 1), is InvalidArgument naming it. Pure; thread-safe.
Expected<PrunedNetwork> prune_l1(const model::ModelSpec& spec, const model::TensorMap& state,
                                 const std::vector<int64_t>& input_shape, int64_t outputs,
                                 double ratio);

/// Compresses `options.model_ref` into `options.out`. Progress lines go to `log` (may be null).
/// Errors: InvalidArgument for a bad option, a TorchScript-only bundle, a model with layers the
/// method does not support (named); NotFound for the reference or data; AlreadyExists for a
/// non-empty `out`; FailedPrecondition when this LibTorch lacks the oneDNN quantized engine.
/// Blocks (calibration, evaluation, timing). Selects oneDNN as the process's quantized engine.
Expected<CompressResult> compress(const CompressOptions& options, std::ostream* log);

}  // namespace kiln::compress
