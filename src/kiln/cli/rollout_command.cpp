// `kiln rollout ROUTE`: progressive delivery on a running `kiln serve` route (issue 17).
// Torch-free: runs in the front; the registry is opened only to move the --promote alias.
#include <csignal>
#include <iostream>
#include <memory>

#include "kiln/cli/commands.h"
#include "kiln/cli/flags.h"
#include "kiln/deploy/cluster.h"
#include "kiln/registry/model_store.h"
#include "kiln/rollout/rollout.h"

namespace kiln::cli {
namespace {

using namespace kiln::rollout;

struct RolloutArgs {
  std::string route;
  std::string server;
  std::string candidate;
  std::string steps = "10,25,50,100";
  std::string interval = "60s";
  double max_error_rate = 0.01;
  double max_p99_ms = -1;
  double min_live_accuracy = -1;
  int64_t min_labelled_rows = 20;
  int64_t min_requests = 20;
  std::string api_key_file;
  std::string promote;
  std::string reload_timeout = "120s";
  std::vector<std::string> metrics_from;
  std::string cluster;
  std::string follow_timeout = "10s";
  bool resume = false;
  bool abort = false;
};

volatile std::sig_atomic_t g_interrupted = 0;

/// SIGINT/SIGTERM roll the rollout back (the runner polls the flag while a step waits).
void catch_interrupts(Rollout& r) {
  std::signal(SIGINT, [](int) { g_interrupted = 1; });
  std::signal(SIGTERM, [](int) { g_interrupted = 1; });
  r.set_interrupted([] { return g_interrupted != 0; });
}

Status promote_alias(const PromoteTarget& p) {
  KILN_ASSIGN_OR_RETURN(auto store, registry::open_model_store());
  return store->set_alias(p.name, p.alias, p.version);
}

/// A `kiln deploy` cluster's replicas as they run now: the rollout POSTs to the first and adds
/// up every replica's /metrics.
Status use_cluster_replicas(RolloutOptions& options) {
  KILN_ASSIGN_OR_RETURN(deploy::ClusterSpec spec, deploy::load_cluster_spec(options.cluster_));
  deploy::DeployOptions where;
  where.home = kiln_home();
  Expected<deploy::ClusterState> state = deploy::read_cluster_state(spec, where);
  if (!state.ok())
    return Status(state.status().code(), "--cluster " + options.cluster_ + ": " +
                                             state.status().message() + " (kiln deploy up)");
  if (state->replicas.empty())
    return Status::FailedPrecondition("--cluster " + options.cluster_ + ": no replica running");
  std::vector<std::string> urls;
  for (const deploy::Replica& r : state->replicas) {
    const bool ipv6 = r.address.find(':') != std::string::npos;
    urls.push_back("http://" + (ipv6 ? "[" + r.address + "]" : r.address) + ":" +
                   std::to_string(r.port));
  }
  options.server_ = urls.front();
  options.metrics_from_ = urls;
  return Status::Ok();
}

Status run_rollout(const RolloutArgs& a) {
  KILN_ASSIGN_OR_RETURN(std::filesystem::path state_path, rollout_state_path(a.route));
  if (a.resume && a.abort)
    return Status::InvalidArgument("--resume and --abort exclude each other");
  if (a.resume || a.abort) {
    // The recorded options rule: the rollout goes on (or back) as it was started.
    Expected<RolloutState> state = load_rollout_state(state_path);
    if (!state.ok() && state.status().code() == StatusCode::kNotFound)
      return Status::InvalidArgument(std::string(a.resume ? "--resume" : "--abort") +
                                     ": no rollout of route \"" + a.route + "\" recorded (" +
                                     state_path.string() + ")");
    KILN_RETURN_IF_ERROR(state.status());
    if (state->status != RolloutState::kRunning)
      return Status::InvalidArgument(std::string(a.resume ? "--resume" : "--abort") +
                                     ": the rollout of route \"" + a.route + "\" is " +
                                     state->status + ", not running");
    // A cluster's replicas are looked up again: brought up anew, they listen on new ports.
    if (!state->options.cluster_.empty())
      KILN_RETURN_IF_ERROR(use_cluster_replicas(state->options));
    KILN_ASSIGN_OR_RETURN(auto r, Rollout::Create(state->options, state_path, promote_alias));
    catch_interrupts(*r);
    return a.resume ? r->resume(std::move(*state), std::cout)
                    : r->abort(std::move(*state), std::cout);
  }
  if (!a.cluster.empty() && (!a.server.empty() || !a.metrics_from.empty()))
    return Status::InvalidArgument(
        "--cluster names the servers: give it without --server and --metrics-from");
  if (a.server.empty() && a.cluster.empty())
    return Status::InvalidArgument("--server (or --cluster) is required");
  if (a.candidate.empty()) return Status::InvalidArgument("--candidate is required");
  KILN_ASSIGN_OR_RETURN(std::vector<int> steps, parse_steps(a.steps, "--steps"));
  KILN_ASSIGN_OR_RETURN(int64_t interval_ms, parse_duration_ms(a.interval, "--interval"));
  KILN_ASSIGN_OR_RETURN(int64_t reload_timeout_ms,
                        parse_duration_ms(a.reload_timeout, "--reload-timeout"));
  KILN_ASSIGN_OR_RETURN(int64_t follow_timeout_ms,
                        parse_duration_ms(a.follow_timeout, "--follow-timeout"));
  RolloutOptions options(a.route, a.server, a.candidate);
  options.steps(steps)
      .interval_ms(interval_ms)
      .max_error_rate(a.max_error_rate)
      .max_p99_ms(a.max_p99_ms)
      .min_live_accuracy(a.min_live_accuracy)
      .min_labelled_rows(a.min_labelled_rows)
      .min_requests(a.min_requests)
      .api_key_file(a.api_key_file)
      .promote(a.promote)
      .reload_timeout_ms(reload_timeout_ms)
      .metrics_from(a.metrics_from)
      .follow_timeout_ms(follow_timeout_ms);
  if (!a.cluster.empty()) {
    options.cluster(std::filesystem::absolute(a.cluster).string());
    KILN_RETURN_IF_ERROR(use_cluster_replicas(options));
  }
  KILN_ASSIGN_OR_RETURN(auto r, Rollout::Create(options, state_path, promote_alias));
  catch_interrupts(*r);
  return r->start(std::cout);
}

}  // namespace

void register_rollout_command(CLI::App& app, int* exit_code) {
  auto a = std::make_shared<RolloutArgs>();
  CLI::App* c = app.add_subcommand("rollout", kRolloutHelp);
  c->footer(
      "Each step POSTs the route's weights (the candidate the step's share, the other targets "
      "the rest), waits --interval, and checks the candidate's served model on /metrics over "
      "that interval: error rate = (server_error + timeout) / all requests, p99 from the "
      "latency histogram, the live accuracy gauge. Fewer than --min-requests requests make the "
      "step inconclusive. A failed or inconclusive step sets the candidate to 0 % at once. "
      "State: $KILN_HOME/rollouts/ROUTE.json; a killed runner leaves it running: --resume goes "
      "on from its step, --abort rolls back. Exit: 0 promoted, 1 rolled back or a runtime "
      "failure, 2 bad input or a rollout already in progress.\n"
      "Example:\n"
      "  kiln rollout cancer --server http://127.0.0.1:8000 --candidate canary --steps "
      "10,50,100 --interval 2m --max-error-rate 0.01 --max-p99-ms 20 --promote "
      "bc@production=7");
  c->add_option("route", a->route, "route name (a --route of the server)")->required();
  c->add_option("--server", a->server, "the kiln serve to drive, http://127.0.0.1:PORT");
  c->add_option("--candidate", a->candidate, "the route target that takes the traffic");
  c->add_option("--steps", a->steps, "the candidate's weight per step, increasing, ending at 100")
      ->default_val("10,25,50,100");
  c->add_option("--interval", a->interval, "time per step: 500ms, 30s, 2m")->default_val("60s");
  c->add_option("--max-error-rate", a->max_error_rate,
                "largest share of the candidate's requests that may fail (server_error, timeout)")
      ->default_val(0.01)
      ->check(CLI::Range(0.0, 1.0));
  c->add_option("--max-p99-ms", a->max_p99_ms, "largest p99 latency of the candidate (ms)")
      ->check(CLI::PositiveNumber);
  c->add_option("--min-live-accuracy", a->min_live_accuracy,
                "smallest live accuracy (feedback) of the candidate")
      ->check(CLI::Range(0.0, 1.0));
  c->add_option("--min-labelled-rows", a->min_labelled_rows,
                "with --min-live-accuracy: fewer labelled rows make a step inconclusive")
      ->default_val(20)
      ->check(CLI::PositiveNumber);
  c->add_option("--min-requests", a->min_requests,
                "fewer requests to the candidate in a step make it inconclusive (rolled back)")
      ->default_val(20)
      ->check(CLI::PositiveNumber);
  add_flag(*c, Flag::kApiKeyFile, &a->api_key_file)
      ->description("the server's API key file (sent as 'Authorization: Bearer KEY')");
  c->add_option("--promote", a->promote,
                "after the last step, point the registry alias NAME@ALIAS at VERSION "
                "(NAME@ALIAS=VERSION; history kept). A candidate served from the registry must "
                "serve VERSION first: the rollout waits for the server to reload it");
  c->add_option("--reload-timeout", a->reload_timeout,
                "with --promote: how long to wait for the candidate to serve VERSION before "
                "refusing (nothing changed)")
      ->default_val("120s");
  c->add_option("--metrics-from", a->metrics_from,
                "http://HOST:PORT of a server whose /metrics the checks add up (repeatable; "
                "default: --server): each replica of a cluster, which share the route's split "
                "through their KILN_HOME, while --server is any one of them or nginx");
  c->add_option("--cluster", a->cluster,
                "a `kiln deploy` cluster file: POST to its first replica, add up every "
                "replica's /metrics (instead of --server and --metrics-from)");
  c->add_option("--follow-timeout", a->follow_timeout,
                "how long the other metrics servers may take to route a POSTed split")
      ->default_val("10s");
  c->add_flag("--resume", a->resume, "go on with the rollout a killed runner left running");
  c->add_flag("--abort", a->abort, "roll back the rollout left running (candidate 0 %)");
  c->callback([a, exit_code] {
    Status st = run_rollout(*a);
    *exit_code = st.ok() ? 0 : report_failure(st);
  });
}

}  // namespace kiln::cli
