#include "kiln/serve/model_manager.h"

#include <torch/torch.h>

#include <cctype>
#include <filesystem>

#include "kiln/core/logging.h"
#include "kiln/core/threads.h"
#include "kiln/model/bundle.h"
#include "kiln/model/device.h"
#include "kiln/model/forward.h"
#include "kiln/monitor/metrics.h"
#include "kiln/serve/runner.h"

namespace kiln::serve {
namespace {

Expected<std::vector<int64_t>> dims(const Json& shape, const std::string& where) {
  if (!shape.is_array() || shape.empty())
    return Status::InvalidArgument(where + ": \"shape\" must be a non-empty array");
  std::vector<int64_t> out;
  for (size_t i = 1; i < shape.size(); ++i) {  // [0] is the batch dimension
    if (!shape[i].is_number_integer())
      return Status::InvalidArgument(where + ": \"shape\" must hold integers");
    out.push_back(shape[i].get<int64_t>());
  }
  return out;
}

Expected<TensorInfo> tensor_info(const Json& t, const std::string& where) {
  if (!t.is_object() || !t.contains("name") || !t.at("name").is_string())
    return Status::InvalidArgument(where + ": needs a \"name\"");
  TensorInfo info;
  info.name = t.at("name").get<std::string>();
  info.datatype = t.value("dtype", t.value("datatype", std::string("FP32")));
  KILN_ASSIGN_OR_RETURN(info.shape, dims(t.value("shape", Json()), where));
  return info;
}

Expected<ModelSignature> parse_signature(const model::Bundle& b) {
  const std::string where = (b.dir / model::kBundleManifestFile).string() + ": signature";
  const Json& m = b.manifest;
  if (!m.contains("signature") || !m.at("signature").is_object())
    return Status::InvalidArgument(where + ": missing");
  const Json& s = m.at("signature");
  if (!s.contains("inputs") || !s.at("inputs").is_array() || s.at("inputs").size() != 1)
    return Status::InvalidArgument(where + ".inputs: Kiln serves models with exactly one input");
  if (!s.contains("outputs") || !s.at("outputs").is_array() || s.at("outputs").empty())
    return Status::InvalidArgument(where + ".outputs: missing or empty");
  ModelSignature sig;
  KILN_ASSIGN_OR_RETURN(sig.input, tensor_info(s.at("inputs")[0], where + ".inputs[0]"));
  if (sig.input.datatype != "FP32")
    return Status::InvalidArgument(where + ".inputs[0]: dtype " + sig.input.datatype +
                                   " is not served (FP32 only)");
  for (int64_t d : sig.input.shape) {
    if (d <= 0)
      return Status::InvalidArgument(where +
                                     ".inputs[0].shape: every dimension after the batch must be "
                                     "fixed (positive)");
    sig.sample_numel *= d;
  }
  for (size_t i = 0; i < s.at("outputs").size(); ++i) {
    KILN_ASSIGN_OR_RETURN(TensorInfo o, tensor_info(s.at("outputs")[i],
                                                    where + ".outputs[" + std::to_string(i) + "]"));
    if (o.name == "probabilities" || o.name == "labels")
      return Status::InvalidArgument(where + ".outputs: \"" + o.name + "\" is reserved");
    sig.outputs.push_back(o);
  }
  sig.task = b.task();
  sig.labels = b.labels();
  sig.accepts_missing = model::accepts_missing_values(b.preprocessing());
  if (m.contains("schema") && m.at("schema").is_object() && m.at("schema").contains("features") &&
      m.at("schema").at("features").is_array() && !m.at("schema").at("features").empty()) {
    sig.features = m.at("schema").at("features");
    sig.columns = model::TableColumns(sig.features);
  }
  if (m.contains("calibration") && m.at("calibration").is_object())
    sig.calibration = {{"method", m.at("calibration").value("method", "")},
                       {"temperature", m.at("calibration").value("temperature", 1.0)}};
  const auto& first = sig.outputs[0].shape;
  if (!sig.labels.empty() &&
      (first.size() != 1 || first[0] != static_cast<int64_t>(sig.labels.size())))
    sig.labels.clear();  // labels that do not name the first output's columns: no extras
  return sig;
}

std::string shape_string(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? "," : "") + std::to_string(shape[i]);
  return s + "]";
}

/// Runs `n` zero samples through the runner and checks the outputs against the signature.
/// A deterministic batch of `rows` samples in [-1, 1], away from all-zero inputs.
torch::Tensor probe_batch(const ModelSignature& sig, int64_t rows) {
  std::vector<int64_t> shape{rows};
  shape.insert(shape.end(), sig.input.shape.begin(), sig.input.shape.end());
  int64_t numel = 1;
  for (int64_t d : shape) numel *= d;
  return torch::arange(numel, torch::kFloat32).sin().reshape(shape);
}

Status warm_up(Runner& runner, const ModelSignature& sig, int64_t n, const std::string& where) {
  std::vector<int64_t> shape{n};
  shape.insert(shape.end(), sig.input.shape.begin(), sig.input.shape.end());
  Expected<std::vector<torch::Tensor>> run = runner.run(torch::zeros(shape, torch::kFloat32));
  if (!run.ok()) {
    // The interpreter's message ends with the cause; its traceback is noise here.
    std::string why = run.status().message();
    while (!why.empty() && why.back() == '\n') why.pop_back();
    if (auto nl = why.rfind('\n'); nl != std::string::npos) why = why.substr(nl + 1);
    return Status::InvalidArgument(where +
                                   ": model.pt does not match the signature: a warm-up "
                                   "batch of shape " +
                                   shape_string(shape) + " failed: " + why);
  }
  std::vector<torch::Tensor> outs = std::move(run).value();
  if (outs.size() < sig.outputs.size())
    return Status::InvalidArgument(where + ": model.pt returns " + std::to_string(outs.size()) +
                                   " outputs, the signature lists " +
                                   std::to_string(sig.outputs.size()));
  for (size_t i = 0; i < sig.outputs.size(); ++i) {
    const auto& want = sig.outputs[i].shape;
    const torch::Tensor& t = outs[i];
    bool ok = t.dim() == static_cast<int64_t>(want.size()) + 1 && t.size(0) == n;
    for (size_t d = 0; ok && d < want.size(); ++d)
      ok = want[d] < 0 || t.size(static_cast<int64_t>(d) + 1) == want[d];
    if (!ok) {
      std::string got;
      for (int64_t d : t.sizes()) got += (got.empty() ? "" : ",") + std::to_string(d);
      return Status::InvalidArgument(where + ": output \"" + sig.outputs[i].name +
                                     "\" has shape [" + got + "] for a batch of " +
                                     std::to_string(n) + ", which does not match the signature");
    }
  }
  return Status::Ok();
}

/// The number format to serve `bundle` in, for `wanted` (auto | fp32 | bf16), on `device`.
Expected<std::string> choose_precision(const model::Bundle& bundle, const std::string& wanted,
                                       const std::string& where, const torch::Device& device) {
  if (wanted == model::kPrecisionFp32) return std::string(model::kPrecisionFp32);
  const bool recorded = bundle.precision_entry(model::kPrecisionBf16).is_object();
  // GPUs run bf16 on their tensor cores: auto serves the recorded bf16 module there.
  if (device.is_cuda() && wanted == "auto")
    return std::string(recorded ? model::kPrecisionBf16 : model::kPrecisionFp32);
  if (wanted == model::kPrecisionBf16) {
    if (!recorded)
      return Status::InvalidArgument(
          where +
          ": --precision bf16: the bundle records no bf16 module (Kiln records one for "
          "convolutional models trained on a CPU with avx512_bf16); serve it with "
          "--precision fp32 or auto");
    if (device.is_cpu() && !cpu_supports_bf16())
      KILN_LOG_WARN("{}: --precision bf16 on a CPU without avx512_bf16 runs slower than fp32",
                    where);
    return std::string(model::kPrecisionBf16);
  }
  if (wanted != "auto")
    return Status::InvalidArgument("--precision " + wanted + ": expected auto, fp32 or bf16");
  return model::auto_precision(bundle);
}

/// Whether `variant` (another number format of `reference`) gives the same outputs on a
/// deterministic probe batch of 16 samples, within the rounding of bf16 (an 8-bit mantissa):
/// |a - b| <= 0.05 * max|a| + 0.05 on every output. A bundle whose variant file belongs to
/// other weights fails this.
Status check_same_outputs(const torch::jit::Module& reference, const torch::jit::Module& variant,
                          const ModelSignature& sig) {
  std::vector<int64_t> shape{16};
  shape.insert(shape.end(), sig.input.shape.begin(), sig.input.shape.end());
  int64_t numel = 1;
  for (int64_t d : shape) numel *= d;
  // Images take pixel values 0..255, tables standardised-looking values; both are covered by a
  // probe of the scale the reference's own inputs have: 0..255 for images, -2..2 otherwise.
  torch::Tensor probe = torch::arange(numel, torch::kFloat32).sin().reshape(shape);
  probe = sig.input.shape.size() == 3 ? (probe + 1) * 127.5 : probe * 2;
  TorchScriptRunner a(reference), b(variant);
  Expected<std::vector<torch::Tensor>> want = a.run(probe);
  Expected<std::vector<torch::Tensor>> got = b.run(probe);
  if (!want.ok()) return want.status();
  if (!got.ok())
    return Status::InvalidArgument("fails on a probe batch: " + got.status().message());
  if (want->size() != got->size()) return Status::InvalidArgument("returns other outputs");
  for (size_t i = 0; i < want->size(); ++i) {
    const torch::Tensor& x = (*want)[i];
    const torch::Tensor& y = (*got)[i];
    if (x.sizes() != y.sizes())
      return Status::InvalidArgument("returns output " + std::to_string(i) + " in another shape");
    const double tolerance = 0.05 * x.abs().max().item<double>() + 0.05;
    const double diff = (x - y).abs().max().item<double>();
    if (!(diff <= tolerance))
      return Status::InvalidArgument("differs from model.pt by " + std::to_string(diff) +
                                     " on a probe batch (tolerance " + std::to_string(tolerance) +
                                     "): not the same network");
  }
  return Status::Ok();
}

}  // namespace

