#pragma once

#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "kiln/core/expected.h"
#include "kiln/core/json.h"

namespace kiln::pipeline {

namespace fs = std::filesystem;

/// What a stage runs: a `kiln` verb, or any shell command.
enum class StageKind { kPrepare, kTrain, kTune, kTest, kPush, kPromote, kRollout, kShell };

/// "prepare", "train", "tune", "test", "push", "promote", "rollout", "shell".
const char* stage_kind_name(StageKind kind);

/// One stage of a pipeline file, as written. Paths are relative to the pipeline file's directory.
/// A value type; thread-compatible.
struct StageSpec {
  std::string name;
  StageKind kind = StageKind::kShell;
  std::string spec;                ///< prepare: dataset spec
  std::string config;              ///< train, tune: training config
  std::string space;               ///< tune: search space YAML
  std::string suite;               ///< test: suite YAML ("" = the bundle's default suite)
  std::string push_name;           ///< push: registered model name
  std::string alias;               ///< promote: the alias moved to the version pushed upstream;
                                   ///< rollout: the alias promoted to it after the last step
  std::string route;               ///< rollout: the server's route
  std::string server;              ///< rollout: http://127.0.0.1:PORT
  std::string candidate;           ///< rollout: the route target that takes the traffic
  std::vector<std::string> args;   ///< tune, rollout: more flags for the verb, as written
  std::string cmd;                 ///< shell: command for /bin/sh -c
  std::string gate;                ///< a test stage that must have passed ("" = none)
  std::vector<std::string> needs;  ///< stages that run before this one
  std::vector<std::string> deps;   ///< extra files or directories hashed into the cache key
  std::vector<std::string> outs;   ///< files or directories the stage must leave behind
  Json node;                       ///< the stage's YAML sub-tree (its config hash)
  int line = 0;

  /// needs plus the gate, without duplicates: every stage that must finish first.
  std::vector<std::string> upstream() const;
};

/// A parsed, validated pipeline file: stages in a topological order (file order among ready
/// stages). Immutable after read_pipeline_file(); thread-compatible.
///
///   KILN_ASSIGN_OR_RETURN(PipelineFile p,
///   read_pipeline_file("examples/breast-cancer/pipeline.yaml")); for (const StageSpec& s :
///   p.stages) std::cout << s.name << "\n";
struct PipelineFile {
  fs::path path;  ///< absolute
  std::vector<StageSpec> stages;

  fs::path directory() const { return path.parent_path(); }
  /// The stage named `name`, or null.
  const StageSpec* find(const std::string& name) const;
  /// Every stage downstream of (depending directly or transitively on) `name`.
  std::vector<std::string> downstream(const std::string& name) const;
  /// 0 for stages without upstream, else 1 + the deepest upstream's layer (for drawing).
  std::map<std::string, int> layers() const;
};

/// Parses a pipeline file from text; `path` names it in errors ("pipeline.yaml:7: stage 'train':
/// unknown field 'confg'"). Errors (InvalidArgument): unknown kind or field, a missing required
/// field, needs or gate naming no stage, a cycle.
Expected<PipelineFile> parse_pipeline(const std::string& text, const fs::path& path);
/// parse_pipeline() of a file (NotFound / IoError when it cannot be read).
Expected<PipelineFile> read_pipeline_file(const fs::path& path);

}  // namespace kiln::pipeline
