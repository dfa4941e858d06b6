#pragma once
// Progressive delivery in `kiln serve`: one served name whose requests are split between several
// served models by weight (a canary), sticky per client, with an optional shadow that gets a copy
// of every request and whose answers are compared, never returned. Torch-free.

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "kiln/core/expected.h"

namespace kiln::serve {

/// A route: `NAME=TARGET:WEIGHT,TARGET:WEIGHT[,shadow:TARGET]` (the `--route` flag), where each
/// TARGET is the name of a served model (`--model TARGET=REF` names one).
struct RouteSpec {
  std::string name;
  std::vector<std::pair<std::string, int64_t>> targets;  ///< served model, weight (>= 0)
  std::string shadow;                                    ///< "" when none

  /// "cancer=prod:90,cand:10,shadow:next"; InvalidArgument naming the part that is wrong.
  static Expected<RouteSpec> parse(std::string_view text);
  std::string to_string() const;
  /// The targets' weights in order (what TrafficRouter::set_weights takes).
  std::vector<int64_t> weights() const {
    std::vector<int64_t> w;
    for (const auto& t : targets) w.push_back(t.second);
    return w;
  }
};

/// Picks a route's target for each request. With a key (a client's sticky header), the target
/// is a pure function of the key's hash and the weights: a client stays on its target while the
/// weights stand, and moving weight only moves the clients in the moved share. Without one,
/// smooth weighted round robin (nginx's): exact proportions over every sum-of-weights requests.
/// Thread-safe; set_weights() may run while requests are routed.
class TrafficRouter {
 public:
  explicit TrafficRouter(RouteSpec spec);

  const std::string& name() const { return spec_.name; }
  const std::string& shadow() const { return spec_.shadow; }
  /// The targets in spec order (names fixed; weights as last set).
  RouteSpec spec() const;
  /// The served model for one request; `key` empty: round robin.
  std::string pick(std::string_view key);
  /// New weights, one per target in spec order (a rollout step). InvalidArgument when the count
  /// differs, a weight is negative, or all are zero.
  Status set_weights(const std::vector<int64_t>& weights);

 private:
  mutable std::mutex mu_;
  RouteSpec spec_;
  std::vector<int64_t> current_;  ///< smooth round robin state
};

/// Route weights set by POST /v2/routes/NAME, kept on disk so that a restarted server resumes
/// them instead of its --route flag's: one DIR/NAME.json per route, {"route", "started_as" (the
/// flag's spec the server ran with), "weights" {TARGET: WEIGHT}, "set_at"}, written atomically.
/// A file written under another --route (targets, shadow or weights changed) no longer applies:
/// the flag says what the user wants now. Servers that share DIR (replicas on one KILN_HOME,
/// started alike) share their routes' weights: each applies what another wrote (InferenceServer
/// watches the files). Plain functions; callers serialise writes of one route.
struct KeptRouteWeights {
  /// The route's weights as last set, when `dir`'s file was written under `started_as`; nullopt
  /// when there is no file, or it was written under another --route (the file is then removed
  /// when `remove_stale`). InvalidArgument naming the file and field for a file that is not one
  /// of ours (delete it to start from the flag).
  static Expected<std::optional<RouteSpec>> load(const std::filesystem::path& dir,
                                                 const RouteSpec& started_as,
                                                 bool remove_stale = true);
  /// Writes `now` (the route's current weights) as set under `started_as`; atomic and durable.
  static Status save(const std::filesystem::path& dir, const RouteSpec& started_as,
                     const RouteSpec& now);
  static std::filesystem::path file(const std::filesystem::path& dir, const std::string& route) {
    return dir / (route + ".json");
  }
};

/// FNV-1a 64 of `text` (the sticky key's hash; stable across builds and machines).
uint64_t route_key_hash(std::string_view text);

}  // namespace kiln::serve
