#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "kiln/core/expected.h"
#include "kiln/core/json.h"

namespace kiln::rollout {

/// Parses a duration: a number with a unit, `500ms`, `30s`, `2m` (fractions allowed: `1.5s`).
/// Returns milliseconds. `flag` names the option in errors ("--interval: ...").
Expected<int64_t> parse_duration_ms(const std::string& text, const std::string& flag);

/// Parses the candidate's weight per step, e.g. `10,25,50,100`: integers in 1..100, strictly
/// increasing, ending at 100. Errors name `flag` and the bad item.
Expected<std::vector<int>> parse_steps(const std::string& text, const std::string& flag);

/// A route's weights for one step: `candidate` gets `candidate_weight`, the other targets share
/// the rest evenly (the first ones take the remainder). Keys in `targets` order.
Json step_weights(const std::vector<std::string>& targets, const std::string& candidate,
                  int candidate_weight);

/// What a rollout checks at each step, over the step's interval, for the candidate's model.
/// Plain value; thread-compatible. Serialised into the rollout's state file.
///
///   RolloutOptions o("cancer", "http://127.0.0.1:8000", "canary");
///   o.steps({10, 50, 100}).interval_ms(30000).max_error_rate(0.01).max_p99_ms(50);
struct RolloutOptions {
  RolloutOptions() = default;
  RolloutOptions(std::string route, std::string server, std::string candidate)
      : route_(std::move(route)), server_(std::move(server)), candidate_(std::move(candidate)) {}

#define KILN_ROLLOUT_OPTION(type, name) \
  RolloutOptions& name(type v) {        \
    name##_ = std::move(v);             \
    return *this;                       \
  }
  KILN_ROLLOUT_OPTION(std::vector<int>, steps)
  KILN_ROLLOUT_OPTION(int64_t, interval_ms)
  KILN_ROLLOUT_OPTION(double, max_error_rate)
  KILN_ROLLOUT_OPTION(double, max_p99_ms)
  KILN_ROLLOUT_OPTION(double, min_live_accuracy)
  KILN_ROLLOUT_OPTION(int64_t, min_labelled_rows)
  KILN_ROLLOUT_OPTION(int64_t, min_requests)
  KILN_ROLLOUT_OPTION(std::string, api_key_file)
  KILN_ROLLOUT_OPTION(std::string, promote)
  KILN_ROLLOUT_OPTION(int64_t, reload_timeout_ms)
  KILN_ROLLOUT_OPTION(std::vector<std::string>, metrics_from)
  KILN_ROLLOUT_OPTION(int64_t, follow_timeout_ms)
  KILN_ROLLOUT_OPTION(std::string, cluster)
#undef KILN_ROLLOUT_OPTION

  std::string route_;
  std::string server_;     ///< http://HOST:PORT of a `kiln serve` (loopback, or a cluster's node)
  std::string candidate_;  ///< one of the route's targets
  std::vector<int> steps_ = {10, 25, 50, 100};
  int64_t interval_ms_ = 60000;
  double max_error_rate_ = 0.01;
  double max_p99_ms_ = -1;          ///< < 0: not checked
  double min_live_accuracy_ = -1;   ///< < 0: not checked
  int64_t min_labelled_rows_ = 20;  ///< with min_live_accuracy: fewer labelled rows: inconclusive
  int64_t min_requests_ = 20;
  std::string api_key_file_;  ///< "" : no Authorization header
  std::string promote_;       ///< NAME@ALIAS=VERSION, "" : no promotion
  /// With promote: how long start() waits for the candidate to serve VERSION (a just-moved
  /// alias the server has not reloaded yet) before the first step; then it refuses.
  int64_t reload_timeout_ms_ = 120000;
  /// http://HOST:PORT of every server whose /metrics the checks add up (a cluster's replicas,
  /// which share the route's split through their KILN_HOME); empty: server_'s alone.
  std::vector<std::string> metrics_from_;
  /// With metrics_from: how long every other server there may take to route a POSTed split (they
  /// check the kept file every --poll-interval-ms) before the step counts as an error.
  int64_t follow_timeout_ms_ = 10000;
  /// A `kiln deploy` cluster file: server_ and metrics_from_ are its replicas, looked up again
  /// at --resume/--abort (a cluster brought up again has new ports); its nodes may be remote.
  std::string cluster_;

  Json to_json() const;
  static Expected<RolloutOptions> from_json(const Json& j);
};

/// `NAME@ALIAS=VERSION` split; errors name --promote.
struct PromoteTarget {
  std::string name;
  std::string alias;
  int64_t version = 0;
};
Expected<PromoteTarget> parse_promote(const std::string& text);

}  // namespace kiln::rollout
