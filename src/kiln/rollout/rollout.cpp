#include "kiln/rollout/rollout.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <ostream>
#include <thread>

#include "kiln/core/files.h"
#include "kiln/rollout/live_metrics.h"

namespace kiln::rollout {
namespace {

std::string fmt(const char* format, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, format, v);
  return buf;
}

std::string weights_text(const Json& weights) {
  std::string s;
  for (const auto& [k, v] : weights.items()) s += (s.empty() ? "" : ",") + k + ":" + v.dump();
  return s;
}

/// The same weight for every target, whatever the keys' order.
bool same_weights(const Json& a, const Json& b) {
  if (!a.is_object() || !b.is_object() || a.size() != b.size()) return false;
  for (const auto& [target, weight] : a.items())
    if (!b.contains(target) || b[target] != weight) return false;
  return true;
}

bool same_server(const loadtest::Target& a, const loadtest::Target& b) {
  return a.host == b.host && a.port == b.port;
}

/// GET /v2/models/MODEL's metadata; empty (null) when the server does not answer it with JSON.
Json model_metadata(const loadtest::Target& target, const std::vector<std::string>& headers,
                    const std::string& model) {
  Expected<loadtest::HttpReply> got =
      loadtest::http_exchange(target, "/v2/models/" + model, "", 10000, headers);
  if (!got.ok() || got->status != 200) return Json();
  Json meta = Json::parse(got->body, nullptr, false);
  return meta.is_discarded() ? Json() : meta;
}

/// The version metadata says is served (the first of "versions"); "" when it names none.
std::string served_version(const Json& meta) {
  if (!meta.is_object() || !meta.contains("versions") || !meta["versions"].is_array() ||
      meta["versions"].empty())
    return "";
  const Json& first = meta["versions"][0];
  return first.is_string() ? first.get<std::string>() : first.dump();
}

}  // namespace

std::string check_window(const RolloutOptions& o, const WindowStats& w, bool* inconclusive) {
  *inconclusive = false;
  if (w.requests < static_cast<double>(o.min_requests_)) {
    *inconclusive = true;
    return "inconclusive: " + fmt("%.0f", w.requests) + " requests reached " + o.candidate_ +
           " (--min-requests " + std::to_string(o.min_requests_) + ")";
  }
  if (w.error_rate > o.max_error_rate_)
    return "error rate " + fmt("%.4f", w.error_rate) + " (" + fmt("%.0f", w.errors) + " of " +
           fmt("%.0f", w.requests) + ") > --max-error-rate " + fmt("%g", o.max_error_rate_);
  if (o.max_p99_ms_ >= 0 && w.p99_ms > o.max_p99_ms_)
    return "p99 " + fmt("%.3f", w.p99_ms) + " ms > --max-p99-ms " + fmt("%g", o.max_p99_ms_);
  if (o.min_live_accuracy_ >= 0) {
    if (w.live_accuracy < 0 || w.labelled_rows < static_cast<double>(o.min_labelled_rows_)) {
      *inconclusive = true;
      return "inconclusive: live accuracy over " + fmt("%.0f", w.labelled_rows) +
             " labelled rows (--min-labelled-rows " + std::to_string(o.min_labelled_rows_) + ")";
    }
    if (w.live_accuracy < o.min_live_accuracy_)
      return "live accuracy " + fmt("%.4f", w.live_accuracy) + " < --min-live-accuracy " +
             fmt("%g", o.min_live_accuracy_);
  }
  return "";
}

