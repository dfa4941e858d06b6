#pragma once

#include <CLI/CLI.hpp>

#include "kiln/core/status.h"

namespace kiln::cli {

/// Each stage registers its verbs on the top-level app. A verb's callback stores its exit code
/// in *exit_code (0 ok, 1 work failed, 2 bad input).
void register_data_commands(CLI::App& app, int* exit_code);
void register_model_commands(CLI::App& app, int* exit_code);
void register_train_commands(CLI::App& app, int* exit_code);
void register_registry_commands(CLI::App& app, int* exit_code);
void register_serve_commands(CLI::App& app, int* exit_code);
void register_tune_commands(CLI::App& app, int* exit_code);

/// Prints "kiln: error: <message>" on stderr and returns the exit code for the status.
int report_failure(const Status& status);

}  // namespace kiln::cli
