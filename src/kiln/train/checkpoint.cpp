#include "kiln/train/checkpoint.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include <cmath>
#include <mutex>
#include <sstream>

#include "kiln/core/files.h"

namespace kiln::train {
namespace {

Json finite_or_null(double v) { return std::isfinite(v) ? Json(v) : Json(nullptr); }

Expected<std::string> archive_bytes(torch::serialize::OutputArchive& archive,
                                    const fs::path& path) {
  try {
    std::ostringstream os;
    archive.save_to(os);
    return os.str();
  } catch (const c10::Error& e) {
    return Status::Internal(path.string() +
                            ": serialising the checkpoint: " + e.what_without_backtrace());
  }
}

// Reads the archive's tensors onto the device `model` is on (a run may resume on another device).
Status read_archive(const fs::path& path, const torch::nn::Module& model,
                    torch::serialize::InputArchive& archive) {
  std::error_code ec;
  if (!fs::exists(path, ec)) return Status::NotFound(path.string() + ": no checkpoint");
  const std::vector<torch::Tensor> params = model.parameters();
  const torch::Device device = params.empty() ? torch::Device(torch::kCPU) : params[0].device();
  try {
    archive.load_from(path.string(), device);
  } catch (const c10::Error& e) {
    return Status::DataLoss(path.string() +
                            ": not a readable checkpoint: " + e.what_without_backtrace());
  }
  return Status::Ok();
}

}  // namespace

Json TrainState::to_json() const {
  Json j;
  j["format"] = kCheckpointFormat;
  j["format_version"] = kCheckpointFormatVersion;
  j["step"] = step;
  j["epoch"] = epoch;
  j["batch"] = batch;
  j["epoch_loss_sum"] = epoch_loss_sum;
  j["epoch_correct"] = epoch_correct;
  j["epoch_samples"] = epoch_samples;
  j["epoch_seconds"] = epoch_seconds;
  j["best_metric"] = finite_or_null(best_metric);
  j["best_epoch"] = best_epoch;
  j["bad_epochs"] = bad_epochs;
  j["stopped_early"] = stopped_early;
  j["finished"] = finished;
  j["history"] = history;
  j["config_hash"] = config_hash;
  return j;
}

Expected<TrainState> TrainState::from_json(const Json& j) {
  if (!j.is_object() || j.value("format", "") != kCheckpointFormat)
    return Status::DataLoss("not a Kiln checkpoint (format tag missing)");
  if (j.value("format_version", 0) > kCheckpointFormatVersion)
    return Status::FailedPrecondition(
        "checkpoint format_version " + std::to_string(j.value("format_version", 0)) +
        " is newer than this Kiln understands (" + std::to_string(kCheckpointFormatVersion) + ")");
  try {
    TrainState s;
    s.step = j.at("step").get<int64_t>();
    s.epoch = j.at("epoch").get<int64_t>();
    s.batch = j.at("batch").get<int64_t>();
    s.epoch_loss_sum = j.at("epoch_loss_sum").get<double>();
    s.epoch_correct = j.at("epoch_correct").get<int64_t>();
    s.epoch_samples = j.at("epoch_samples").get<int64_t>();
    s.epoch_seconds = j.value("epoch_seconds", 0.0);
    s.best_metric = j.at("best_metric").is_null() ? std::numeric_limits<double>::quiet_NaN()
                                                  : j.at("best_metric").get<double>();
    s.best_epoch = j.at("best_epoch").get<int64_t>();
    s.bad_epochs = j.at("bad_epochs").get<int64_t>();
    s.stopped_early = j.at("stopped_early").get<bool>();
    s.finished = j.at("finished").get<bool>();
    s.history = j.at("history");
    s.config_hash = j.at("config_hash").get<std::string>();
    return s;
  } catch (const Json::exception& e) {
    return Status::DataLoss(std::string("checkpoint state: ") + e.what());
  }
}

namespace {
bool is_lbfgs(const torch::optim::Optimizer& optimizer) {
  return dynamic_cast<const torch::optim::LBFGS*>(&optimizer) != nullptr;
}
}  // namespace

Status save_checkpoint(const fs::path& path, const torch::nn::Module& model,
                       const torch::optim::Optimizer& optimizer, const TrainState& state,
                       const std::vector<torch::Tensor>& averages) {
  torch::serialize::OutputArchive archive;
  try {
    torch::serialize::OutputArchive model_archive, optim_archive;
    model.save(model_archive);
    // L-BFGS keeps undefined tensors in its history, which LibTorch cannot serialise: a resumed
    // full-batch L-BFGS run rebuilds its curvature history from the restored weights.
    if (!is_lbfgs(optimizer)) optimizer.save(optim_archive);
    archive.write("model", model_archive);
    archive.write("optimizer", optim_archive);
    torch::Tensor rng;
    {
      auto gen = at::detail::getDefaultCPUGenerator();
      std::lock_guard<std::mutex> lock(gen.mutex());
      rng = gen.get_state();
    }
    archive.write("rng_cpu", rng);
    archive.write("state", c10::IValue(state.to_json().dump()));
    if (!averages.empty()) {
      torch::serialize::OutputArchive ema_archive;
      for (size_t i = 0; i < averages.size(); ++i)
        ema_archive.write(std::to_string(i), averages[i], /*is_buffer=*/true);
      archive.write("ema", ema_archive);
    }
  } catch (const c10::Error& e) {
    return Status::Internal(path.string() +
                            ": building the checkpoint: " + e.what_without_backtrace());
  }
  KILN_ASSIGN_OR_RETURN(std::string bytes, archive_bytes(archive, path));
  return write_file_atomic(path, bytes);
}

Expected<TrainState> load_checkpoint(const fs::path& path, torch::nn::Module& model,
                                     torch::optim::Optimizer* optimizer, bool restore_rng,
                                     std::vector<torch::Tensor>* averages) {
  torch::serialize::InputArchive archive;
  KILN_RETURN_IF_ERROR(read_archive(path, model, archive));
  TrainState state;
  try {
    c10::IValue meta;
    archive.read("state", meta);
    Json j = Json::parse(meta.toStringRef());
    Expected<TrainState> s = TrainState::from_json(j);
    if (!s.ok()) return s.status().with_context(path.string());
    state = std::move(*s);
    torch::serialize::InputArchive model_archive;
    archive.read("model", model_archive);
    model.load(model_archive);
    if (optimizer && !is_lbfgs(*optimizer)) {
      torch::serialize::InputArchive optim_archive;
      archive.read("optimizer", optim_archive);
      optimizer->load(optim_archive);
    }
    if (restore_rng) {
      torch::Tensor rng;
      archive.read("rng_cpu", rng);
      rng = rng.cpu();
      auto gen = at::detail::getDefaultCPUGenerator();
      std::lock_guard<std::mutex> lock(gen.mutex());
      gen.set_state(rng);
    }
    if (averages && !averages->empty()) {
      torch::serialize::InputArchive ema_archive;
      if (!archive.try_read("ema", ema_archive))
        return Status::DataLoss(path.string() + ": the checkpoint holds no weight averages (ema)");
      torch::NoGradGuard no_grad;
      for (size_t i = 0; i < averages->size(); ++i) {
        torch::Tensor saved;
        if (!ema_archive.try_read(std::to_string(i), saved, /*is_buffer=*/true))
          return Status::DataLoss(path.string() +
                                  ": the checkpoint holds fewer weight averages "
                                  "than the model has tensors");
        (*averages)[i].copy_(saved);
      }
    }
  } catch (const c10::Error& e) {
    return Status::DataLoss(path.string() +
                            ": checkpoint does not match the model: " + e.what_without_backtrace());
  } catch (const Json::exception& e) {
    return Status::DataLoss(path.string() + ": checkpoint state: " + e.what());
  }
  return state;
}

Status save_weights(const fs::path& path, const torch::nn::Module& model) {
  torch::serialize::OutputArchive archive;
  try {
    model.save(archive);
  } catch (const c10::Error& e) {
    return Status::Internal(path.string() + ": " + e.what_without_backtrace());
  }
  KILN_ASSIGN_OR_RETURN(std::string bytes, archive_bytes(archive, path));
  return write_file_atomic(path, bytes);
}

Status load_weights(const fs::path& path, torch::nn::Module& model) {
  torch::serialize::InputArchive archive;
  KILN_RETURN_IF_ERROR(read_archive(path, model, archive));
  try {
    model.load(archive);
  } catch (const c10::Error& e) {
    return Status::DataLoss(path.string() +
                            ": weights do not match the model: " + e.what_without_backtrace());
  }
  return Status::Ok();
}

}  // namespace kiln::train