void split_named_ref(const std::string& text, std::string* name, std::string* ref) {
  name->clear();
  *ref = text;
  const size_t eq = text.find('=');
  if (eq == std::string::npos || eq == 0 || eq + 1 == text.size()) return;
  const std::string left = text.substr(0, eq);
  for (char c : left)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_' && c != '.') return;
  std::error_code ec;
  if (std::filesystem::exists(text, ec)) return;  // a directory whose name holds '='
  *name = left;
  *ref = text.substr(eq + 1);
}

ModelManager::ModelManager(std::shared_ptr<ModelSource> source, ModelManagerOptions options,
                           monitor::MetricsRegistry* metrics)
    : source_(std::move(source)), options_(std::move(options)), metrics_(metrics) {}

Expected<std::unique_ptr<ModelManager>> ModelManager::Create(std::shared_ptr<ModelSource> source,
                                                             const std::vector<std::string>& refs,
                                                             const ModelManagerOptions& options,
                                                             monitor::MetricsRegistry* metrics) {
  if (refs.empty()) return Status::InvalidArgument("--model: give at least one model");
  std::unique_ptr<ModelManager> mm(new ModelManager(std::move(source), options, metrics));
  for (const std::string& given : options.devices_) {
    Placement p{given, "", ""};
    split_named_ref(given, &p.model, &p.device);
    KILN_RETURN_IF_ERROR(model::check_device_name(p.device, "--device " + given));
    mm->placements_.push_back(std::move(p));
  }
  for (const std::string& given : refs) {
    std::string served_name, ref = given;
    split_named_ref(given, &served_name, &ref);
    KILN_ASSIGN_OR_RETURN(ResolvedModel r, mm->source_->resolve(ref));
    if (!served_name.empty()) r.name = served_name;
    for (const Slot& s : mm->slots_)
      if (s.name == r.name)
        return Status::InvalidArgument("--model " + given + ": a model named \"" + r.name +
                                       "\" is already served (from " + s.ref +
                                       "); name one NAME=REF");
    Slot slot;
    slot.ref = ref;
    slot.name = r.name;
    slot.named = !served_name.empty();
    const std::string version = std::to_string(r.version > 0 ? r.version : slot.generation);
    auto loaded = mm->load(r, version);
    if (!loaded.ok()) {
      if (metrics)
        metrics
            ->counter("kiln_model_load_failures_total", "Model versions that failed to load.",
                      {"model"})
            .with({r.name})
            .inc();
      return loaded.status().with_context("--model " + ref);
    }
    slot.current = *loaded;
    mm->slots_.push_back(std::move(slot));
  }
  for (const Placement& p : mm->placements_)
    if (!p.model.empty() && !mm->current(p.model))
      return Status::InvalidArgument("--device " + p.given + ": no model is served as \"" +
                                     p.model + "\"");
  return mm;
}

