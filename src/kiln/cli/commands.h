#pragma once

// Kiln's command line is two binaries with one command tree. `kiln` (the front) links no LibTorch,
// so it starts in milliseconds: it runs the verbs that need no tensor itself (--help, --version,
// registry, tune show, data profile of a table) and hands every other command line, unchanged, to
// `kiln-engine` beside it (execv: same pid, same signals). `kiln-engine` registers every verb.

#include <CLI/CLI.hpp>
#include <filesystem>
#include <functional>

#include "kiln/core/expected.h"
#include "kiln/core/json.h"
#include "kiln/core/status.h"

namespace kiln::data {
struct DatasetSpec;
struct ProfileOptions;
}  // namespace kiln::data
namespace kiln::registry {
struct TorchScriptImport;
}  // namespace kiln::registry

namespace kiln::cli {

/// One-line descriptions of the verbs the front lists but kiln-engine runs (one place for both).
inline constexpr const char* kDataVerbsHelp = "Data stage: profile and prepare datasets";
inline constexpr const char* kDataPrepareHelp =
    "Clean, encode, split and scale a dataset into a content-addressed snapshot";
inline constexpr const char* kModelHelp = "Model stage: inspect model specs";
inline constexpr const char* kTrainHelp =
    "Train a model from a config (or a CSV via --data/--target) into a run directory and bundle";
inline constexpr const char* kEvalHelp = "Evaluate a bundle on a dataset spec, snapshot or CSV";
inline constexpr const char* kPredictHelp =
    "Predict from raw inputs (csv, idx, npy) through the bundle's own preprocessing";
inline constexpr const char* kExportHelp =
    "Export a bundle's model as TorchScript or ONNX (preprocessing folded in)";
inline constexpr const char* kServeHelp =
    "Serve models over HTTP: Open Inference Protocol v2 (KServe/Triton REST), dynamic batching, "
    "hot reload, Prometheus /metrics";
inline constexpr const char* kTestHelp =
    "Test a bundle before deploying it: a suite of model, smoke, boundary, invariance, "
    "integration, champion/challenger and latency checks (exit 0 all pass, 1 a check failed, "
    "2 bad input)";
inline constexpr const char* kLoadtestHelp =
    "Load-test an HTTP server (a URL, or `kiln serve` started on --model): open-loop constant "
    "rate with coordinated-omission-safe latency, or closed loop; percentiles, errors, "
    "timeline, --find-max under an SLO";
inline constexpr const char* kDeployHelp =
    "Run an inference cluster: `kiln serve` replicas behind nginx on a shared registry (up, "
    "status, roll one replica at a time without failing a request, down)";
inline constexpr const char* kRolloutHelp =
    "Progressive delivery on a `kiln serve` route: move weight to a candidate step by step, "
    "check its live error rate, p99 and accuracy each step, promote (move a registry alias) or "
    "roll back at the first failed check; resumable";
inline constexpr const char* kImproveHelp =
    "Continuous improvement: from labelled production rows (prediction log + feedback), train a "
    "challenger, beat the champion on held-out rows (McNemar), canary and promote it; triggers "
    "with a cool-down; `kiln improve history NAME`";
inline constexpr const char* kCompressHelp =
    "Compress a trained model into a new bundle (int8 static quantisation), with the new "
    "module's accuracy, size and speed beside its parent's";
inline constexpr const char* kDevicesHelp =
    "The devices Kiln can compute on here (what --device auto picks), with GPU names, memory "
    "and utilisation from the NVIDIA driver";
inline constexpr const char* kMonitorHelp =
    "Monitoring: data drift against a bundle's reference profile, Prometheus alert rules";
inline constexpr const char* kTuneHelp =
    "Hyperparameter study: `kiln tune CONFIG.yaml --space SPACE.yaml --trials N --workers W`, or "
    "any program with --objective-cmd; studies live in $KILN_HOME/studies.db and resume";

/// The torch-using functions that verbs shared by both binaries call. kiln-engine sets them at
/// start; in the front they stay null and such a verb calls hand_off_to_engine(). Set once
/// before parsing; read-only after.
struct EngineHooks {
  Expected<Json> (*profile_dataset)(const data::DatasetSpec&,
                                    const data::ProfileOptions&) = nullptr;
  Expected<std::filesystem::path> (*import_torchscript)(
      const std::filesystem::path& model_pt, const registry::TorchScriptImport&,
      const std::filesystem::path& out_dir) = nullptr;
};
EngineHooks& engine_hooks();

/// Runs kiln-engine (beside this binary) with this process's command line, replacing the
/// process. Returns only if that fails, with the exit code after printing why.
int hand_off_to_engine();

/// A subcommand parsed normally (its own --help, unknown flags refused) even under a verb made by
/// add_engine_verb, whose pass-through settings CLI11 would otherwise copy into it. For the
/// torch-free subcommands the front runs itself (`tune show`, `monitor rules`).
CLI::App* add_verb_subcommand(CLI::App& parent, const std::string& name,
                              const std::string& description);

/// A placeholder for a verb that kiln-engine runs: listed with `description`, it takes any
/// arguments (its own --help included) and hands the command line to kiln-engine.
CLI::App* add_engine_verb(CLI::App& parent, const std::string& name, const std::string& description,
                          int* exit_code);

/// Builds the command tree (`register_commands`), parses argv and runs the chosen verb; returns
/// the process exit code (0 ok, 1 work failed, 2 bad input). `set_threads` (may be null)
/// receives --threads after parsing (0: the default).
int run_cli(int argc, char** argv, const std::function<void(CLI::App&, int*)>& register_commands,
            const std::function<void(int)>& set_threads);

/// Each stage registers its verbs on the top-level app. A verb's callback stores its exit code
/// in *exit_code (0 ok, 1 work failed, 2 bad input). Returned: the stage's command, for verbs a
/// binary adds to it.
CLI::App* register_data_commands(CLI::App& app, int* exit_code);  // profile
void register_data_prepare_command(CLI::App& data, int* exit_code);
void register_model_commands(CLI::App& app, int* exit_code);
void register_train_commands(CLI::App& app, int* exit_code);  // train, eval, predict, export
void register_registry_commands(CLI::App& app, int* exit_code);
void register_serve_commands(CLI::App& app, int* exit_code);
void register_tune_commands(CLI::App& app, int* exit_code);
/// `loadtest` (torch-free: both binaries run it).
void register_loadtest_command(CLI::App& app, int* exit_code);
void register_test_command(CLI::App& app, int* exit_code);
/// `rollout ROUTE --server URL --candidate TARGET ...` (torch-free: both binaries run it).
void register_rollout_command(CLI::App& app, int* exit_code);
/// `pipeline run|status|show|dag` (torch-free: both binaries run it).
void register_pipeline_command(CLI::App& app, int* exit_code);
void register_deploy_command(CLI::App& app, int* exit_code);
/// `improve NAME ...` and `improve history NAME` (engine).
void register_improve_command(CLI::App& app, int* exit_code);
/// `compress REF ...` (engine).
void register_compress_command(CLI::App& app, int* exit_code);
/// `devices [--json]` (engine).
void register_devices_command(CLI::App& app, int* exit_code);
/// `monitor` with drift (engine) and rules; the front registers rules itself and hands drift on.
CLI::App* register_monitor_commands(CLI::App& app, int* exit_code);
CLI::App* register_monitor_rules_command(CLI::App& monitor, int* exit_code);
/// `tune show` under `tune`; returns it.
CLI::App* register_tune_show_command(CLI::App& tune, int* exit_code);

/// Prints "kiln: error: <message>" on stderr and returns the exit code for the status.
int report_failure(const Status& status);

}  // namespace kiln::cli
