#include "kiln/train/trainer.h"

#include <ATen/autocast_mode.h>
#include <torch/torch.h>
#include <torch/version.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <mutex>
#include <optional>
#include <sstream>

#include "kiln/core/files.h"
#include "kiln/core/hash.h"
#include "kiln/core/progress.h"
#include "kiln/core/threads.h"
#include "kiln/core/version.h"
#include "kiln/data/loader.h"
#include "kiln/data/prepare.h"
#include "kiln/data/snapshot.h"
#include "kiln/data/spec.h"
#include "kiln/model/bundle.h"
#include "kiln/model/device.h"
#include "kiln/model/export.h"
#include "kiln/model/export_plan.h"
#include "kiln/model/loss.h"
#include "kiln/model/network.h"
#include "kiln/model/spec.h"
#include "kiln/registry/model_store.h"
#include "kiln/train/calibration.h"
#include "kiln/train/checkpoint.h"
#include "kiln/train/eval_inputs.h"
#include "kiln/train/evaluate.h"
#include "kiln/train/fine_tune.h"
#include "kiln/train/metrics.h"
#include "kiln/train/optim.h"
#include "kiln/train/plots.h"
#include "kiln/train/reference_profile.h"
#include "kiln/train/weight_average.h"

namespace kiln::train {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// bf16 autocast on `device`'s type (CPU or CUDA) for a scope. The device-generic API replaced
// the per-device ones in LibTorch 2.4 (the old calls are gone in later releases); 1.13 has only
// the per-device ones.
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
#define KILN_AUTOCAST_DEVICE_API 1
#endif

class AutocastScope {
 public:
  AutocastScope(bool enabled, torch::Device device) : enabled_(enabled), cuda_(device.is_cuda()) {
    if (!enabled_) return;
#ifdef KILN_AUTOCAST_DEVICE_API
    const at::DeviceType type = cuda_ ? at::kCUDA : at::kCPU;
    prev_enabled_ = at::autocast::is_autocast_enabled(type);
    prev_dtype_ = at::autocast::get_autocast_dtype(type);
    at::autocast::set_autocast_enabled(type, true);
    at::autocast::set_autocast_dtype(type, at::kBFloat16);
#else
    if (cuda_) {
      prev_enabled_ = at::autocast::is_enabled();
      prev_dtype_ = at::autocast::get_autocast_gpu_dtype();
      at::autocast::set_enabled(true);
      at::autocast::set_autocast_gpu_dtype(at::kBFloat16);
    } else {
      prev_enabled_ = at::autocast::is_cpu_enabled();
      prev_dtype_ = at::autocast::get_autocast_cpu_dtype();
      at::autocast::set_cpu_enabled(true);
      at::autocast::set_autocast_cpu_dtype(at::kBFloat16);
    }
#endif
  }
  ~AutocastScope() {
    if (!enabled_) return;
#ifdef KILN_AUTOCAST_DEVICE_API
    const at::DeviceType type = cuda_ ? at::kCUDA : at::kCPU;
    at::autocast::set_autocast_enabled(type, prev_enabled_);
    at::autocast::set_autocast_dtype(type, prev_dtype_);
#else
    if (cuda_) {
      at::autocast::set_enabled(prev_enabled_);
      at::autocast::set_autocast_gpu_dtype(prev_dtype_);
    } else {
      at::autocast::set_cpu_enabled(prev_enabled_);
      at::autocast::set_autocast_cpu_dtype(prev_dtype_);
    }
#endif
    // Weight casts cached for this step are stale once the optimizer updates the weights.
    at::autocast::clear_cache();
  }
  AutocastScope(const AutocastScope&) = delete;
  AutocastScope& operator=(const AutocastScope&) = delete;

 private:
  bool enabled_;
  bool cuda_;
  bool prev_enabled_ = false;
  at::ScalarType prev_dtype_ = at::kBFloat16;
};

// Restores process-wide settings train() changes for its duration.
class GlobalsGuard {
 public:
  GlobalsGuard()
      : deterministic_(at::globalContext().deterministicAlgorithms()),
        warn_only_(at::globalContext().deterministicAlgorithmsWarnOnly()),
        cudnn_benchmark_(at::globalContext().benchmarkCuDNN()) {}
  ~GlobalsGuard() {
    at::globalContext().setDeterministicAlgorithms(deterministic_, warn_only_);
    at::globalContext().setBenchmarkCuDNN(cudnn_benchmark_);
  }