ModelManager::~ModelManager() { stop(); }

Expected<torch::Device> ModelManager::device_for(const std::string& name) const {
  const Placement* chosen = nullptr;
  for (const Placement& p : placements_)  // the last one that applies wins
    if (p.model.empty() || p.model == name) chosen = &p;
  if (!chosen) return model::resolve_device("auto", "--device");
  return model::resolve_device(chosen->device, "--device " + chosen->given);
}

Expected<std::shared_ptr<ModelVersion>> ModelManager::load(const ResolvedModel& resolved,
                                                           const std::string& version) {
  const std::string where = resolved.bundle_dir.string();
  KILN_ASSIGN_OR_RETURN(const torch::Device device, device_for(resolved.name));
  KILN_ASSIGN_OR_RETURN(model::Bundle bundle, model::read_bundle(resolved.bundle_dir));
  KILN_ASSIGN_OR_RETURN(ModelSignature sig, parse_signature(bundle));
  KILN_ASSIGN_OR_RETURN(torch::jit::Module module, model::load_bundle_module(bundle));
  KILN_ASSIGN_OR_RETURN(std::string precision,
                        choose_precision(bundle, options_.precision_, where, device));
  if (precision != model::kPrecisionFp32) {
    KILN_ASSIGN_OR_RETURN(torch::jit::Module variant, model::load_bundle_module(bundle, precision));
    Status agree = check_same_outputs(module, variant, sig);
    if (!agree.ok() && options_.precision_ != "auto")
      return Status::InvalidArgument(where + ": the " + precision + " module " + agree.message());
    if (!agree.ok()) {
      KILN_LOG_WARN("{} v{}: serving fp32: the {} module {}", resolved.name, version, precision,
                    agree.message());
      precision = model::kPrecisionFp32;
    } else {
      module = std::move(variant);
    }
  }
  const Json test_metrics = bundle.test_metrics(precision);
  const double test_accuracy = test_metrics.is_object() && test_metrics.contains("accuracy")
                                   ? test_metrics.at("accuracy").get<double>()
                                   : -1;
  if (precision != model::kPrecisionFp32)
    KILN_LOG_INFO("{} v{}: serving the {} module (test accuracy {:.4f}; fp32 {:.4f})",
                  resolved.name, version, precision, test_accuracy,
                  bundle.test_metrics(model::kPrecisionFp32).value("accuracy", -1.0));
  // A module that does not fit its signature fails the probe, stays as saved, and fails the
  // warm-up below with the reason.
  if (options_.prepack_ && precision == model::kPrecisionFp32 && device.is_cpu()) {
    ServingModule prepared = prepack_for_cpu_serving(module, probe_batch(sig, 3));
    if (prepared.prepacked) {
      module = std::move(prepared.module);
      KILN_LOG_INFO("{} v{}: XNNPACK prepacked operators (outputs checked)", resolved.name,
                    version);
    } else {
      KILN_LOG_INFO("{} v{}: served as saved ({})", resolved.name, version, prepared.note);
    }
  }
  KILN_RETURN_IF_ERROR(model::place_module(module, device, where));
  if (device.is_cuda())
    KILN_LOG_INFO("{} v{}: forwards run on {}", resolved.name, version, model::device_name(device));
  auto runner = std::make_shared<TorchScriptRunner>(module);
  KILN_RETURN_IF_ERROR(warm_up(*runner, sig, 1, where));
  const int64_t max_batch = std::max<int64_t>(1, options_.batcher_.max_batch_);
  if (max_batch > 1) KILN_RETURN_IF_ERROR(warm_up(*runner, sig, max_batch, where));
  if (device.is_cpu() && max_batch >= 16) {
    const model::ForwardChunking chunking =
        model::choose_forward_chunking(module, probe_batch(sig, max_batch));
    if (chunking.rows_per_forward > 0) {
      runner = std::make_shared<TorchScriptRunner>(module, chunking.rows_per_forward);
      KILN_LOG_INFO(
          "{} v{}: batches over {} rows run in forwards of {} ({:.0f} samples/s at batch {}, "
          "{:.0f} whole)",
          resolved.name, version, chunking.rows_per_forward, chunking.rows_per_forward,
          chunking.chunked_samples_per_s, max_batch, chunking.whole_samples_per_s);
    }
  }
  auto batcher = std::make_unique<DynamicBatcher>(
      options_.batcher_, sig.input.shape,
      [runner](const torch::Tensor& batch) { return runner->run(batch); });
  if (metrics_)
    metrics_->counter("kiln_model_loads_total", "Model versions loaded.", {"model"})
        .with({resolved.name})
        .inc();
  // What live monitoring sets live accuracy (a regressor: live MAE) beside.
  const char* score_key = sig.labels.empty() ? "mae" : "accuracy";
  const double test_score = test_metrics.is_object() && test_metrics.contains(score_key) &&
                                    test_metrics.at(score_key).is_number()
                                ? test_metrics.at(score_key).get<double>()
                                : -1;
  if (!sig.labels.empty() && test_metrics.is_object() && test_metrics.contains("ece") &&
      test_metrics.at("ece").is_number())
    sig.reference_calibration_error = test_metrics.at("ece").get<double>();
  return std::make_shared<ModelVersion>(resolved, version, std::move(sig), std::move(batcher),
                                        precision, test_score, model::device_name(device));
}

