// `kiln train`, `kiln eval`, `kiln predict`, `kiln export`: from data to a bundle and back.
#include <torch/script.h>
#include <torch/torch.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <iostream>
#include <sstream>

#include "kiln/cli/commands.h"
#include "kiln/cli/flags.h"
#include "kiln/cli/train_launch.h"
#include "kiln/core/csv.h"
#include "kiln/core/files.h"
#include "kiln/core/json.h"
#include "kiln/data/images.h"
#include "kiln/data/npy.h"
#include "kiln/data/prepare.h"
#include "kiln/data/snapshot.h"
#include "kiln/data/spec.h"
#include "kiln/interop/onnx_export.h"
#include "kiln/model/bundle.h"
#include "kiln/model/device.h"
#include "kiln/model/network.h"
#include "kiln/registry/model_store.h"
#include "kiln/train/config.h"
#include "kiln/train/eval_inputs.h"
#include "kiln/train/evaluate.h"
#include "kiln/train/metrics.h"
#include "kiln/train/table_search.h"
#include "kiln/train/trainer.h"

namespace kiln::cli {
namespace {

using train::RawInputs;
using train::read_model_ref;
using train::read_raw_inputs;
using train::run_module;

std::string timestamp() {
  std::time_t now = std::time(nullptr);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y%m%d-%H%M%S", std::gmtime(&now));
  return buf;
}

// ---------------------------------------------------------------------------------------------
// kiln train

struct TrainArgs {
  std::string config;
  std::string out;
  std::string resume;
  std::vector<std::string> set;
  std::string init;                         // --init REF: same as --set init=REF
  std::string data;                         // quick path: a CSV
  std::string target;                       // quick path
  std::vector<std::string> categorical;     // quick path
  std::vector<std::string> target_encoded;  // quick path
  std::string model = "auto";
  std::string device;       // --device: same as --set device=NAME
  int64_t split_seed = -1;  // quick path; -1: kQuickPathSeed
  bool overwrite = false;
  bool deterministic = false;
  bool json = false;
  // Data-parallel (train_launch.h): ranks on this node, nodes, this node, rank 0's ADDR:PORT.
  int nproc = 1;
  int nnodes = 1;
  int node_rank = 0;
  std::string master;
  int max_restarts = 3;
};

/// Tables up to this many training rows get the cross-validated model search; larger ones the
/// minibatch recipe (a search would take minutes, and big tables leave less to choose).
constexpr int64_t kQuickSearchMaxRows = 20000;
/// The quick path's split, search and weight seed when --seed is not given.
constexpr int64_t kQuickPathSeed = 42;

/// The quick path's plan: the config to train, and the model search that chose it (null when
/// there was none).
struct QuickPlan {
  Json config;
  Json search;
};

/// The quick path: the CSV prepared with defaults and an 80/20 split (stratified by class), then
///  - up to kQuickSearchMaxRows training rows: the model chosen among linear models and MLPs by
///    k-fold cross-validation on the training rows only (train::search_table_model), refitted on
///    all of them with full-batch L-BFGS;
///  - more rows, or --model NAME: that zoo model (default mlp 64-32) with AdamW + one-cycle.
/// There is no validation split: the search does the choosing, so nothing needs early stopping.
Expected<QuickPlan> quick_config(const TrainArgs& a) {
  KILN_ASSIGN_OR_RETURN(data::DatasetSpec spec,
                        data::resolve_dataset(a.data, a.target, a.categorical, a.target_encoded));
  if (spec.kind != data::DatasetKind::kTable)
    return Status::InvalidArgument("--data: the quick path takes a CSV file");
  spec.split.train = 0.8;
  spec.split.val = 0.0;
  spec.split.test = 0.2;
  const int64_t seed = a.split_seed >= 0 ? a.split_seed : kQuickPathSeed;
  spec.split.seed = static_cast<uint64_t>(seed);
  KILN_ASSIGN_OR_RETURN(
      data::PrepareResult prepared,
      data::prepare_dataset(spec, data::PrepareOptions(kiln_home() / "snapshots")));
  const Json& m = prepared.manifest;
  const std::string task = m["task"].get<std::string>();
  const bool classification = task == "classification";
  const int64_t rows = m["splits"]["train"]["rows"].get<int64_t>();
  const int64_t test_rows =
      m["splits"].contains("test") ? m["splits"]["test"].value("rows", int64_t{0}) : 0;
  std::fprintf(stderr, "quick path: %s task, %lld training rows, %lld test rows, snapshot %s\n",
               task.c_str(), static_cast<long long>(rows), static_cast<long long>(test_rows),
               prepared.snapshot_dir.c_str());
  if (test_rows == 0)
    std::fprintf(stderr,
                 "quick path: %lld rows leave none for a test split: the bundle will have no "
                 "test metrics\n",
                 static_cast<long long>(rows));
  QuickPlan plan;
  plan.config = {{"data", prepared.snapshot_dir.string()}, {"seed", seed}};
  if (a.model != "auto" || rows > kQuickSearchMaxRows) {
    const std::string zoo = a.model == "auto" ? "mlp" : a.model;
    Json model = zoo == "mlp" ? Json{{"zoo", "mlp"}, {"hidden", {64, 32}}, {"dropout", 0.1}}
                              : Json{{"zoo", zoo}};
    plan.config.update({{"model", model},
                        {"optimizer", {{"name", "adamw"}, {"lr", 3e-3}, {"weight_decay", 1e-4}}},
                        {"schedule", {{"name", "one_cycle"}, {"max_lr", 1e-2}}},
                        {"batch_size", rows >= 2048 ? 128 : 32},
                        {"epochs", rows >= 20000 ? 10 : 60}});
    if (classification)
      plan.config["loss"] = {{"kind", "cross_entropy"}, {"label_smoothing", 0.05}};
    std::fprintf(stderr, "quick path: %s with AdamW, one-cycle, %lld epochs%s\n", zoo.c_str(),
                 static_cast<long long>(plan.config["epochs"].get<int64_t>()),
                 a.model == "auto" ? " (too many rows for a model search)" : "");
    return plan;
  }
  KILN_ASSIGN_OR_RETURN(data::Snapshot snapshot, data::read_snapshot(prepared.snapshot_dir));
  const data::SplitTensors& train = snapshot.splits.at("train");
  const int64_t classes =
      classification ? static_cast<int64_t>(m["schema"]["target"]["classes"].size()) : 1;
  Expected<train::TableSearchResult> search =
      train::search_table_model(train.x, train.y, task, classes,
                                train::TableSearchOptions().seed(static_cast<uint64_t>(seed)));
  train::TableCandidate choice;
  if (search.ok()) {
    plan.search = search->to_json();
    choice = search->choice();
    std::fprintf(stderr, "quick path: %lld-fold cross-validation on the training rows (%.1f s):\n",
                 static_cast<long long>(search->folds), search->seconds);
    for (size_t i = 0; i < search->scores.size(); ++i) {
      const auto& sc = search->scores[i];
      std::fprintf(stderr, "  %-8s weight_decay %-6g %s %.4f +- %.4f%s\n",
                   sc.candidate.name.c_str(), sc.candidate.weight_decay,
                   classification ? "accuracy" : "R2", sc.mean, sc.standard_error,
                   i == search->chosen ? "  <- chosen" : "");
    }
  } else {
    // Too few rows to cross-validate: the most regularised linear model, and why.
    choice = train::default_table_candidates().front();
    std::fprintf(stderr,
                 "quick path: %lld training rows: too few for cross-validation (%s); training a "
                 "%s model with weight_decay %g, no model search\n",
                 static_cast<long long>(rows), search.status().message().c_str(),
                 choice.name.c_str(), choice.weight_decay);
  }
  plan.config.update({{"model", choice.model_json()},
                      {"optimizer", choice.optimizer_json()},
                      {"batch_size", std::max<int64_t>(1, rows)},
                      {"epochs", choice.epochs}});
  return plan;
}

int run_train_resolved(const TrainArgs& a);

/// The signal that asked a single-process `kiln train` to stop (0: none). The run then
/// checkpoints at the next optimizer step and exits 128 + signal, resumable with --resume.
volatile std::sig_atomic_t g_stop_signal = 0;

/// The run directory a command line trains into (a fresh one under $KILN_HOME/runs by default).
fs::path run_dir(const TrainArgs& a) {
  return !a.resume.empty() ? fs::path(a.resume)
         : !a.out.empty()  ? fs::path(a.out)
                           : kiln_home() / "runs" /
                                ((a.config.empty() ? fs::path(a.data).stem().string()
                                                   : fs::path(a.config).stem().string()) +
                                 "-" + timestamp());
}

/// `--nproc N` / `--nnodes M`: this node's ranks as kiln-engine processes (train_launch.h).
int launch_data_parallel(const TrainArgs& a) {
  if (!a.data.empty())
    return report_failure(Status::InvalidArgument(
        "--nproc/--nnodes: the quick path (--data) picks its model by a search on one process; "
        "train a config (CONFIG.yaml) data-parallel"));
  if (a.node_rank < 0 || a.node_rank >= a.nnodes)
    return report_failure(Status::InvalidArgument("--node-rank " + std::to_string(a.node_rank) +
                                                  " is outside --nnodes " +
                                                  std::to_string(a.nnodes)));
  if (a.nnodes > 1 && a.master.find(':') == std::string::npos)
    return report_failure(Status::InvalidArgument(
        "--nnodes > 1 needs --master ADDR:PORT (rank 0's address, the same on every node)"));
  if (a.nnodes > 1 && a.out.empty() && a.resume.empty())
    return report_failure(Status::InvalidArgument(
        "--nnodes > 1 needs --out DIR (or --resume DIR) on a filesystem every node shares"));
  LaunchPlan plan;
  plan.nproc = a.nproc;
  plan.nnodes = a.nnodes;
  plan.node_rank = a.node_rank;
  plan.master = a.master;
  plan.max_restarts = a.max_restarts;
  plan.out = run_dir(a);
  return launch_ranks(plan, [&a, out = plan.out](bool restart) {
    std::vector<std::string> argv = {"kiln-engine", "train"};
    if (restart || !a.resume.empty()) {
      argv.insert(argv.end(), {"--resume", out.string()});
    } else {
      argv.insert(argv.end(), {a.config, "--out", out.string()});
      for (const std::string& s : a.set) argv.insert(argv.end(), {"--set", s});
      if (!a.init.empty()) argv.insert(argv.end(), {"--init", a.init});
      if (a.deterministic) argv.push_back("--deterministic");
      if (a.overwrite) argv.push_back("--overwrite");
    }
    if (a.json) argv.push_back("--json");
    return argv;
  });
}

int run_train(const TrainArgs& a) {
  if (a.config.empty() && a.data.empty() && a.resume.empty())
    return report_failure(
        Status::InvalidArgument("give a CONFIG.yaml, or --data FILE.csv --target COLUMN"));
  if (!a.config.empty() && !a.data.empty())
    return report_failure(Status::InvalidArgument("give either a CONFIG.yaml or --data, not both"));
  if (a.split_seed >= 0 && a.data.empty())
    return report_failure(Status::InvalidArgument(
        "--seed belongs to the quick path (--data FILE.csv); a config sets its seed with "
        "--set seed=N"));
  if (!a.categorical.empty() && a.data.empty())
    return report_failure(Status::InvalidArgument(
        "--categorical belongs to the quick path (--data FILE.csv); a config's dataset spec "
        "lists them under categories.columns"));
  if (!a.target_encoded.empty() && a.data.empty())
    return report_failure(Status::InvalidArgument(
        "--target-encode belongs to the quick path (--data FILE.csv); a config's dataset spec "
        "lists them under categories.target_encode"));
  if (a.nproc < 1 || a.nnodes < 1)
    return report_failure(Status::InvalidArgument("--nproc and --nnodes must be at least 1"));
  TrainArgs args = a;
  if (!a.device.empty()) {
    if (Status s = model::check_device_name(a.device, "--device"); !s.ok())
      return report_failure(s);
    args.set.push_back("device=" + a.device);
  }
  if (a.nproc > 1 || a.nnodes > 1) {
    if (const char* w = std::getenv("WORLD_SIZE"); w && std::atoi(w) > 1)
      return report_failure(Status::InvalidArgument(
          "--nproc/--nnodes inside a launched rank (WORLD_SIZE is set): give one or the other"));
    return launch_data_parallel(args);
  }
  if (a.deterministic) args.set.push_back("deterministic=true");
  return run_train_resolved(args);
}

int run_train_resolved(const TrainArgs& a) {
  fs::path out = run_dir(a);
  // A rank of a data-parallel job (torchrun's environment, or `--nproc`'s launcher).
  Expected<train::DistributedSettings> dist = train::distributed_settings_from_env();
  if (!dist.ok()) return report_failure(dist.status());
  const bool leader = dist->rank == 0;
  if (dist->world_size > 1 && a.resume.empty() && a.out.empty())
    return report_failure(Status::InvalidArgument(
        "a data-parallel rank needs --out DIR (the run directory every rank shares)"));
  if (dist->world_size <= 1) {
    // SIGINT / SIGTERM (Ctrl-C, a pod's termination, a pruner): stop at the next optimizer step
    // with a checkpoint instead of losing the epoch; a second signal ends the process at once.
    // (Ranks of a data-parallel job keep the default: their launcher stops and restarts them.)
    for (int sig : {SIGINT, SIGTERM})
      std::signal(sig, [](int received) {
        if (g_stop_signal != 0) std::_Exit(128 + received);
        g_stop_signal = received;
      });
  }
  if (!a.resume.empty() && !a.out.empty() && fs::path(a.out) != fs::path(a.resume))
    return report_failure(
        Status::InvalidArgument("--resume DIR continues in DIR; drop --out or make it DIR"));

  // How the run was asked for, so `--resume DIR` alone can rebuild the same config.
  Json invocation;
  std::string config_path = a.config;
  std::vector<std::string> overrides = a.set;
  if (!a.init.empty()) overrides.push_back("init=" + a.init);
  if (!a.resume.empty() && config_path.empty() && a.data.empty()) {
    Expected<Json> saved = read_json_file(out / "invocation.json");
    if (!saved.ok())
      return report_failure(
          Status::NotFound(a.resume + ": no run to resume (" + saved.status().message() + ")"));
    invocation = *saved;
  }

  Expected<train::TrainConfig> config = Status::Internal("unset");
  if (!invocation.is_null()) {
    if (invocation.contains("config_json")) {
      // The quick path saved its whole config: --set, --device and --deterministic go on top,
      // as they go after a config file's saved --set (the trainer refuses what a resume may
      // not change).
      const std::string saved_at = (out / "invocation.json").string();
      Json saved_config = invocation["config_json"];
      config = train::parse_train_config(saved_config, {}, saved_at);
      if (config.ok() && !overrides.empty()) {
        for (const auto& s : overrides) {
          Status st = train::apply_override(&saved_config, s);
          if (!st.ok()) return report_failure(st);
        }
        // The saved config parsed: what fails now is a flag's.
        config = train::parse_train_config(saved_config, {}, "--set on " + saved_at);
      }
    } else {
      std::vector<std::string> saved_set = invocation.value("set", std::vector<std::string>{});
      saved_set.insert(saved_set.end(), overrides.begin(), overrides.end());
      config = train::load_train_config(invocation["config"].get<std::string>(), saved_set);
      overrides = saved_set;
    }
  } else if (!a.data.empty()) {
    Expected<QuickPlan> plan = quick_config(a);
    if (!plan.ok()) return report_failure(plan.status());
    for (const auto& s : overrides) {
      Status st = train::apply_override(&plan->config, s);
      if (!st.ok()) return report_failure(st);
    }
    invocation = {{"config_json", plan->config}};
    if (!plan->search.is_null()) invocation["model_search"] = plan->search;
    config = train::parse_train_config(plan->config, {}, "quick path");
  } else {
    config = train::load_train_config(config_path, overrides);
    invocation = {{"config", fs::absolute(config_path).string()}, {"set", overrides}};
  }
  if (!config.ok()) return report_failure(config.status());

  if (a.resume.empty() && leader) {
    std::error_code ec;
    fs::create_directories(out, ec);
    Status st = write_json_file_atomic(out / "invocation.json", invocation);
    if (!st.ok()) return report_failure(st);
  }
  train::TrainOptions options(out);
  options.resume(!a.resume.empty()).overwrite(a.overwrite);
  options.snapshot_dir(kiln_home() / "snapshots");
  std::unique_ptr<train::DistributedContext> context;
  if (dist->world_size > 1) {
    Expected<std::unique_ptr<train::DistributedContext>> joined =
        train::DistributedContext::Join(*dist);
    if (!joined.ok()) return report_failure(joined.status());
    context = std::move(*joined);
    options.distributed(context.get());
  }
  if (!context) options.stop_requested([] { return g_stop_signal != 0; });
  Expected<train::TrainResult> result = train::train(*config, options);
  if (!result.ok()) return report_failure(result.status());
  const train::TrainResult& r = *result;
  if (r.interrupted && g_stop_signal != 0) {
    std::fprintf(stderr,
                 "kiln train: stopped by signal %d at step %lld (epoch %lld); checkpoint saved. "
                 "Continue with: kiln train --resume %s\n",
                 static_cast<int>(g_stop_signal), static_cast<long long>(r.steps),
                 static_cast<long long>(r.epochs + 1), r.out_dir.string().c_str());
    return 128 + g_stop_signal;
  }
  if (!leader) return 0;  // rank 0 reports the run
  Json summary = {{"out", r.out_dir.string()},
                  {"bundle", r.bundle_dir.string()},
                  {"epochs", r.epochs},
                  {"steps", r.steps},
                  {"precision", r.precision},
                  {"seconds", r.seconds},
                  {"stopped_early", r.stopped_early},
                  {"test_metrics", r.test_metrics},
                  {"val_metrics", r.val_metrics},
                  {"config_hash", r.config_hash},
                  {"snapshot_hash", r.snapshot_hash}};
  if (r.world_size > 1)
    summary["distributed"] = {{"world_size", r.world_size},
                              {"allreduce_seconds_rank0", r.allreduce_seconds},
                              {"allreduce_calls_rank0", r.allreduce_calls}};
  if (invocation.contains("model_search")) summary["model_search"] = invocation["model_search"];
  if (a.json) {
    std::cout << summary.dump(2) << "\n";
  } else {
    std::cout << "run " << r.out_dir.string() << "\n";
    if (!r.bundle_dir.empty()) std::cout << "bundle " << r.bundle_dir.string() << "\n";
    if (r.test_metrics.is_object()) {
      for (const char* key : {"accuracy", "macro_f1", "ece", "mse", "mae", "r2"})
        if (r.test_metrics.contains(key))
          std::cout << "test " << key << " " << r.test_metrics[key].get<double>() << "\n";
    }
  }
  return 0;
}

// ---------------------------------------------------------------------------------------------
// kiln eval

struct EvalArgs {
  std::string bundle;
  std::string data;
  std::string split = "test";
  std::string report;
  std::string device = "auto";
  bool json = false;
};

// The bundle's model.pt (as served and exported) on the device --device names.
Expected<torch::jit::Module> load_module_on(const model::Bundle& bundle, const std::string& ref,
                                            const std::string& device_flag) {
  KILN_ASSIGN_OR_RETURN(const torch::Device device, model::resolve_device(device_flag, "--device"));
  KILN_ASSIGN_OR_RETURN(torch::jit::Module module, model::load_bundle_module(bundle));
  KILN_RETURN_IF_ERROR(model::place_module(module, device, ref));
  return module;
}

int run_eval(const EvalArgs& a) {
  Expected<model::Bundle> bundle = read_model_ref(a.bundle);
  if (!bundle.ok()) return report_failure(bundle.status());
  const std::string task = bundle->task();
  if (task != "classification" && task != "regression")
    return report_failure(Status::InvalidArgument(
        a.bundle + ": a '" + task +
        "' TorchScript bundle has no task or labels to evaluate against (push it with --labels "
        "to make it a classifier)"));
  Expected<train::RawInputs> in = train::read_labelled_rows(*bundle, a.data, a.split);
  if (!in.ok()) return report_failure(in.status());
  const data::SplitTensors rows{in->x, in->targets, {}};
  const std::string ext = fs::path(a.data).extension().string();
  // The bundle's own module (model.pt, as served and exported) on raw inputs.
  Expected<torch::jit::Module> module = load_module_on(*bundle, a.bundle, a.device);
  if (!module.ok()) return report_failure(module.status());
  const torch::Device device = model::module_device(*module);
  train::EvalOptions options(task);
  options.labels(bundle->labels()).scale_uint8(false);
  Expected<Json> metrics = train::evaluate(
      [&](const torch::Tensor& x) {
        return module->forward({x.to(device)}).toTensor().to(torch::kCPU);
      },
      rows, options);
  if (!metrics.ok()) return report_failure(metrics.status());
  Json report = *metrics;
  report["bundle"] = a.bundle;
  report["data"] = a.data;
  if (ext != ".csv") report["split"] = a.split;
  if (!a.report.empty()) {
    Status st = write_json_file_atomic(a.report, report);
    if (!st.ok()) return report_failure(st);
  }
  if (a.json) {
    std::cout << report.dump(2) << "\n";
  } else {
    for (const char* key : {"accuracy", "macro_f1", "ece", "mse", "mae", "r2"})
      if (report.contains(key)) std::cout << key << " " << report[key].get<double>() << "\n";
  }
  return 0;
}

// ---------------------------------------------------------------------------------------------
// kiln predict

struct PredictArgs {
  std::string bundle;
  std::string input;
  std::string output;
  std::string device = "auto";
  bool json = false;
};

int run_predict(const PredictArgs& a) {
  Expected<model::Bundle> bundle = read_model_ref(a.bundle);
  if (!bundle.ok()) return report_failure(bundle.status());
  Expected<RawInputs> in = read_raw_inputs(*bundle, a.input, /*want_targets=*/false);
  if (!in.ok()) return report_failure(in.status());
  Expected<torch::jit::Module> module = load_module_on(*bundle, a.bundle, a.device);
  if (!module.ok()) return report_failure(module.status());
  // The gate serving applies: no Infinity, and NaN only where an imputer fills it in.
  Status values = model::check_input_values(in->x.data_ptr<float>(), in->x.size(0),
                                            in->x.size(0) > 0 ? in->x[0].numel() : 0,
                                            model::accepts_missing_values(bundle->preprocessing()));
  if (!values.ok()) return report_failure(values.with_context(a.input));
  Expected<torch::Tensor> out = run_module(*module, in->x);
  if (!out.ok()) return report_failure(out.status());
  const std::vector<std::string> labels = bundle->labels();
  const bool classification = bundle->task() == "classification" && !labels.empty();
  std::ostringstream text;
  Json rows = Json::array();
  if (classification) {
    torch::Tensor probs = torch::softmax(out->to(torch::kFloat64), 1);
    torch::Tensor pred = probs.argmax(1);
    text << "row,prediction";
    for (const auto& l : labels) text << ",prob_" << l;
    text << "\n";
    auto pa = probs.accessor<double, 2>();
    auto ia = pred.accessor<int64_t, 1>();
    for (int64_t i = 0; i < probs.size(0); ++i) {
      const std::string& label = labels[static_cast<size_t>(ia[i])];
      text << i << "," << label;
      Json p = Json::object();
      for (size_t c = 0; c < labels.size(); ++c) {
        char buf[32];
        std::snprintf(buf, sizeof buf, "%.6g", pa[i][static_cast<int64_t>(c)]);
        text << "," << buf;
        p[labels[c]] = pa[i][static_cast<int64_t>(c)];
      }
      text << "\n";
      rows.push_back({{"row", i}, {"prediction", label}, {"probabilities", p}});
    }
  } else if (bundle->task() == model::kCustomTask && out->dim() > 1 && out->size(1) > 1) {
    // A custom model's outputs, uninterpreted: one row of values per input.
    torch::Tensor values = out->reshape({out->size(0), -1}).to(torch::kFloat64);
    auto va = values.accessor<double, 2>();
    text << "row,outputs\n";
    for (int64_t i = 0; i < values.size(0); ++i) {
      Json row = Json::array();
      text << i;
      for (int64_t j = 0; j < values.size(1); ++j) {
        char buf[32];
        std::snprintf(buf, sizeof buf, "%.9g", va[i][j]);
        text << "," << buf;
        row.push_back(va[i][j]);
      }
      text << "\n";
      rows.push_back({{"row", i}, {"outputs", row}});
    }
  } else {
    torch::Tensor pred = out->reshape({-1}).to(torch::kFloat64);
    auto pa = pred.accessor<double, 1>();
    text << "row,prediction\n";
    for (int64_t i = 0; i < pred.size(0); ++i) {
      char buf[32];
      std::snprintf(buf, sizeof buf, "%.9g", pa[i]);
      text << i << "," << buf << "\n";
      rows.push_back({{"row", i}, {"prediction", pa[i]}});
    }
  }
  std::string body = a.json ? rows.dump(2) + "\n" : text.str();
  if (!a.output.empty()) {
    Status st = write_file_atomic(a.output, body);
    if (!st.ok()) return report_failure(st);
    std::fprintf(stderr, "wrote %lld predictions to %s\n", static_cast<long long>(rows.size()),
                 a.output.c_str());
  } else {
    std::cout << body;
  }
  return 0;
}

// ---------------------------------------------------------------------------------------------
// kiln export

struct ExportArgs {
  std::string bundle;
  std::string format = "torchscript";
  std::string out;
  int64_t opset = interop::kOnnxMaxOpset;
  bool json = false;
};

int run_export(const ExportArgs& a) {
  if (a.format != "torchscript" && a.format != "onnx")
    return report_failure(Status::InvalidArgument("--format: '" + a.format +
                                                  "' is not supported (torchscript, onnx)"));
  Expected<model::Bundle> bundle = read_model_ref(a.bundle);  // verifies every sha256
  if (!bundle.ok()) return report_failure(bundle.status());
  if (a.format == "onnx") {
    interop::OnnxExportOptions options;
    options.opset = a.opset;
    Expected<interop::OnnxModel> onnx = interop::export_bundle_onnx(*bundle, options);
    if (!onnx.ok()) return report_failure(onnx.status());
    if (Status st = write_file_atomic(a.out, onnx->bytes); !st.ok()) return report_failure(st);
    Json summary = onnx->summary;
    summary["path"] = a.out;
    if (a.json) {
      std::cout << summary.dump(2) << "\n";
    } else {
      std::cout << "wrote " << a.out << " (ONNX opset " << summary["opset"].dump() << ", "
                << summary["nodes"].dump() << " nodes, " << summary["parameters"].dump()
                << " parameters; input " << summary["input"]["name"].get<std::string>()
                << summary["input"]["shape"].dump() << " raw values, output "
                << summary["output"]["name"].get<std::string>() << summary["output"]["shape"].dump()
                << "; preprocessing and test-time augmentation folded in; checked with onnx's "
                   "checker and strict shape inference)\n";
    }
    return 0;
  }
  Expected<std::string> bytes = read_file(bundle->file(model::kBundleModuleFile));
  if (!bytes.ok()) return report_failure(bytes.status());
  Status st = write_file_atomic(a.out, *bytes);
  if (!st.ok()) return report_failure(st);
  std::cout << "wrote " << a.out << " (TorchScript; input "
            << bundle->manifest["signature"]["inputs"][0].dump()
            << ", raw values, preprocessing folded in)\n";
  return 0;
}

}  // namespace

void register_train_commands(CLI::App& app, int* exit_code) {
  auto ta = std::make_shared<TrainArgs>();
  CLI::App* train = app.add_subcommand("train", kTrainHelp);
  train->add_option("config", ta->config, "training config (.yaml)");
  add_flag(*train, Flag::kOut, &ta->out)
      ->description("run directory (default $KILN_HOME/runs/<name>-<time>)");
  train->add_option("--resume", ta->resume, "continue the interrupted run in this directory");
  train->add_option("--set", ta->set,
                    "override a config value, e.g. --set epochs=3 --set optimizer.lr=0.01");
  train->add_option("--init", ta->init,
                    "fine-tune: start from a model's weights (NAME@VERSION, NAME@ALIAS or a bundle "
                    "directory), matched by name and shape; a changed head starts fresh (same as "
                    "--set init=REF; freeze: and param_groups: in the config)");
  train->add_option("--data", ta->data, "quick path: a CSV file (with --target)");
  add_flag(*train, Flag::kTarget, &ta->target);
  add_flag(*train, Flag::kCategorical, &ta->categorical)
      ->description(
          "quick path: a column of number codes to one-hot encode as categories, e.g. "
          "--categorical sex (repeatable)");
  add_flag(*train, Flag::kTargetEncode, &ta->target_encoded)
      ->description(
          "quick path: a categorical column (text or number codes) to target-encode, e.g. "
          "--target-encode zip (repeatable)");
  train
      ->add_option("--model", ta->model,
                   "quick path: auto (a linear model or MLP chosen by cross-validation on the "
                   "training rows), or a zoo model (mlp, cnn-small, resnet-small)")
      ->default_str("auto");
  add_flag(*train, Flag::kSeed, &ta->split_seed)
      ->description("quick path: seed of the 80/20 split, the model search and the weights")
      ->default_str(std::to_string(kQuickPathSeed));
  train->add_flag("--overwrite", ta->overwrite,
                  "start afresh in a run directory that holds a checkpoint");
  train->add_flag("--deterministic", ta->deterministic,
                  "deterministic algorithms: a seeded run repeats bit for bit (same as --set "
                  "deterministic=true)");
  add_flag(*train, Flag::kJson, &ta->json);
  add_flag(*train, Flag::kDevice, &ta->device)
      ->description(
          "where to train (same as --set device=NAME; default: the config's device:, auto): "
          "auto, cpu, cuda or cuda:N");
  train
      ->add_option("--nproc", ta->nproc,
                   "data-parallel: ranks on this machine (processes; threads = cores / N), "
                   "gradients averaged with Gloo")
      ->default_val(1);
  train->add_option("--nnodes", ta->nnodes, "data-parallel: machines in the job")->default_val(1);
  train->add_option("--node-rank", ta->node_rank, "data-parallel: this machine (0..nnodes-1)")
      ->default_val(0);
  train->add_option("--master", ta->master,
                    "data-parallel: ADDR:PORT of rank 0's rendezvous (default: this machine, a "
                    "free port)");
  train
      ->add_option("--max-restarts", ta->max_restarts,
                   "data-parallel: restarts of the whole job from its last checkpoint when a "
                   "rank dies")
      ->default_val(3);
  train->callback([ta, exit_code] { *exit_code = run_train(*ta); });

  auto ea = std::make_shared<EvalArgs>();
  CLI::App* eval = app.add_subcommand("eval", kEvalHelp);
  eval->add_option("bundle", ea->bundle, "bundle directory, NAME@VERSION or NAME@ALIAS")
      ->required();
  eval->add_option("--data", ea->data, "dataset spec (.yaml), snapshot directory or CSV")
      ->required();
  eval->add_option("--split", ea->split, "split of a spec or snapshot")->default_str("test");
  add_flag(*eval, Flag::kReport, &ea->report);
  add_flag(*eval, Flag::kJson, &ea->json);
  add_flag(*eval, Flag::kDevice, &ea->device);
  eval->callback([ea, exit_code] { *exit_code = run_eval(*ea); });

  auto pa = std::make_shared<PredictArgs>();
  CLI::App* predict = app.add_subcommand("predict", kPredictHelp);
  predict->add_option("bundle", pa->bundle, "bundle directory, NAME@VERSION or NAME@ALIAS")
      ->required();
  predict
      ->add_option("--input", pa->input, "raw inputs: .csv rows, IDX images (.gz or raw) or .npy")
      ->required();
  predict->add_option("--output", pa->output, "write predictions here (CSV, or JSON with --json)");
  add_flag(*predict, Flag::kJson, &pa->json);
  add_flag(*predict, Flag::kDevice, &pa->device);
  predict->callback([pa, exit_code] { *exit_code = run_predict(*pa); });

  auto xa = std::make_shared<ExportArgs>();
  CLI::App* exp = app.add_subcommand("export", kExportHelp);
  exp->add_option("bundle", xa->bundle, "bundle directory, NAME@VERSION or NAME@ALIAS")->required();
  exp->add_option("--format", xa->format,
                  "torchscript (model.pt as is) or onnx (a graph built from the model spec and "
                  "weights: ONNX Runtime, TensorRT, OpenVINO)")
      ->default_str("torchscript");
  exp->add_option("--opset", xa->opset, "ONNX opset")
      ->default_val(interop::kOnnxMaxOpset)
      ->check(CLI::Range(interop::kOnnxMinOpset, interop::kOnnxMaxOpset));
  add_flag(*exp, Flag::kOut, &xa->out)->required();
  add_flag(*exp, Flag::kJson, &xa->json);
  exp->callback([xa, exit_code] { *exit_code = run_export(*xa); });
}

}  // namespace kiln::cli
