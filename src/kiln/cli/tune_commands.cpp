// `kiln tune`: hyperparameter studies over a training config or any command (kiln-engine);
// `kiln tune show` is in tune_show_command.cpp.

#include <cmath>
#include <cstdio>
#include <iostream>

#include "kiln/cli/commands.h"
#include "kiln/cli/flags.h"
#include "kiln/core/files.h"
#include "kiln/core/hash.h"
#include "kiln/model/device.h"
#include "kiln/registry/model_store.h"
#include "kiln/registry/ref.h"
#include "kiln/tune/report.h"
#include "kiln/tune/space.h"
#include "kiln/tune/storage.h"
#include "kiln/tune/study.h"

namespace kiln::cli {
namespace {

struct TuneArgs {
  std::string config;
  std::string space;
  std::vector<std::string> set;
  std::string device;  // --device: same as --set device=NAME
  int64_t trials = 20;
  int64_t workers = 1;
  std::string study;
  double timeout = 0;
  std::string push;
  std::string objective_cmd;
  std::string direction;
  std::string sampler = "tpe";
  std::string pruner = "none";
  int64_t seed = 0;
  std::string metric = "val_accuracy";
  int64_t reduction_factor = 4;
  int64_t min_resource = 1;
  bool json = false;
  std::string keep_trials = "best";
};

// Pushes the best trial's bundle to the registry, tagged with its study and trial; returns
// {"name", "version", "trial"} for the report.
Expected<Json> push_bundle(const fs::path& bundle, const std::string& name,
                           const std::string& study, int64_t trial) {
  KILN_RETURN_IF_ERROR(registry::validate_name(name).with_context("--push"));
  registry::PushRequest req(bundle, name);
  req.tag("tune_study", study).tag("tune_trial", std::to_string(trial));
  KILN_ASSIGN_OR_RETURN(auto store, registry::open_model_store());
  Expected<registry::VersionInfo> v = store->push(req);
  if (!v.ok()) return v.status().with_context("--push " + name);
  return Json{{"name", v->name}, {"version", v->version}, {"trial", trial}};
}

int run_tune(const TuneArgs& a) {
  const bool training = !a.config.empty();
  if (training == !a.objective_cmd.empty())
    return report_failure(Status::InvalidArgument(
        "give a training CONFIG.yaml or --objective-cmd 'CMD {param} ...', not both or neither"));
  if (a.space.empty())
    return report_failure(Status::InvalidArgument("--space SPACE.yaml is required"));
  if (!a.direction.empty() && a.direction != "minimize" && a.direction != "maximize")
    return report_failure(
        Status::InvalidArgument("--direction " + a.direction + ": expected minimize or maximize"));
  if (!training && a.direction.empty())
    return report_failure(
        Status::InvalidArgument("--direction minimize|maximize is required with --objective-cmd"));
  if (!training && !a.push.empty())
    return report_failure(Status::InvalidArgument("--push needs a training config"));
  if (!a.device.empty()) {
    if (!training)
      return report_failure(Status::InvalidArgument(
          "--device needs a training config (an --objective-cmd picks its own device)"));
    if (Status s = model::check_device_name(a.device, "--device"); !s.ok())
      return report_failure(s);
  }
  std::vector<std::string> overrides = a.set;
  if (!a.device.empty()) overrides.push_back("device=" + a.device);
  Expected<tune::SearchSpace> space = tune::load_space(a.space);
  if (!space.ok()) return report_failure(space.status());
  if (training) {
    Status st = tune::validate_config_space(a.config, overrides, *space);
    if (!st.ok()) return report_failure(st);
  } else {
    for (const auto& p : space->params)
      if (a.objective_cmd.find("{" + p.name + "}") == std::string::npos)
        std::fprintf(stderr, "tune: warning: --objective-cmd has no {%s} placeholder\n",
                     p.name.c_str());
  }
  bool maximize = true;
  if (!a.direction.empty())
    maximize = a.direction == "maximize";
  else
    maximize = !(a.metric == "val_loss" || a.metric == "val_mse" || a.metric == "val_mae" ||
                 a.metric == "train_loss");
  std::string name = a.study;
  if (name.empty()) {
    name = training
               ? fs::path(a.config).stem().string() + "-" + fs::path(a.space).stem().string()
               : fs::path(a.space).stem().string() + "-" + sha256_hex(a.objective_cmd).substr(0, 8);
  }
  for (char c : name)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.'))
      return report_failure(Status::InvalidArgument(
          "--study " + name + ": use letters, digits, '-', '_' and '.' only"));

  tune::AshaOptions asha;
  asha.min_resource = a.min_resource;
  asha.reduction_factor = a.reduction_factor;
  tune::TuneOptions o(name, *space);
  o.sampler(a.sampler)
      .pruner(a.pruner)
      .seed(static_cast<uint64_t>(a.seed))
      .trials(a.trials)
      .workers(a.workers)
      .timeout(a.timeout)
      .maximize(maximize)
      .metric(a.metric)
      .asha(asha)
      .keep_trials(a.keep_trials)
      .home(kiln_home());
  if (training)
    o.config(a.config).overrides(overrides);
  else
    o.objective_cmd(a.objective_cmd);
  Expected<tune::TuneResult> r = tune::run_study(o);
  if (!r.ok()) return report_failure(r.status());
  const tune::TrialRecord* best = tune::best_trial(r->trials, maximize);
  Json pushed;
  if (best && !a.push.empty()) {
    const fs::path bundle = fs::path(best->out_dir) / "run" / "bundle";
    Expected<Json> p = push_bundle(bundle, a.push, name, best->number);
    if (!p.ok()) return report_failure(p.status());
    pushed = std::move(*p);
    // --keep-trials none: the best trial's training output goes too, now that the registry
    // holds the bundle; only a kept bundle is reported by path.
    if (a.keep_trials != "none") pushed["bundle"] = bundle.string();
  }
  if (best && a.keep_trials == "none") tune::drop_trial_outputs(best->out_dir);
  if (a.json) {
    Json j = tune::study_json(r->study, r->trials);
    if (!pushed.is_null()) j["pushed"] = pushed;
    std::cout << j.dump(2) << "\n";
  } else {
    std::cout << "study " << name << ": " << r->trials.size() << " trials in "
              << (kiln_home() / "studies.db").string() << "\n";
    if (best)
      std::cout << "best trial " << best->number << " value " << tune::value_text(best->value)
                << " params " << best->params.dump() << "\n";
    // The kept bundle of the best trial (what a pipeline's tune stage hands downstream).
    if (best && a.keep_trials != "none" && training) {
      const fs::path bundle = fs::path(best->out_dir) / "run" / "bundle";
      std::error_code ec;
      if (fs::is_directory(bundle, ec)) std::cout << "best bundle " << bundle.string() << "\n";
    }
    if (!pushed.is_null())
      std::cout << "pushed trial " << best->number << " as " << a.push << "@"
                << pushed["version"].get<int64_t>() << "\n";
  }
  if (!best)
    return report_failure(Status::FailedPrecondition("no trial of study " + name + " completed"));
  return 0;
}

}  // namespace

void register_tune_commands(CLI::App& app, int* exit_code) {
  auto ta = std::make_shared<TuneArgs>();
  CLI::App* tune = app.add_subcommand("tune", kTuneHelp);
  tune->add_option("config", ta->config, "training config (.yaml)");
  add_flag(*tune, Flag::kSpace, &ta->space);
  add_flag(*tune, Flag::kDevice, &ta->device)
      ->description(
          "where every trial trains (same as --set device=NAME): auto, cpu, cuda or "
          "cuda:N; trials running at once share the device");
  tune->add_option("--set", ta->set, "override a config key for every trial: key.path=value");
  add_flag(*tune, Flag::kTrials, &ta->trials)->check(CLI::PositiveNumber);
  add_flag(*tune, Flag::kWorkers, &ta->workers)->check(CLI::PositiveNumber);
  add_flag(*tune, Flag::kStudy, &ta->study);
  add_flag(*tune, Flag::kTimeout, &ta->timeout)->check(CLI::NonNegativeNumber);
  add_flag(*tune, Flag::kPush, &ta->push);
  add_flag(*tune, Flag::kObjectiveCmd, &ta->objective_cmd);
  add_flag(*tune, Flag::kDirection, &ta->direction);
  add_flag(*tune, Flag::kSampler, &ta->sampler)->check(CLI::IsMember({"random", "grid", "tpe"}));
  add_flag(*tune, Flag::kPruner, &ta->pruner)->check(CLI::IsMember({"none", "median", "asha"}));
  add_flag(*tune, Flag::kSeed, &ta->seed);
  add_flag(*tune, Flag::kMetric, &ta->metric);
  add_flag(*tune, Flag::kReductionFactor, &ta->reduction_factor);
  add_flag(*tune, Flag::kMinResource, &ta->min_resource);
  add_flag(*tune, Flag::kJson, &ta->json);
  add_flag(*tune, Flag::kKeepTrials, &ta->keep_trials)
      ->check(CLI::IsMember({"all", "best", "none"}));

  CLI::App* show = register_tune_show_command(*tune, exit_code);
  tune->callback([ta, show, exit_code] {
    if (show->parsed()) return;
    *exit_code = run_tune(*ta);
  });
}

}  // namespace kiln::cli