std::shared_ptr<ModelVersion> ModelManager::current(const std::string& name) const {
  std::lock_guard<std::mutex> lock(mu_);
  for (const Slot& s : slots_)
    if (s.name == name) return s.current;
  return nullptr;
}

std::vector<std::string> ModelManager::names() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::string> out;
  for (const Slot& s : slots_) out.push_back(s.name);
  return out;
}

Status ModelManager::poll_once() {
  std::lock_guard<std::mutex> poll_lock(poll_mu_);
  Status first_error;
  std::vector<Slot> snapshot;
  {
    std::lock_guard<std::mutex> lock(mu_);
    snapshot = slots_;
  }
  Status unreachable;
  for (const Slot& s : snapshot) {
    Expected<ResolvedModel> r = source_->resolve(s.ref);
    if (!r.ok()) {
      // The reference may be mid-update, or the registry down: keep serving what is loaded.
      KILN_LOG_DEBUG("poll {}: {}", s.ref, r.status().message());
      if (r.status().code() == StatusCode::kUnavailable && unreachable.ok())
        unreachable = r.status();
      continue;
    }
    if (r->bundle_sha256 == s.current->resolved().bundle_sha256 &&
        r->version == s.current->resolved().version)
      continue;
    if (r->bundle_sha256 == s.failed_sha) continue;
    if (r->name != s.name && !s.named) {
      KILN_LOG_WARN("model {}: {} now resolves to a model named \"{}\"; keeping the name", s.name,
                    s.ref, r->name);
    }
    r->name = s.name;
    const int64_t generation = s.generation + 1;
    const std::string version = std::to_string(r->version > 0 ? r->version : generation);
    KILN_LOG_INFO("model {}: loading version {} from {}", s.name, version, r->bundle_dir.string());
    auto loaded = load(*r, version);
    std::lock_guard<std::mutex> lock(mu_);
    for (Slot& slot : slots_) {
      if (slot.name != s.name) continue;
      if (!loaded.ok()) {
        slot.failed_sha = r->bundle_sha256;
        KILN_LOG_ERROR("model {}: version {} failed to load; version {} keeps serving: {}", s.name,
                       version, slot.current->version(), loaded.status().message());
        if (metrics_)
          metrics_
              ->counter("kiln_model_load_failures_total", "Model versions that failed to load.",
                        {"model"})
              .with({s.name})
              .inc();
        if (first_error.ok()) first_error = loaded.status();
        break;
      }
      KILN_LOG_INFO("model {}: switched from version {} to {}; draining {}", s.name,
                    slot.current->version(), version, slot.current->version());
      retired_.push_back(slot.current);
      slot.current = *loaded;
      slot.generation = generation;
      slot.failed_sha.clear();
      break;
    }
  }
  snapshot.clear();  // drop its references, so drained versions can be reaped now
  reap_retired();
  if (!unreachable.ok()) {
    if (unreachable_error_.empty())
      KILN_LOG_WARN("registry unreachable; serving the versions loaded, retrying every second: {}",
                    unreachable.message());
    unreachable_error_ = unreachable.message();
    retry_soon_ = true;
    if (first_error.ok()) first_error = unreachable;
  } else if (!unreachable_error_.empty()) {
    KILN_LOG_INFO("registry reachable again");
    unreachable_error_.clear();
    retry_soon_ = false;
  }
  return first_error;
}

