// `kiln`: the front binary. It links no LibTorch, so --help, --version, the registry, `tune show`
// and `data profile` of a table answer in milliseconds; every other verb is handed, command line
// unchanged, to kiln-engine (see commands.h).
#include "kiln/cli/commands.h"
#include "kiln/core/logging.h"

int main(int argc, char** argv) {
  kiln::init_logging("info");
  using namespace kiln::cli;
  return run_cli(
      argc, argv,
      [](CLI::App& app, int* exit_code) {
        CLI::App* data = register_data_commands(app, exit_code);
        add_engine_verb(*data, "prepare", kDataPrepareHelp, exit_code);
        add_engine_verb(app, "model", kModelHelp, exit_code);
        add_engine_verb(app, "train", kTrainHelp, exit_code);
        add_engine_verb(app, "eval", kEvalHelp, exit_code);
        add_engine_verb(app, "predict", kPredictHelp, exit_code);
        add_engine_verb(app, "export", kExportHelp, exit_code);
        register_registry_commands(app, exit_code);
        register_loadtest_command(app, exit_code);
        register_rollout_command(app, exit_code);
        add_engine_verb(app, "serve", kServeHelp, exit_code);
        add_engine_verb(app, "test", kTestHelp, exit_code);
        register_pipeline_command(app, exit_code);
        register_deploy_command(app, exit_code);
        add_engine_verb(app, "improve", kImproveHelp, exit_code);
        add_engine_verb(app, "compress", kCompressHelp, exit_code);
        add_engine_verb(app, "devices", kDevicesHelp, exit_code);
        // `monitor rules` runs here; `monitor drift` (tensors) goes to kiln-engine.
        CLI::App* monitor = add_engine_verb(app, "monitor", kMonitorHelp, exit_code);
        CLI::App* rules = register_monitor_rules_command(*monitor, exit_code);
        monitor->callback([monitor, rules, exit_code] {
          if (!rules->parsed() || !monitor->remaining().empty()) *exit_code = hand_off_to_engine();
        });
        // `tune show` runs here; `tune CONFIG ...` (a study) and `tune --help` go to kiln-engine.
        CLI::App* tune = add_engine_verb(app, "tune", kTuneHelp, exit_code);
        CLI::App* show = register_tune_show_command(*tune, exit_code);
        tune->callback([tune, show, exit_code] {
          if (!show->parsed() || !tune->remaining().empty()) *exit_code = hand_off_to_engine();
        });
      },
      nullptr);
}
