#include "kiln/deploy/cluster.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <regex>
#include <sstream>
#include <thread>

#include "kiln/core/files.h"
#include "kiln/core/ports.h"
#include "kiln/core/process.h"
#include "kiln/core/yaml.h"
#include "kiln/loadtest/target.h"

namespace kiln::deploy {

namespace {

using Clock = std::chrono::steady_clock;

bool alive(pid_t pid) { return pid > 0 && ::kill(pid, 0) == 0; }

/// Starts `argv` (looked up in PATH) in its own session (it outlives this command), stdin
/// /dev/null, stdout and stderr appended to `log_path`, with `env` ("K=V") added to the
/// environment. Reaps nothing: the caller's process exits long before.
Expected<pid_t> spawn_detached(const std::vector<std::string>& argv, const fs::path& log_path,
                               const std::vector<std::string>& env = {}) {
  SpawnOptions o;
  o.argv = argv;
  o.search_path = true;
  o.env = env;
  o.stdout_path = o.stderr_path = log_path.string();
  o.append = true;
  o.group = SpawnOptions::Group::kNewSession;
  return spawn_process(o);
}

/// SIGTERM, then SIGKILL after `timeout_s`; reaps `pid` when it is our child.
void stop_process(pid_t pid, double timeout_s) {
  if (!alive(pid)) return;
  ::kill(pid, SIGTERM);
  const auto deadline =
      Clock::now() + std::chrono::milliseconds(static_cast<int>(timeout_s * 1000));
  while (Clock::now() < deadline) {
    int status = 0;
    if (::waitpid(pid, &status, WNOHANG) == pid || !alive(pid)) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ::kill(pid, SIGKILL);
  ::waitpid(pid, nullptr, WNOHANG);
}

/// Runs `argv` (stdin /dev/null), capturing stdout and stderr together; kills it after
/// `timeout_s`. Returns {exit code (128 + signal when killed), output}.
Expected<std::pair<int, std::string>> run_capture(const std::vector<std::string>& argv,
                                                  double timeout_s) {
  int pipe_fds[2];
  if (::pipe2(pipe_fds, O_CLOEXEC) != 0) return Status::Internal("pipe failed");
  SpawnOptions o;
  o.argv = argv;
  o.search_path = true;
  o.stdout_fd = o.stderr_fd = pipe_fds[1];
  Expected<pid_t> spawned = spawn_process(o);
  ::close(pipe_fds[1]);
  if (!spawned.ok()) {
    ::close(pipe_fds[0]);
    return spawned.status();
  }
  const pid_t pid = *spawned;
  ::fcntl(pipe_fds[0], F_SETFL, O_NONBLOCK);
  std::string out;
  const auto deadline =
      Clock::now() + std::chrono::milliseconds(static_cast<int>(timeout_s * 1000));
  int status = 0;
  bool done = false;
  while (!done) {
    char buf[4096];
    ssize_t n;
    while ((n = ::read(pipe_fds[0], buf, sizeof buf)) > 0) out.append(buf, static_cast<size_t>(n));
    done = ::waitpid(pid, &status, WNOHANG) == pid;
    if (!done && Clock::now() > deadline) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      done = true;
    }
    if (!done) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  char buf[4096];
  ssize_t n;
  while ((n = ::read(pipe_fds[0], buf, sizeof buf)) > 0) out.append(buf, static_cast<size_t>(n));
  ::close(pipe_fds[0]);
  const int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return std::make_pair(code, out);
}

/// `text` as one single-quoted sh word.
std::string shell_quote(const std::string& text) {
  std::string q = "'";
  for (char c : text) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

/// Runs the sh command line `script` on an ssh node; {exit code, output}.
Expected<std::pair<int, std::string>> on_node(const NodeSpec& node, const std::string& script,
                                              double timeout_s = 30) {
  std::vector<std::string> argv = {"ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10"};
  argv.insert(argv.end(), node.ssh_args.begin(), node.ssh_args.end());
  argv.insert(argv.end(), {node.destination, "--", script});
  return run_capture(argv, timeout_s);
}

/// KILN_HOME on `node`.
fs::path node_home(const NodeSpec& node, const DeployOptions& options) {
  return node.home.empty() ? options.home : fs::path(node.home);
}

/// The node a replica runs on (the first local one for state written before nodes existed).
const NodeSpec& node_of(const ClusterSpec& spec, const Replica& r) {
  for (const NodeSpec& n : spec.nodes)
    if (n.destination == r.node) return n;
  static const NodeSpec local;
  return local;
}

bool replica_alive(const NodeSpec& node, pid_t pid) {
  if (node.local()) return alive(pid);
  Expected<std::pair<int, std::string>> r =
      on_node(node, "kill -0 " + std::to_string(pid) + " 2>/dev/null");
  return r.ok() && r->first == 0;
}

/// SIGTERM, then SIGKILL after `timeout_s`, on the replica's node.
void stop_replica(const NodeSpec& node, pid_t pid, double timeout_s) {
  if (node.local()) return stop_process(pid, timeout_s);
  const std::string p = std::to_string(pid);
  const std::string tenths = std::to_string(static_cast<int>(timeout_s * 10));
  (void)on_node(node,
                "kill -TERM " + p + " 2>/dev/null || exit 0; i=0; while kill -0 " + p +
                    " 2>/dev/null; do i=$((i+1)); if [ $i -ge " + tenths + " ]; then kill -KILL " +
                    p + "; exit 0; fi; sleep 0.1; done",
                timeout_s + 30);
}

/// A replica's log: here, or read over ssh.
std::string replica_log(const NodeSpec& node, const fs::path& path) {
  if (node.local()) {
    Expected<std::string> text = read_file(path);
    return text.ok() ? *text : "";
  }
  Expected<std::pair<int, std::string>> r =
      on_node(node, "tail -c 65536 " + shell_quote(path.string()) + " 2>/dev/null");
  return r.ok() ? r->second : "";
}

/// Where a replica's log is, on its node: KILN_HOME/clusters/NAME/logs/replica-ID.log there.
fs::path replica_log_path(const ClusterSpec& spec, const NodeSpec& node,
                          const DeployOptions& options, int id) {
  return node_home(node, options) / "clusters" / spec.name / "logs" /
         ("replica-" + std::to_string(id) + ".log");
}

Expected<loadtest::HttpReply> get(const std::string& host, int port, const std::string& path,
                                  int timeout_ms = 2000) {
  KILN_ASSIGN_OR_RETURN(
      loadtest::Target t,
      loadtest::parse_target("http://" + host + ":" + std::to_string(port) + path, true));
  return loadtest::http_exchange(t, path, "", timeout_ms);
}

/// Waits until the replica answers /v2/health/ready (or dies, or the timeout passes).
Status wait_ready(const Replica& r, const NodeSpec& node, double timeout_s,
                  const fs::path& log_path) {
  const auto deadline =
      Clock::now() + std::chrono::milliseconds(static_cast<int>(timeout_s * 1000));
  auto next_alive_check = Clock::now();
  while (Clock::now() < deadline) {
    // Here a cheap check each time; over ssh once every 2 s.
    if (Clock::now() >= next_alive_check) {
      int status = 0;
      const bool gone = node.local() ? ::waitpid(r.pid, &status, WNOHANG) == r.pid || !alive(r.pid)
                                     : !replica_alive(node, r.pid);
      if (gone) {
        std::string tail = replica_log(node, log_path);
        if (tail.size() > 1500) tail = tail.substr(tail.size() - 1500);
        return Status::Unavailable("replica " + std::to_string(r.id) + " (" + r.node + ", port " +
                                   std::to_string(r.port) + ") exited before it was ready; " +
                                   log_path.string() + " ends:\n" + tail);
      }
      if (!node.local()) next_alive_check = Clock::now() + std::chrono::seconds(2);
    }
    Expected<loadtest::HttpReply> reply = get(r.address, r.port, "/v2/health/ready", 1000);
    if (reply.ok() && reply->status == 200) return Status::Ok();
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return Status::Unavailable("replica " + std::to_string(r.id) + " (" + r.node + ", port " +
                             std::to_string(r.port) + ") was not ready within " +
                             std::to_string(static_cast<int>(timeout_s)) + " s; see " +
                             log_path.string());
}

fs::path state_path(const fs::path& dir) { return dir / "state.json"; }

Status write_state(const ClusterState& state, const fs::path& dir) {
  return write_json_file_atomic(state_path(dir), state.to_json());
}

/// Starts a replica serving `models` on `node`, on `port` (0: a free loopback port here, the
/// node's next port from first_port there) and waits until it is ready.
Expected<Replica> start_replica(ClusterState& state, const ClusterSpec& spec, const NodeSpec& node,
                                const std::vector<std::string>& models,
                                const DeployOptions& options, const fs::path& dir,
                                std::ostream& log, int port = 0) {
  Replica r;
  r.id = state.next_id++;
  r.node = node.destination;
  r.address = node.local() ? "127.0.0.1" : node.address;
  r.models = models;
  if (port > 0) {
    r.port = port;
  } else if (node.local()) {
    r.port = free_loopback_port();
  } else {
    r.port = node.first_port;
    for (const Replica& other : state.replicas)
      if (other.node == node.destination) r.port = std::max(r.port, other.port + 1);
  }
  if (r.port == 0) return Status::Unavailable("no free loopback port for a replica");
  const std::string kiln =
      node.local() ? options.kiln_binary.string() : (node.kiln.empty() ? "kiln" : node.kiln);
  std::vector<std::string> argv = {kiln, "serve"};
  for (const std::string& m : models) argv.insert(argv.end(), {"--model", m});
  argv.insert(argv.end(), {"--host", r.address, "--port", std::to_string(r.port)});
  argv.insert(argv.end(), spec.serve_args.begin(), spec.serve_args.end());
  std::vector<std::string> env;
  if (!spec.registry.empty()) env.push_back("KILN_REGISTRY=" + spec.registry);
  const fs::path log_path = replica_log_path(spec, node, options, r.id);
  if (node.local()) {
    KILN_ASSIGN_OR_RETURN(r.pid, spawn_detached(argv, log_path, env));
  } else {
    // Detached there (nohup + setsid: it outlives the ssh session), its pid echoed back.
    env.insert(env.begin(), "KILN_HOME=" + node_home(node, options).string());
    std::string script =
        "mkdir -p " + shell_quote(log_path.parent_path().string()) + " && cd / || exit 1; ";
    for (const std::string& kv : env)
      script += kv.substr(0, kv.find('=') + 1) + shell_quote(kv.substr(kv.find('=') + 1)) + " ";
    script += "nohup setsid";
    for (const std::string& a : argv) script += " " + shell_quote(a);
    script += " >> " + shell_quote(log_path.string()) + " 2>&1 < /dev/null & echo $!";
    KILN_ASSIGN_OR_RETURN(auto started, on_node(node, script));
    r.pid = static_cast<pid_t>(std::atoi(started.second.c_str()));
    if (started.first != 0 || r.pid <= 0)
      return Status::Unavailable("cannot start a replica on " + node.destination +
                                 " over ssh (exit " + std::to_string(started.first) +
                                 "): " + started.second);
  }
  log << "replica " << r.id << ": kiln serve on " << r.node << " " << r.address << ":" << r.port
      << " (pid " << r.pid << ")\n";
  Status ready = wait_ready(r, node, options.ready_timeout_s, log_path);
  if (!ready.ok()) {
    stop_replica(node, r.pid, 5);
    return ready;
  }
  log << "replica " << r.id << ": ready\n";
  return r;
}

/// Writes nginx.conf for `state` and (re)loads nginx: starts it when `state.nginx_pid` is 0,
/// else checks the new file (nginx -t) and sends HUP; then waits until nginx answers.
Status apply_nginx(ClusterState& state, const DeployOptions& options, const fs::path& dir) {
  KILN_RETURN_IF_ERROR(write_file_atomic(dir / "nginx.conf", nginx_config(state, dir)));
  const std::string conf = (dir / "nginx.conf").string();
  const std::string prefix = (dir / "nginx").string() + "/";
  std::error_code ec;
  fs::create_directories(dir / "nginx", ec);
  auto run = [&](std::vector<std::string> argv) -> Status {
    const fs::path out = dir / "logs" / "nginx-command.log";
    KILN_ASSIGN_OR_RETURN(pid_t pid, spawn_detached(argv, out));
    int status = 0;
    ::waitpid(pid, &status, 0);
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return Status::Ok();
    Expected<std::string> text = read_file(out);
    return Status::Unavailable(
        "nginx " + argv[1] + " " + argv[2] + " failed:\n" +
        (text.ok() ? text->substr(text->size() > 1500 ? text->size() - 1500 : 0) : ""));
  };
  const std::string error_log = (dir / "logs" / "nginx-error.log").string();
  KILN_RETURN_IF_ERROR(
      run({options.nginx_binary.string(), "-t", "-q", "-e", error_log, "-p", prefix, "-c", conf}));
  if (state.nginx_pid > 0 && alive(state.nginx_pid)) {
    ::kill(state.nginx_pid, SIGHUP);  // new workers with the new upstream; old ones finish
  } else {
    KILN_RETURN_IF_ERROR(
        run({options.nginx_binary.string(), "-e", error_log, "-p", prefix, "-c", conf}));
    // nginx daemonises; its pid file names the master.
    const auto deadline = Clock::now() + std::chrono::seconds(10);
    while (Clock::now() < deadline) {
      Expected<std::string> pid = read_file(dir / "nginx.pid");
      if (pid.ok() && std::atoi(pid->c_str()) > 0) {
        state.nginx_pid = std::atoi(pid->c_str());
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    if (state.nginx_pid <= 0) return Status::Unavailable("nginx wrote no pid file");
  }
  const auto deadline = Clock::now() + std::chrono::seconds(10);
  while (Clock::now() < deadline) {
    Expected<loadtest::HttpReply> reply = get(state.host, state.port, "/v2/health/live", 1000);
    if (reply.ok() && reply->status == 200) return Status::Ok();
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return Status::Unavailable("nginx does not answer on " + state.host + ":" +
                             std::to_string(state.port) + "; see " +
                             (dir / "logs" / "nginx-error.log").string());
}

}  // namespace

Expected<ClusterState> read_cluster_state(const ClusterSpec& spec, const DeployOptions& options) {
  const fs::path path = state_path(cluster_dir(options, spec.name));
  std::error_code ec;
  if (!fs::exists(path, ec))
    return Status::NotFound("cluster '" + spec.name + "' is not up (no " + path.string() + ")");
  KILN_ASSIGN_OR_RETURN(Json j, read_json_file(path));
  return ClusterState::from_json(j);
}

Json ClusterState::to_json() const {
  Json rs = Json::array();
  for (const Replica& r : replicas)
    rs.push_back({{"id", r.id},
                  {"port", r.port},
                  {"pid", r.pid},
                  {"models", r.models},
                  {"node", r.node},
                  {"address", r.address}});
  return {{"name", name},           {"host", host},       {"port", port},
          {"nginx_pid", nginx_pid}, {"next_id", next_id}, {"replicas", rs}};
}

Expected<ClusterState> ClusterState::from_json(const Json& j) {
  ClusterState s;
  try {
    s.name = j.at("name").get<std::string>();
    s.host = j.at("host").get<std::string>();
    s.port = j.at("port").get<int>();
    s.nginx_pid = j.at("nginx_pid").get<pid_t>();
    s.next_id = j.at("next_id").get<int>();
    for (const Json& r : j.at("replicas"))
      s.replicas.push_back(
          {r.at("id").get<int>(), r.at("port").get<int>(), r.at("pid").get<pid_t>(),
           r.at("models").get<std::vector<std::string>>(), r.value("node", std::string("local")),
           r.value("address", std::string("127.0.0.1"))});
  } catch (const std::exception& e) {
    return Status::DataLoss("cluster state.json: " + std::string(e.what()));
  }
  return s;
}

fs::path cluster_dir(const DeployOptions& options, const std::string& name) {
  return options.home / "clusters" / name;
}

Expected<ClusterSpec> load_cluster_spec(const fs::path& path) {
  std::map<std::string, int> lines;
  KILN_ASSIGN_OR_RETURN(Json doc, read_yaml_file(path, &lines));
  auto bad = [&](const std::string& key, const std::string& what) {
    auto it = lines.find(key);
    return Status::InvalidArgument(path.string() +
                                   (it == lines.end() ? "" : ":" + std::to_string(it->second)) +
                                   ": " + key + ": " + what);
  };
  if (!doc.is_object()) return Status::InvalidArgument(path.string() + ": expected a mapping");
  ClusterSpec spec;
  spec.file = path;
  static const std::vector<std::string> kFields = {"name",   "host",       "port",  "replicas",
                                                   "models", "serve_args", "nodes", "registry"};
  for (auto it = doc.begin(); it != doc.end(); ++it)
    if (std::find(kFields.begin(), kFields.end(), it.key()) == kFields.end())
      return bad(it.key(),
                 "unknown field (name, host, port, replicas, models, serve_args, nodes, "
                 "registry)");
  if (!doc.contains("name") || !doc["name"].is_string() ||
      !std::regex_match(doc["name"].get<std::string>(), std::regex("[A-Za-z0-9_-]{1,64}")))
    return bad("name", "required: letters, digits, _ and - only");
  spec.name = doc["name"];
  if (doc.contains("host")) {
    if (!doc["host"].is_string()) return bad("host", "expected an address");
    spec.host = doc["host"];
  }
  if (doc.contains("port")) {
    if (!doc["port"].is_number_integer() || doc["port"] < 1 || doc["port"] > 65535)
      return bad("port", "expected a TCP port 1..65535");
    spec.port = doc["port"];
  }
  if (doc.contains("replicas")) {
    if (!doc["replicas"].is_number_integer() || doc["replicas"] < 1 || doc["replicas"] > 64)
      return bad("replicas", "expected 1..64");
    spec.replicas = doc["replicas"];
  }
  auto strings = [&](const std::string& key, std::vector<std::string>* out) -> Status {
    if (!doc.contains(key)) return Status::Ok();
    const Json& v = doc[key];
    if (v.is_string()) {
      out->push_back(v);
      return Status::Ok();
    }
    if (!v.is_array()) return bad(key, "expected a list of strings");
    for (const Json& e : v) {
      if (e.is_string()) {
        out->push_back(e);
      } else if (e.is_number()) {
        out->push_back(e.dump());
      } else {
        return bad(key, "expected a list of strings");
      }
    }
    return Status::Ok();
  };
  KILN_RETURN_IF_ERROR(strings("models", &spec.models));
  KILN_RETURN_IF_ERROR(strings("serve_args", &spec.serve_args));
  if (spec.models.empty()) return bad("models", "required: the models each replica serves");
  if (doc.contains("nodes")) {
    const Json& nodes = doc["nodes"];
    if (!nodes.is_array() || nodes.empty())
      return bad("nodes", "expected a list of nodes: `local` or {host: [USER@]HOST, ...}");
    spec.nodes.clear();
    static const std::vector<std::string> kNodeFields = {"host", "address", "ssh",
                                                         "kiln", "home",    "first_port"};
    for (const Json& n : nodes) {
      NodeSpec node;
      if (n.is_string()) {
        if (n != "local")
          return bad("nodes", "'" + n.get<std::string>() +
                                  "': a node is `local` or a mapping {host: [USER@]HOST, ssh: "
                                  "[...], kiln: PATH, home: DIR, address: ADDR, first_port: N}");
        spec.nodes.push_back(node);
        continue;
      }
      if (!n.is_object() || !n.contains("host") || !n["host"].is_string() ||
          n["host"].get<std::string>().empty() || n["host"].get<std::string>()[0] == '-')
        return bad("nodes", "a remote node needs host: [USER@]HOST (its ssh destination)");
      for (auto it = n.begin(); it != n.end(); ++it)
        if (std::find(kNodeFields.begin(), kNodeFields.end(), it.key()) == kNodeFields.end())
          return bad("nodes", "unknown node field '" + it.key() +
                                  "' (host, address, ssh, kiln, home, first_port)");
      node.destination = n["host"];
      node.address = node.destination.substr(node.destination.find('@') + 1);
      for (const char* key : {"address", "kiln", "home"}) {
        if (!n.contains(key)) continue;
        if (!n[key].is_string() || n[key].get<std::string>().empty())
          return bad("nodes", std::string(key) + " of " + node.destination + ": expected a string");
        const std::string v = n[key];
        if (std::string(key) == "address") node.address = v;
        if (std::string(key) == "kiln") node.kiln = v;
        if (std::string(key) == "home") node.home = v;
      }
      if (n.contains("ssh")) {
        if (!n["ssh"].is_array()) return bad("nodes", "ssh: expected a list of ssh arguments");
        for (const Json& a : n["ssh"]) {
          if (!a.is_string() && !a.is_number()) return bad("nodes", "ssh: expected strings");
          node.ssh_args.push_back(a.is_string() ? a.get<std::string>() : a.dump());
        }
      }
      if (n.contains("first_port")) {
        if (!n["first_port"].is_number_integer() || n["first_port"] < 1 ||
            n["first_port"] > 65535 - 64)
          return bad("nodes", "first_port of " + node.destination + ": expected 1..65471");
        node.first_port = n["first_port"];
      }
      for (const NodeSpec& other : spec.nodes)
        if (other.destination == node.destination)
          return bad("nodes", node.destination + " is listed twice");
      spec.nodes.push_back(node);
    }
  }
  if (doc.contains("registry")) {
    const Json& r = doc["registry"];
    const std::string text = r.is_string() ? r.get<std::string>() : "";
    if (text != "sqlite" && text.rfind("postgresql://", 0) != 0 &&
        text.rfind("postgres://", 0) != 0)
      return bad("registry", "expected 'sqlite' or a postgresql://HOST:PORT/DB URL");
    spec.registry = text;
  }
  for (const std::string& a : spec.serve_args)
    if (a == "--port" || a == "--host" || a == "--model" || a == "-m")
      return bad("serve_args", a + " is set by the cluster (port/host per replica, models:)");
  return spec;
}

std::string nginx_config(const ClusterState& state, const fs::path& dir) {
  std::ostringstream c;
  const std::string d = dir.string();
  c << "# Generated by `kiln deploy` for cluster " << state.name << "; rewritten on every roll.\n"
    << (::geteuid() == 0 ? "user root;\n" : "") << "daemon on;\n"
    << "worker_processes auto;\n"
    << "pid " << d << "/nginx.pid;\n"
    << "error_log " << d << "/logs/nginx-error.log warn;\n"
    << "events { worker_connections 4096; }\n"
    << "http {\n"
    << "  access_log off;\n"
    << "  client_body_temp_path " << d << "/nginx/client_body;\n"
    << "  proxy_temp_path " << d << "/nginx/proxy;\n"
    << "  fastcgi_temp_path " << d << "/nginx/fastcgi;\n"
    << "  uwsgi_temp_path " << d << "/nginx/uwsgi;\n"
    << "  scgi_temp_path " << d << "/nginx/scgi;\n"
    << "  client_max_body_size 64m;\n"
    << "  client_body_buffer_size 1m;\n"
    << "  upstream kiln_" << state.name << " {\n"
    << "    least_conn;\n";
  // max_fails=0: no replica is ever marked unavailable. With 1 and two replicas, a replica
  // draining during a roll and a reset on the other's kept-alive connection disabled both for
  // fail_timeout, and nginx answered 502 "no live upstreams" (578 of 2,000 requests). A
  // refused connect on loopback costs microseconds, and proxy_next_upstream moves on.
  for (const Replica& r : state.replicas)
    c << "    server " << r.address << ":" << r.port << " max_fails=0;  # replica " << r.id << " ("
      << r.node << ")\n";
  c << "    keepalive 32;\n"
    << "  }\n"
    << "  server {\n"
    << "    listen " << state.host << ":" << state.port << ";\n"
    << "    location / {\n"
    << "      proxy_pass http://kiln_" << state.name << ";\n"
    << "      proxy_http_version 1.1;\n"
    << "      proxy_set_header Connection \"\";\n"
    << "      proxy_set_header Host $host;\n"
    // A replica that is draining or gone: try the next one, POSTs included (an inference
    // request has no side effect to repeat).
    << "      proxy_next_upstream error timeout http_502 http_503 non_idempotent;\n"
    << "      proxy_next_upstream_tries 3;\n"
    << "      proxy_connect_timeout 2s;\n"
    << "      proxy_read_timeout 60s;\n"
    << "    }\n"
    << "  }\n"
    << "}\n";
  return c.str();
}

Expected<ClusterState> cluster_up(const ClusterSpec& spec, const DeployOptions& options,
                                  std::ostream& log) {
  const fs::path dir = cluster_dir(options, spec.name);
  if (Expected<ClusterState> existing = read_cluster_state(spec, options); existing.ok()) {
    if (alive(existing->nginx_pid))
      return Status::FailedPrecondition("cluster '" + spec.name + "' is already up (nginx pid " +
                                        std::to_string(existing->nginx_pid) +
                                        "); `kiln deploy roll` or `down` it");
  }
  std::error_code ec;
  fs::create_directories(dir / "logs", ec);
  if (ec) return Status::IoError(dir.string() + ": " + ec.message());
  ClusterState state;
  state.name = spec.name;
  state.host = spec.host;
  state.port = spec.port;
  auto undo = [&](Status why) -> Status {
    for (const Replica& r : state.replicas)
      stop_replica(node_of(spec, r), r.pid, options.drain_timeout_s);
    if (state.nginx_pid > 0) stop_process(state.nginx_pid, 5);
    return why;
  };
  for (const NodeSpec& node : spec.nodes)
    for (int i = 0; i < spec.replicas; ++i) {
      Expected<Replica> r = start_replica(state, spec, node, spec.models, options, dir, log);
      if (!r.ok()) return undo(r.status());
      state.replicas.push_back(*r);
    }
  if (Status st = apply_nginx(state, options, dir); !st.ok()) return undo(st);
  if (Status st = write_state(state, dir); !st.ok()) return undo(st);
  log << "cluster " << spec.name << ": " << state.replicas.size()
      << " replica(s) behind nginx on http://" << spec.host << ":" << spec.port << "\n";
  return state;
}

Expected<Json> cluster_status(const ClusterSpec& spec, const DeployOptions& options) {
  KILN_ASSIGN_OR_RETURN(ClusterState state, read_cluster_state(spec, options));
  Json out = {{"name", state.name},
              {"url", "http://" + state.host + ":" + std::to_string(state.port)},
              {"nginx", {{"pid", state.nginx_pid}, {"alive", alive(state.nginx_pid)}}},
              {"replicas", Json::array()}};
  for (const Replica& r : state.replicas) {
    const NodeSpec& node = node_of(spec, r);
    Json j = {{"id", r.id},
              {"node", r.node},
              {"address", r.address},
              {"port", r.port},
              {"pid", r.pid},
              {"alive", replica_alive(node, r.pid)},
              {"models", Json::array()}};
    Expected<loadtest::HttpReply> ready = get(r.address, r.port, "/v2/health/ready");
    j["ready"] = ready.ok() && ready->status == 200;
    // The served names from the replica's ready line; their live versions from OIP metadata
    // (they follow registry alias moves).
    std::smatch m;
    const std::string text = replica_log(node, replica_log_path(spec, node, options, r.id));
    if (std::regex_search(text, m, std::regex("ready on \\S+ \\(models: ([^)]*)\\)"))) {
      std::istringstream names(m[1].str());
      std::string entry;
      while (std::getline(names, entry, ',')) {
        entry.erase(0, entry.find_first_not_of(' '));
        const std::string name = entry.substr(0, entry.find(':'));
        Expected<loadtest::HttpReply> meta = get(r.address, r.port, "/v2/models/" + name);
        Json versions = Json::array();
        if (meta.ok() && meta->status == 200) {
          try {
            versions = Json::parse(meta->body).value("versions", Json::array());
          } catch (const std::exception&) {
          }
        }
        j["models"].push_back({{"name", name}, {"versions", versions}});
      }
    }
    // Each route's split as this replica routes it now (a rollout moves them).
    j["routes"] = Json::array();
    Expected<loadtest::HttpReply> routes = get(r.address, r.port, "/v2/routes");
    if (routes.ok() && routes->status == 200) {
      const Json all = Json::parse(routes->body, nullptr, false);
      if (all.is_object() && all.contains("routes") && all["routes"].is_array())
        for (const Json& route : all["routes"])
          if (route.contains("spec") && route["spec"].is_string())
            j["routes"].push_back(route["spec"]);
    }
    Expected<loadtest::HttpReply> metrics = get(r.address, r.port, "/metrics");
    double requests = 0;
    if (metrics.ok() && metrics->status == 200) {
      std::istringstream lines(metrics->body);
      std::string line;
      while (std::getline(lines, line))
        if (line.rfind("kiln_http_requests_total", 0) == 0)
          requests += std::atof(line.substr(line.rfind(' ') + 1).c_str());
    }
    j["requests"] = requests;
    out["replicas"].push_back(j);
  }
  return out;
}

Expected<ClusterState> cluster_roll(const ClusterSpec& spec, const DeployOptions& options,
                                    const std::vector<std::string>& models, std::ostream& log) {
  KILN_ASSIGN_OR_RETURN(ClusterState state, read_cluster_state(spec, options));
  if (!alive(state.nginx_pid))
    return Status::FailedPrecondition("cluster '" + spec.name +
                                      "': nginx is not running; `kiln deploy down` then `up`");
  const fs::path dir = cluster_dir(options, spec.name);
  const std::vector<std::string> target = models.empty() ? spec.models : models;
  const size_t count = state.replicas.size();
  for (size_t i = 0; i < count; ++i) {
    const Replica old = state.replicas[i];
    // In place, one replica unavailable at a time: nginx's configuration (and so its workers
    // and the clients' kept-alive connections to it) never changes. The old replica stops
    // accepting and answers what it has in flight; meanwhile nginx sends new requests, and any
    // that meet the closing replica, to the others (proxy_next_upstream).
    const NodeSpec& node = node_of(spec, old);
    stop_replica(node, old.pid, options.drain_timeout_s);
    Expected<Replica> fresh = start_replica(state, spec, node, target, options, dir, log, old.port);
    if (!fresh.ok()) {
      // Put the old models back on that port, so the cluster keeps its capacity.
      Expected<Replica> back =
          start_replica(state, spec, node, old.models, options, dir, log, old.port);
      if (back.ok()) state.replicas[i] = *back;
      (void)write_state(state, dir);
      return fresh.status().with_context(
          "roll stopped at replica " + std::to_string(old.id) +
          (back.ok() ? " (it serves its old models again)" : " (it is down)"));
    }
    state.replicas[i] = *fresh;
    KILN_RETURN_IF_ERROR(write_state(state, dir));
    log << "replica " << old.id << " replaced by replica " << fresh->id << " (" << (i + 1) << "/"
        << count << ")\n";
  }
  return state;
}

Status cluster_down(const ClusterSpec& spec, const DeployOptions& options, std::ostream& log) {
  KILN_ASSIGN_OR_RETURN(ClusterState state, read_cluster_state(spec, options));
  if (state.nginx_pid > 0) {
    ::kill(state.nginx_pid, SIGQUIT);  // graceful: finish the requests in flight
    const auto deadline = Clock::now() + std::chrono::seconds(10);
    while (alive(state.nginx_pid) && Clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    if (alive(state.nginx_pid)) ::kill(state.nginx_pid, SIGKILL);
  }
  for (const Replica& r : state.replicas)
    stop_replica(node_of(spec, r), r.pid, options.drain_timeout_s);
  std::error_code ec;
  fs::remove(state_path(cluster_dir(options, spec.name)), ec);
  log << "cluster " << spec.name << ": down (nginx and " << state.replicas.size()
      << " replica(s) stopped)\n";
  return Status::Ok();
}

}  // namespace kiln::deploy
