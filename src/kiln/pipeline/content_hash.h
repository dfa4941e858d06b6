#pragma once

#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "kiln/core/expected.h"
#include "kiln/core/json.h"
#include "kiln/pipeline/pipeline_file.h"

namespace kiln::pipeline {

/// sha256 of a file's bytes, or of a directory's sorted "relative path, file hash" listing
/// (recursive, by content: names and bytes, not times). NotFound when `path` does not exist.
/// Blocks on disk reads; thread-safe.
Expected<std::string> hash_path(const fs::path& path);

/// What a stage's cache key is made of, label -> hash: every input file or directory by the path
/// written in the pipeline (relative to its directory, e.g. "train.yaml"), "stage config" (the
/// canonical JSON of the stage's YAML node), "kiln version", and "upstream NAME" (each upstream
/// stage's dependency hash, from `upstream_hashes`). A missing input hashes as "missing".
/// For kind stages the inputs are the YAML they read and the files those name (`data`,
/// `sources`, `spec`), followed through nested YAML. Thread-safe.
Expected<std::map<std::string, std::string>> stage_inputs(
    const PipelineFile& file, const StageSpec& stage,
    const std::map<std::string, std::string>& upstream_hashes);

/// The stage's dependency hash: sha256 of the canonical JSON of its inputs.
std::string dependency_hash(const std::map<std::string, std::string>& inputs);

/// Whether a stage must run and why. `last` is the inputs of its last good (done or skipped)
/// record, if any; `missing_outputs` the recorded outputs no longer on disk.
struct CacheDecision {
  bool run = false;
  std::string reason;  ///< "never run", "forced", "changed: train.yaml, stage config", "up to date"
};
CacheDecision decide(const std::map<std::string, std::string>& inputs,
                     const std::optional<std::map<std::string, std::string>>& last, bool forced,
                     const std::vector<std::string>& missing_outputs);

}  // namespace kiln::pipeline
