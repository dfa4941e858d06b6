#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "kiln/core/expected.h"
#include "kiln/core/json.h"
#include "kiln/model/manifest.h"
#include "kiln/serve/batcher.h"
#include "kiln/serve/model_source.h"

namespace kiln::monitor {
class MetricsRegistry;
class Counter;
class Gauge;
}  // namespace kiln::monitor

namespace kiln::serve {

/// One tensor of a served model's signature (shape without the batch dimension).
struct TensorInfo {
  std::string name;
  std::string datatype;
  std::vector<int64_t> shape;  ///< per sample; -1 for a free dimension (outputs only)
};

/// What a loaded version takes and gives, from the bundle manifest's signature and labels.
struct ModelSignature {
  TensorInfo input;  ///< the one FP32 input, fully specified per sample
  std::vector<TensorInfo> outputs;
  std::vector<std::string> labels;  ///< class names in output order; empty: not a classifier
  std::string task;
  int64_t sample_numel = 1;
  /// NaN inputs are missing values the model imputes (model::accepts_missing_values); otherwise
  /// a NaN, like an Infinity, is refused with 400.
  bool accepts_missing = false;
  /// A table's raw columns in input order (the bundle's schema.features: name, type, and a
  /// categorical column's categories, whose index is the code the input takes); null for images.
  Json features;
  model::TableColumns columns;  ///< `features` as codes (BYTES requests' text -> the input)
  /// The manifest's `calibration` ({method: temperature, temperature: T, ...}: the module's
  /// logits are already divided by T, so "probabilities" are calibrated); null: none.
  Json calibration;
  /// The served module's test expected calibration error as the bundle records it (a
  /// classifier); -1: none recorded.
  double reference_calibration_error = -1;
  /// Classifiers (labels matching the first output's width) also offer "probabilities" (softmax
  /// of the first output) and "labels" (the arg-max class name, BYTES).
  bool classifier() const { return !labels.empty(); }
};

/// One loaded, warmed-up model version with its batcher. Owned through shared_ptr by the manager
/// and by every request using it; the manager keeps retired versions until their last request is
/// done, then stops their batchers (drain). Thread-safe.
class ModelVersion {
 public:
  /// `precision` is the number format of the module served ("fp32", "bf16"); `test_score` what
  /// the bundle records for that module on its test split: accuracy (a classifier) or mean
  /// absolute error (a regressor); -1: none recorded.
  ModelVersion(ResolvedModel resolved, std::string version, ModelSignature signature,
               std::unique_ptr<DynamicBatcher> batcher, std::string precision = "fp32",
               double test_score = -1, std::string device = "cpu")
      : resolved_(std::move(resolved)),
        version_(std::move(version)),
        signature_(std::move(signature)),
        batcher_(std::move(batcher)),
        precision_(std::move(precision)),
        test_score_(test_score),
        device_(std::move(device)) {}
  const std::string& precision() const { return precision_; }
  /// Where its forwards run: "cpu" or "cuda:N".
  const std::string& device() const { return device_; }
  /// Test accuracy (a classifier) or test MAE (a regressor) of the module served; -1: unknown.
  double test_score() const { return test_score_; }
  const std::string& name() const { return resolved_.name; }
  const std::string& version() const { return version_; }
  const ResolvedModel& resolved() const { return resolved_; }
  const ModelSignature& signature() const { return signature_; }
  DynamicBatcher& batcher() { return *batcher_; }
  /// Finishes queued work and joins the batcher thread. Blocks.
  void drain() { batcher_->stop(); }
  /// Per-version state of the server (e.g. metric handles resolved once), made by `make` on the
  /// first call and kept for the version's lifetime. Thread-safe; cheap after the first call.
  template <typename T, typename Make>
  T& attached(Make&& make) {
    std::call_once(attached_once_, [&] { attached_ = std::shared_ptr<T>(make()); });
    return *static_cast<T*>(attached_.get());
  }