Expected<std::unique_ptr<Rollout>> Rollout::Create(const RolloutOptions& options,
                                                   std::filesystem::path state_path,
                                                   PromoteFn promote) {
  std::unique_ptr<Rollout> r(new Rollout(options, std::move(state_path), std::move(promote)));
  // A cluster file names its nodes' addresses; by hand, servers are on this machine.
  const bool allow_remote = !options.cluster_.empty();
  Expected<loadtest::Target> target = loadtest::parse_target(options.server_, allow_remote);
  if (!target.ok()) return Status(target.status().code(), "--server: " + target.status().message());
  r->target_ = *target;
  for (const std::string& url : options.metrics_from_) {
    Expected<loadtest::Target> m = loadtest::parse_target(url, allow_remote);
    if (!m.ok()) return Status(m.status().code(), "--metrics-from: " + m.status().message());
    r->metrics_targets_.push_back(*m);
  }
  if (r->metrics_targets_.empty()) r->metrics_targets_.push_back(r->target_);
  if (!options.api_key_file_.empty()) {
    KILN_ASSIGN_OR_RETURN(std::string header, loadtest::api_key_header(options.api_key_file_));
    r->headers_.push_back(std::move(header));
  }
  if (!options.promote_.empty()) KILN_RETURN_IF_ERROR(parse_promote(options.promote_).status());
  return r;
}

Rollout::~Rollout() = default;

Status Rollout::lock() {
  if (lock_) return Status::Ok();
  const std::string path = state_path_.string() + ".lock";
  KILN_ASSIGN_OR_RETURN(
      FileLock held,
      FileLock::TryAcquire(path, Status::AlreadyExists("a rollout of route \"" + options_.route_ +
                                                       "\" is in progress: another runner drives "
                                                       "it now (" +
                                                       path + " is locked)")));
  lock_.emplace(std::move(held));
  return Status::Ok();
}

Expected<std::vector<std::string>> Rollout::route_targets() {
  const std::string path = "/v2/routes/" + options_.route_;
  Expected<loadtest::HttpReply> got = loadtest::http_exchange(target_, path, "", 10000, headers_);
  if (!got.ok()) return Status(got.status().code(), "--server: " + got.status().message());
  const loadtest::HttpReply& reply = *got;
  if (reply.status == 401 || reply.status == 403)
    return Status::InvalidArgument("GET " + path + ": HTTP " + std::to_string(reply.status) +
                                   " (--api-key-file: the server wants its API key)");
  if (reply.status == 404)
    return Status::NotFound("route \"" + options_.route_ + "\": the server at " + options_.server_ +
                            " has no such route (see GET /v2/routes)");
  if (reply.status != 200)
    return Status::Unavailable("GET " + path + ": HTTP " + std::to_string(reply.status) + " " +
                               reply.body.substr(0, 200));
  Json doc = Json::parse(reply.body, nullptr, false);
  if (doc.is_discarded() || !doc.contains("targets") || !doc["targets"].is_array())
    return Status::Unavailable("GET " + path + ": not a route: " + reply.body.substr(0, 200));
  std::vector<std::string> targets;
  for (const auto& t : doc["targets"]) targets.push_back(t.value("model", ""));
  bool found = false;
  for (const auto& t : targets) found = found || t == options_.candidate_;
  if (!found) {
    std::string all;
    for (const auto& t : targets) all += (all.empty() ? "" : ", ") + t;
    return Status::InvalidArgument("--candidate " + options_.candidate_ +
                                   ": not a target of route \"" + options_.route_ + "\" (" + all +
                                   ")");
  }
  if (targets.size() < 2)
    return Status::InvalidArgument("route \"" + options_.route_ +
                                   "\": only one target, nothing to roll back to");
  return targets;
}

Status Rollout::post_weights(const loadtest::Target& server, const Json& weights) {
  const std::string path = "/v2/routes/" + options_.route_;
  Expected<loadtest::HttpReply> reply =
      loadtest::http_exchange(server, path, Json{{"weights", weights}}.dump(), 10000, headers_);
  if (!reply.ok())
    return Status(reply.status().code(), "POST " + server.url + path + " " + weights_text(weights) +
                                             ": " + reply.status().message());
  if (reply->status != 200)
    return Status::Unavailable("POST " + server.url + path + " " + weights_text(weights) +
                               ": HTTP " + std::to_string(reply->status) + " " +
                               reply->body.substr(0, 200));
  return Status::Ok();
}

