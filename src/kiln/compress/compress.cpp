#include "kiln/compress/compress.h"

#include <c10/core/InferenceMode.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <map>
#include <optional>
#include <set>
#include <sstream>

#include "kiln/core/files.h"
#include "kiln/core/threads.h"
#include "kiln/core/yaml.h"
#include "kiln/model/bundle.h"
#include "kiln/model/export.h"
#include "kiln/model/forward.h"
#include "kiln/model/manifest.h"
#include "kiln/model/network.h"
#include "kiln/model/summary.h"
#include "kiln/registry/model_store.h"
#include "kiln/train/config.h"
#include "kiln/train/eval_inputs.h"
#include "kiln/train/evaluate.h"
#include "kiln/train/trainer.h"

namespace kiln::compress {

namespace {

/// Samples per second of `module` on the first `batch` rows of `rows` (repeated when fewer), on
/// one intra-op thread, for about `seconds`, in the forwards `kiln serve` would run that batch in
/// (model::choose_forward_chunking).
double samples_per_second(torch::jit::Module& module, const torch::Tensor& rows, int64_t batch,
                          double seconds) {
  std::vector<int64_t> repeat(static_cast<size_t>(rows.dim()), 1);
  repeat[0] = (batch + rows.size(0) - 1) / rows.size(0);
  const torch::Tensor x = rows.repeat(repeat).slice(0, 0, batch).to(torch::kFloat32).contiguous();
  const int threads = torch::get_num_threads();
  torch::set_num_threads(1);
  c10::InferenceMode guard;
  const int64_t chunk = model::choose_forward_chunking(module, x).rows_per_forward;
  for (int i = 0; i < 3; ++i) (void)model::forward_in_chunks(module, x, chunk);
  using Clock = std::chrono::steady_clock;
  const auto start = Clock::now();
  int64_t samples = 0;
  double elapsed = 0;
  do {
    (void)model::forward_in_chunks(module, x, chunk);
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

/// {"precision", "test", ["val",] "model_bytes", "samples_per_s"} of one module on the test
/// rows (and the validation rows when there are some).
Expected<Json> describe(torch::jit::Module& module, const std::string& precision,
                        const train::RawInputs& test, const std::optional<train::RawInputs>& val,
                        const model::Bundle& bundle, double timing_seconds) {
  train::EvalOptions options(bundle.task());
  options.labels(bundle.labels()).scale_uint8(false);
  auto predict = [&](const torch::Tensor& x) { return module.forward({x}).toTensor(); };
  KILN_ASSIGN_OR_RETURN(
      Json metrics,
      train::evaluate(predict, data::SplitTensors{test.x, test.targets, {}}, options));
  Json val_metrics;
  if (val) {
    KILN_ASSIGN_OR_RETURN(
        val_metrics,
        train::evaluate(predict, data::SplitTensors{val->x, val->targets, {}}, options));
  }
  Json speed = Json::object();
  if (timing_seconds > 0) {
    for (int64_t batch : {1, 64})
      speed["batch_" + std::to_string(batch)] =
          samples_per_second(module, test.x, batch, timing_seconds);
  }
  Json out{{"precision", precision},
           {"test", metrics},
           {"model_bytes", saved_bytes(module)},
           {"samples_per_s", speed}};
  if (val) out["val"] = val_metrics;
  return out;
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

/// Channels kept by L1-norm filter pruning: the `keep` output rows of `w` (dim 0) with the
/// largest L1 norms, in their original order.
torch::Tensor strongest_outputs(const torch::Tensor& w, int64_t keep) {
  const torch::Tensor norms = w.abs().flatten(1).sum(1);
  torch::Tensor idx = std::get<1>(norms.topk(keep, 0, /*largest=*/true, /*sorted=*/false));
  return std::get<0>(idx.sort());
}

}  // namespace

Expected<PrunedNetwork> prune_l1(const model::ModelSpec& spec, const model::TensorMap& state,
                                 const std::vector<int64_t>& input_shape, int64_t outputs,
                                 double ratio) {
  if (!(ratio > 0 && ratio < 1))
    return Status::InvalidArgument("--prune " + std::to_string(ratio) +
                                   ": expected a fraction of channels to remove, in (0, 1)");
  static const std::set<std::string> kSupported = {
      "conv2d",    "linear",     "batchnorm1d", "batchnorm2d",
      "relu",      "leaky_relu", "elu",         "gelu",
      "silu",      "tanh",       "sigmoid",     "dropout",
      "maxpool2d", "avgpool2d",  "flatten",     "adaptive_avgpool2d"};
  int64_t head = -1;
  for (size_t i = 0; i < spec.layers.size(); ++i) {
    const std::string& t = spec.layers[i].type;
    if (!kSupported.count(t))
      return Status::InvalidArgument("layers." + std::to_string(i) + " (" + t +
                                     "): not supported by structured pruning (sequential "
                                     "networks of conv2d, linear, batch norm, pooling, flatten, "
                                     "dropout and activations)");
    if (t == "conv2d" || t == "linear") head = static_cast<int64_t>(i);
  }
  if (head < 0) return Status::InvalidArgument("pruning: the model has no conv2d or linear layer");
  // Per-layer input shapes, from the network's own summary.
  KILN_ASSIGN_OR_RETURN(auto net, model::NetworkImpl::Create(spec, input_shape, outputs, 0));
  const Json before = model::summary_json(*net);
  PrunedNetwork out;
  out.spec = spec;
  out.spec.zoo_params = Json::object();
  out.state = state;
  out.report = Json::array();
  auto tensor = [&](const std::string& name) -> Expected<torch::Tensor> {
    auto it = state.find(name);
    if (it == state.end()) return Status::InvalidArgument("weights: no tensor \"" + name + "\"");
    return it->second.detach().to(torch::kCPU);
  };
  torch::Tensor kept;  // channel (or feature) indices of the current activation; undefined: all
  for (size_t i = 0; i < spec.layers.size(); ++i) {
    const std::string& t = spec.layers[i].type;
    const std::string p = "layers." + std::to_string(i) + ".";
    const Json& shape_in = before["layers"][i]["input_shape"];
    if (t == "conv2d" || t == "linear") {
      KILN_ASSIGN_OR_RETURN(torch::Tensor w, tensor(p + "weight"));
      if (kept.defined()) w = w.index_select(1, kept);
      const bool has_bias = state.count(p + "bias") > 0;
      torch::Tensor b;
      if (has_bias) {
        KILN_ASSIGN_OR_RETURN(b, tensor(p + "bias"));
      }
      if (static_cast<int64_t>(i) == head) {  // the outputs stay: only the inputs shrink
        out.state[p + "weight"] = w.contiguous();
        kept = torch::Tensor();
        continue;
      }
      const int64_t total = w.size(0);
      const int64_t keep = std::max<int64_t>(1, std::llround(total * (1.0 - ratio)));
      kept = strongest_outputs(w, keep);
      out.state[p + "weight"] = w.index_select(0, kept).contiguous();
      if (has_bias) out.state[p + "bias"] = b.index_select(0, kept).contiguous();
      out.spec.layers[i].params["out"] = keep;
      out.report.push_back({{"layer", i}, {"type", t}, {"outputs", total}, {"kept", keep}});
    } else if (t == "batchnorm1d" || t == "batchnorm2d") {
      if (!kept.defined()) continue;
      for (const char* n : {"weight", "bias", "running_mean", "running_var"})
        if (state.count(p + n)) {
          KILN_ASSIGN_OR_RETURN(torch::Tensor v, tensor(p + n));
          out.state[p + n] = v.index_select(0, kept).contiguous();
        }
    } else if (t == "flatten" && kept.defined() && shape_in.size() > 1) {
      // Channel c of a C x H x W activation becomes features c*H*W .. (c+1)*H*W - 1.
      int64_t per_channel = 1;
      for (size_t d = 1; d < shape_in.size(); ++d) per_channel *= shape_in[d].get<int64_t>();
      kept = (kept.unsqueeze(1) * per_channel + torch::arange(per_channel).unsqueeze(0)).flatten();
    }
  }
  KILN_ASSIGN_OR_RETURN(auto pruned_net,
                        model::NetworkImpl::Create(out.spec, input_shape, outputs, 0));
  KILN_RETURN_IF_ERROR(model::load_network_state(*pruned_net, out.state));
  const Json after = model::summary_json(*pruned_net);
  out.params_before = before["total_params"].get<int64_t>();
  out.params_after = after["total_params"].get<int64_t>();
  out.flops_before = before["total_flops"].get<int64_t>();
  out.flops_after = after["total_flops"].get<int64_t>();
  return out;
}

namespace {

/// The files of `bundle` other than model.pt and weights.pt (and those listed in `skip`), by name.
Expected<std::map<std::string, std::string>> other_files(const model::Bundle& bundle,
                                                         const std::set<std::string>& skip) {
  std::map<std::string, std::string> out;
  for (const auto& [name, digest] : bundle.manifest["files"].items()) {
    (void)digest;
    if (name == model::kBundleModuleFile || name == model::kBundleWeightsFile || skip.count(name))
      continue;
    KILN_ASSIGN_OR_RETURN(std::string bytes, read_file(bundle.dir / name));
    out[name] = std::move(bytes);
  }
  return out;
}

/// A bundle's manifest without what write_bundle fills in.
Json manifest_to_rewrite(const model::Bundle& bundle) {
  Json m = bundle.manifest;
  for (const char* key :
       {"files", model::kManifestHashKey, "created_at", "format", "format_version"})
    m.erase(key);
  return m;
}

}  // namespace

namespace {

double accuracy_of(const Json& module_report, const char* split) {
  return module_report.contains(split) && module_report[split].contains("accuracy")
             ? module_report[split]["accuracy"].get<double>()
             : std::nan("");
}

/// Rewrites the bundle in `from` into `to` with `parent` as its lineage parent and `budget` in
/// its compression report.
Expected<fs::path> republish(const fs::path& from, const fs::path& to, const std::string& parent,
                             const Json& budget) {
  KILN_ASSIGN_OR_RETURN(model::Bundle b, model::read_bundle(from));
  Json manifest = manifest_to_rewrite(b);
  manifest["lineage"]["parent"] = parent;
  manifest["compression"]["parent"] = parent;
  manifest["compression"]["budget"] = budget;
  KILN_ASSIGN_OR_RETURN(model::TensorMap weights, model::load_bundle_weights(b));
  KILN_ASSIGN_OR_RETURN(torch::jit::Module module, model::load_bundle_module(b));
  KILN_ASSIGN_OR_RETURN(auto extra, other_files(b, {}));
  return model::write_bundle(to, manifest, weights, module, extra);
}

/// --max-drop: the strongest candidate within the budget, judged on the validation split.
Expected<CompressResult> compress_within_budget(const CompressOptions& o, std::ostream* log) {
  if (!o.quantize.empty() || o.prune != 0)
    return Status::InvalidArgument(
        "--max-drop chooses --prune and --quantize itself; give "
        "either --max-drop or those");
  if (o.out.empty()) return Status::InvalidArgument("--out: where the new bundle goes is required");
  KILN_ASSIGN_OR_RETURN(fs::path work, make_temp_directory("kiln-compress-budget-"));
  struct RemoveWork {
    fs::path dir;
    ~RemoveWork() {
      std::error_code ec;
      fs::remove_all(dir, ec);
    }
  } remove_work{work};
  Json tried = Json::array();
  std::string parent;
  double parent_val = std::nan("");
  // The parent and its validation accuracy, from the first result made from it directly.
  auto note_parent = [&](const CompressResult& r) {
    if (!parent.empty()) return;
    parent = r.report["parent"].get<std::string>();
    parent_val = accuracy_of(r.report["before"], "val");
  };
  auto judge = [&](const CompressResult& r, const std::string& what) -> bool {
    const double val = accuracy_of(r.report["after"], "val");
    const double drop = (parent_val - val) * 100;
    const bool ok = std::isfinite(drop) && drop <= o.max_drop;
    tried.push_back(
        {{"candidate", what}, {"val_accuracy", val}, {"drop_points", drop}, {"within_budget", ok}});
    if (log)
      *log << "budget: " << what << ": validation accuracy " << val << " ("
           << (drop >= 0 ? "-" : "+") << std::abs(drop) << " points) " << (ok ? "within" : "over")
           << " --max-drop " << o.max_drop << std::endl;
    return ok;
  };
  auto choose = [&](const CompressResult& r, const std::string& what) -> Expected<CompressResult> {
    Json budget = {{"max_drop_points", o.max_drop},
                   {"judged_on", "val"},
                   {"parent_val_accuracy", parent_val},
                   {"tried", tried},
                   {"chosen", what}};
    if (log) *log << "budget: chose " << what << std::endl;
    KILN_ASSIGN_OR_RETURN(fs::path dir, republish(r.bundle_dir, o.out, parent, budget));
    Json report = r.report;
    report["parent"] = parent;
    report["budget"] = budget;
    return CompressResult{dir, report};
  };
  CompressOptions base = o;
  base.max_drop = -1;
  base.timing_seconds = 0;
  for (double ratio : {0.75, 0.5, 0.25}) {
    char name[32];
    std::snprintf(name, sizeof(name), "prune %.2f", ratio);
    CompressOptions pruning = base;
    pruning.prune = ratio;
    pruning.out = work / ("prune-" + std::to_string(static_cast<int>(ratio * 100)));
    KILN_ASSIGN_OR_RETURN(CompressResult pruned, compress(pruning, log));
    note_parent(pruned);
    CompressOptions quantising = base;
    quantising.model_ref = pruned.bundle_dir.string();
    quantising.quantize = model::kPrecisionInt8;
    quantising.out = pruning.out.string() + "-int8";
    KILN_ASSIGN_OR_RETURN(CompressResult both, compress(quantising, log));
    if (judge(both, std::string(name) + " + int8"))
      return choose(both, std::string(name) + " + int8");
    if (judge(pruned, name)) return choose(pruned, name);
  }
  CompressOptions quantising = base;
  quantising.quantize = model::kPrecisionInt8;
  quantising.out = work / "int8";
  KILN_ASSIGN_OR_RETURN(CompressResult int8, compress(quantising, log));
  note_parent(int8);
  if (judge(int8, "int8")) return choose(int8, "int8");
  return Status::FailedPrecondition("no compression stays within --max-drop " +
                                    std::to_string(o.max_drop) +
                                    " points of validation accuracy: " + tried.dump());
}

}  // namespace

Expected<CompressResult> compress(const CompressOptions& o, std::ostream* log) {
  if (o.max_drop >= 0) return compress_within_budget(o, log);
  if (o.quantize.empty() && o.prune == 0 && o.distill.empty())
    return Status::InvalidArgument(
        "kiln compress: nothing to do (give --prune RATIO, --distill STUDENT.yaml and/or "
        "--quantize int8)");
  if (o.prune != 0 && !o.distill.empty())
    return Status::InvalidArgument("give --prune or --distill, not both");
  if (!o.ensemble.empty() && o.distill.empty())
    return Status::InvalidArgument("--ensemble adds teachers to --distill: give --distill too");
  if (!o.quantize.empty() && o.quantize != model::kPrecisionInt8)
    return Status::InvalidArgument("--quantize " + o.quantize + ": expected int8");
  if (o.prune != 0 && !(o.prune > 0 && o.prune < 1))
    return Status::InvalidArgument("--prune " + std::to_string(o.prune) +
                                   ": expected the fraction of channels to remove, in (0, 1)");
  if (o.out.empty()) return Status::InvalidArgument("--out: where the new bundle goes is required");
  if (o.calibration_rows <= 0)
    return Status::InvalidArgument("--calibration-rows: expected a positive count");
  if (o.fine_tune_epochs < 0)
    return Status::InvalidArgument("--fine-tune-epochs: expected 0 or more");
  KILN_ASSIGN_OR_RETURN(registry::ResolvedModel resolved, registry::resolve_model_ref(o.model_ref));
  KILN_ASSIGN_OR_RETURN(model::Bundle bundle, model::read_bundle(resolved.bundle_dir));
  if (!bundle.has_network())
    return Status::InvalidArgument(o.model_ref +
                                   ": a TorchScript-only bundle has no model spec and weights to "
                                   "compress (Kiln compresses bundles it trained)");
  const Json& previous = bundle.manifest.value("compression", Json::object());
  if (previous.contains("quantize"))
    return Status::InvalidArgument(o.model_ref + ": already quantised (" +
                                   previous["quantize"].get<std::string>() +
                                   "); compress its parent instead");
  std::string data = o.data;
  if (data.empty()) {
    data = train::lineage_snapshot_dir(bundle).string();
    if (data.empty())
      return Status::NotFound(o.model_ref +
                              ": the snapshot it was trained on is no longer in "
                              "$KILN_HOME/snapshots; give --data (its dataset spec)");
  }
  KILN_ASSIGN_OR_RETURN(train::RawInputs test_rows,
                        train::read_labelled_rows(bundle, data, "test"));
  std::optional<train::RawInputs> val_rows;
  if (Expected<train::RawInputs> val = train::read_labelled_rows(bundle, data, "val"); val.ok())
    val_rows = std::move(*val);
  const std::string parent =
      resolved.version > 0 ? resolved.name + "@" + std::to_string(resolved.version) : o.model_ref;
  Json report = {{"parent", parent}};

  // Before: the module `kiln serve --precision auto` would serve for the parent on this CPU.
  const std::string parent_precision = model::auto_precision(bundle);
  KILN_ASSIGN_OR_RETURN(torch::jit::Module parent_module,
                        model::load_bundle_module(bundle, parent_precision));
  KILN_ASSIGN_OR_RETURN(Json before, describe(parent_module, parent_precision, test_rows, val_rows,
                                              bundle, o.timing_seconds));
  if (log) *log << "before " << headline(before) << std::endl;

  // The network being compressed, and the bundle it lives in (the parent, or the pruned one).
  model::Bundle current = bundle;
  KILN_ASSIGN_OR_RETURN(model::ModelSpec spec, bundle.model_spec());
  KILN_ASSIGN_OR_RETURN(model::TensorMap weights, model::load_bundle_weights(bundle));
  const std::string tta = bundle.manifest.value("test_time_augmentation", model::kTtaNone);
  std::optional<fs::path> work;
  struct RemoveWork {
    std::optional<fs::path>* dir;
    ~RemoveWork() {
      std::error_code ec;
      if (*dir) fs::remove_all(**dir, ec);
    }
  } remove_work{&work};

  if (o.prune > 0) {
    KILN_ASSIGN_OR_RETURN(PrunedNetwork pruned,
                          prune_l1(spec, weights, bundle.input_shape(), bundle.outputs(), o.prune));
    if (log)
      *log << "prune: " << pruned.report.size() << " layers, parameters "
           << model::with_thousands(pruned.params_before) << " -> "
           << model::with_thousands(pruned.params_after) << ", FLOPs per sample "
           << model::with_thousands(pruned.flops_before) << " -> "
           << model::with_thousands(pruned.flops_after) << "; fine-tuning " << o.fine_tune_epochs
           << " epochs" << std::endl;
    KILN_ASSIGN_OR_RETURN(fs::path dir, make_temp_directory("kiln-compress-"));
    work = dir;
    // The pruned network as a bundle, which the fine-tuning run starts from (init: by name and
    // shape, every tensor loads).
    Json pm = manifest_to_rewrite(bundle);
    pm["model"] = pruned.spec.to_json();
    pm.erase("precisions");
    KILN_ASSIGN_OR_RETURN(torch::jit::Module scripted,
                          model::export_torchscript(pruned.spec, pruned.state, bundle.input_shape(),
                                                    bundle.outputs(), bundle.preprocessing(), tta));
    KILN_ASSIGN_OR_RETURN(fs::path pruned_dir,
                          model::write_bundle(dir / "pruned", pm, pruned.state, scripted));
    // Fine-tuning: the parent's own recipe, on the same data, for a few epochs.
    Json config = bundle.manifest.value("training", Json::object());
    config["data"] = data;
    config["model"] = {{"name", spec.name + "-pruned"}, {"layers", pm["model"]["layers"]}};
    config["init"] = pruned_dir.string();
    config["epochs"] = std::max<int64_t>(1, o.fine_tune_epochs);
    config["device"] = o.device;
    for (const char* key : {"freeze", "param_groups", "early_stopping"}) config.erase(key);
    KILN_ASSIGN_OR_RETURN(train::TrainConfig cfg,
                          train::parse_train_config(config, {}, "the model's training config"));
    if (o.fine_tune_epochs > 0) {
      KILN_ASSIGN_OR_RETURN(train::TrainResult trained,
                            train::train(cfg, train::TrainOptions(dir / "run")
                                                  .snapshot_dir(kiln_home() / "snapshots")
                                                  .progress(nullptr)));
      KILN_ASSIGN_OR_RETURN(current, model::read_bundle(trained.bundle_dir));
    } else {
      KILN_ASSIGN_OR_RETURN(current, model::read_bundle(pruned_dir));
    }
    KILN_ASSIGN_OR_RETURN(spec, current.model_spec());
    KILN_ASSIGN_OR_RETURN(weights, model::load_bundle_weights(current));
    report["prune"] = {{"ratio", o.prune},
                       {"method", "l1_filter"},
                       {"layers", pruned.report},
                       {"params_before", pruned.params_before},
                       {"params_after", pruned.params_after},
                       {"flops_before", pruned.flops_before},
                       {"flops_after", pruned.flops_after},
                       {"fine_tune_epochs", o.fine_tune_epochs}};
  }

  if (!o.distill.empty()) {
    // The student: its own spec, trained with the teacher's recipe and data on the teacher's
    // softened outputs as well as the labels.
    KILN_ASSIGN_OR_RETURN(Json student, read_yaml_file(o.distill));
    const std::string where = o.distill + ": ";
    if (!student.is_object() || !student.contains("model"))
      return Status::InvalidArgument(where + "a student needs 'model:' (as in a training config)");
    for (const auto& [key, value] : student.items()) {
      (void)value;
      if (key != "model" && key != "epochs" && key != "seed" && key != "temperature" &&
          key != "alpha")
        return Status::InvalidArgument(where + "unknown key '" + key +
                                       "' (valid: model, epochs, seed, temperature, alpha)");
    }
    Json config = bundle.manifest.value("training", Json::object());
    config["data"] = data;
    config["model"] = student["model"];
    if (student.contains("epochs")) config["epochs"] = student["epochs"];
    if (student.contains("seed")) config["seed"] = student["seed"];
    // The teachers by bundle directory, resolved once here (an alias may move meanwhile).
    Json teachers = Json::array({resolved.bundle_dir.string()});
    Json teacher_refs = Json::array({parent});
    for (const std::string& ref : o.ensemble) {
      Expected<registry::ResolvedModel> other = registry::resolve_model_ref(ref);
      if (!other.ok()) return other.status().with_context("--ensemble " + ref);
      teachers.push_back(other->bundle_dir.string());
      teacher_refs.push_back(other->version > 0 ? other->name + "@" + std::to_string(other->version)
                                                : ref);
    }
    config["distill"] = {{"teacher", teachers.size() == 1 ? teachers.front() : teachers},
                         {"temperature", student.value("temperature", 4.0)},
                         {"alpha", student.value("alpha", 0.7)}};
    for (const char* key : {"init", "freeze", "param_groups", "early_stopping"}) config.erase(key);
    config["device"] = o.device;
    Expected<train::TrainConfig> cfg = train::parse_train_config(config, {}, o.distill);
    if (!cfg.ok()) return cfg.status();
    KILN_ASSIGN_OR_RETURN(fs::path dir, make_temp_directory("kiln-compress-"));
    work = dir;
    if (log)
      *log << "distill: training the student of " << o.distill << " for " << cfg->epochs
           << " epochs on "
           << (o.ensemble.empty() ? parent + "'s outputs"
                                  : "the mean of " + std::to_string(teacher_refs.size()) +
                                        " teachers' softened outputs, " + teacher_refs.dump() + ",")
           << " (temperature " << cfg->distill.temperature << ", alpha " << cfg->distill.alpha
           << (!o.ensemble.empty() ? "; each teacher as served, with its test-time augmentation"
               : tta == model::kTtaFlip
                   ? "; the teacher as served, with its flip test-time augmentation"
                   : "")
           << ")" << std::endl;
    KILN_ASSIGN_OR_RETURN(train::TrainResult trained,
                          train::train(*cfg, train::TrainOptions(dir / "run")
                                                 .snapshot_dir(kiln_home() / "snapshots")
                                                 .progress(nullptr)));
    KILN_ASSIGN_OR_RETURN(current, model::read_bundle(trained.bundle_dir));
    KILN_ASSIGN_OR_RETURN(spec, current.model_spec());
    KILN_ASSIGN_OR_RETURN(weights, model::load_bundle_weights(current));
    KILN_ASSIGN_OR_RETURN(auto teacher_net, model::load_bundle_network(bundle));
    KILN_ASSIGN_OR_RETURN(auto student_net, model::load_bundle_network(current));
    report["distill"] = {{"teacher", parent},
                         {"student", student["model"]},
                         {"temperature", cfg->distill.temperature},
                         {"alpha", cfg->distill.alpha},
                         {"teacher_tta", tta},
                         {"teachers", teacher_refs},
                         {"epochs", cfg->epochs},
                         {"params_before", teacher_net->total_params()},
                         {"params_after", student_net->total_params()},
                         {"flops_before", teacher_net->total_flops()},
                         {"flops_after", student_net->total_flops()}};
    if (log)
      *log << "distill: parameters " << model::with_thousands(teacher_net->total_params()) << " -> "
           << model::with_thousands(student_net->total_params()) << ", FLOPs per sample "
           << model::with_thousands(teacher_net->total_flops()) << " -> "
           << model::with_thousands(student_net->total_flops()) << std::endl;
  }

  // The bundle written: the current network's manifest, weights and files; model.pt is its
  // module, or the int8 one.
  Json manifest = manifest_to_rewrite(current);
  KILN_ASSIGN_OR_RETURN(auto extra, other_files(current, {"confusion_matrix.svg"}));
  if (o.prune == 0 && o.distill.empty())
    extra.erase(model::kBundleBf16ModuleFile);  // the parent's, not the result's
  torch::jit::Module model_pt;
  torch::jit::Module served;
  std::string precision;
  if (!o.quantize.empty()) {
    // Calibration: a seeded sample of the training rows (never the test rows it is judged on).
    KILN_ASSIGN_OR_RETURN(train::RawInputs train_rows,
                          train::read_labelled_rows(bundle, data, "train"));
    const int64_t available = train_rows.x.size(0);
    const int64_t n = std::min(o.calibration_rows, available);
    torch::Tensor order =
        torch::randperm(available, at::detail::createCPUGenerator(static_cast<uint64_t>(o.seed)),
                        torch::TensorOptions().dtype(torch::kLong));
    const torch::Tensor calibration =
        train_rows.x.index_select(0, order.slice(0, 0, n)).to(torch::kFloat32);
    model::Int8Report int8_report;
    KILN_ASSIGN_OR_RETURN(
        model_pt, model::export_int8(spec, weights, current.input_shape(), current.outputs(),
                                     current.preprocessing(), tta, calibration, &int8_report));
    if (log)
      *log << "int8: " << int8_report.quantised_layers
           << " layers quantised, activation ranges from " << n << " training rows" << std::endl;
    served = model_pt;
    precision = model::kPrecisionInt8;
    report["quantize"] = o.quantize;
    report["engine"] = "onednn";
    report["calibration"] = {
        {"rows", n}, {"split", "train"}, {"observer", "minmax"}, {"seed", o.seed}};
    manifest.erase("precisions");
    extra.erase(model::kBundleBf16ModuleFile);
  } else {
    KILN_ASSIGN_OR_RETURN(model_pt, model::load_bundle_module(current));
    precision = model::auto_precision(current);
    KILN_ASSIGN_OR_RETURN(served, model::load_bundle_module(current, precision));
  }
  KILN_ASSIGN_OR_RETURN(Json after,
                        describe(served, precision, test_rows, val_rows, bundle, o.timing_seconds));
  if (log) *log << "after  " << headline(after) << std::endl;
  report["before"] = before;
  report["after"] = after;
  if (before["test"].contains("accuracy") && after["test"].contains("accuracy"))
    report["accuracy_drop"] =
        before["test"]["accuracy"].get<double>() - after["test"]["accuracy"].get<double>();
  if (!o.quantize.empty()) {
    Json history = manifest.contains("metrics") && manifest["metrics"].contains("history")
                       ? manifest["metrics"]["history"]
                       : Json::array();
    manifest["metrics"] = {{"test", after["test"]}, {"val", Json()}, {"history", history}};
  }
  // A pruned-then-quantised bundle keeps the pruning report of its parent.
  if (previous.contains("prune") && !report.contains("prune")) report["prune"] = previous["prune"];
  manifest["compression"] = report;
  manifest["lineage"]["parent"] = parent;
  manifest["lineage"].erase("init");
  if (report.contains("distill")) {
    manifest["lineage"]["teacher"] = parent;
    if (report["distill"]["teachers"].size() > 1)
      manifest["lineage"]["teachers"] = report["distill"]["teachers"];
    else
      manifest["lineage"].erase("teachers");
  }
  KILN_ASSIGN_OR_RETURN(fs::path dir,
                        model::write_bundle(o.out, manifest, weights, model_pt, extra));
  return CompressResult{dir, report};
}

}  // namespace kiln::compress
