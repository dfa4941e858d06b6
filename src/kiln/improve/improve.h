#pragma once
// `kiln improve`: the continuous-improvement loop. From the production model's logged predictions
// and their feedback, build a snapshot (the champion's training data plus the labelled production
// rows), train a challenger, test it against the champion on held-out production rows neither
// trained on (McNemar), push it, canary it through `kiln rollout`'s path on the serving route and
// promote it; triggers with a cool-down; every decision appended to a history.

#include <cstdint>
#include <filesystem>
#include <functional>
#include <iosfwd>
#include <string>
#include <vector>

#include "kiln/core/expected.h"
#include "kiln/core/json.h"

namespace kiln::improve {

namespace fs = std::filesystem;

/// What starts an improvement cycle.
enum class Trigger {
  kDrift,     ///< the champion's live drift check flags the dataset
  kAccuracy,  ///< live accuracy fell below the bundle's test accuracy by more than a margin
  /// a classifier's live calibration error rose above the bundle's test one by more than a
  /// margin: its confidence no longer matches how often it is right
  kCalibration,
  kNewData,   ///< enough labelled production rows arrived since the last cycle
  kSchedule,  ///< the schedule's interval passed since the last cycle
};
Expected<Trigger> parse_trigger(const std::string& text);
const char* to_string(Trigger t);

/// Options of one `kiln improve NAME` check (and the cycle it may start). Plain value.
///
///   ImproveOptions o;
///   o.name = "fmnist"; o.server = "http://127.0.0.1:8000"; o.route = "fmnist";
///   o.champion_target = "stable"; o.candidate_target = "canary";
///   o.triggers = {Trigger::kAccuracy, Trigger::kDrift};
struct ImproveOptions {
  std::string name;  ///< registry model name
  std::string champion_alias = "production";
  std::string candidate_alias = "candidate";
  std::string server;            ///< http://127.0.0.1:PORT of the `kiln serve`
  std::string api_key_file;      ///< "" : none
  std::string route;             ///< the route serving NAME (weights move on it)
  std::string champion_target;   ///< route target serving NAME@champion_alias
  std::string candidate_target;  ///< route target serving NAME@candidate_alias
  fs::path log_dir;              ///< the prediction logs; default $KILN_HOME/logs
  std::vector<Trigger> triggers = {Trigger::kDrift, Trigger::kAccuracy};
  bool force = false;                ///< start a cycle now, whatever the triggers and cool-down say
  int64_t cooldown_ms = 600000;      ///< after a cycle, no other starts for this long
  int64_t schedule_ms = 3600000;     ///< kSchedule: the interval
  double accuracy_margin = 0.05;     ///< kAccuracy: live < reference − margin
  double calibration_margin = 0.05;  ///< kCalibration: live ECE > reference ECE + margin
  int64_t min_rows = 200;            ///< labelled production rows needed to start a cycle
  int64_t min_new_rows = 200;        ///< kNewData: labelled rows since the last cycle
  double holdout = 0.3;              ///< share of production rows held out (by id hash)
  int64_t max_holdout_rows = 2000;   ///< the newest held-out rows the comparison uses
  double alpha = 0.05;               ///< significance of the held-out comparison
  /// Classifiers: what the held-out comparison tests: "accuracy" (McNemar on the rows each got
  /// right) or "log-loss" (paired bootstrap of the mean negative log-likelihood: a challenger
  /// whose probabilities are better, as a calibration trigger asks for).
  std::string compare = "accuracy";
  /// How many times each production training row enters the train split (0: enough for half
  /// of it, at most 10).
  int64_t production_repeat = 0;
  std::vector<std::string> train_overrides;  ///< `--set key=value` on the champion's config
  // The canary (as `kiln rollout`).
  std::vector<int> steps = {25, 50, 100};
  int64_t step_interval_ms = 20000;
  double max_error_rate = 0.01;
  double max_p99_ms = -1;
  int64_t min_requests = 20;
  int64_t reload_timeout_ms = 60000;  ///< how long the server may take to load a new version
  /// Polled during the canary: true rolls it back at once (the CLI: SIGINT/SIGTERM).
  std::function<bool()> interrupted;
};

/// Runs one check and, when a trigger fires (or `force`), one cycle: collect → snapshot → train →
/// compare → push → canary → promote. Appends the decision to the history (also "skipped" ones:
/// cool-down, too few rows; a check where no trigger fired is only printed). Progress lines go to
/// `out`. Returns the recorded decision (JSON); errors before a decision could be made (bad
/// options, server unreachable) come back as a Status and are recorded as "failed" when a cycle
/// had started. Blocks for the whole cycle (training and the canary's steps); one per model at
/// a time (a lock beside the history).
Expected<Json> run_improve(const ImproveOptions& options, std::ostream& out);

/// `$KILN_HOME/improve/NAME/history.jsonl`: one JSON object per decision, oldest first.
fs::path history_path(const std::string& name);
/// The recorded decisions (an empty list when none yet). DataLoss names a corrupt line.
Expected<std::vector<Json>> read_history(const std::string& name);

}  // namespace kiln::improve