Json Rollout::routed_weights(const loadtest::Target& server) {
  Expected<loadtest::HttpReply> got =
      loadtest::http_exchange(server, "/v2/routes/" + options_.route_, "", 10000, headers_);
  if (!got.ok() || got->status != 200) return Json();
  const Json route = Json::parse(got->body, nullptr, false);
  if (route.is_discarded() || !route.contains("targets") || !route["targets"].is_array())
    return Json();
  Json weights = Json::object();
  for (const Json& t : route["targets"])
    if (t.contains("model") && t.contains("weight"))
      weights[t["model"].get<std::string>()] = t["weight"];
  return weights;
}

Status Rollout::set_weights(const Json& weights, bool post_to_every_server) {
  std::vector<const loadtest::Target*> others;
  for (const loadtest::Target& m : metrics_targets_)
    if (!same_server(m, target_)) others.push_back(&m);
  if (post_to_every_server) {
    // A roll back must reach every replica it can, even when one does not follow the others or
    // --server itself is down; the first failure is still an error.
    Status first_failure = post_weights(target_, weights);
    for (const loadtest::Target* m : others)
      if (Status st = post_weights(*m, weights); !st.ok() && first_failure.ok()) first_failure = st;
    return first_failure;
  }
  KILN_RETURN_IF_ERROR(post_weights(target_, weights));
  // The step's window opens once every server routes the split: the others pick it up from the
  // route's kept file in their KILN_HOME.
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::milliseconds(options_.follow_timeout_ms_);
  for (const loadtest::Target* m : others) {
    Json routed;
    while (!same_weights(routed = routed_weights(*m), weights)) {
      if (interrupted_ && interrupted_())
        return Status::FailedPrecondition("interrupted while waiting for " + m->url + " to route " +
                                          weights_text(weights));
      if (std::chrono::steady_clock::now() >= deadline)
        return Status::Unavailable(
            m->url + " still routes " + (routed.is_object() ? weights_text(routed) : "nothing") +
            ", not " + weights_text(weights) + ", " + std::to_string(options_.follow_timeout_ms_) +
            " ms after the POST to " + options_.server_ +
            ": it does not share the route's kept split (another KILN_HOME, or another --route "
            "flag)");
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }
  return Status::Ok();
}

Expected<ModelSnapshot> Rollout::candidate_snapshot() {
  std::vector<ModelSnapshot> each;
  for (size_t i = 0; i < metrics_targets_.size(); ++i) {
    const std::string from =
        options_.metrics_from_.empty() ? options_.server_ : options_.metrics_from_[i];
    Expected<loadtest::HttpReply> reply =
        loadtest::http_exchange(metrics_targets_[i], "/metrics", "", 10000, headers_);
    if (!reply.ok())
      return Status::Unavailable("GET " + from + "/metrics: " + reply.status().message());
    if (reply->status != 200)
      return Status::Unavailable("GET " + from + "/metrics: HTTP " + std::to_string(reply->status));
    Expected<ModelSnapshot> snapshot = parse_model_snapshot(reply->body, options_.candidate_);
    if (!snapshot.ok())
      return Status::Unavailable(from + "/metrics: " + snapshot.status().message());
    each.push_back(std::move(snapshot).value());
  }
  return sum_snapshots(each);
}

Status wait_for_served_version(const loadtest::Target& target,
                               const std::vector<std::string>& headers, const std::string& model,
                               int64_t version, int64_t timeout_ms,
                               const std::function<bool()>& interrupted) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  const std::string want = std::to_string(version);
  std::string last = "?";
  while (true) {
    const std::string served = served_version(model_metadata(target, headers, model));
    if (!served.empty()) last = served;
    if (served == want) return Status::Ok();
    if (interrupted && interrupted())
      return Status::FailedPrecondition("interrupted while waiting for '" + model +
                                        "' to serve version " + want);
    if (std::chrono::steady_clock::now() >= deadline)
      return Status::Unavailable("the server's model '" + model + "' still serves version " + last +
                                 ", not " + want + ", after " + std::to_string(timeout_ms / 1000) +
                                 " s");
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
}

Status Rollout::start(std::ostream& out) {
  KILN_RETURN_IF_ERROR(lock());
  Expected<RolloutState> previous = load_rollout_state(state_path_);
  if (previous.ok() && previous->status == RolloutState::kRunning)
    return Status::AlreadyExists("a rollout of route \"" + options_.route_ + "\" is in progress (" +
                                 state_path_.string() + ", step " +
                                 std::to_string(previous->current_step + 1) + " of " +
                                 std::to_string(previous->options.steps_.size()) + ", started " +
                                 previous->started + "): --resume or --abort it");
  if (!previous.ok() && previous.status().code() != StatusCode::kNotFound) return previous.status();
  KILN_ASSIGN_OR_RETURN(targets_, route_targets());
  // A candidate served from the registry names its registry version in its metadata (a bundle
  // path has no version to wait for).
  const Json candidate =
      options_.promote_.empty() ? Json() : model_metadata(target_, headers_, options_.candidate_);
  if (candidate.contains("parameters") && candidate["parameters"].is_object() &&
      candidate["parameters"].contains("registry_version")) {
    // The canary must measure the version it will promote: a just-moved alias is served only
    // once the server has reloaded it (its poll or a registry notification).
    KILN_ASSIGN_OR_RETURN(PromoteTarget promote, parse_promote(options_.promote_));
    Status served = Status::Ok();
    if (served_version(candidate) != std::to_string(promote.version))
      served = wait_for_served_version(target_, headers_, options_.candidate_, promote.version,
                                       options_.reload_timeout_ms_, interrupted_);
    // Every replica whose traffic counts re-resolves the alias by itself.
    for (const loadtest::Target& m : metrics_targets_)
      if (served.ok() && !same_server(m, target_)) {
        served = wait_for_served_version(m, headers_, options_.candidate_, promote.version,
                                         options_.reload_timeout_ms_, interrupted_);
        if (!served.ok()) served = Status(served.code(), m.url + ": " + served.message());
      }
    if (!served.ok())
      return Status(served.code(), "--promote " + options_.promote_ + ": the candidate '" +
                                       options_.candidate_ + "' does not serve that version (" +
                                       served.message() + "); nothing was changed");
    out << "candidate " << options_.candidate_ << " serves version " << promote.version
        << std::endl;
  }
  RolloutState state;
  state.options = options_;
  state.started = utc_now();
  KILN_RETURN_IF_ERROR(save_rollout_state(state_path_, state));
  return run_from(state, out);
}

Status Rollout::resume(RolloutState state, std::ostream& out) {
  KILN_RETURN_IF_ERROR(lock());
  KILN_ASSIGN_OR_RETURN(targets_, route_targets());
  out << "resuming " << options_.route_ << " at step " << state.current_step + 1 << " of "
      << options_.steps_.size() << "\n";
  return run_from(state, out);
}

Status Rollout::abort(RolloutState state, std::ostream& out) {
  KILN_RETURN_IF_ERROR(lock());
  KILN_ASSIGN_OR_RETURN(targets_, route_targets());
  state.history.push_back({{"step", state.current_step + 1},
                           {"verdict", "aborted"},
                           {"reason", "--abort"},
                           {"at", utc_now()}});
  Status st = roll_back(state, out, "aborted");
  if (!st.ok()) return st;
  return Status::Ok();
}

Status Rollout::roll_back(RolloutState& state, std::ostream& out, const std::string& why) {
  const Json weights = step_weights(targets_, options_.candidate_, 0);
  if (Status st = set_weights(weights, /*post_to_every_server=*/true); !st.ok())
    return Status(st.code(), "rolling back (" + why + ") failed, the rollout stays running (" +
                                 "--resume or --abort it): " + st.message());
  state.status = RolloutState::kRolledBack;
  KILN_RETURN_IF_ERROR(save_rollout_state(state_path_, state));
  out << "rolled back: " << weights_text(weights) << "\n" << std::flush;
  return Status::Ok();
}

Status Rollout::run_from(RolloutState& state, std::ostream& out) {
  const auto& steps = options_.steps_;
  for (size_t i = state.current_step; i < steps.size(); ++i) {
    const Json weights = step_weights(targets_, options_.candidate_, steps[i]);
    state.current_step = i;
    KILN_RETURN_IF_ERROR(save_rollout_state(state_path_, state));
    // Any error past this point (server gone, bad metrics) rolls back like a failed check.
    auto fail = [&](const std::string& reason, const Status& cause) -> Status {
      state.history.push_back({{"step", i + 1},
                               {"weights", weights},
                               {"verdict", "error"},
                               {"reason", reason},
                               {"at", utc_now()}});
      out << "step " << i + 1 << "/" << steps.size() << " error: " << reason << "\n";
      KILN_RETURN_IF_ERROR(roll_back(state, out, reason));
      return cause;
    };
    if (Status st = set_weights(weights); !st.ok()) return fail(st.message(), st);
    Expected<ModelSnapshot> before = candidate_snapshot();
    if (!before.ok()) return fail(before.status().message(), before.status());
    for (int64_t waited = 0; waited < options_.interval_ms_;) {
      if (interrupted_ && interrupted_()) {
        const std::string why = "interrupted (SIGINT/SIGTERM)";
        return fail(why, Status::FailedPrecondition(why + "; rolled back to " +
                                                    options_.candidate_ + " 0 %"));
      }
      const int64_t slice = std::min<int64_t>(100, options_.interval_ms_ - waited);
      std::this_thread::sleep_for(std::chrono::milliseconds(slice));
      waited += slice;
    }
    Expected<ModelSnapshot> after = candidate_snapshot();
    if (!after.ok()) return fail(after.status().message(), after.status());
    const WindowStats w = diff_window(*before, *after);
    bool inconclusive = false;
    const std::string failed = check_window(options_, w, &inconclusive);
    const std::string verdict = failed.empty() ? "pass" : inconclusive ? "inconclusive" : "fail";
    state.history.push_back({{"step", i + 1},
                             {"weights", weights},
                             {"requests", w.requests},
                             {"errors", w.errors},
                             {"error_rate", w.error_rate},
                             {"p99_ms", w.p99_ms},
                             {"live_accuracy", w.live_accuracy},
                             {"labelled_rows", w.labelled_rows},
                             {"verdict", verdict},
                             {"reason", failed},
                             {"at", utc_now()}});
    out << "step " << i + 1 << "/" << steps.size() << " " << weights_text(weights) << "  requests "
        << fmt("%.0f", w.requests) << "  error rate " << fmt("%.4f", w.error_rate) << "  p99 "
        << (w.p99_ms < 0 ? std::string("-") : fmt("%.3f", w.p99_ms) + " ms") << "  accuracy "
        << (w.live_accuracy < 0 ? std::string("-") : fmt("%.4f", w.live_accuracy)) << "  "
        << verdict << (failed.empty() ? "" : ": " + failed) << "\n"
        << std::flush;
    if (!failed.empty()) {
      KILN_RETURN_IF_ERROR(roll_back(state, out, failed));
      return Status::FailedPrecondition("step " + std::to_string(i + 1) + " (" +
                                        options_.candidate_ + " " + std::to_string(steps[i]) +
                                        " %): " + failed + "; rolled back to " +
                                        options_.candidate_ + " 0 %");
    }
  }
  state.current_step = steps.size();
  KILN_RETURN_IF_ERROR(save_rollout_state(state_path_, state));
  if (!options_.promote_.empty()) {
    KILN_ASSIGN_OR_RETURN(PromoteTarget p, parse_promote(options_.promote_));
    if (!promote_) return Status::Internal("--promote without a registry");
    // A failure leaves the state running at the end: --resume retries only the promotion.
    if (Status st = promote_(p); !st.ok())
      return Status(st.code(), "--promote " + options_.promote_ + ": " + st.message() +
                                   " (the candidate keeps 100 %; --resume retries)");
    out << "promoted: " << p.name << "@" << p.alias << " -> " << p.version << "\n";
  } else {
    out << "promoted: " << options_.candidate_ << " has 100 % of " << options_.route_ << "\n";
  }
  state.status = RolloutState::kPromoted;
  state.history.push_back(
      {{"verdict", "promoted"}, {"reason", options_.promote_}, {"at", utc_now()}});
  return save_rollout_state(state_path_, state);
}

}  // namespace kiln::rollout