 private:
  ResolvedModel resolved_;
  std::string version_;
  ModelSignature signature_;
  std::unique_ptr<DynamicBatcher> batcher_;
  std::string precision_;
  double test_score_;
  std::string device_;
  std::once_flag attached_once_;
  std::shared_ptr<void> attached_;
};

/// Options of ModelManager.
struct ModelManagerOptions {
  ModelManagerOptions& batcher(const BatcherOptions& v) {
    batcher_ = v;
    return *this;
  }
  ModelManagerOptions& poll_interval_ms(int64_t v) {
    poll_interval_ms_ = v;
    return *this;
  }
  /// Serve each version with XNNPACK's prepacked operators where they give the same outputs
  /// (prepack_for_cpu_serving); false: the TorchScript module as saved.
  ModelManagerOptions& prepack(bool v) {
    prepack_ = v;
    return *this;
  }
  /// The number format to serve: "auto" (the bundle's bf16 module where it records one and the
  /// CPU has avx512_bf16, else fp32), "fp32" (model.pt), or "bf16" (refuses bundles without a
  /// bf16 module). A bf16 module must agree with model.pt on a probe batch (auto falls back to
  /// fp32 otherwise, saying why).
  ModelManagerOptions& precision(std::string v) {
    precision_ = std::move(v);
    return *this;
  }
  /// Where each model's forwards run (`--device`, repeatable): DEVICE for every model, and
  /// NAME=DEVICE for the model served as NAME (per-model placement), DEVICE being auto, cpu,
  /// cuda or cuda:N. Default auto: the first GPU when LibTorch sees one. On a GPU, auto precision
  /// serves the bundle's bf16 module where it records one, and the module is not prepacked.
  ModelManagerOptions& devices(std::vector<std::string> v) {
    devices_ = std::move(v);
    return *this;
  }
  BatcherOptions batcher_;
  int64_t poll_interval_ms_ = 1000;  ///< 0: no polling
  bool prepack_ = true;
  std::string precision_ = "auto";
  std::vector<std::string> devices_;
};

/// `--model NAME=REF` serves REF under NAME (e.g. two aliases of one registry model side by side:
/// `prod=cancer@production cand=cancer@candidate`). Splits `text` into `name` ("" when none) and
/// `ref`; a path that exists as given is never split.
void split_named_ref(const std::string& text, std::string* name, std::string* ref);

/// Loads the `--model` references, serves the current version of each, and hot-reloads: a poll
/// thread resolves every reference again each poll interval; when the bundle digest changes it
/// loads the new version beside the old one (reads and verifies the bundle, loads model.pt,
/// checks it against its signature with warm-up forwards at batch 1 and max batch), then swaps
/// the current pointer atomically; requests already holding the old version finish on it and it
/// is drained once the last one is done. A version that fails to load is logged, counted in
/// kiln_model_load_failures_total and skipped (until its digest changes again); the old version
/// keeps serving. Thread-safe.
class ModelManager {
 public:
  /// Loads every reference (blocks); any failure is returned, naming the reference.
  static Expected<std::unique_ptr<ModelManager>> Create(std::shared_ptr<ModelSource> source,
                                                        const std::vector<std::string>& refs,
                                                        const ModelManagerOptions& options,
                                                        monitor::MetricsRegistry* metrics);
  ~ModelManager();

  /// The version now serving `name`; null if no such model.
  std::shared_ptr<ModelVersion> current(const std::string& name) const;
  /// Served model names, in --model order.
  std::vector<std::string> names() const;
  /// Starts the poll thread (no-op with poll_interval_ms 0), and, when the source notifies
  /// changes (a PostgreSQL registry), a watcher that makes it poll as soon as one arrives.
  void start_polling();
  /// One poll of every reference (what the poll thread does). Returns the first load error, or
  /// Unavailable when the source could not be reached (the poll thread then retries each second).
  Status poll_once();
  /// Stops polling and drains every version (current and retired). Blocks.
  void stop();

 private:
  ModelManager(std::shared_ptr<ModelSource> source, ModelManagerOptions options,
               monitor::MetricsRegistry* metrics);
  Expected<std::shared_ptr<ModelVersion>> load(const ResolvedModel& resolved,
                                               const std::string& version);
  /// The device `--device` names for the model served as `name`.
  Expected<torch::Device> device_for(const std::string& name) const;
  void reap_retired();

  struct Slot {
    std::string ref;
    std::string name;
    std::shared_ptr<ModelVersion> current;
    std::string failed_sha;  ///< digest that failed to load last (not retried)
    int64_t generation = 1;  ///< served version for bundle paths (registry versions as given)
    bool named = false;      ///< served under a name given as NAME=REF
  };

  /// One `--device` value: DEVICE (every model) or NAME=DEVICE, parsed once in Create.
  struct Placement {
    std::string given;   ///< as written, for messages
    std::string model;   ///< "" for every model
    std::string device;  ///< auto | cpu | cuda | cuda:N
  };

  std::shared_ptr<ModelSource> source_;
  const ModelManagerOptions options_;
  std::vector<Placement> placements_;  ///< set in Create, read-only after
  monitor::MetricsRegistry* metrics_;
  mutable std::mutex mu_;
  std::vector<Slot> slots_;
  std::vector<std::shared_ptr<ModelVersion>> retired_;
  std::mutex poll_mu_;  // one poll at a time
  /// The registry's error while it is unreachable (guarded by poll_mu_); empty when reachable.
  std::string unreachable_error_;
  /// While the registry is unreachable the poller retries every second, whatever its interval.
  std::atomic<bool> retry_soon_{false};
  std::mutex stop_mu_;
  std::condition_variable stop_cv_;
  bool stopping_ = false;
  bool poll_requested_ = false;  ///< a change notification arrived: poll now
  std::thread poller_;
  std::thread watcher_;  ///< waits for the source's change notifications (when it has them)
};

}  // namespace kiln::serve
