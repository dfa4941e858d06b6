#include "kiln/rollout/state.h"

#include <ctime>
#include <system_error>

#include "kiln/core/files.h"

namespace kiln::rollout {

std::string utc_now() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

Json RolloutState::to_json() const {
  Json j = options.to_json();
  j["current_step"] = current_step;
  j["status"] = status;
  j["started"] = started;
  j["updated"] = updated;
  j["history"] = history;
  return j;
}

Expected<RolloutState> RolloutState::from_json(const Json& j) {
  KILN_ASSIGN_OR_RETURN(RolloutOptions options, RolloutOptions::from_json(j));
  RolloutState s;
  s.options = std::move(options);
  try {
    s.current_step = j.at("current_step").get<size_t>();
    s.status = j.at("status").get<std::string>();
    s.started = j.at("started").get<std::string>();
    s.updated = j.value("updated", "");
    s.history = j.at("history");
  } catch (const std::exception& e) {
    return Status::DataLoss(std::string("rollout state: ") + e.what());
  }
  if (s.current_step > s.options.steps_.size())
    return Status::DataLoss("rollout state: current_step " + std::to_string(s.current_step) +
                            " past the last step");
  if (s.status != kRunning && s.status != kPromoted && s.status != kRolledBack)
    return Status::DataLoss("rollout state: unknown status \"" + s.status + "\"");
  return s;
}

Expected<std::filesystem::path> rollout_state_path(const std::string& route) {
  if (route.empty() || route[0] == '.' || route.find('/') != std::string::npos)
    return Status::InvalidArgument("route \"" + route + "\": not a route name");
  return kiln_home() / "rollouts" / (route + ".json");
}

Expected<RolloutState> load_rollout_state(const std::filesystem::path& path) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec))
    return Status::NotFound(path.string() + ": no rollout recorded");
  KILN_ASSIGN_OR_RETURN(Json j, read_json_file(path));
  Expected<RolloutState> s = RolloutState::from_json(j);
  if (!s.ok()) return Status(s.status().code(), path.string() + ": " + s.status().message());
  return s;
}

Status save_rollout_state(const std::filesystem::path& path, RolloutState& state) {
  std::error_code ec;
  std::filesystem::create_directories(path.parent_path(), ec);
  if (ec) return Status::IoError(path.parent_path().string() + ": " + ec.message());
  state.updated = utc_now();
  return write_json_file_atomic(path, state.to_json());
}

}  // namespace kiln::rollout
