#pragma once

#include <array>
#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "kiln/core/expected.h"
#include "kiln/core/json.h"
#include "kiln/core/yaml.h"
#include "kiln/data/augment.h"

namespace kiln::train {

namespace fs = std::filesystem;

/// `optimizer:` — which torch::optim optimiser and its hyperparameters.
struct OptimizerConfig {
  /// sgd | adam | adamw | lbfgs (full batch: an epoch is one L-BFGS step of up to
  /// kLbfgsIterationsPerStep iterations over every training row; weight_decay is an L2 penalty)
  std::string name = "adam";
  double lr = 1e-3;           ///< default 1 for lbfgs
  double momentum = 0.9;      ///< sgd
  bool nesterov = false;      ///< sgd
  double weight_decay = 0.0;  ///< default 0.01 for adamw, 0 otherwise (decoupled for adamw;
                              ///< lbfgs: see l2_penalty in optim.h)
  std::array<double, 2> betas{0.9, 0.999};  ///< adam, adamw
  double eps = 1e-8;                        ///< adam, adamw
  Json to_json() const;
};

/// `schedule:` — the learning rate as a pure function of the optimizer step (see optim.h).
struct ScheduleConfig {
  std::string name = "constant";  ///< constant | step | cosine | one_cycle
  int64_t warmup_epochs = 0;      ///< linear warmup from 0 (added to warmup_steps)
  int64_t warmup_steps = 0;
  int64_t step_size = 1;       ///< step: epochs between decays
  double gamma = 0.1;          ///< step: decay factor
  double min_lr = 0.0;         ///< cosine: floor
  double max_lr = 0.0;         ///< one_cycle: peak (0: optimizer.lr)
  double pct_start = 0.3;      ///< one_cycle: fraction of steps rising to the peak
  double div_factor = 25.0;    ///< one_cycle: start = peak / div_factor
  double final_div = 1e4;      ///< one_cycle: end = peak / final_div
  std::string anneal = "cos";  ///< one_cycle: cos | linear
  Json to_json() const;
};

/// `early_stopping:` — stop when the monitored validation metric has not improved by more than
/// `min_delta` for `patience` epochs. patience 0 disables it.
struct EarlyStoppingConfig {
  std::string metric =
      "val_loss";  ///< val_loss | val_accuracy | val_macro_f1 | val_mse | val_mae | val_r2
  int64_t patience = 0;
  double min_delta = 0.0;
  bool restore_best = true;  ///< evaluate and bundle the best epoch's weights
  bool enabled() const { return patience > 0; }
  /// True when larger is better for `metric`.
  bool maximize() const;
  Json to_json() const;
};

/// `ema:` — an exponential moving average of the weights (train/weight_average.h). When on,
/// each epoch's validation, early stopping, best.pt and the bundle use the averaged weights;
/// training steps the network's own. decay 0 (the default) is off.
struct EmaConfig {
  double decay = 0.0;  ///< in [0, 1): the average's weight on its past per step (0.999 typical)
  bool warmup = true;  ///< decay min(decay, (1 + t) / (10 + t)) at step t
  bool enabled() const { return decay > 0; }
  Json to_json() const;
};

/// Everything `kiln train CONFIG.yaml` reads: a plain value type, parsed and validated by
/// load_train_config / parse_train_config. Thread-compatible.
///
/// ```yaml
/// data: ../fashion-mnist/dataset.yaml   # dataset spec YAML or snapshot dir, relative to this file
/// model: {zoo: cnn-small, width: 32}
/// loss: {kind: cross_entropy, label_smoothing: 0.1}
/// optimizer: {name: adamw, lr: 0.003, weight_decay: 0.05}
/// schedule: {name: one_cycle, pct_start: 0.25}
/// batch_size: 256
/// accumulate_batches: 4                   # each optimizer step takes 4 batches (1024 rows)
/// epochs: 10
/// augment: {crop_padding: 2, hflip: 0.5}
/// early_stopping: {metric: val_accuracy, patience: 3}
/// ema: {decay: 0.999}                     # evaluate and bundle averaged weights
/// calibration: temperature                # probabilities that mean what they say (val split)
/// init: fmnist@production                 # fine-tune: weights by name and shape (new head: fresh)
/// freeze: [0, 1]                          # layers kept as loaded
/// param_groups: [{layers: [6], lr_scale: 10}]
/// distill: {teacher: fmnist@production, temperature: 4, alpha: 0.7}
/// ```
///
/// `checkpoint_every` counts optimizer steps: a checkpoint is also written at every epoch end,
/// so 0 (the default) means "at epoch ends only".
struct TrainConfig {
  fs::path config_path;    ///< the YAML file, when loaded from one (not part of to_json)
  std::string data;        ///< `data:` as written (or `data.path`)
  fs::path data_path;      ///< resolved against the config file's directory
  int64_t data_limit = 0;  ///< `data.limit`: records per split when preparing (0: all)
  /// `data.features`: a table spec's feature selection and PCA settings, over the spec's own
  /// (data::read_feature_settings; null when absent), so `--set data.features.pca.n_components=8`
  /// and tune spaces reach them.
  Json data_features;
  Json model;                  ///< `model:` as JSON, validated by model::parse_model_spec
  Json loss = Json::object();  ///< `loss:` as JSON (model::LossOptions); {} = default for the task
  OptimizerConfig optimizer;
  ScheduleConfig schedule;
  int64_t batch_size = 128;
  /// Gradient accumulation: each optimizer step sums the gradients of this many batches of
  /// batch_size (each batch's loss scaled by 1/their number), so it takes
  /// batch_size × accumulate_batches rows while memory holds one batch. The schedule,
  /// checkpoint_every and `steps` count optimizer steps. Data-parallel ranks all-reduce once a
  /// step, after its last batch.
  int64_t accumulate_batches = 1;
  int64_t epochs = 10;
  uint64_t seed = 0;
  double grad_clip = 0.0;  ///< max global L2 norm of the gradients; 0: off
  EarlyStoppingConfig early_stopping;
  EmaConfig ema;
  int64_t checkpoint_every = 0;  ///< optimizer steps between checkpoints (plus every epoch end)
  data::AugmentOptions augment;
  std::string precision =
      "auto";  ///< auto | fp32 | bf16 (auto: bf16 for conv models on CPUs with avx512_bf16)
  bool channels_last = true;  ///< NHWC memory format for image models
  /// auto | cpu | cuda | cuda:N (auto: the first GPU when LibTorch sees one, else the CPU).
  /// Not part of a resume's identity: a run may resume on another device.
  std::string device = "auto";
  int64_t threads = 0;            ///< intra-op threads; 0: kiln::default_intra_op_threads()
  int64_t workers = 1;            ///< loader threads building batches ahead
  bool deterministic = false;     ///< deterministic algorithms; seeded runs repeat bit for bit
                                  ///< (on a GPU, up to the kernels CUDA has no such version of)
  std::string eval_tta = "none";  ///< none | flip (images: average logits with the mirror)
  /// none | temperature: after training, one temperature T fitted on the val split's logits
  /// (minimum NLL) is folded into the last layer, so the bundle serves softmax(z / T)
  /// (train/calibration.h; manifest `calibration`). Classification with a val split only.
  std::string calibration = "none";
  int64_t log_every = 50;  ///< steps between progress lines (each costs one host sync)
  /// `init:` fine-tuning: start from these weights (NAME@VERSION, NAME@ALIAS or a bundle or run
  /// directory), matched by parameter name and shape; "" = a fresh initialisation.
  std::string init;
  /// `freeze:` layers whose parameters stay as initialised: top-level layer indices ("3") or
  /// module paths ("layers.3", "layers.4.body.0").
  std::vector<std::string> freeze;
  /// `param_groups:` per-group learning rates, each a multiplier on the schedule's rate.
  struct ParamGroup {
    std::vector<std::string> layers;  ///< as in freeze
    double lr_scale = 1.0;
  };
  std::vector<ParamGroup> param_groups;
  /// `distill:` knowledge distillation from trained teachers (classification): the loss is
  /// (1 - alpha) * the task loss + alpha * T^2 * KL(p || the model's softmax(z/T)), where p is
  /// the teacher's softmax(z/T), or for an ensemble (`teacher: [A, B, C]`) the mean of the
  /// teachers' softmax(z/T); each teacher runs in eval mode on the same (augmented) batch.
  struct Distill {
    /// NAME@VERSION, NAME@ALIAS or bundle directories; empty = off. YAML: a reference or a list.
    std::vector<std::string> teachers;
    double temperature = 4.0;
    double alpha = 0.7;
  };
  Distill distill;

