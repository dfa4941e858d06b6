// `kiln deploy up|status|roll|down CLUSTER.yaml` (issue 19): `kiln serve` replicas behind nginx
// on this machine, sharing the registry in $KILN_HOME. Torch-free: runs in the front.
#include <iostream>
#include <memory>

#include "kiln/cli/commands.h"
#include "kiln/cli/flags.h"
#include "kiln/core/files.h"
#include "kiln/deploy/cluster.h"
#include "kiln/loadtest/serve_process.h"

namespace kiln::cli {
namespace {

struct DeployArgs {
  std::string file;
  std::vector<std::string> models;  // roll: the new --model arguments
  bool json = false;
  bool dry_run = false;
};

deploy::DeployOptions deploy_options() {
  deploy::DeployOptions o;
  o.kiln_binary = loadtest::self_executable();
  o.home = kiln_home();
  return o;
}

int run_deploy(const std::string& verb, const DeployArgs& a) {
  Expected<deploy::ClusterSpec> spec = deploy::load_cluster_spec(a.file);
  if (!spec.ok()) return report_failure(spec.status());
  const deploy::DeployOptions options = deploy_options();
  std::ostream& log = a.json ? std::cerr : std::cout;
  if (verb == "up" && a.dry_run) {
    deploy::ClusterState preview;
    preview.name = spec->name;
    preview.host = spec->host;
    preview.port = spec->port;
    for (int i = 0; i < spec->replicas; ++i) preview.replicas.push_back({i, 0, 0, spec->models});
    std::cout << deploy::nginx_config(preview, deploy::cluster_dir(options, spec->name));
    return 0;
  }
  if (verb == "status") {
    Expected<Json> status = deploy::cluster_status(*spec, options);
    if (!status.ok()) return report_failure(status.status());
    if (a.json) {
      std::cout << status->dump(2) << "\n";
      return 0;
    }
    std::cout << "cluster " << (*status)["name"].get<std::string>() << " on "
              << (*status)["url"].get<std::string>() << ", nginx "
              << ((*status)["nginx"]["alive"].get<bool>() ? "running" : "NOT RUNNING") << "\n";
    for (const Json& r : (*status)["replicas"]) {
      std::cout << "  replica " << r["id"] << " port " << r["port"] << " pid " << r["pid"] << ": "
                << (r["ready"].get<bool>() ? "ready" : "NOT READY") << ",";
      for (const Json& m : r["models"])
        std::cout << " " << m["name"].get<std::string>() << " " << m["versions"].dump();
      std::cout << ", " << r["requests"].get<double>() << " requests\n";
    }
    return 0;
  }
  if (verb == "down") {
    Status st = deploy::cluster_down(*spec, options, log);
    return st.ok() ? 0 : report_failure(st);
  }
  Expected<deploy::ClusterState> state = verb == "up"
                                             ? deploy::cluster_up(*spec, options, log)
                                             : deploy::cluster_roll(*spec, options, a.models, log);
  if (!state.ok()) return report_failure(state.status());
  if (a.json) std::cout << state->to_json().dump(2) << "\n";
  return 0;
}

}  // namespace

void register_deploy_command(CLI::App& app, int* exit_code) {
  CLI::App* deploy = app.add_subcommand("deploy", kDeployHelp);
  deploy->require_subcommand(1);
  deploy->footer(
      "CLUSTER.yaml:\n  name: fmnist\n  port: 8080\n  replicas: 2\n  models: [fmnist@production]\n"
      "  serve_args: [--max-batch, \"32\"]\n"
      "State, nginx.conf and logs: $KILN_HOME/clusters/NAME/. Replicas serving NAME@ALIAS follow "
      "alias moves on their own (registry polling); `roll` replaces them one at a time in place "
      "(drain the old one with SIGTERM while nginx sends its traffic to the others, start the "
      "new one on its port, wait until it is ready).");
  for (const char* verb : {"up", "status", "roll", "down"}) {
    auto a = std::make_shared<DeployArgs>();
    const std::string v = verb;
    CLI::App* c = deploy->add_subcommand(
        v, v == "up"       ? "start the replicas, wait until each is ready, start nginx in front"
           : v == "status" ? "each replica's health, models, versions and request count"
           : v == "roll"   ? "replace the replicas one at a time (new models or a new kiln), "
                             "without failing a request"
                           : "stop nginx and the replicas");
    c->add_option("cluster", a->file, "cluster file (.yaml)")->required();
    if (v == "roll")
      c->add_option("--model", a->models,
                    "the models the new replicas serve (repeatable; default: the file's)");
    if (v == "up")
      c->add_flag("--dry-run", a->dry_run, "print the nginx.conf it would write and start nothing");
    add_flag(*c, Flag::kJson, &a->json);
    c->callback([a, v, exit_code] { *exit_code = run_deploy(v, *a); });
  }
}

}  // namespace kiln::cli
