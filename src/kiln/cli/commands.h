#pragma once

#include <CLI/CLI.hpp>

namespace kiln::cli {

/// Each stage registers its verbs on the top-level app. A verb's callback stores its exit code
/// in *exit_code (0 ok, 1 work failed, 2 bad input).
void register_data_commands(CLI::App& app, int* exit_code);
void register_model_commands(CLI::App& app, int* exit_code);

}  // namespace kiln::cli
