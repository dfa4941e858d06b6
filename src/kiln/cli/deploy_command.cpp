// `kiln deploy up|status|roll|down CLUSTER.yaml` (issue 19): `kiln serve` replicas behind nginx,
// on this machine and on nodes reached by ssh, sharing the registry. Torch-free: runs in the
// front.
#include <filesystem>
#include <iostream>
#include <map>
#include <memory>

#include "kiln/cli/commands.h"
#include "kiln/cli/flags.h"
#include "kiln/core/files.h"
#include "kiln/deploy/cluster.h"
#include "kiln/deploy/kubernetes.h"
#include "kiln/loadtest/serve_process.h"

namespace kiln::cli {
namespace {

namespace fs = std::filesystem;

struct DeployArgs {
  std::string file;
  std::string out;  // k8s: the manifests' directory
  deploy::KubernetesOptions k8s;
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
    for (const deploy::NodeSpec& node : spec->nodes)
      for (int i = 0; i < spec->replicas; ++i) {
        const int id = static_cast<int>(preview.replicas.size());
        // Local ports are picked free at `up`; a remote node's count up from first_port.
        preview.replicas.push_back({id, node.local() ? 0 : node.first_port + i, 0, spec->models,
                                    node.destination, node.local() ? "127.0.0.1" : node.address});
      }
    std::cout << deploy::nginx_config(preview, deploy::cluster_dir(options, spec->name));
    return 0;
  }
  if (verb == "k8s") {
    Expected<std::map<std::string, std::string>> files = deploy::kubernetes_manifests(*spec, a.k8s);
    if (!files.ok()) return report_failure(files.status());
    std::error_code ec;
    fs::create_directories(a.out, ec);
    if (ec) return report_failure(Status::IoError(a.out + ": " + ec.message()));
    for (const auto& [name, text] : *files) {
      Status st = write_file_atomic(fs::path(a.out) / name, text);
      if (!st.ok()) return report_failure(st);
      log << "wrote " << (fs::path(a.out) / name).string() << "\n";
    }
    log << "apply with: kubectl apply -f " << a.out << " (the image: docker build -t "
        << a.k8s.image << " . in the Kiln repository)\n";
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
      for (const Json& route : r["routes"]) std::cout << ", route " << route.get<std::string>();
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
  for (const char* verb : {"up", "status", "roll", "down", "k8s"}) {
    auto a = std::make_shared<DeployArgs>();
    const std::string v = verb;
    CLI::App* c = deploy->add_subcommand(
        v, v == "up"       ? "start the replicas, wait until each is ready, start nginx in front"
           : v == "status" ? "each replica's health, models, versions and request count"
           : v == "roll"   ? "replace the replicas one at a time (new models or a new kiln), "
                             "without failing a request"
           : v == "k8s"    ? "render the cluster as Kubernetes manifests (Deployment with probes "
                             "and drain, Service, PDB, HPA, ConfigMap, registry volume)"
                           : "stop nginx and the replicas");
    c->add_option("cluster", a->file, "cluster file (.yaml)")->required();
    if (v == "roll")
      c->add_option("--model", a->models,
                    "the models the new replicas serve (repeatable; default: the file's)");
    if (v == "up")
      c->add_flag("--dry-run", a->dry_run, "print the nginx.conf it would write and start nothing");
    if (v == "k8s") {
      add_flag(*c, Flag::kOut, &a->out)->required()->description("directory for the manifests");
      c->add_option("--image", a->k8s.image, "container image")->default_val("kiln:latest");
      c->add_option("--namespace", a->k8s.namespace_name, "Kubernetes namespace")
          ->default_val("default");
      c->add_option("--max-replicas", a->k8s.max_replicas,
                    "the autoscaler's ceiling (default 3 x replicas)");
      c->add_option("--target-rps", a->k8s.target_requests_per_second,
                    "inference requests/s per pod above which the autoscaler adds pods")
          ->default_val(200);
      c->add_option("--storage-class", a->k8s.storage_class,
                    "storage class of the registry volume claim (ReadWriteMany)");
    }
    add_flag(*c, Flag::kJson, &a->json);
    c->callback([a, v, exit_code] { *exit_code = run_deploy(v, *a); });
  }
}

}  // namespace kiln::cli
