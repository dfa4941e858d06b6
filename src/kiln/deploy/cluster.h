#pragma once

// `kiln deploy up|status|roll|down CLUSTER.yaml`: an inference cluster of `kiln serve` replicas
// behind nginx (Debian's), on this machine, sharing the registry in $KILN_HOME. The replicas
// resolve their models from the registry (NAME@ALIAS: they follow alias moves on their own), and
// a roll replaces them one at a time in place (drain the old one with SIGTERM while nginx sends
// its traffic to the others, start the new one on its port) so that clients see no failed
// request.
// Torch-free: it runs `kiln serve` and `nginx` as processes and talks to them over HTTP.

#include <sys/types.h>

#include <filesystem>
#include <ostream>
#include <string>
#include <vector>

#include "kiln/core/expected.h"
#include "kiln/core/json.h"

namespace kiln::deploy {

namespace fs = std::filesystem;

/// A machine replicas run on: this one, or a host reached by ssh. Plain value.
struct NodeSpec {
  std::string destination = "local";  ///< "local", or an ssh destination ([user@]host)
  std::string address = "127.0.0.1";  ///< where nginx reaches the node's replicas
  std::vector<std::string> ssh_args;  ///< more ssh arguments, e.g. -p 2222 -i KEY
  std::string kiln;       ///< the kiln binary there (remote default: `kiln` on its PATH)
  std::string home;       ///< KILN_HOME there (default: this KILN_HOME, a directory both mount)
  int first_port = 9100;  ///< remote replicas listen on first_port, first_port + 1, ...
  bool local() const { return destination == "local"; }
};

/// A cluster file:
///   name: fmnist            # the cluster's name ([A-Za-z0-9_-]); state in $KILN_HOME/clusters/
///   port: 8080              # where nginx listens (loopback unless host: says otherwise)
///   host: 127.0.0.1
///   replicas: 2             # kiln serve processes per node
///   models: [fmnist@production]   # each replica's --model arguments (registry refs or bundles)
///   serve_args: [--max-batch, "32"]   # more `kiln serve` arguments (optional)
///   nodes:                  # default [local]
///     - local
///     - host: kiln@10.0.0.7 # ssh destination; replicas listen on its address
///       address: 10.0.0.7   # (default: the destination's host part)
///       ssh: [-p, "2222", -i, /keys/kiln]
///       kiln: /usr/local/bin/kiln
///       home: /mnt/kiln     # KILN_HOME there (default: this one)
///       first_port: 9100
///   registry: postgresql://kiln@db:5432/kiln   # the replicas' KILN_REGISTRY (optional; default:
///                           # the environment's, else registry.yaml, else SQLite in KILN_HOME)
/// Plain value.
struct ClusterSpec {
  fs::path file;
  std::string name;
  std::string host = "127.0.0.1";
  int port = 8080;
  int replicas = 2;
  std::vector<std::string> models;
  std::vector<std::string> serve_args;
  std::vector<NodeSpec> nodes{NodeSpec()};
  std::string registry;  ///< "" (as the environment says), "sqlite" or a postgresql:// URL
};

/// Reads and checks a cluster file. InvalidArgument names the file, line and field.
Expected<ClusterSpec> load_cluster_spec(const fs::path& path);

/// One running replica, as state.json records it.
struct Replica {
  int id = 0;  ///< grows with every replica the cluster starts (names its log)
  int port = 0;
  pid_t pid = 0;  ///< on its node
  std::vector<std::string> models;
  std::string node = "local";         ///< NodeSpec::destination
  std::string address = "127.0.0.1";  ///< where nginx reaches it
};

/// What `up` started and `roll`/`down` act on: $KILN_HOME/clusters/NAME/state.json. Plain value.
struct ClusterState {
  std::string name;
  std::string host;
  int port = 0;
  pid_t nginx_pid = 0;
  int next_id = 0;
  std::vector<Replica> replicas;
  Json to_json() const;
  static Expected<ClusterState> from_json(const Json& j);
};

/// Where deploy finds its programs and keeps its files. Plain value.
struct DeployOptions {
  fs::path kiln_binary;  ///< `kiln` (its serve verb)
  fs::path nginx_binary = "/usr/sbin/nginx";
  fs::path home;                 ///< $KILN_HOME: state in home/clusters/NAME
  double ready_timeout_s = 120;  ///< per replica
  double drain_timeout_s = 30;   ///< SIGTERM to SIGKILL
};

/// The cluster's directory: home/clusters/NAME (state.json, nginx.conf, logs/).
fs::path cluster_dir(const DeployOptions& options, const std::string& name);

/// The replicas `up` (or the last `roll`) recorded in state.json. NotFound when the cluster is
/// not up, DataLoss for a broken state file.
Expected<ClusterState> read_cluster_state(const ClusterSpec& spec, const DeployOptions& options);

/// Starts the replicas on every node (each `kiln serve --model M... --port P --host ADDRESS`,
/// detached; here with its log in logs/replica-ID.log, on an ssh node in the node's
/// KILN_HOME/clusters/NAME/logs/), waits until each answers /v2/health/ready, then nginx in front
/// (generated nginx.conf: least_conn upstream, keep-alive to the replicas, retry on the next
/// replica for connection errors and 502/503 including POSTs). FailedPrecondition when the cluster
/// is already up; on a failure everything started is stopped again. Blocks.
Expected<ClusterState> cluster_up(const ClusterSpec& spec, const DeployOptions& options,
                                  std::ostream& log);

/// Each replica's health, models and versions (GET /v2/health/ready, /v2/models/NAME), route
/// splits (GET /v2/routes) and request count, and nginx's: {"name", "url", "nginx": {"pid",
/// "alive"}, "replicas": [{"id", "port", "pid", "ready", "models": [{"name", "versions"}],
/// "routes": ["NAME=T:W,..."], "requests"}]}. NotFound when the cluster is not up.
Expected<Json> cluster_status(const ClusterSpec& spec, const DeployOptions& options);

/// Replaces every replica, one at a time, with one serving `models` (empty: the spec's models;
/// e.g. to pick up a new kiln binary), in place: SIGTERM the old one (it stops accepting and
/// answers what it has in flight; nginx sends the rest to the other replicas), start the new one
/// on the same port, wait for ready. nginx is not reloaded, so clients' connections to it stay
/// open. A new replica that does not get ready stops the roll there, with the old models started
/// again on its port.
Expected<ClusterState> cluster_roll(const ClusterSpec& spec, const DeployOptions& options,
                                    const std::vector<std::string>& models, std::ostream& log);

/// Stops nginx and the replicas (SIGTERM, then SIGKILL after the drain timeout) and removes
/// state.json (logs stay). NotFound when the cluster is not up.
Status cluster_down(const ClusterSpec& spec, const DeployOptions& options, std::ostream& log);

/// The nginx.conf for `state` (exposed for tests and `--dry-run`).
std::string nginx_config(const ClusterState& state, const fs::path& dir);

}  // namespace kiln::deploy