void ModelManager::reap_retired() {
  std::vector<std::shared_ptr<ModelVersion>> done;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto it = retired_.begin(); it != retired_.end();) {
      // Only the manager holds it and nothing is queued: no request can reach it any more.
      if (it->use_count() == 1 && (*it)->batcher().pending() == 0) {
        done.push_back(std::move(*it));
        it = retired_.erase(it);
      } else {
        ++it;
      }
    }
  }
  for (auto& v : done) {
    v->drain();
    KILN_LOG_INFO("model {}: version {} drained and unloaded", v->name(), v->version());
  }
}

void ModelManager::start_polling() {
  if (options_.poll_interval_ms_ <= 0 || poller_.joinable()) return;
  poller_ = std::thread([this] {
    const auto interval = std::chrono::milliseconds(options_.poll_interval_ms_);
    std::unique_lock<std::mutex> lock(stop_mu_);
    while (!stopping_) {
      const auto wait = retry_soon_
                            ? std::min<std::chrono::milliseconds>(interval, std::chrono::seconds(1))
                            : interval;
      stop_cv_.wait_for(lock, wait, [this] { return stopping_ || poll_requested_; });
      if (stopping_) break;
      poll_requested_ = false;
      lock.unlock();
      (void)poll_once();
      lock.lock();
    }
  });
  if (!source_->notifies_changes()) return;
  watcher_ = std::thread([this] {
    std::unique_lock<std::mutex> lock(stop_mu_);
    // A change committed before the source listens (at start, or while it reconnects) sends no
    // notification to us: poll once as soon as it listens.
    bool resync = true;
    while (!stopping_) {
      lock.unlock();
      // Short waits keep stop() prompt; a notification wakes the poller at once.
      Expected<bool> changed = source_->wait_for_change(std::chrono::milliseconds(500));
      lock.lock();
      if (!changed.ok()) {
        KILN_LOG_DEBUG("registry notifications: {}", changed.status().message());
        resync = true;
        stop_cv_.wait_for(lock, std::chrono::seconds(1), [this] { return stopping_; });
      } else if (*changed || resync) {
        resync = false;
        poll_requested_ = true;
        stop_cv_.notify_all();
      }
    }
  });
}

void ModelManager::stop() {
  {
    std::lock_guard<std::mutex> lock(stop_mu_);
    stopping_ = true;
  }
  stop_cv_.notify_all();
  if (poller_.joinable()) poller_.join();
  if (watcher_.joinable()) watcher_.join();
  std::vector<std::shared_ptr<ModelVersion>> all;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& s : slots_)
      if (s.current) all.push_back(s.current);
    for (auto& r : retired_) all.push_back(r);
  }
  for (auto& v : all) v->drain();
}

}  // namespace kiln::serve