 private:
  bool deterministic_;
  bool warn_only_;
  bool cudnn_benchmark_;
};

bool has_conv(const std::vector<model::LayerSpec>& layers) {
  for (const auto& l : layers)
    if (l.type == "conv2d" || has_conv(l.body)) return true;
  return false;
}

// Parameters and buffers of rank 4 to channels_last: conv weights then match NHWC batches.
void to_channels_last(torch::nn::Module& net) {
  torch::NoGradGuard no_grad;
  for (auto& p : net.parameters())
    if (p.dim() == 4) p.set_data(p.contiguous(at::MemoryFormat::ChannelsLast));
}

std::string num_str(double v, int digits = 4) {
  std::ostringstream os;
  os.precision(digits);
  os << v;
  return os.str();
}

// The data a run trains on.
struct RunData {
  data::Snapshot snapshot;
  std::string task;
  std::vector<std::string> labels;
  bool images = false;
  std::vector<float> mean, stdev;
};

Expected<RunData> load_data(const TrainConfig& cfg, const TrainOptions& opts) {
  RunData d;
  std::error_code ec;
  const fs::path& path = cfg.data_path;
  if (fs::is_directory(path, ec)) {
    if (!cfg.data_features.is_null())
      return Status::InvalidArgument(
          "data.features: " + path.string() +
          " is a prepared snapshot, whose transforms are fitted already; give its dataset spec");
    KILN_ASSIGN_OR_RETURN(d.snapshot, data::read_snapshot(path));
    if (cfg.data_limit > 0) {
      auto& train = d.snapshot.splits["train"];
      if (train.x.defined() && train.x.size(0) > cfg.data_limit) {
        train.x = train.x.narrow(0, 0, cfg.data_limit);
        train.y = train.y.narrow(0, 0, cfg.data_limit);
      }
    }
  } else if (path.extension() == ".yaml" || path.extension() == ".yml") {
    KILN_ASSIGN_OR_RETURN(data::DatasetSpec spec, data::load_dataset_spec(path));
    if (!cfg.data_features.is_null()) {
      if (spec.kind != data::DatasetKind::kTable)
        return Status::InvalidArgument("data.features: " + path.string() +
                                       " is an image dataset (features: are for tables)");
      KILN_RETURN_IF_ERROR(data::read_feature_settings(cfg.data_features, &spec)
                               .with_context("data.features (" + cfg.config_path.string() + ")"));
    }
    fs::path snapshots =
        opts.snapshot_dir_.empty() ? kiln_home() / "snapshots" : opts.snapshot_dir_;
    data::PrepareOptions prep(snapshots);
    if (cfg.data_limit > 0) prep.limit(cfg.data_limit);
    KILN_ASSIGN_OR_RETURN(data::PrepareResult prepared, data::prepare_dataset(spec, prep));
    KILN_ASSIGN_OR_RETURN(d.snapshot, data::read_snapshot(prepared.snapshot_dir));
  } else if (!fs::exists(path, ec)) {
    return Status::NotFound("data: " + path.string() + ": no such file or directory");
  } else {
    return Status::InvalidArgument("data: " + path.string() +
                                   ": expected a dataset spec (.yaml) or a snapshot directory");
  }
  const Json& m = d.snapshot.manifest;
  d.task = m.value("task", "classification");
  d.images = m.value("kind", "") == "images";
  if (!d.snapshot.splits.count("train"))
    return Status::InvalidArgument("data: " + path.string() + ": the snapshot has no train split");
  if (d.task == "classification") {
    if (m.contains("schema") && m["schema"].contains("target") &&
        m["schema"]["target"].contains("classes"))
      d.labels = m["schema"]["target"]["classes"].get<std::vector<std::string>>();
    if (d.labels.empty())
      return Status::InvalidArgument("data: " + path.string() +
                                     ": classification snapshot without schema.target.classes");
    const int64_t k = static_cast<int64_t>(d.labels.size());
    for (const auto& [name, split] : d.snapshot.splits) {
      if (split.y.numel() == 0) continue;
      const int64_t lo = split.y.min().item<int64_t>(), hi = split.y.max().item<int64_t>();
      if (lo < 0 || hi >= k)
        return Status::InvalidArgument(
            "data: the " + name + " split has labels " + std::to_string(lo) + ".." +
            std::to_string(hi) + " but the schema lists " + std::to_string(k) +
            " classes, so the model would have " + std::to_string(k) + " outputs");
    }
  }
  if (d.images && m.contains("transforms") &&
      m["transforms"].value("kind", "") == "image_normalize") {
    for (const auto& v : m["transforms"]["mean"]) d.mean.push_back(v.get<float>());
    for (const auto& v : m["transforms"]["std"]) d.stdev.push_back(v.get<float>());
  }
  return d;
}

/// What the bundle's module folds in front of the network: the snapshot's fitted transforms, with
/// a table's categorical encoders (the module takes their codes).
Json served_preprocessing(const data::Snapshot& snapshot) {
  const Json& m = snapshot.manifest;
  return model::table_preprocessing(
      m.contains("transforms") ? m["transforms"] : Json(),
      m.contains("categorical_encoders") ? m["categorical_encoders"] : Json());
}

// Value of an early-stopping metric name in an epoch line; NaN when absent.
double metric_value(const Json& line, const std::string& name) {
  auto it = line.find(name);
  if (it == line.end() || !it->is_number()) return std::numeric_limits<double>::quiet_NaN();
  return it->get<double>();
}

Status write_text_atomic(const fs::path& path, const std::string& text) {
  return write_file_atomic(path, text);
}

Status write_history_files(const fs::path& out, const Json& history, const std::string& task) {
  std::string lines;
  for (const auto& h : history) lines += h.dump() + "\n";
  KILN_RETURN_IF_ERROR(write_text_atomic(out / "metrics.jsonl", lines));
  Series train_loss{"train loss", {}}, val_loss{"val loss", {}};
  std::vector<Series> metric;
  const std::vector<std::string> keys =
      task == "classification"
          ? std::vector<std::string>{"train_accuracy", "val_accuracy", "val_macro_f1"}
          : std::vector<std::string>{"val_r2"};
  for (const auto& k : keys) metric.push_back({k, {}});
  for (const auto& h : history) {
    const double e = h.value("epoch", 0);
    train_loss.points.emplace_back(e, metric_value(h, "train_loss"));
    val_loss.points.emplace_back(e, metric_value(h, "val_loss"));
    for (auto& s : metric) s.points.emplace_back(e, metric_value(h, s.name));
  }
  KILN_RETURN_IF_ERROR(write_text_atomic(out / "loss_curve.svg",
                                         line_chart_svg("Loss", "epoch", {train_loss, val_loss})));
  return write_text_atomic(
      out / "metric_curve.svg",
      line_chart_svg(task == "classification" ? "Accuracy / macro-F1" : "R²", "epoch", metric));
}

// Keys of the config that do not change what a run computes: a resume may change them.
Json resume_identity(const TrainConfig& cfg) {
  Json j = cfg.to_json();
  for (const char* k : {"workers", "log_every", "threads", "device"}) j.erase(k);
  return j;
}

}  // namespace

