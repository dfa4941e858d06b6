// The only main(): `kiln <stage> <verb> [args]`.
#include <torch/torch.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <iostream>

#include "kiln/cli/commands.h"
#include "kiln/cli/flags.h"
#include "kiln/core/logging.h"
#include "kiln/core/threads.h"
#include "kiln/core/version.h"

int main(int argc, char** argv) {
  kiln::configure_allocator_for_tensors();
  kiln::init_logging("info");
  CLI::App app{"Kiln: one native toolkit from raw data to a monitored production endpoint.",
               "kiln"};
  app.set_version_flag("--version,-V",
                       std::string("kiln ") + kiln::kVersion +
                           (*kiln::kGitCommit ? std::string(" (") + kiln::kGitCommit + ")" : ""));
  app.require_subcommand(1);
  app.footer(
      "Run 'kiln <stage> --help' for a stage's verbs. KILN_HOME (default ~/.kiln) holds what Kiln "
      "stores.");

  int threads = 0;
  kiln::cli::add_flag(app, kiln::cli::Flag::kThreads, &threads)->check(CLI::NonNegativeNumber);
  app.parse_complete_callback([&threads] {
    torch::set_num_threads(threads > 0 ? threads : kiln::default_intra_op_threads());
  });

  int exit_code = 0;
  kiln::cli::register_data_commands(app, &exit_code);
  kiln::cli::register_model_commands(app, &exit_code);
  kiln::cli::register_train_commands(app, &exit_code);
  kiln::cli::register_registry_commands(app, &exit_code);
  kiln::cli::register_serve_commands(app, &exit_code);
  kiln::cli::register_tune_commands(app, &exit_code);

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    // Usage errors: one line naming the command and the cause, exit 2.
    std::string command = "kiln";
    for (CLI::App* sub = &app;;) {
      auto parsed = sub->get_subcommands();
      if (parsed.empty()) break;
      sub = parsed.front();
      command += " " + sub->get_name();
    }
    std::fprintf(stderr, "%s: error: %s (see '%s --help')\n", command.c_str(), e.what(),
                 command.c_str());
    return 2;
  }
  return exit_code;
}
