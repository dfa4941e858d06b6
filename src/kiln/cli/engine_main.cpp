// `kiln-engine`: every verb, LibTorch linked. Users run `kiln`, which hands these command lines
// over (see commands.h); running kiln-engine directly works the same.
#include <torch/torch.h>

#include "kiln/cli/commands.h"
#include "kiln/core/logging.h"
#include "kiln/core/threads.h"
#include "kiln/data/profile.h"
#include "kiln/model/export.h"
#include "kiln/registry/torchscript_import.h"

int main(int argc, char** argv) {
  kiln::configure_allocator_for_tensors();
  kiln::init_logging("info");
  // int8 bundles are packed for oneDNN and repacked with the current engine when loaded; this
  // build's default (QNNPACK) runs them 15x slower (docs/benchmarks.md). No-op without oneDNN.
  (void)kiln::model::use_onednn_quantized_engine();
  using namespace kiln::cli;
  engine_hooks().profile_dataset = &kiln::data::profile_dataset;
  engine_hooks().import_torchscript = &kiln::registry::import_torchscript;
  return run_cli(
      argc, argv,
      [](CLI::App& app, int* exit_code) {
        CLI::App* data = register_data_commands(app, exit_code);
        register_data_prepare_command(*data, exit_code);
        register_model_commands(app, exit_code);
        register_train_commands(app, exit_code);
        register_registry_commands(app, exit_code);
        register_loadtest_command(app, exit_code);
        register_rollout_command(app, exit_code);
        register_serve_commands(app, exit_code);
        register_tune_commands(app, exit_code);
        register_test_command(app, exit_code);
        register_pipeline_command(app, exit_code);
        register_deploy_command(app, exit_code);
        register_monitor_commands(app, exit_code);
        register_improve_command(app, exit_code);
        register_compress_command(app, exit_code);
        register_devices_command(app, exit_code);
      },
      [](int threads) {
        torch::set_num_threads(threads > 0 ? threads : kiln::default_intra_op_threads());
      });
}
