#include "kiln/compress/compress.h"

#include <c10/core/InferenceMode.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <sstream>

#include "kiln/core/files.h"
#include "kiln/core/threads.h"
#include "kiln/model/bundle.h"
#include "kiln/model/export.h"
#include "kiln/model/manifest.h"
#include "kiln/registry/model_store.h"
#include "kiln/train/eval_inputs.h"
#include "kiln/train/evaluate.h"

namespace kiln::compress {

namespace {

/// Samples per second of `module` on the first `batch` rows of `rows` (repeated when fewer), on
/// one intra-op thread, for about `seconds`.
double samples_per_second(torch::jit::Module& module, const torch::Tensor& rows, int64_t batch,
                          double seconds) {
  std::vector<int64_t> repeat(static_cast<size_t>(rows.dim()), 1);
  repeat[0] = (batch + rows.size(0) - 1) / rows.size(0);
  const torch::Tensor x = rows.repeat(repeat).slice(0, 0, batch).to(torch::kFloat32).contiguous();
  const int threads = torch::get_num_threads();
  torch::set_num_threads(1);
  c10::InferenceMode guard;
  for (int i = 0; i < 3; ++i) module.forward({x});
  using Clock = std::chrono::steady_clock;
  const auto start = Clock::now();
  int64_t samples = 0;
  double elapsed = 0;
  do {
    module.forward({x});
    samples += batch;
    elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  } while (elapsed < seconds);
  torch::set_num_threads(threads);
  return samples / elapsed;
}

/// The module's size as TorchScript bytes (what model.pt holds).
int64_t saved_bytes(const torch::jit::Module& module) {
  std::ostringstream out;
  module.save(out);
  return static_cast<int64_t>(out.str().size());
}

/// {"precision", "test", "model_bytes", "samples_per_s"} of one module on the test rows.
Expected<Json> describe(torch::jit::Module& module, const std::string& precision,
                        const train::RawInputs& test, const model::Bundle& bundle,
                        double timing_seconds) {
  train::EvalOptions options(bundle.task());
  options.labels(bundle.labels()).scale_uint8(false);
  KILN_ASSIGN_OR_RETURN(
      Json metrics,
      train::evaluate([&](const torch::Tensor& x) { return module.forward({x}).toTensor(); },
                      data::SplitTensors{test.x, test.targets, {}}, options));
  Json speed = Json::object();
  if (timing_seconds > 0) {
    for (int64_t batch : {1, 64})
      speed["batch_" + std::to_string(batch)] =
          samples_per_second(module, test.x, batch, timing_seconds);
  }
  return Json{{"precision", precision},
              {"test", metrics},
              {"model_bytes", saved_bytes(module)},
              {"samples_per_s", speed}};
}

std::string headline(const Json& module_report) {
  std::ostringstream s;
  const Json& test = module_report["test"];
  s << module_report["precision"].get<std::string>() << ": ";
  if (test.contains("accuracy")) s << "test accuracy " << test["accuracy"].get<double>() << ", ";
  s << module_report["model_bytes"].get<int64_t>() / 1024 << " KiB";
  const Json& speed = module_report["samples_per_s"];
  for (const char* b : {"batch_1", "batch_64"})
    if (speed.contains(b))
      s << ", " << static_cast<int64_t>(speed[b].get<double>()) << " samples/s at "
        << std::string(b).replace(5, 1, " ");
  return s.str();
}

}  // namespace

Expected<CompressResult> compress(const CompressOptions& o, std::ostream* log) {
  if (o.quantize.empty())
    return Status::InvalidArgument("kiln compress: nothing to do (give --quantize int8)");
  if (o.quantize != model::kPrecisionInt8)
    return Status::InvalidArgument("--quantize " + o.quantize + ": expected int8");
  if (o.out.empty()) return Status::InvalidArgument("--out: where the new bundle goes is required");
  if (o.calibration_rows <= 0)
    return Status::InvalidArgument("--calibration-rows: expected a positive count");
  KILN_ASSIGN_OR_RETURN(registry::ResolvedModel resolved, registry::resolve_model_ref(o.model_ref));
  KILN_ASSIGN_OR_RETURN(model::Bundle bundle, model::read_bundle(resolved.bundle_dir));
  if (!bundle.has_network())
    return Status::InvalidArgument(o.model_ref +
                                   ": a TorchScript-only bundle has no model spec and weights to "
                                   "compress (Kiln compresses bundles it trained)");
  if (bundle.manifest.contains("compression"))
    return Status::InvalidArgument(o.model_ref + ": already compressed (" +
                                   bundle.manifest["compression"].value("quantize", "?") +
                                   "); compress its parent instead");
  std::string data = o.data;
  if (data.empty()) {
    data = train::lineage_snapshot_dir(bundle).string();
    if (data.empty())
      return Status::NotFound(o.model_ref +
                              ": the snapshot it was trained on is no longer in "
                              "$KILN_HOME/snapshots; give --data (its dataset spec)");
  }
  KILN_ASSIGN_OR_RETURN(train::RawInputs train_rows,
                        train::read_labelled_rows(bundle, data, "train"));
  KILN_ASSIGN_OR_RETURN(train::RawInputs test_rows,
                        train::read_labelled_rows(bundle, data, "test"));

  // Calibration: a seeded sample of the training rows (never the test rows it is judged on).
  const int64_t available = train_rows.x.size(0);
  const int64_t n = std::min(o.calibration_rows, available);
  torch::Tensor order =
      torch::randperm(available, at::detail::createCPUGenerator(static_cast<uint64_t>(o.seed)),
                      torch::TensorOptions().dtype(torch::kLong));
  const torch::Tensor calibration =
      train_rows.x.index_select(0, order.slice(0, 0, n)).to(torch::kFloat32);

  KILN_ASSIGN_OR_RETURN(model::ModelSpec spec, bundle.model_spec());
  KILN_ASSIGN_OR_RETURN(model::TensorMap weights, model::load_bundle_weights(bundle));
  const std::string tta = bundle.manifest.value("test_time_augmentation", model::kTtaNone);
  model::Int8Report int8_report;
  KILN_ASSIGN_OR_RETURN(torch::jit::Module quantised,
                        model::export_int8(spec, weights, bundle.input_shape(), bundle.outputs(),
                                           bundle.preprocessing(), tta, calibration, &int8_report));
  if (log)
    *log << "int8: " << int8_report.quantised_layers << " layers quantised, activation ranges from "
         << n << " training rows" << std::endl;

  // Before: the module `kiln serve --precision auto` would serve for the parent on this CPU.
  const bool parent_bf16 =
      bundle.precision_entry(model::kPrecisionBf16).is_object() && cpu_supports_bf16();
  const std::string parent_precision = parent_bf16 ? model::kPrecisionBf16 : model::kPrecisionFp32;
  KILN_ASSIGN_OR_RETURN(torch::jit::Module parent_module,
                        model::load_bundle_module(bundle, parent_precision));
  KILN_ASSIGN_OR_RETURN(
      Json before, describe(parent_module, parent_precision, test_rows, bundle, o.timing_seconds));
  KILN_ASSIGN_OR_RETURN(
      Json after, describe(quantised, model::kPrecisionInt8, test_rows, bundle, o.timing_seconds));
  if (log) {
    *log << "before " << headline(before) << "\n";
    *log << "after  " << headline(after) << std::endl;
  }
  const std::string parent =
      resolved.version > 0 ? resolved.name + "@" + std::to_string(resolved.version) : o.model_ref;
  Json report = {
      {"parent", parent},
      {"quantize", o.quantize},
      {"engine", "onednn"},
      {"calibration", {{"rows", n}, {"split", "train"}, {"observer", "minmax"}, {"seed", o.seed}}},
      {"before", before},
      {"after", after}};
  if (before["test"].contains("accuracy") && after["test"].contains("accuracy"))
    report["accuracy_drop"] =
        before["test"]["accuracy"].get<double>() - after["test"]["accuracy"].get<double>();

  // (The parent's confusion matrix is not this module's: left out.)
  // The new bundle: the parent's manifest with the int8 module's metrics, the float weights it
  // was quantised from, and the compression report; served, tested and pushed like any bundle.
  Json manifest = bundle.manifest;
  for (const char* key :
       {"files", model::kManifestHashKey, "created_at", "format", "format_version", "precisions"})
    manifest.erase(key);
  Json history = manifest.contains("metrics") && manifest["metrics"].contains("history")
                     ? manifest["metrics"]["history"]
                     : Json::array();
  manifest["metrics"] = {{"test", after["test"]}, {"val", Json()}, {"history", history}};
  manifest["compression"] = report;
  manifest["lineage"]["parent"] = parent;
  manifest["lineage"].erase("init");
  std::map<std::string, std::string> extra;
  for (const auto& [name, digest] : bundle.manifest["files"].items()) {
    (void)digest;
    if (name == model::kBundleModuleFile || name == model::kBundleWeightsFile ||
        name == model::kBundleBf16ModuleFile || name == "confusion_matrix.svg")
      continue;
    KILN_ASSIGN_OR_RETURN(std::string bytes, read_file(bundle.dir / name));
    extra[name] = std::move(bytes);
  }
  KILN_ASSIGN_OR_RETURN(fs::path dir,
                        model::write_bundle(o.out, manifest, weights, quantised, extra));
  return CompressResult{dir, report};
}

}  // namespace kiln::compress
