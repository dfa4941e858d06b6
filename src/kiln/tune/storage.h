#pragma once

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "kiln/core/expected.h"
#include "kiln/core/json.h"
#include "kiln/tune/trial.h"

struct sqlite3;

namespace kiln::tune {

/// What identifies a study: its name and the settings a resumed run must agree with.
struct StudyInfo {
  int64_t id = 0;
  std::string name;
  std::string direction = "maximize";  ///< maximize | minimize
  Json space = Json::object();         ///< SearchSpace::to_json()
  std::string sampler;
  std::string pruner;
  std::string metric;     ///< training-config mode: the metric read per epoch; "" in black-box mode
  std::string objective;  ///< the config file or the objective command
  double created = 0;     ///< unix seconds
  bool maximize() const { return direction == "maximize"; }
};

/// Studies and their trials in one SQLite file (`$KILN_HOME/studies.db`): tables `studies`,
/// `trials` (params JSON, state, value, started/finished, duration, tuner pid) and
/// `intermediate` (trial, step, value). WAL mode with a busy timeout, so `kiln tune show` can read
/// while a tuner writes, and every write is one transaction (a kill -9 loses nothing committed).
/// One connection; not thread-safe (use one per thread).
class StudyStorage {
 public:
  /// Opens (creating) the database file and its tables. Blocks (file I/O).
  static Expected<std::unique_ptr<StudyStorage>> Open(const std::filesystem::path& path);
  ~StudyStorage();
  StudyStorage(const StudyStorage&) = delete;
  StudyStorage& operator=(const StudyStorage&) = delete;

  /// NotFound when there is no study of that name.
  Expected<StudyInfo> find_study(const std::string& name);
  /// Creates the study, or loads it when it exists with the same space and direction; a study
  /// of that name with another space or direction is InvalidArgument showing the difference.
  Expected<StudyInfo> create_or_load_study(const StudyInfo& wanted);
  std::vector<std::string> study_names();

  /// A new running trial numbered after the study's last one, owned by process `tuner_pid`.
  /// With `max_trials` >= 0 the claim is refused (FailedPrecondition, nothing written) when the
  /// study already holds that many counted trials (running or finished, orphaned failures not
  /// counted): the count and the insert are one IMMEDIATE transaction, so tuners sharing a study
  /// (other processes, other connections) never overshoot --trials together.
  Expected<TrialRecord> create_trial(int64_t study_id, const Json& params, int64_t tuner_pid,
                                     const std::string& out_dir, int64_t max_trials = -1);
  Status set_out_dir(int64_t trial_id, const std::string& out_dir);
  Status report(int64_t trial_id, int64_t step, double value);
  Status finish(int64_t trial_id, TrialState state, double value, const std::string& note);
  /// Every trial of the study with its intermediate values, by number.
  Expected<std::vector<TrialRecord>> trials(int64_t study_id);
  /// Marks running trials whose tuner process is gone (or is `dead_pid_hint`) failed and
  /// orphaned; returns how many. Resume calls this before sampling.
  Expected<int64_t> fail_orphans(int64_t study_id);

 private:
  explicit StudyStorage(sqlite3* db) : db_(db) {}
  Status exec(const std::string& sql);
  sqlite3* db_;
};

/// Seconds since the epoch, with sub-second precision.
double unix_now();

}  // namespace kiln::tune
