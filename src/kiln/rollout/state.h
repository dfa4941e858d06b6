#pragma once

#include <cstddef>
#include <filesystem>
#include <string>

#include "kiln/core/expected.h"
#include "kiln/core/json.h"
#include "kiln/rollout/plan.h"

namespace kiln::rollout {

/// A rollout's durable record, $KILN_HOME/rollouts/ROUTE.json: its options, the step it is at,
/// its status and a verdict per step done. Written atomically after every change, so a runner
/// killed at any point leaves the last state whole ("running": resume or abort it). Plain value.
struct RolloutState {
  static constexpr const char* kRunning = "running";
  static constexpr const char* kPromoted = "promoted";
  static constexpr const char* kRolledBack = "rolled_back";

  RolloutOptions options;
  size_t current_step = 0;  ///< index into options.steps_; == steps.size(): every step passed
  std::string status = kRunning;
  std::string started;  ///< UTC, ISO 8601
  std::string updated;
  Json history = Json::array();  ///< {"step", "weights", "requests", ..., "verdict", "reason"}

  Json to_json() const;
  static Expected<RolloutState> from_json(const Json& j);
};

/// $KILN_HOME/rollouts/ROUTE.json; a route name with '/' or starting with '.' is refused.
Expected<std::filesystem::path> rollout_state_path(const std::string& route);

/// Reads a state file; NotFound when there is none. Errors name the file.
Expected<RolloutState> load_rollout_state(const std::filesystem::path& path);

/// Writes it atomically (temp file, fsync, rename), stamping `updated`; creates the directory.
Status save_rollout_state(const std::filesystem::path& path, RolloutState& state);

/// Now, UTC, e.g. 2026-12-06T06:58:00Z.
std::string utc_now();

}  // namespace kiln::rollout
