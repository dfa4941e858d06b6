#pragma once

#include <functional>
#include <iosfwd>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "kiln/core/expected.h"
#include "kiln/core/files.h"
#include "kiln/loadtest/target.h"
#include "kiln/rollout/live_metrics.h"
#include "kiln/rollout/plan.h"
#include "kiln/rollout/state.h"

namespace kiln::rollout {

/// Moves a registry alias (the CLI opens the registry: this library stays torch-free).
using PromoteFn = std::function<Status(const PromoteTarget&)>;

/// Drives one rollout of a `kiln serve` route: per step it POSTs the weights, waits the interval,
/// diffs the candidate's /metrics and checks them; a failed or inconclusive step rolls back at
/// once (candidate 0 %). The state file is rewritten after every change. Blocks for the whole
/// rollout; not thread-safe. One runner per route at a time: start/resume/abort take an
/// exclusive lock (flock on ROUTE.json.lock beside the state, released when the process dies, so
/// a runner killed with -9 never blocks the next) and refuse while another process holds it.
///
///   KILN_ASSIGN_OR_RETURN(auto r, Rollout::Create(options, state_path, promote));
///   Status done = r->start(std::cout);   // FailedPrecondition: a check failed, rolled back
class Rollout {
 public:
  /// Resolves the server URL and reads the API key file; contacts nothing yet.
  static Expected<std::unique_ptr<Rollout>> Create(const RolloutOptions& options,
                                                   std::filesystem::path state_path,
                                                   PromoteFn promote);
  ~Rollout();
  Rollout(const Rollout&) = delete;
  Rollout& operator=(const Rollout&) = delete;

  /// Polled while a step waits (every 100 ms): once it returns true, the rollout rolls back at
  /// once (candidate 0 %, "interrupted") and start()/resume() return FailedPrecondition. The CLI
  /// sets it from SIGINT/SIGTERM, so a stopped runner never leaves a rollout half-way (SIGKILL
  /// still does: --resume or --abort).
  void set_interrupted(std::function<bool()> interrupted) { interrupted_ = std::move(interrupted); }

  /// A new rollout from the first step. Refused (AlreadyExists) while the state file says one is
  /// running; NotFound for an unknown route, InvalidArgument for a candidate that is no target.
  Status start(std::ostream& out);
  /// Continues `state` (status running) from its recorded step, re-applying that step's weights.
  Status resume(RolloutState state, std::ostream& out);
  /// Rolls `state` back (candidate 0 %) and records rolled_back.
  Status abort(RolloutState state, std::ostream& out);

 private:
  Rollout(RolloutOptions options, std::filesystem::path state_path, PromoteFn promote)
      : options_(std::move(options)),
        state_path_(std::move(state_path)),
        promote_(std::move(promote)) {}
  /// AlreadyExists while another process drives this route's rollout.
  Status lock();
  Expected<std::vector<std::string>> route_targets();
  /// POSTs `weights` to the server; then waits (follow_timeout_ms) until every metrics server
  /// routes them too, or with `post_to_every_server` (a roll back) POSTs them to each directly,
  /// going on past a server that fails (the first failure is returned).
  Status set_weights(const Json& weights, bool post_to_every_server = false);
  Status post_weights(const loadtest::Target& server, const Json& weights);
  /// The route's weights as `server` routes them now; null when it does not answer.
  Json routed_weights(const loadtest::Target& server);
  /// The candidate's counters now, added over the metrics servers (--metrics-from, else
  /// --server).
  Expected<ModelSnapshot> candidate_snapshot();
  Status run_from(RolloutState& state, std::ostream& out);
  Status roll_back(RolloutState& state, std::ostream& out, const std::string& why);

  RolloutOptions options_;
  std::filesystem::path state_path_;
  PromoteFn promote_;
  loadtest::Target target_;
  std::vector<loadtest::Target> metrics_targets_;  ///< whose /metrics the checks add up
  std::vector<std::string> headers_;
  std::vector<std::string> targets_;
  std::optional<FileLock> lock_;
  std::function<bool()> interrupted_;
};

/// Waits until the server at `target` serves `version` of `model` (GET /v2/models/MODEL reports
/// it first in "versions"; a server re-resolves NAME@ALIAS by itself), polling every 200 ms;
/// Unavailable naming the version it still serves after `timeout_ms`, FailedPrecondition once
/// `interrupted` (optional) returns true.
Status wait_for_served_version(const loadtest::Target& target,
                               const std::vector<std::string>& headers, const std::string& model,
                               int64_t version, int64_t timeout_ms,
                               const std::function<bool()>& interrupted = {});

/// The step's verdict against the options: "" when every check holds, else which check failed
/// with the numbers. `inconclusive` is set when too little traffic or feedback came to judge.
std::string check_window(const RolloutOptions& options, const WindowStats& stats,
                         bool* inconclusive);

}  // namespace kiln::rollout
