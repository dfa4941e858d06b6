#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "kiln/core/expected.h"
#include "kiln/core/json.h"
#include "kiln/core/sqlite.h"

namespace kiln::pipeline {

namespace fs = std::filesystem;

/// One stage's outcome in one run.
struct StageRecord {
  int64_t run_id = 0;
  std::string stage;
  std::string status;  ///< done | failed | skipped | blocked
  std::string reason;  ///< why it ran, or why not ("never run", "changed: train.yaml", ...)
  double started = 0;  ///< unix seconds
  double duration_s = 0;
  int exit_code = 0;
  Json outputs = Json::object();
  std::string dep_hash;
  std::map<std::string, std::string> inputs;  ///< label -> hash (see stage_inputs)
};

/// One run of a pipeline.
struct RunRecord {
  int64_t id = 0;
  std::string pipeline;  ///< absolute path of the pipeline file
  double started = 0;
  double finished = 0;  ///< 0 while running, or when the runner died
  std::string status;   ///< running | ok | failed
};

/// Pipeline run records in SQLite ($KILN_HOME/pipelines.db, WAL, busy timeout): a run row when
/// a run starts, a stage row committed only once the stage's outcome is final (a done stage's
/// command exited 0 and its outputs exist), so a runner killed mid-stage leaves no row for it.
/// Not thread-safe: one instance per thread; several processes may share the file.
///
///   KILN_ASSIGN_OR_RETURN(auto store, RunStore::Open(kiln_home() / "pipelines.db"));
///   auto last = store->last_good(pipeline_path, "train");
class RunStore {
 public:
  static Expected<std::unique_ptr<RunStore>> Open(const fs::path& db_path);

  Expected<int64_t> begin_run(const std::string& pipeline, double started);
  Status finish_run(int64_t run_id, const std::string& status, double finished);
  /// Inserts (commits) one stage's outcome.
  Status record_stage(const StageRecord& record);
  /// The latest done or skipped record of a stage: the outputs and hash the cache reuses.
  Expected<std::optional<StageRecord>> last_good(const std::string& pipeline,
                                                 const std::string& stage);
  /// The latest record of a stage, whatever its status.
  Expected<std::optional<StageRecord>> last(const std::string& pipeline, const std::string& stage);
  Expected<std::optional<RunRecord>> last_run(const std::string& pipeline);
  Expected<std::vector<StageRecord>> stages_of_run(int64_t run_id);

 private:
  explicit RunStore(SqliteConnection db) : db_(std::move(db)) {}
  Expected<std::vector<StageRecord>> query_stages(const std::string& sql,
                                                  const std::vector<std::string>& text_args,
                                                  int64_t int_arg);
  SqliteConnection db_;
};

}  // namespace kiln::pipeline
