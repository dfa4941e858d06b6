#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "kiln/core/expected.h"
#include "kiln/core/json.h"
#include "kiln/tune/pruner.h"
#include "kiln/tune/space.h"
#include "kiln/tune/storage.h"

namespace kiln::tune {

namespace fs = std::filesystem;

/// What `kiln tune` runs. Exactly one of `config` (training-config mode: each trial is a
/// `kiln train CONFIG --set name=value ... --out TRIALDIR` child) and `objective_cmd`
/// (black-box mode: `{name}` placeholders replaced, run with /bin/sh, objective read from the
/// last non-empty line of its stdout) is set.
///
///   TuneOptions o("study", space);
///   o.objective_cmd("python3 f.py {x}").trials(50).workers(2).maximize(false);
///   KILN_ASSIGN_OR_RETURN(TuneResult r, run_study(o));
struct TuneOptions {
  TuneOptions(std::string study, SearchSpace space)
      : study_(std::move(study)), space_(std::move(space)) {}
#define KILN_TUNE_SETTER(type, name) \
  TuneOptions& name(type v) {        \
    name##_ = std::move(v);          \
    return *this;                    \
  }
  KILN_TUNE_SETTER(std::string, config)
  KILN_TUNE_SETTER(std::vector<std::string>, overrides)
  KILN_TUNE_SETTER(std::string, objective_cmd)
  KILN_TUNE_SETTER(std::string, sampler)
  KILN_TUNE_SETTER(std::string, pruner)
  KILN_TUNE_SETTER(uint64_t, seed)
  KILN_TUNE_SETTER(int64_t, trials)
  KILN_TUNE_SETTER(int64_t, workers)
  KILN_TUNE_SETTER(double, timeout)
  KILN_TUNE_SETTER(bool, maximize)
  KILN_TUNE_SETTER(std::string, metric)
  KILN_TUNE_SETTER(AshaOptions, asha)
  KILN_TUNE_SETTER(fs::path, home)
  KILN_TUNE_SETTER(fs::path, kiln_binary)
  KILN_TUNE_SETTER(bool, quiet)
  KILN_TUNE_SETTER(std::string, keep_trials)
#undef KILN_TUNE_SETTER

  std::string study_;
  SearchSpace space_;
  std::string config_;
  std::vector<std::string> overrides_;  ///< extra `--set` for every trial (training mode)
  std::string objective_cmd_;
  std::string sampler_ = "tpe";
  std::string pruner_ = "none";
  uint64_t seed_ = 0;
  int64_t trials_ = 20;  ///< finished trials the study ends with (orphaned ones not counted)
  int64_t workers_ = 1;  ///< trials at once, each a separate process
  double timeout_ = 0;   ///< seconds after which no new trial starts; 0: none
  bool maximize_ = true;
  std::string metric_ = "val_accuracy";  ///< training mode: the metrics.jsonl field
  AshaOptions asha_;
  fs::path home_;         ///< KILN_HOME: studies.db and studies/<name>/trial-<n>/
  fs::path kiln_binary_;  ///< training mode: the `kiln` to run (default /proc/self/exe)
  bool quiet_ = false;
  /// all: every trial directory stays whole. best | none: once a trial is finished and is not
  /// the study's best (pruned, failed, or beaten), its training output is deleted
  /// (drop_trial_outputs); the best trial's stays, so --push and the user have its bundle.
  /// run_study treats none as best; the caller drops the best trial's output once it is done
  /// with it (`kiln tune --keep-trials none` does so after --push).
  std::string keep_trials_ = "best";
};

/// The study after run_study: its info and every trial.
struct TuneResult {
  StudyInfo study;
  std::vector<TrialRecord> trials;
  int64_t launched = 0;  ///< trials this run started
};

/// Checks every training-config parameter name against the config (each applied with a value
/// from its range, then the whole config validated): InvalidArgument naming the parameter.
Status validate_config_space(const std::string& config, const std::vector<std::string>& overrides,
                             const SearchSpace& space);

/// Runs (or resumes) the study until it holds `trials` finished trials. Blocks; spawns and reaps
/// child processes (SIGTERM to prune; they get SIGKILL if the tuner dies). A trial that crashes,
/// exits non-zero, is killed (OOM) or prints no number is recorded as failed and the study goes
/// on. Not thread-safe (one tuner per process).
Expected<TuneResult> run_study(const TuneOptions& options);

/// Deletes a trial's training output — everything in TRIAL_DIR/run (checkpoint, bundle) except
/// metrics.jsonl — keeping its logs and command (a few KB). Nothing to do in black-box mode.
/// Best effort (errors ignored); blocks (file I/O).
void drop_trial_outputs(const fs::path& trial_dir);


/// `{name}` placeholders of `cmd` replaced by value_text of the params (inactive ones by "").
std::string substitute(const std::string& cmd, const Json& params, const SearchSpace& space);

}  // namespace kiln::tune