Expected<TrainResult> train(const TrainConfig& cfg, const TrainOptions& opts) {
  const auto t_start = Clock::now();
  DistributedContext* dist = opts.distributed_;
  const bool leader = !dist || dist->leader();
  // Only rank 0 talks; the others train silently beside it.
  FILE* log = leader ? opts.progress_ : nullptr;
  const fs::path out = opts.out_dir_;
  const fs::path ckpt_path = out / "checkpoint.pt";
  const fs::path best_path = out / "best.pt";
  std::error_code ec;
  fs::create_directories(out, ec);
  if (ec) return Status::IoError(out.string() + ": cannot create: " + ec.message());
  const bool have_ckpt = fs::exists(ckpt_path, ec);
  if (opts.resume_ && !have_ckpt)
    return Status::NotFound(ckpt_path.string() + ": nothing to resume");
  if (!opts.resume_ && have_ckpt && !opts.overwrite_ && leader)
    return Status::AlreadyExists(out.string() +
                                 " holds a run (checkpoint.pt): resume it, or choose another "
                                 "directory, or overwrite");

  // --- Process settings ------------------------------------------------------------------
  GlobalsGuard globals;
  const int threads = cfg.threads > 0 ? static_cast<int>(cfg.threads) : default_intra_op_threads();
  torch::set_num_threads(threads);
  KILN_ASSIGN_OR_RETURN(const torch::Device device, model::resolve_device(cfg.device, "device"));
  const bool cuda = device.is_cuda();
  if (cuda && dist)
    return Status::InvalidArgument(
        "device: " + model::device_name(device) +
        ": data-parallel training runs on CPUs (Gloo); train on one GPU, or set device: cpu");
  if (cfg.deterministic) {
    // cuBLAS repeats its results only with a fixed workspace, set before its first use. Some
    // CUDA kernels have no deterministic version (max-pool's backward): there the run warns
    // instead of failing, and repeats up to those kernels' float rounding.
    if (cuda) setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8", /*overwrite=*/0);
    at::globalContext().setDeterministicAlgorithms(true, /*warn_only=*/cuda);
  }
  // cuDNN times its algorithms once per shape and keeps the fastest (fixed shapes here).
  if (cuda) at::globalContext().setBenchmarkCuDNN(!cfg.deterministic);

  // --- Data --------------------------------------------------------------------------------
  // Data-parallel: rank 0 prepares the snapshot first, the others then find it in place.
  if (!leader) KILN_RETURN_IF_ERROR(dist->barrier("data preparation"));
  KILN_ASSIGN_OR_RETURN(RunData d, load_data(cfg, opts));
  if (dist && leader) KILN_RETURN_IF_ERROR(dist->barrier("data preparation"));
  const data::SplitTensors& train_split = d.snapshot.splits.at("train");
  const data::SplitTensors* val_split =
      d.snapshot.splits.count("val") ? &d.snapshot.splits.at("val") : nullptr;
  const data::SplitTensors* test_split =
      d.snapshot.splits.count("test") ? &d.snapshot.splits.at("test") : nullptr;
  const bool classification = d.task == "classification";
  const int64_t outputs = classification ? static_cast<int64_t>(d.labels.size()) : 1;
  const auto& es = cfg.early_stopping;
  {
    const bool cls_metric = es.metric == "val_accuracy" || es.metric == "val_macro_f1";
    const bool reg_metric =
        es.metric == "val_mse" || es.metric == "val_mae" || es.metric == "val_r2";
    if ((classification && reg_metric) || (!classification && cls_metric))
      return Status::InvalidArgument("early_stopping.metric: " + es.metric + " does not apply to " +
                                     d.task);
    if (es.enabled() && !val_split)
      return Status::InvalidArgument("early_stopping: the snapshot has no val split to monitor");
  }

  // --- Model, loss, optimizer ----------------------------------------------------------------
  KILN_ASSIGN_OR_RETURN(model::ModelSpec spec, model::parse_model_spec(cfg.model, "model"));
  std::vector<int64_t> input_shape(train_split.x.sizes().begin() + 1, train_split.x.sizes().end());
  auto created = model::NetworkImpl::Create(spec, input_shape, outputs, cfg.seed);
  if (!created.ok()) {
    const std::string what = classification ? std::to_string(outputs) + " classes (" + d.task + ")"
                                            : "1 output (regression)";
    return Status::InvalidArgument("model: does not fit the data, which needs " + what +
                                   " and inputs of shape " + model::shape_to_string(input_shape) +
                                   ": " + created.status().message());
  }
  std::shared_ptr<model::NetworkImpl> net = *created;
  if (net->outputs() != outputs)
    return Status::InvalidArgument("model: has " + std::to_string(net->outputs()) +
                                   " outputs but the data has " + std::to_string(outputs) +
                                   " classes");
  // Fine-tuning: weights from another model, by name and shape (before the layout changes).
  std::optional<InitReport> init_report;
  if (!cfg.init.empty()) {
    KILN_ASSIGN_OR_RETURN(init_report, init_from(cfg.init, *net, d.labels));
    if (log) std::fprintf(log, "%s\n", init_report->summary().c_str());
  }
  if (cuda) net->to(device);
  KILN_ASSIGN_OR_RETURN(TrainableGroups groups,
                        trainable_groups(*net, cfg.freeze, cfg.param_groups));
  if (log && (groups.frozen > 0 || groups.params.size() > 1))
    std::fprintf(log, "trainable parameters %lld, frozen %lld, learning-rate groups %zu\n",
                 static_cast<long long>(groups.trainable), static_cast<long long>(groups.frozen),
                 groups.params.size());
  const bool conv = has_conv(spec.layers);
  const bool channels_last = d.images && conv && cfg.channels_last;
  if (channels_last) to_channels_last(*net);
  // auto: bf16 on a GPU (tensor cores), and for conv models on CPUs with avx512_bf16.
  const bool bf16 = cfg.precision == "bf16" ||
                    (cfg.precision == "auto" && (cuda || (conv && cpu_supports_bf16())));
  // Distillation: the teachers' networks, fed the same prepared batches (so each must have been
  // trained on data prepared the same way), in eval mode.
  struct Teacher {
    std::shared_ptr<model::NetworkImpl> net;
    std::string ref;     // NAME@VERSION, or the reference as given
    bool flips = false;  // the teacher as served: mean logits of x and its mirror
  };
  std::vector<Teacher> teachers;
  for (const std::string& given : cfg.distill.teachers) {
    const std::string where = "distill.teacher " + given + ": ";
    if (!classification) return Status::InvalidArgument(where + "distillation needs classes");
    Expected<registry::ResolvedModel> resolved = registry::resolve_model_ref(given);
    if (!resolved.ok()) return resolved.status().with_context("distill.teacher");
    KILN_ASSIGN_OR_RETURN(model::Bundle tb, model::read_bundle(resolved->bundle_dir));
    if (!tb.has_network())
      return Status::InvalidArgument(where + "a TorchScript-only bundle cannot teach");
    if (tb.labels() != d.labels)
      return Status::InvalidArgument(where + "predicts other classes than the data's");
    if (tb.input_shape() != input_shape)
      return Status::InvalidArgument(where + "takes inputs of shape " +
                                     model::shape_to_string(tb.input_shape()) + ", the data " +
                                     model::shape_to_string(input_shape));
    if (!json_nearly_equal(tb.preprocessing(), served_preprocessing(d.snapshot)))
      return Status::InvalidArgument(where +
                                     "was trained on data prepared differently (its fitted "
                                     "preprocessing differs), so it would not see these batches "
                                     "as it saw its own");
    Teacher t;
    KILN_ASSIGN_OR_RETURN(t.net, model::load_bundle_network(tb));
    t.net->eval();
    if (cuda) t.net->to(device);
    if (channels_last) to_channels_last(*t.net);
    t.flips =
        d.images && tb.manifest.value("test_time_augmentation", model::kTtaNone) == model::kTtaFlip;
    t.ref =
        resolved->version > 0 ? resolved->name + "@" + std::to_string(resolved->version) : given;
    if (log)
      std::fprintf(log, "distill from %s: temperature %g, alpha %g%s\n", t.ref.c_str(),
                   cfg.distill.temperature, cfg.distill.alpha,
                   t.flips ? ", teacher outputs with its flip test-time augmentation" : "");
    teachers.push_back(std::move(t));
  }
  if (log && teachers.size() > 1)
    std::fprintf(log, "distill: the student learns the mean of %zu teachers' softened outputs\n",
                 teachers.size());

  model::LossOptions loss_opts;
  if (!cfg.loss.empty()) {
    KILN_ASSIGN_OR_RETURN(loss_opts, model::LossOptions::from_json(cfg.loss));
  } else if (!classification) {
    loss_opts.kind("mse");
  }
  KILN_ASSIGN_OR_RETURN(model::LossFn loss_fn, model::make_loss(loss_opts, outputs));
  KILN_ASSIGN_OR_RETURN(auto optimizer, make_grouped_optimizer(groups, cfg.optimizer));

  // --- Loader and schedule ---------------------------------------------------------------------
  const int64_t n_train = train_split.x.size(0);
  // L-BFGS is full batch: every step sees every training row, and weight_decay is an L2 penalty.
  const bool lbfgs = cfg.optimizer.name == "lbfgs";
  const double lbfgs_penalty = lbfgs ? cfg.optimizer.weight_decay : 0.0;
  const int64_t batch_size = lbfgs ? n_train : cfg.batch_size;
  if (dist && lbfgs)
    return Status::InvalidArgument(
        "optimizer lbfgs: full-batch L-BFGS does not train data-parallel (use one process)");
  data::LoaderOptions lo(batch_size);
  lo.shuffle(!lbfgs).workers(cfg.workers).seed(cfg.seed).drop_last(n_train > batch_size);
  if (dist) lo.shard(dist->rank(), dist->world_size());
  // On a GPU the dataset lives there and batches are built (and augmented) there.
  if (cuda) lo.device(device);
  if (d.images) {
    lo.augment(cfg.augment).channels_last(channels_last);
    if (!d.mean.empty()) lo.normalize(d.mean, d.stdev);
  } else if (cfg.augment.enabled()) {
    return Status::InvalidArgument("augment: image augmentation on a table dataset");
  }
  if (cfg.calibration == "temperature") {  // refused before training, not after
    if (!classification)
      return Status::InvalidArgument(
          "calibration: temperature scales class probabilities; this dataset's task is " + d.task);
    if (!val_split)
      return Status::InvalidArgument(
          "calibration: temperature is fitted on the val split, and this dataset has none (give "
          "it one: split: {train: 0.7, val: 0.15, test: 0.15})");
    if (!d.images && !val_split->raw_x.defined())
      return Status::InvalidArgument(
          "calibration: the val split has no raw features "
          "(val_raw_x.npy); prepare the snapshot again with this Kiln");
    model::TensorMap probe = model::network_state(*net);
    KILN_RETURN_IF_ERROR(fold_temperature(spec, &probe, 1.0));
  }
  KILN_ASSIGN_OR_RETURN(auto loader, data::Loader::Create(train_split.x, train_split.y, lo));
  // accumulate_batches: an optimizer step takes that many batches (the epoch's last step what is
  // left); the schedule and checkpoint_every count optimizer steps, the loader's position batches.
  const int64_t accumulate = cfg.accumulate_batches;
  const int64_t batches_per_epoch = loader->batches_per_epoch();
  const int64_t steps_per_epoch = (batches_per_epoch + accumulate - 1) / accumulate;
  const int64_t total_steps = steps_per_epoch * cfg.epochs;
  const LrSchedule schedule(cfg.schedule, cfg.optimizer.lr, steps_per_epoch, total_steps);

  EvalOptions eval_opts(d.task);
  eval_opts.labels(d.labels).tta(d.images ? cfg.eval_tta : "none").channels_last(channels_last);
  if (!d.mean.empty()) eval_opts.normalize(d.mean, d.stdev);
  eval_opts.loss(
      [&loss_fn](const torch::Tensor& o, const torch::Tensor& y) { return loss_fn(o, y); });
  if (cfg.eval_tta == "flip" && !d.images)
    return Status::InvalidArgument("eval_tta: flip needs an image dataset");
  auto run_eval = [&](const data::SplitTensors& split) -> Expected<Json> {
    const bool was_training = net->is_training();
    net->eval();
    Expected<Json> r = evaluate(
        [&](const torch::Tensor& x) {
          AutocastScope autocast(bf16, device);
          return net->forward(x.to(device)).to(torch::kCPU, torch::kFloat32);
        },
        split, eval_opts);
    net->train(was_training);
    return r;
  };

  // The weight average (ema:), from the network as initialised (or as the checkpoint has it).
  std::optional<WeightAverage> ema;
  if (cfg.ema.enabled()) ema.emplace(*net, cfg.ema.decay, cfg.ema.warmup);
  const std::vector<torch::Tensor> no_averages;
  const std::vector<torch::Tensor>& averages = ema ? ema->averages() : no_averages;

  // --- State: fresh or resumed ---------------------------------------------------------------
  TrainState state;
  const std::string config_hash = sha256_hex(canonical_json(resume_identity(cfg)));
  if (opts.resume_) {
    KILN_ASSIGN_OR_RETURN(state, load_checkpoint(ckpt_path, *net, optimizer.get(), true,
                                                 ema ? &ema->averages() : nullptr));
    if (state.config_hash != config_hash)
      return Status::FailedPrecondition(
          ckpt_path.string() + ": the checkpoint belongs to another config (hash " +
          state.config_hash.substr(0, 12) + ", this config " + config_hash.substr(0, 12) +
          "); only threads, workers, log_every and device may change on resume");
    if (state.epoch > cfg.epochs || state.batch > batches_per_epoch)
      return Status::FailedPrecondition(ckpt_path.string() + ": position epoch " +
                                        std::to_string(state.epoch) + " batch " +
                                        std::to_string(state.batch) + " is outside this run");
    // metrics.jsonl follows the checkpoint (a crash may have come between the two writes).
    if (leader) KILN_RETURN_IF_ERROR(write_history_files(out, state.history, d.task));
    if (log)
      std::fprintf(log, "resuming %s at step %lld (epoch %lld, batch %lld)\n", out.c_str(),
                   static_cast<long long>(state.step), static_cast<long long>(state.epoch + 1),
                   static_cast<long long>(state.batch));
  } else {
    fs::remove(best_path, ec);
    torch::manual_seed(cfg.seed);  // dropout and any other sampling in the training step
    state.config_hash = config_hash;
    if (leader) {
      KILN_RETURN_IF_ERROR(write_json_file_atomic(out / "config.json", cfg.to_json()));
      KILN_RETURN_IF_ERROR(save_checkpoint(ckpt_path, *net, *optimizer, state, averages));
      KILN_RETURN_IF_ERROR(write_history_files(out, state.history, d.task));
    }
  }
  // Every rank has read the checkpoint it resumes from before rank 0 writes the next one.
  if (dist) KILN_RETURN_IF_ERROR(dist->barrier("start of training"));
  int64_t last_good_step = state.step;

  std::optional<GradientReducer> reducer;
  if (dist) reducer.emplace(*dist, net->parameters(), dist->bucket_bytes());
  if (log && dist)
    std::fprintf(log,
                 "data-parallel: %d ranks (Gloo), each computing %lld of every %lld-row batch; "
                 "gradients averaged before each step, in %lld buckets all-reduced during "
                 "backward\n",
                 dist->world_size(), static_cast<long long>(batch_size / dist->world_size()),
                 static_cast<long long>(batch_size),
                 static_cast<long long>(reducer->bucket_count()));
  if (log)
    std::fprintf(log,
                 "train: %s, %lld train / %lld val / %lld test samples, %lld params, %s%s, "
                 "%s, %d threads, %lld steps/epoch\n",
                 spec.name.c_str(), static_cast<long long>(n_train),
                 static_cast<long long>(val_split ? val_split->x.size(0) : 0),
                 static_cast<long long>(test_split ? test_split->x.size(0) : 0),
                 static_cast<long long>(net->total_params()), bf16 ? "bf16" : "fp32",
                 channels_last ? " channels_last" : "", model::device_name(device).c_str(), threads,
                 static_cast<long long>(steps_per_epoch));
  if (log && accumulate > 1)
    std::fprintf(log,
                 "accumulate_batches: each optimizer step sums the gradients of %lld batches of "
                 "%lld (%lld rows)%s\n",
                 static_cast<long long>(accumulate), static_cast<long long>(batch_size),
                 static_cast<long long>(accumulate * batch_size),
                 dist ? "; the ranks all-reduce once a step, after its last batch" : "");
  if (log && ema)
    std::fprintf(log,
                 "ema: weights averaged with decay %g%s; validation, early stopping and the "
                 "bundle use the average\n",
                 cfg.ema.decay, cfg.ema.warmup ? " (warmup: min(decay, (1+t)/(10+t)))" : "");
  std::optional<ProgressBar> bar;
  if (log) {
    bar.emplace("train", total_steps, "steps", log);
    bar->update(state.step);
  }

  // --- Training loop ---------------------------------------------------------------------------
  TrainResult result;
  result.out_dir = out;
  result.checkpoint = ckpt_path;
  result.precision = bf16 ? "bf16" : "fp32";
  result.device = model::device_name(device);
  result.config_hash = cfg.hash();
  result.snapshot_hash = d.snapshot.hash();

  net->train();
  // Running sums live in tensors so the step loop never waits for the CPU kernels to finish
  // reading a value; they are read (one sync) only for progress lines, checkpoints and epoch
  // ends. The running sums continue from the checkpoint's values so a resumed epoch adds the
  // same numbers in the same order.
  const auto on_device = torch::TensorOptions().device(device);
  torch::Tensor loss_sum = torch::full({}, state.epoch_loss_sum, on_device.dtype(torch::kFloat64));
  torch::Tensor correct = torch::full({}, state.epoch_correct, on_device.dtype(torch::kInt64));
  torch::Tensor bad_step = torch::full({}, -1, on_device.dtype(torch::kInt64));
  int64_t samples = state.epoch_samples;
  auto epoch_clock = Clock::now();
  double epoch_seconds_before = state.epoch_seconds;
  double last_lr = schedule.lr(state.step);
  int64_t log_samples = 0;
  double log_loss_sum = state.epoch_loss_sum;
  auto log_clock = Clock::now();

  // Reads the running sums (a host sync) and fails if a loss was not finite.
  auto sync_and_check = [&]() -> Status {
    const int64_t bad = bad_step.item<int64_t>();
    if (bad >= 0) {
      if (bar) bar->finish("diverged");
      return Status::InvalidArgument(
          "training diverged: the loss is not finite (nan or inf) at step " +
          std::to_string(bad + 1) + " (epoch " + std::to_string(bad / steps_per_epoch + 1) +
          ", batch " + std::to_string(bad % steps_per_epoch + 1) + ", lr " +
          num_str(schedule.lr(bad)) + "); stopped; the last good checkpoint (step " +
          std::to_string(last_good_step) + ") is kept in " + ckpt_path.string() +
          ". Lower optimizer.lr or set grad_clip.");
    }
    state.epoch_loss_sum = loss_sum.item<double>();
    state.epoch_correct = correct.item<int64_t>();
    state.epoch_samples = samples;
    state.epoch_seconds = epoch_seconds_before + seconds_since(epoch_clock);
    return Status::Ok();
  };
  // A stop asked for from outside (SIGTERM in `kiln train`); single-process runs only.
  auto stop_requested = [&] { return !dist && opts.stop_requested_ && opts.stop_requested_(); };
  // max_steps reached or a stop asked for: the checkpoint is saved; report where the run stopped.
  auto interrupted = [&]() -> Expected<TrainResult> {
    if (bar) bar->finish("interrupted at step " + std::to_string(state.step));
    result.interrupted = true;
    result.steps = state.step;
    result.epochs = state.epoch;
    result.history = state.history;
    result.seconds = seconds_since(t_start);
    return result;
  };
  auto checkpoint = [&]() -> Status {
    KILN_RETURN_IF_ERROR(sync_and_check());
    {
      torch::NoGradGuard no_grad;
      for (const auto& item : net->named_parameters())
        if (!torch::isfinite(item.value()).all().item<bool>())
          return Status::InvalidArgument(
              "training diverged: parameter " + item.key() + " is not finite at step " +
              std::to_string(state.step) + "; the last good checkpoint (step " +
              std::to_string(last_good_step) + ") is kept in " + ckpt_path.string() +
              ". Lower optimizer.lr or set grad_clip.");
    }
    if (leader) KILN_RETURN_IF_ERROR(save_checkpoint(ckpt_path, *net, *optimizer, state, averages));
    last_good_step = state.step;
    return Status::Ok();
  };

  while (!state.finished && state.epoch < cfg.epochs) {
    KILN_RETURN_IF_ERROR(loader->start_epoch(state.epoch, state.batch));
    while (true) {
      KILN_ASSIGN_OR_RETURN(std::optional<data::Batch> batch, loader->next());
      if (!batch) break;
      const int64_t b = batch->size();
      // This batch's place in its optimizer step's group of accumulate_batches.
      const int64_t in_group = state.batch % accumulate;
      const int64_t group_size = std::min(accumulate, batches_per_epoch - (state.batch - in_group));
      const bool group_end = in_group + 1 == group_size;
      if (in_group == 0) {
        last_lr = schedule.lr(state.step);
        set_learning_rate(*optimizer, last_lr, groups.scales);
        optimizer->zero_grad();
      }
      torch::Tensor loss, logits;
      if (lbfgs) {
        loss = lbfgs_step(*optimizer, [&] {
          return loss_fn(net->forward(batch->inputs), batch->targets) +
                 l2_penalty(net->parameters(), lbfgs_penalty);
        });
        torch::NoGradGuard no_grad;
        logits = net->forward(batch->inputs);
      } else {
        {
          AutocastScope autocast(bf16, device);
          logits = net->forward(batch->inputs);
          loss = loss_fn(logits, batch->targets);
          if (!teachers.empty()) {
            const double t = cfg.distill.temperature;
            // log p: the teacher's log softmax(z/T), or the log of the teachers' mean softmax.
            std::vector<torch::Tensor> log_p_each;
            {
              torch::NoGradGuard no_grad;
              for (const Teacher& teacher : teachers) {
                // With flips, the logits the served teacher gives: the batch and its mirror.
                const Predictor forward = [&](const torch::Tensor& x) {
                  return teacher.net->forward(x);
                };
                const torch::Tensor taught = teacher.flips
                                                 ? predict_with_mirror(forward, batch->inputs)
                                                 : forward(batch->inputs).to(torch::kFloat);
                log_p_each.push_back(torch::log_softmax(taught / t, 1));
              }
            }
            const torch::Tensor log_p_teacher =
                log_p_each.size() == 1 ? log_p_each.front()
                                       : torch::logsumexp(torch::stack(log_p_each), 0) -
                                             std::log(static_cast<double>(log_p_each.size()));
            // alpha * T^2 * KL(p_teacher || p_student) per sample (batchmean), in float.
            const torch::Tensor log_p_student = torch::log_softmax(logits.to(torch::kFloat) / t, 1);
            const torch::Tensor kl =
                (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(1).mean();
            loss = loss.to(torch::kFloat) * (1.0 - cfg.distill.alpha) +
                   kl * (cfg.distill.alpha * t * t);
          }
        }
        // With several ranks, gradient buckets all-reduce as they fill: in the group's last
        // batch, once its gradients add to the sums of those before. Accumulated batches add up
        // their gradients, each of the group's mean losses weighted alike.
        if (reducer) reducer->set_synchronising(group_end);
        (group_size > 1 ? loss / static_cast<double>(group_size) : loss).backward();
        if (group_end) {
          if (reducer) KILN_RETURN_IF_ERROR(reducer->finish());
          if (cfg.grad_clip > 0)
            torch::nn::utils::clip_grad_norm_(net->parameters(), cfg.grad_clip);
          optimizer->step();
          if (ema) ema->update(state.step);
        }
      }
      {
        torch::NoGradGuard no_grad;
        torch::Tensor l = loss.detach();
        bad_step.masked_fill_(torch::logical_and(torch::isfinite(l).logical_not(), bad_step.lt(0)),
                              state.step);
        loss_sum.add_(l.to(torch::kFloat64) * static_cast<double>(b));
        if (classification) correct.add_(logits.detach().argmax(1).eq(batch->targets).sum());
      }
      ++state.batch;
      samples += b;
      log_samples += b;
      if (!group_end) continue;  // progress, checkpoints and stops come between steps
      ++state.step;

      if (bar && state.step % cfg.log_every == 0) {
        KILN_RETURN_IF_ERROR(sync_and_check());
        const double window = state.epoch_loss_sum - log_loss_sum;
        std::string suffix =
            "epoch " + std::to_string(state.epoch + 1) + "/" + std::to_string(cfg.epochs) +
            " loss " + num_str(log_samples > 0 ? window / static_cast<double>(log_samples) : 0);
        if (classification && samples > 0)
          suffix += " acc " + num_str(static_cast<double>(state.epoch_correct) / samples, 3);
        suffix += " " + num_str(static_cast<double>(log_samples) / seconds_since(log_clock), 4) +
                  " samples/s";
        bar->update(state.step, suffix);
        log_loss_sum = state.epoch_loss_sum;
        log_samples = 0;
        log_clock = Clock::now();
      }
      if (cfg.checkpoint_every > 0 && state.step % cfg.checkpoint_every == 0 &&
          state.batch < batches_per_epoch)
        KILN_RETURN_IF_ERROR(checkpoint());
      if (((opts.max_steps_ > 0 && state.step >= opts.max_steps_) || stop_requested()) &&
          state.batch < batches_per_epoch) {
        KILN_RETURN_IF_ERROR(checkpoint());
        return interrupted();
      }
    }

    // Epoch end: validation, history, early stopping, checkpoint.
    KILN_RETURN_IF_ERROR(sync_and_check());
    if (dist) {
      // The epoch's figures over all ranks' rows, and one set of batch-norm statistics (the
      // mean of the ranks'), as one process would have them.
      std::vector<double> sums = {state.epoch_loss_sum, static_cast<double>(state.epoch_correct),
                                  static_cast<double>(samples)};
      KILN_RETURN_IF_ERROR(dist->allreduce_sum(&sums));
      state.epoch_loss_sum = sums[0];
      state.epoch_correct = static_cast<int64_t>(sums[1]);
      samples = static_cast<int64_t>(sums[2]);
      std::vector<torch::Tensor> statistics;
      for (const torch::Tensor& b : net->buffers())
        if (b.is_floating_point()) statistics.push_back(b);
      // So are the averaged statistics (ema:), which rank 0 validates and bundles: the averaged
      // parameters agree already (every rank steps the same means).
      if (ema)
        for (size_t k = net->parameters().size(); k < ema->averages().size(); ++k)
          statistics.push_back(ema->averages()[k]);
      KILN_RETURN_IF_ERROR(dist->allreduce_mean(statistics));
    }
    Json line;
    line["epoch"] = state.epoch + 1;
    line["step"] = state.step;
    line["lr"] = last_lr;
    line["train_loss"] = samples > 0 ? state.epoch_loss_sum / static_cast<double>(samples) : 0.0;
    if (classification)
      line["train_accuracy"] =
          samples > 0 ? static_cast<double>(state.epoch_correct) / static_cast<double>(samples)
                      : 0.0;
    // With ema:, validation, early stopping and best.pt see the averaged weights; the
    // network's own are back in place before the checkpoint.
    if (ema) ema->swap();
    if (val_split && leader) {
      KILN_ASSIGN_OR_RETURN(Json val, run_eval(*val_split));
      line["val_loss"] = val["loss"];
      if (classification) {
        line["val_accuracy"] = val["accuracy"];
        line["val_macro_f1"] = val["macro_f1"];
      } else {
        line["val_mse"] = val["mse"];
        line["val_mae"] = val["mae"];
        line["val_r2"] = val["r2"];
      }
    }
    const double epoch_seconds = epoch_seconds_before + seconds_since(epoch_clock);
    line["epoch_seconds"] = epoch_seconds;
    line["samples_per_s"] = epoch_seconds > 0 ? static_cast<double>(samples) / epoch_seconds : 0.0;
    if (!std::isfinite(line["train_loss"].get<double>()) ||
        (line.contains("val_loss") && !std::isfinite(metric_value(line, "val_loss"))))
      return Status::InvalidArgument(
          "training diverged: the validation loss is not finite at step " +
          std::to_string(state.step) + " (end of epoch " + std::to_string(state.epoch + 1) +
          "); the last good checkpoint (step " + std::to_string(last_good_step) + ") is kept in " +
          ckpt_path.string());

    // Early stopping / best epoch on the monitored metric.
    const double value = metric_value(line, es.metric);
    if (std::isfinite(value)) {
      const bool better = !std::isfinite(state.best_metric) ||
                          (es.maximize() ? value > state.best_metric + es.min_delta
                                         : value < state.best_metric - es.min_delta);
      if (better) {
        state.best_metric = value;
        state.best_epoch = state.epoch + 1;
        state.bad_epochs = 0;
        if (es.enabled() && es.restore_best && leader)
          KILN_RETURN_IF_ERROR(save_weights(best_path, *net));
      } else {
        ++state.bad_epochs;
      }
    }
    if (ema) ema->swap();
    state.history.push_back(line);
    if (log) {
      std::string msg = "epoch " + std::to_string(state.epoch + 1) + "/" +
                        std::to_string(cfg.epochs) + ": train_loss " +
                        num_str(line["train_loss"].get<double>());
      for (const char* k : {"val_loss", "val_accuracy", "val_macro_f1", "val_r2"})
        if (line.contains(k)) msg += std::string(" ") + k + " " + num_str(line[k].get<double>());
      msg += " (" + ProgressBar::format_duration(epoch_seconds) + ", " +
             num_str(line["samples_per_s"].get<double>(), 5) + " samples/s)";
      if (bar && bar->is_tty()) std::fprintf(log, "\r\033[K");
      std::fprintf(log, "%s\n", msg.c_str());
    }
    bool stop = es.enabled() && state.bad_epochs >= es.patience;
    if (opts.on_epoch_ && leader && !opts.on_epoch_(line)) stop = true;
    if (dist) KILN_RETURN_IF_ERROR(dist->broadcast_flag(&stop));  // rank 0 decides
    ++state.epoch;
    state.batch = 0;
    state.epoch_loss_sum = 0;
    state.epoch_correct = 0;
    state.epoch_samples = 0;
    state.epoch_seconds = 0;
    if (stop) state.stopped_early = true;
    if (stop || state.epoch >= cfg.epochs) state.finished = true;
    loss_sum.zero_();
    correct.zero_();
    samples = 0;
    epoch_seconds_before = 0;
    epoch_clock = Clock::now();
    log_loss_sum = 0;
    log_samples = 0;
    log_clock = Clock::now();
    KILN_RETURN_IF_ERROR(checkpoint());
    if (leader) KILN_RETURN_IF_ERROR(write_history_files(out, state.history, d.task));
    if (((opts.max_steps_ > 0 && state.step >= opts.max_steps_) || stop_requested()) &&
        !state.finished)
      return interrupted();
  }
  if (bar) bar->finish(state.stopped_early ? "stopped early" : "done");
  if (dist) {
    result.world_size = dist->world_size();
    result.allreduce_seconds = dist->allreduce_seconds();
    result.allreduce_calls = dist->allreduce_calls();
  }
  if (!leader) {  // rank 0 evaluates and writes the bundle
    result.steps = state.step;
    result.epochs = state.epoch;
    result.stopped_early = state.stopped_early;
    result.seconds = seconds_since(t_start);
    return result;
  }

  // --- Final evaluation, plots, bundle ---------------------------------------------------------
  // The bundle's module runs on the CPU here whatever trained it, so its metrics are those of
  // what `kiln serve` runs by default.
  if (ema) ema->swap();  // the averaged weights are the model
  if (cuda) net->to(torch::kCPU);
  if (es.enabled() && es.restore_best && fs::exists(best_path, ec))
    KILN_RETURN_IF_ERROR(load_weights(best_path, *net));
  net->eval();
  // The final metrics are those of the exported module (model.pt: what `kiln serve` runs and
  // `kiln export` writes), on raw inputs, in float32, with the test-time augmentation folded in.
  const Json preprocessing = served_preprocessing(d.snapshot);
  const std::string tta = d.images ? cfg.eval_tta : model::kTtaNone;
  // The exporter and the bundle take contiguous weights (channels_last is a training detail).
  model::TensorMap state_map;
  for (auto& [name, t] : model::network_state(*net)) state_map[name] = t.contiguous();
  KILN_ASSIGN_OR_RETURN(
      torch::jit::Module scripted,
      model::export_torchscript(spec, state_map, input_shape, outputs, preprocessing, tta));
  // calibration: temperature: T fitted on the val split's logits of that module, folded into
  // the last layer's weights (the bundle's), and the module built again from them.
  Json calibration;
  if (cfg.calibration == "temperature") {
    KILN_ASSIGN_OR_RETURN(const torch::Tensor logits,
                          run_module(scripted, val_split->served_inputs().to(torch::kFloat)));
    KILN_ASSIGN_OR_RETURN(const double temperature, fit_temperature(logits, val_split->y));
    KILN_ASSIGN_OR_RETURN(const double ece_before,
                          expected_calibration_error(logits, val_split->y));
    KILN_RETURN_IF_ERROR(fold_temperature(spec, &state_map, temperature));
    KILN_ASSIGN_OR_RETURN(scripted, model::export_torchscript(spec, state_map, input_shape, outputs,
                                                              preprocessing, tta));
    calibration = {{"method", "temperature"},
                   {"temperature", temperature},
                   {"fitted_on", "val"},
                   {"val_nll_before", temperature_nll(logits, val_split->y)},
                   {"val_nll_after", temperature_nll(logits, val_split->y, temperature)},
                   {"val_ece_before", ece_before}};
    if (temperature <= kMinTemperature || temperature >= kMaxTemperature)
      calibration["clamped"] = true;
  }
  EvalOptions served_opts(d.task);
  served_opts.labels(d.labels).scale_uint8(false).loss(eval_opts.loss_);
  auto served_eval = [&](const std::string& name,
                         const data::SplitTensors& split) -> Expected<Json> {
    if (!d.images && !split.raw_x.defined())
      return Status::InvalidArgument("data: " + cfg.data_path.string() + ": the " + name +
                                     " split has no raw features (" + name +
                                     "_raw_x.npy), so the exported module cannot be evaluated; "
                                     "prepare the snapshot again with this Kiln");
    return evaluate([&](const torch::Tensor& x) { return scripted.forward({x}).toTensor(); },
                    data::SplitTensors{split.served_inputs(), split.y, {}}, served_opts);
  };
  if (val_split) {
    KILN_ASSIGN_OR_RETURN(result.val_metrics, served_eval("val", *val_split));
  }
  if (test_split) {
    KILN_ASSIGN_OR_RETURN(result.test_metrics, served_eval("test", *test_split));
  } else {
    result.test_metrics = result.val_metrics;
  }
  if (!calibration.is_null()) {
    calibration["val_ece_after"] = result.val_metrics.value("ece", 0.0);
    if (log)
      std::fprintf(
          log, "calibration: temperature %s fitted on val (NLL %s -> %s, ECE %s -> %s)%s\n",
          num_str(calibration["temperature"].get<double>()).c_str(),
          num_str(calibration["val_nll_before"].get<double>()).c_str(),
          num_str(calibration["val_nll_after"].get<double>()).c_str(),
          num_str(calibration["val_ece_before"].get<double>()).c_str(),
          num_str(calibration["val_ece_after"].get<double>()).c_str(),
          calibration.contains("clamped") ? " (at its bound: val separates perfectly?)" : "");
  }
  // The same network in bf16, where the CPU serves it fast (oneDNN's bf16 convolutions), with
  // the metrics of that module on the same splits: serving switches only to what was measured.
  Json precisions = Json::object();
  std::string bf16_module_bytes;
  if (opts.bundle_ && conv && cpu_supports_bf16()) {
    KILN_ASSIGN_OR_RETURN(torch::jit::Module scripted_bf16,
                          model::export_torchscript(spec, state_map, input_shape, outputs,
                                                    preprocessing, tta, model::kPrecisionBf16));
    auto bf16_eval = [&](const data::SplitTensors& split) -> Expected<Json> {
      return evaluate([&](const torch::Tensor& x) { return scripted_bf16.forward({x}).toTensor(); },
                      data::SplitTensors{split.served_inputs(), split.y, {}}, served_opts);
    };
    Json bf16_metrics = {{"test", Json()}, {"val", Json()}};
    if (val_split) {
      KILN_ASSIGN_OR_RETURN(bf16_metrics["val"], bf16_eval(*val_split));
    }
    if (test_split) {
      KILN_ASSIGN_OR_RETURN(bf16_metrics["test"], bf16_eval(*test_split));
    } else {
      bf16_metrics["test"] = bf16_metrics["val"];
    }
    std::ostringstream bytes;
    scripted_bf16.save(bytes);
    bf16_module_bytes = bytes.str();
    precisions[model::kPrecisionBf16] = {{"file", model::kBundleBf16ModuleFile},
                                         {"metrics", bf16_metrics}};
    if (log && bf16_metrics["test"].is_object() && result.test_metrics.is_object()) {
      const char* key = classification ? "accuracy" : "mse";
      if (bf16_metrics["test"].contains(key) && result.test_metrics.contains(key))
        std::fprintf(log, "bf16 module (served where the CPU has avx512_bf16): %s %s (fp32 %s)\n",
                     key, num_str(bf16_metrics["test"][key].get<double>()).c_str(),
                     num_str(result.test_metrics[key].get<double>()).c_str());
    }
  }
  Json final_json = {{"split", test_split ? "test" : (val_split ? "val" : "none")},
                     {"test", result.test_metrics},
                     {"val", result.val_metrics},
                     {"evaluated", "model.pt"},
                     {"test_time_augmentation", tta},
                     {"best_epoch", state.best_epoch},
                     {"monitor", es.metric}};
  if (!calibration.is_null()) final_json["calibration"] = calibration;
  KILN_RETURN_IF_ERROR(write_json_file_atomic(out / "final_metrics.json", final_json));
  if (classification && result.test_metrics.is_object())
    KILN_RETURN_IF_ERROR(
        write_text_atomic(out / "confusion_matrix.svg",
                          confusion_matrix_svg(result.test_metrics["confusion_matrix"], d.labels)));
  if (classification && result.test_metrics.is_object() &&
      result.test_metrics.contains("reliability"))
    KILN_RETURN_IF_ERROR(write_text_atomic(out / "reliability.svg",
                                           reliability_svg(result.test_metrics["reliability"],
                                                           result.test_metrics.value("ece", 0.0))));

  if (opts.bundle_) {
    KILN_ASSIGN_OR_RETURN(std::vector<int64_t> raw_shape,
                          model::raw_input_shape(preprocessing, input_shape));
    Json manifest;
    manifest["name"] = d.snapshot.manifest.value("name", "model");
    manifest["task"] = d.task;
    manifest["signature"] = model::bundle_signature(d.task, raw_shape, outputs);
    manifest["labels"] = d.labels;
    if (d.snapshot.manifest.contains("schema")) manifest["schema"] = d.snapshot.manifest["schema"];
    manifest["preprocessing"] = preprocessing;
    manifest["test_time_augmentation"] = tta;
    if (!calibration.is_null()) manifest["calibration"] = calibration;
    manifest["model"] = spec.to_json();
    manifest["input_shape"] = input_shape;
    manifest["outputs"] = outputs;
    manifest["training"] = cfg.to_json();
    manifest["trained_on"] = model::device_name(device);
    manifest["metrics"] = {
        {"test", result.test_metrics}, {"val", result.val_metrics}, {"history", state.history}};
    manifest["lineage"] = {{"snapshot_hash", d.snapshot.hash()},
                           {"config_hash", cfg.hash()},
                           {"kiln_version", kVersion},
                           {"git_commit", kGitCommit}};
    if (!precisions.empty()) manifest["precisions"] = precisions;
    if (!teachers.empty()) {
      manifest["lineage"]["teacher"] = teachers.front().ref;
      if (teachers.size() > 1) {
        Json refs = Json::array();
        for (const Teacher& teacher : teachers) refs.push_back(teacher.ref);
        manifest["lineage"]["teachers"] = refs;
      }
    }
    if (dist)
      manifest["distributed"] = {{"world_size", dist->world_size()},
                                 {"backend", "gloo"},
                                 {"allreduce_seconds_rank0", dist->allreduce_seconds()},
                                 {"allreduce_calls_rank0", dist->allreduce_calls()}};
    if (init_report) {
      // The registry reads lineage.parent (NAME@VERSION) when the bundle is pushed.
      if (!init_report->parent.empty()) manifest["lineage"]["parent"] = init_report->parent;
      manifest["lineage"]["init"] = init_report->to_json();
    }
    std::map<std::string, std::string> extra;
    {
      // What drift monitoring compares live traffic with: the training rows, and model.pt's
      // predictions on the held-out split.
      const data::SplitTensors& eval_split =
          val_split ? *val_split : (test_split ? *test_split : train_split);
      const std::string eval_name = val_split ? "val" : (test_split ? "test" : "train");
      std::vector<std::string> feature_names;
      std::vector<bool> categorical;
      if (manifest.contains("schema") && manifest["schema"].contains("features"))
        for (const auto& f : manifest["schema"]["features"]) {
          feature_names.push_back(f.value("name", ""));
          categorical.push_back(f.value("type", "numeric") == "categorical");
        }
      if (d.images || train_split.raw_x.defined()) {
        KILN_ASSIGN_OR_RETURN(
            monitor::ReferenceProfile profile,
            build_reference_profile(scripted, train_split, eval_split, eval_name, d.task, d.labels,
                                    feature_names, static_cast<uint64_t>(cfg.seed), categorical));
        KILN_ASSIGN_OR_RETURN(
            profile.embedding,
            embedding_summary(*net, eval_split, eval_opts, static_cast<uint64_t>(cfg.seed)));
        extra[monitor::kReferenceProfileFile] = profile.to_json().dump();
      }
    }
    if (!bf16_module_bytes.empty())
      extra[model::kBundleBf16ModuleFile] = std::move(bf16_module_bytes);
    for (const char* f : {"metrics.jsonl", "loss_curve.svg", "metric_curve.svg",
                          "confusion_matrix.svg", "reliability.svg"}) {
      if (!fs::exists(out / f, ec)) continue;
      KILN_ASSIGN_OR_RETURN(std::string bytes, read_file(out / f));
      extra[f] = std::move(bytes);
    }
    KILN_ASSIGN_OR_RETURN(result.bundle_dir,
                          model::write_bundle(out / "bundle", manifest, state_map, scripted, extra,
                                              model::WriteBundleOptions().overwrite(true)));
  }

  result.steps = state.step;
  result.epochs = state.epoch;
  result.stopped_early = state.stopped_early;
  result.history = state.history;
  result.best_metric = std::isfinite(state.best_metric) ? state.best_metric : 0.0;
  result.best_epoch = std::max<int64_t>(0, state.best_epoch);
  result.seconds = seconds_since(t_start);
  if (log && result.test_metrics.is_object()) {
    std::string msg = "final (" + final_json["split"].get<std::string>() + "):";
    for (const char* k : {"loss", "accuracy", "macro_f1", "ece", "mse", "mae", "r2"})
      if (result.test_metrics.contains(k))
        msg += std::string(" ") + k + " " + num_str(result.test_metrics[k].get<double>());
    std::fprintf(
        log, "%s; %s in %s\n", msg.c_str(),
        result.bundle_dir.empty() ? "no bundle" : ("bundle " + result.bundle_dir.string()).c_str(),
        ProgressBar::format_duration(result.seconds).c_str());
  }
  return result;
}

}  // namespace kiln::train
