#include "kiln/serve/router.h"

#include <cctype>
#include <charconv>
#include <system_error>

#include "kiln/core/clock.h"
#include "kiln/core/json.h"

namespace kiln::serve {
namespace {

bool valid_name(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_' && c != '.')
      return false;
  return true;
}

Status check_weights(const std::vector<int64_t>& weights) {
  int64_t total = 0;
  for (int64_t w : weights) {
    if (w < 0) return Status::InvalidArgument("a weight is negative");
    total += w;
  }
  if (total <= 0) return Status::InvalidArgument("the weights add up to 0");
  return Status::Ok();
}

}  // namespace

uint64_t route_key_hash(std::string_view text) {
  uint64_t h = 14695981039346656037ULL;
  for (unsigned char c : text) {
    h ^= c;
    h *= 1099511628211ULL;
  }
  return h;
}

Expected<RouteSpec> RouteSpec::parse(std::string_view text) {
  const std::string where = "--route " + std::string(text);
  const size_t eq = text.find('=');
  if (eq == std::string_view::npos)
    return Status::InvalidArgument(where + ": expected NAME=TARGET:WEIGHT,...[,shadow:TARGET]");
  RouteSpec spec;
  spec.name = std::string(text.substr(0, eq));
  if (!valid_name(spec.name))
    return Status::InvalidArgument(where + ": route name '" + spec.name +
                                   "' (letters, digits, '-', '_', '.')");
  std::string_view rest = text.substr(eq + 1);
  std::vector<int64_t> weights;
  while (!rest.empty()) {
    const size_t comma = rest.find(',');
    const std::string_view part = rest.substr(0, comma);
    rest = comma == std::string_view::npos ? std::string_view() : rest.substr(comma + 1);
    const size_t colon = part.rfind(':');
    if (colon == std::string_view::npos)
      return Status::InvalidArgument(where + ": '" + std::string(part) +
                                     "' is not TARGET:WEIGHT or shadow:TARGET");
    const std::string_view left = part.substr(0, colon), right = part.substr(colon + 1);
    if (left == "shadow") {
      if (!spec.shadow.empty()) return Status::InvalidArgument(where + ": more than one shadow");
      if (!valid_name(right))
        return Status::InvalidArgument(where + ": shadow target '" + std::string(right) + "'");
      spec.shadow = std::string(right);
      continue;
    }
    int64_t weight = -1;
    auto r = std::from_chars(right.data(), right.data() + right.size(), weight);
    if (!valid_name(left) || r.ec != std::errc() || r.ptr != right.data() + right.size() ||
        weight < 0)
      return Status::InvalidArgument(where + ": '" + std::string(part) +
                                     "' is not TARGET:WEIGHT (a served model name and an "
                                     "integer weight >= 0)");
    for (const auto& t : spec.targets)
      if (t.first == left)
        return Status::InvalidArgument(where + ": target '" + std::string(left) + "' twice");
    spec.targets.emplace_back(std::string(left), weight);
    weights.push_back(weight);
  }
  if (spec.targets.empty())
    return Status::InvalidArgument(where + ": give at least one TARGET:WEIGHT");
  if (Status st = check_weights(weights); !st.ok())
    return Status::InvalidArgument(where + ": " + st.message());
  for (const auto& t : spec.targets)
    if (t.first == spec.shadow)
      return Status::InvalidArgument(where + ": '" + spec.shadow +
                                     "' is both a target and the shadow");
  return spec;
}

std::string RouteSpec::to_string() const {
  std::string s = name + "=";
  for (size_t i = 0; i < targets.size(); ++i)
    s += (i ? "," : "") + targets[i].first + ":" + std::to_string(targets[i].second);
  if (!shadow.empty()) s += ",shadow:" + shadow;
  return s;
}

TrafficRouter::TrafficRouter(RouteSpec spec)
    : spec_(std::move(spec)), current_(spec_.targets.size(), 0) {}

RouteSpec TrafficRouter::spec() const {
  std::lock_guard<std::mutex> lock(mu_);
  return spec_;
}

std::string TrafficRouter::pick(std::string_view key) {
  std::lock_guard<std::mutex> lock(mu_);
  int64_t total = 0;
  for (const auto& t : spec_.targets) total += t.second;
  if (!key.empty()) {
    // The key's point in [0, total): targets own consecutive ranges in spec order.
    int64_t point = static_cast<int64_t>(route_key_hash(key) % static_cast<uint64_t>(total));
    for (const auto& t : spec_.targets) {
      if (point < t.second) return t.first;
      point -= t.second;
    }
  }
  // Smooth weighted round robin: add each weight, take the largest, subtract the total.
  size_t best = 0;
  for (size_t i = 0; i < current_.size(); ++i) {
    current_[i] += spec_.targets[i].second;
    if (current_[i] > current_[best]) best = i;
  }
  current_[best] -= total;
  return spec_.targets[best].first;
}

Status TrafficRouter::set_weights(const std::vector<int64_t>& weights) {
  if (weights.size() != spec_.targets.size())
    return Status::InvalidArgument("route " + spec_.name + ": " +
                                   std::to_string(spec_.targets.size()) +
                                   " weights expected, got " + std::to_string(weights.size()));
  KILN_RETURN_IF_ERROR(check_weights(weights));
  std::lock_guard<std::mutex> lock(mu_);
  for (size_t i = 0; i < weights.size(); ++i) spec_.targets[i].second = weights[i];
  std::fill(current_.begin(), current_.end(), 0);
  return Status::Ok();
}

Expected<std::optional<RouteSpec>> KeptRouteWeights::load(const std::filesystem::path& dir,
                                                          const RouteSpec& started_as,
                                                          bool remove_stale) {
  const std::filesystem::path path = file(dir, started_as.name);
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) return std::optional<RouteSpec>();
  const std::string where = path.string() + ": ";
  const std::string remedy = " (delete the file to start from --route)";
  Expected<Json> doc = read_json_file(path);
  if (!doc.ok()) return Status::InvalidArgument(doc.status().message() + remedy);
  if (!doc->is_object() || !doc->contains("started_as") || !(*doc)["started_as"].is_string())
    return Status::InvalidArgument(where + "started_as: a string is needed" + remedy);
  if ((*doc)["started_as"].get<std::string>() != started_as.to_string()) {
    if (remove_stale) std::filesystem::remove(path, ec);
    return std::optional<RouteSpec>();
  }
  const Json& weights = doc->value("weights", Json());
  if (!weights.is_object() || weights.size() != started_as.targets.size())
    return Status::InvalidArgument(where + "weights: one per target of " + started_as.to_string() +
                                   " is needed" + remedy);
  RouteSpec kept = started_as;
  for (auto& t : kept.targets) {
    if (!weights.contains(t.first) || !weights[t.first].is_number_integer())
      return Status::InvalidArgument(where + "weights." + t.first + ": an integer is needed" +
                                     remedy);
    t.second = weights[t.first].get<int64_t>();
  }
  if (Status st = check_weights(kept.weights()); !st.ok())
    return Status::InvalidArgument(where + "weights: " + st.message() + remedy);
  return std::optional<RouteSpec>(std::move(kept));
}

Status KeptRouteWeights::save(const std::filesystem::path& dir, const RouteSpec& started_as,
                              const RouteSpec& now) {
  Json weights = Json::object();
  for (const auto& t : now.targets) weights[t.first] = t.second;
  const Json doc = {{"route", now.name},
                    {"started_as", started_as.to_string()},
                    {"weights", weights},
                    {"set_at", utc_now_iso8601()}};
  return write_json_file_atomic(file(dir, now.name), doc);
}

}  // namespace kiln::serve