  /// Every field with defaults filled in, keys in a fixed order (machine paths excluded).
  Json to_json() const;
  /// sha256 of canonical_json(to_json()): the lineage hash of the training settings.
  std::string hash() const;
};

/// The top-level keys a config may hold, in documentation order.
const std::vector<std::string>& train_config_keys();

/// YAML → JSON with key-path line numbers: the one converter in core (kiln/core/yaml.h).
using kiln::yaml_to_json;

/// Applies one `--set key.path=value` override: the value is parsed as YAML
/// (`optimizer.betas=[0.9,0.99]`, `precision=bf16`), intermediate mappings are created.
/// InvalidArgument names the override when it has no '=' or crosses a non-mapping.
Status apply_override(Json* config, const std::string& assignment);

/// Validates a config held as JSON. `base_dir` resolves a relative `data` path; `source` (e.g.
/// the file name) and `lines` prefix error messages: "train.yaml line 4: optimizer.lrr: unknown
/// key (valid keys: name, lr, ...)".
Expected<TrainConfig> parse_train_config(const Json& j, const fs::path& base_dir = {},
                                         const std::string& source = "config",
                                         const std::map<std::string, int>& lines = {});

/// A YAML config file as JSON, before overrides: empty is {}, and the `data: PATH` shorthand is
/// expanded to `data: {path: PATH}` so overrides such as `data.limit=N` or
/// `data.features.pca.n_components=8` apply. `lines` as yaml_to_json's.
Expected<Json> read_train_config_yaml(const fs::path& path, std::map<std::string, int>* lines);

/// Reads a YAML config, applies `overrides` (key=value, in order) and validates. Blocks (file
/// I/O); thread-safe.
///
///   KILN_ASSIGN_OR_RETURN(TrainConfig cfg,
///                         load_train_config("examples/fashion-mnist/train.yaml", {"epochs=2"}));
Expected<TrainConfig> load_train_config(const fs::path& path,
                                        const std::vector<std::string>& overrides = {});

}  // namespace kiln::train
