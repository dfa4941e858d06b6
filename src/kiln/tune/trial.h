#pragma once

#include <cstdint>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include "kiln/core/json.h"

namespace kiln::tune {

/// Where a trial is in its life. `kFailed` covers crashes, non-zero exits, OOM kills, unreadable
/// objectives, and trials orphaned by a tuner that died (those carry `orphaned`).
enum class TrialState { kRunning, kComplete, kPruned, kFailed };

const char* trial_state_name(TrialState s);
/// Parses a name written by trial_state_name; kFailed for anything unknown.
TrialState trial_state_from_name(const std::string& name);

/// One trial as the storage holds it. Plain value type.
struct TrialRecord {
  int64_t id = 0;      ///< storage row id
  int64_t number = 0;  ///< 0-based, in creation order within the study
  TrialState state = TrialState::kRunning;
  double value = std::numeric_limits<double>::quiet_NaN();  ///< objective (complete trials)
  Json params = Json::object();                             ///< name → value (active params)
  std::map<int64_t, double> intermediate;                   ///< step (epoch) → metric
  bool orphaned = false;  ///< failed because the tuner running it died; re-run, not counted
  double started = 0;     ///< unix seconds
  double duration = 0;    ///< seconds (finished trials)
  std::string note;       ///< why it failed / was pruned
  std::string out_dir;    ///< trial directory (training-config mode)

  bool finished() const { return state != TrialState::kRunning; }
};

/// The best finished trial (complete, finite value), or nullptr.
const TrialRecord* best_trial(const std::vector<TrialRecord>& trials, bool maximize);

}  // namespace kiln::tune
