// The command tree both binaries share: parsing, usage errors, --version, --threads, and the
// hand-off from the torch-free front (`kiln`) to `kiln-engine`.
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>

#include "kiln/cli/commands.h"
#include "kiln/cli/flags.h"
#include "kiln/core/version.h"

namespace kiln::cli {
namespace {

namespace fs = std::filesystem;

char** g_argv = nullptr;  // this process's command line, for hand_off_to_engine()

}  // namespace

EngineHooks& engine_hooks() {
  static EngineHooks hooks;
  return hooks;
}

int hand_off_to_engine() {
  std::error_code ec;
  const fs::path self = fs::read_symlink("/proc/self/exe", ec);
  const fs::path engine = (ec ? fs::path(".") : self.parent_path()) / "kiln-engine";
  std::fflush(nullptr);
  if (g_argv != nullptr) {
    ::execv(engine.c_str(), g_argv);  // returns only on failure
  } else {
    errno = EINVAL;
  }
  std::fprintf(stderr,
               "kiln: error: cannot run %s: %s (it is built beside kiln and runs every "
               "verb that uses LibTorch)\n",
               engine.c_str(), std::strerror(errno));
  return 1;
}

CLI::App* add_engine_verb(CLI::App& parent, const std::string& name, const std::string& description,
                          int* exit_code) {
  CLI::App* verb = parent.add_subcommand(name, description);
  verb->prefix_command();  // everything after the name is kiln-engine's to parse
  verb->allow_extras();
  verb->set_help_flag();  // `kiln train --help`: kiln-engine prints the verb's own help
  verb->callback([exit_code] { *exit_code = hand_off_to_engine(); });
  return verb;
}

CLI::App* add_verb_subcommand(CLI::App& parent, const std::string& name,
                              const std::string& description) {
  CLI::App* sub = parent.add_subcommand(name, description);
  sub->prefix_command(false);
  sub->allow_extras(false);
  sub->set_help_flag("-h,--help", "Print this help message and exit");
  return sub;
}

int run_cli(int argc, char** argv, const std::function<void(CLI::App&, int*)>& register_commands,
            const std::function<void(int)>& set_threads) {
  g_argv = argv;
  CLI::App app{"Kiln: one native toolkit from raw data to a monitored production endpoint.",
               "kiln"};
  app.set_version_flag(
      "--version,-V",
      std::string("kiln ") + kVersion + (*kGitCommit ? std::string(" (") + kGitCommit + ")" : ""));
  app.require_subcommand(1);
  app.footer(
      "Run 'kiln <stage> --help' for a stage's verbs. KILN_HOME (default ~/.kiln) holds what Kiln "
      "stores.");

  int threads = 0;
  add_flag(app, Flag::kThreads, &threads)->check(CLI::NonNegativeNumber);
  if (set_threads) app.parse_complete_callback([&threads, &set_threads] { set_threads(threads); });

  int exit_code = 0;
  register_commands(app, &exit_code);

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

}  // namespace kiln::cli
