#pragma once

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <string>

#include "kiln/core/expected.h"
#include "kiln/core/json.h"
#include "kiln/train/config.h"
#include "kiln/train/distributed.h"

namespace kiln::train {

namespace fs = std::filesystem;

/// Where and how train() runs, beyond the config (which is what the run *is*; these settings do
/// not change the result and are not hashed).
///
///   auto opts = TrainOptions("runs/fmnist").resume(true).progress(stderr);
struct TrainOptions {
  explicit TrainOptions(fs::path out_dir) : out_dir_(std::move(out_dir)) {}

  /// Continue the run whose checkpoint is in out_dir (NotFound when there is none).
  TrainOptions& resume(bool on) {
    resume_ = on;
    return *this;
  }
  /// Start afresh even though out_dir holds a checkpoint (otherwise AlreadyExists).
  TrainOptions& overwrite(bool on) {
    overwrite_ = on;
    return *this;
  }
  /// Where a dataset spec YAML is prepared into a snapshot (default $KILN_HOME/snapshots).
  TrainOptions& snapshot_dir(fs::path dir) {
    snapshot_dir_ = std::move(dir);
    return *this;
  }
  /// Progress bar and per-epoch lines go here; nullptr: silent.
  TrainOptions& progress(FILE* out) {
    progress_ = out;
    return *this;
  }
  /// Stop (checkpoint saved, TrainResult::interrupted set) once the run has made this many
  /// optimizer steps in total, counting steps before a resume; 0: no limit. For tests of resume
  /// and for time-boxed runs.
  TrainOptions& max_steps(int64_t n) {
    max_steps_ = n;
    return *this;
  }
  /// Asked after every optimizer step of a single-process run: true stops it at that step like
  /// max_steps does (checkpoint saved, TrainResult::interrupted set; `--resume` continues it
  /// exactly). `kiln train` answers it from SIGINT/SIGTERM. Not consulted in distributed runs
  /// (their launcher stops and restarts every rank). Called on the training thread.
  TrainOptions& stop_requested(std::function<bool()> fn) {
    stop_requested_ = std::move(fn);
    return *this;
  }
  /// Write the final bundle into out_dir/bundle (on by default).
  TrainOptions& bundle(bool on) {
    bundle_ = on;
    return *this;
  }
  /// Called after every epoch with that epoch's metrics line (e.g. a tuner's pruner); returning
  /// false stops training like early stopping does. Runs on the training thread.
  TrainOptions& on_epoch(std::function<bool(const Json&)> fn) {
    on_epoch_ = std::move(fn);
    return *this;
  }

  /// Data-parallel training: this process is one rank of `context`'s job (not owned; it must
  /// outlive the call). Every rank runs train() with the same config and out_dir: each computes
  /// gradients on its share of every global batch (config.batch_size rows in all), the ranks
  /// average them (Gloo all-reduce) before each optimizer step and batch-norm statistics at each
  /// epoch end, and only rank 0 evaluates, logs, writes checkpoints, metrics and the bundle
  /// (the other ranks return without a bundle). Not with L-BFGS.
  TrainOptions& distributed(DistributedContext* context) {
    distributed_ = context;
    return *this;
  }

  fs::path out_dir_;
  bool resume_ = false;
  bool overwrite_ = false;
  fs::path snapshot_dir_;
  FILE* progress_ = stderr;
  int64_t max_steps_ = 0;
  std::function<bool()> stop_requested_;
  bool bundle_ = true;
  std::function<bool(const Json&)> on_epoch_;
  DistributedContext* distributed_ = nullptr;
};

/// What a run produced. Plain value type.
struct TrainResult {
  fs::path out_dir;
  fs::path checkpoint;         ///< out_dir/checkpoint.pt
  fs::path bundle_dir;         ///< out_dir/bundle, empty when not written (interrupted or disabled)
  bool interrupted = false;    ///< stopped by max_steps or stop_requested: resume to continue
  bool stopped_early = false;  ///< early stopping (or on_epoch) ended the run
  int64_t steps = 0;           ///< optimizer steps done
  int64_t epochs = 0;          ///< epochs finished
  Json history = Json::array();  ///< one line per epoch, as in metrics.jsonl
  Json test_metrics;       ///< final metrics on the test split (val when there is none); null if
                           ///< interrupted
  Json val_metrics;        ///< final metrics on the val split (null without one or if interrupted)
  double best_metric = 0;  ///< best value of early_stopping.metric
  int64_t best_epoch = 0;  ///< 1-based epoch of best_metric (0: none)
  std::string precision;   ///< "fp32" or "bf16", as run
  std::string device;      ///< "cpu" or "cuda:N", as run
  std::string config_hash;
  std::string snapshot_hash;
  double seconds = 0;  ///< wall time of this call
  int world_size = 1;  ///< data-parallel ranks that trained it
  /// Data-parallel: seconds this rank spent in gradient all-reduce, and how many it made.
  double allreduce_seconds = 0;
  int64_t allreduce_calls = 0;
};

/// Trains a model as `config` says, writing into `options.out_dir_`:
///   checkpoint.pt      model + optimizer + RNG + loader position (atomic; see checkpoint.h),
///                      written at step 0, every `checkpoint_every` steps, at every epoch end and
///                      when max_steps stops the run
///   best.pt            the best epoch's weights (early stopping with restore_best)
///   config.json        the resolved config (TrainConfig::to_json)
///   metrics.jsonl      one JSON line per finished epoch (rewritten atomically each epoch)
///   loss_curve.svg, metric_curve.svg, confusion_matrix.svg (classification)
///   final_metrics.json test/val metrics of the final (or best) weights
///   bundle/            the model bundle (model::write_bundle), unless disabled
///
/// Data: `config.data_path` is a dataset spec YAML (prepared into options.snapshot_dir_ with
/// data.limit) or a snapshot directory (data.limit then keeps the first rows of the train split).
/// Errors (all before the first step unless noted): InvalidArgument for a bad model for the data
/// (e.g. the model's outputs differ from the number of classes), labels outside the class list,
/// an early-stopping metric that does not fit the task or a missing val split;
/// InvalidArgument (bad settings: exit 2 at the CLI) when the loss or the weights become NaN/inf,
/// naming the step (the last good checkpoint stays in place); FailedPrecondition on resume when
/// the checkpoint belongs to another config;
/// AlreadyExists / NotFound for a checkpoint present without resume / absent with it.
///
/// Threads: sets LibTorch's intra-op threads (process-wide) to config.threads (or the default)
/// and uses config.workers loader threads. Blocks until done; not re-entrant (one run per
/// process at a time: autocast, thread count and the default generator are process state).
///
///   KILN_ASSIGN_OR_RETURN(TrainConfig cfg, load_train_config("train.yaml", {"epochs=3"}));
///   KILN_ASSIGN_OR_RETURN(TrainResult r, train(cfg, TrainOptions("runs/a")));
///   std::cout << r.test_metrics["accuracy"] << "\n";
Expected<TrainResult> train(const TrainConfig& config, const TrainOptions& options);

}  // namespace kiln::train
