#pragma once

#include <filesystem>
#include <ostream>
#include <string>
#include <vector>

#include "kiln/core/expected.h"
#include "kiln/pipeline/pipeline_file.h"
#include "kiln/pipeline/run_store.h"

namespace kiln::pipeline {

/// How run_pipeline runs a pipeline. The `kiln` binary that kind stages call is required.
///
///   RunOptions options("/usr/local/bin/kiln");
///   options.jobs(2).force({"train"});
struct RunOptions {
  explicit RunOptions(fs::path kiln_binary) : kiln_binary_(std::move(kiln_binary)) {}
  RunOptions& jobs(int v) {
    jobs_ = v;
    return *this;
  }
  RunOptions& force(std::vector<std::string> v) {
    force_ = std::move(v);
    return *this;
  }
  RunOptions& dry_run(bool v) {
    dry_run_ = v;
    return *this;
  }
  RunOptions& home(fs::path v) {
    home_ = std::move(v);
    return *this;
  }

  fs::path kiln_binary_;
  int jobs_ = 1;                    ///< stages run at once
  std::vector<std::string> force_;  ///< stages run even when up to date
  bool dry_run_ = false;            ///< decide and print, run nothing, record nothing
  fs::path home_;                   ///< KILN_HOME (stage work directories); "" = kiln_home()
};

/// What one run did, stage by stage (in the order they finished).
struct RunSummary {
  int64_t run_id = 0;  ///< 0 for a dry run
  std::vector<StageRecord> stages;
  /// True when no stage failed or was blocked.
  bool ok() const;
};

/// Runs the stages whose dependency hash changed (or that never ran, lost their outputs, or are
/// forced), up to `jobs` at once as child processes, and skips the rest, reusing their recorded
/// outputs. A failed stage blocks what depends on it; a stage whose gate failed is "blocked" with
/// "not blessed: ...". Each outcome is committed to `store` once final. Progress lines go to
/// `log`. Blocks until every stage is decided. Not thread-safe (one run per store instance).
/// A run holds an exclusive lock on the pipeline's work directory (Unavailable while another
/// process runs the same pipeline); stage processes are killed if the runner dies.
/// Errors: a `--force` naming no stage (InvalidArgument), I/O and database failures.
Expected<RunSummary> run_pipeline(const PipelineFile& file, RunStore& store,
                                  const RunOptions& options, std::ostream& log);

/// Where a stage stands now, without running anything.
struct StageState {
  std::string stage;
  std::string state;   ///< "up to date", "changed", "never run", "failed"
  std::string detail;  ///< e.g. "train.yaml, upstream prepare" for changed
};
/// Compares each stage's current inputs with its last good record (upstream hashes as they
/// would be now). Blocks on hashing the inputs.
Expected<std::vector<StageState>> pipeline_status(const PipelineFile& file, RunStore& store);

/// `$KILN_HOME/pipelines/<stem>-<hash of the path>`: where a pipeline's stages write.
fs::path pipeline_work_dir(const PipelineFile& file, const fs::path& home);

}  // namespace kiln::pipeline
