// `kiln improve NAME` and `kiln improve history NAME`: the continuous-improvement loop (issue 17).
#include <csignal>
#include <iostream>
#include <memory>
#include <thread>

#include "kiln/cli/commands.h"
#include "kiln/cli/flags.h"
#include "kiln/improve/improve.h"
#include "kiln/rollout/plan.h"

namespace kiln::cli {
namespace {

using namespace kiln::improve;

struct ImproveArgs {
  std::string name;
  ImproveOptions options;
  std::vector<std::string> triggers;
  std::string cooldown = "10m";
  std::string every = "60m";
  std::string steps = "25,50,100";
  std::string interval = "20s";
  std::string reload_timeout = "60s";
  std::string log_dir;
  bool watch = false;
  std::string check_every = "30s";
  bool json = false;
  // history
  std::string history_name;
  bool history_json = false;
};

volatile std::sig_atomic_t g_stop = 0;

Status run(ImproveArgs& a) {
  ImproveOptions o = a.options;
  o.name = a.name;
  if (!a.log_dir.empty()) o.log_dir = a.log_dir;
  if (!a.triggers.empty()) {
    o.triggers.clear();
    for (const std::string& t : a.triggers) {
      KILN_ASSIGN_OR_RETURN(Trigger parsed, parse_trigger(t));
      o.triggers.push_back(parsed);
    }
  }
  KILN_ASSIGN_OR_RETURN(o.cooldown_ms, rollout::parse_duration_ms(a.cooldown, "--cooldown"));
  KILN_ASSIGN_OR_RETURN(o.schedule_ms, rollout::parse_duration_ms(a.every, "--every"));
  KILN_ASSIGN_OR_RETURN(o.steps, rollout::parse_steps(a.steps, "--steps"));
  KILN_ASSIGN_OR_RETURN(o.step_interval_ms, rollout::parse_duration_ms(a.interval, "--interval"));
  KILN_ASSIGN_OR_RETURN(o.reload_timeout_ms,
                        rollout::parse_duration_ms(a.reload_timeout, "--reload-timeout"));
  KILN_ASSIGN_OR_RETURN(int64_t check_every_ms,
                        rollout::parse_duration_ms(a.check_every, "--check-every"));
  std::ostream& progress = a.json ? std::cerr : std::cout;
  // SIGINT/SIGTERM: a canary under way rolls back; --watch stops after the current check.
  std::signal(SIGINT, [](int) { g_stop = 1; });
  std::signal(SIGTERM, [](int) { g_stop = 1; });
  o.interrupted = [] { return g_stop != 0; };
  if (!a.watch) {
    KILN_ASSIGN_OR_RETURN(Json decision, run_improve(o, progress));
    if (a.json) std::cout << decision.dump(2) << "\n";
    const std::string d = decision.value("decision", "");
    if (d == "failed") return Status::Internal(decision.value("why", "the cycle failed"));
    return Status::Ok();
  }
  // --watch: a check every --check-every until SIGINT/SIGTERM; a failed cycle is recorded and
  // the loop goes on (the cool-down spaces the retries).
  while (!g_stop) {
    Expected<Json> decision = run_improve(o, progress);
    if (!decision.ok()) {
      if (decision.status().code() == StatusCode::kInvalidArgument ||
          decision.status().code() == StatusCode::kAlreadyExists)
        return decision.status();
      progress << "improve: " << decision.status().message() << "\n";
    } else if (a.json) {
      std::cout << decision->dump() << "\n" << std::flush;
    }
    for (int64_t waited = 0; waited < check_every_ms && !g_stop; waited += 100)
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return Status::Ok();
}

std::string fmt_number(const Json& j, const char* key) {
  if (!j.is_object() || !j.contains(key) || !j[key].is_number()) return "-";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3f", j[key].get<double>());
  return buf;
}

Status show_history(const ImproveArgs& a) {
  if (a.history_name.empty()) return Status::InvalidArgument("history: a model name is required");
  KILN_ASSIGN_OR_RETURN(std::vector<Json> history, read_history(a.history_name));
  if (a.history_json) {
    std::cout << Json(history).dump(2) << "\n";
    return Status::Ok();
  }
  if (history.empty()) {
    std::cout << "no improvement decisions recorded for " << a.history_name << " ("
              << history_path(a.history_name).string() << ")\n";
    return Status::Ok();
  }
  std::printf("%-20s %-5s %-11s %-8s %-7s %-9s %-10s %-8s %s\n", "started (UTC)", "cycle",
              "decision", "champion", "version", "held-out", "champ/chal", "p", "why");
  for (const Json& h : history) {
    char when[32] = "-";
    const std::time_t t = static_cast<std::time_t>(h.value("started", 0.0));
    std::tm tm{};
    gmtime_r(&t, &tm);
    std::strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", &tm);
    const Json holdout = h.value("holdout", Json::object());
    const Json champion = h.value("champion", Json::object());
    const Json challenger = h.value("challenger", Json::object());
    std::printf("%-20s %-5s %-11s %-8s %-7s %-9s %-10s %-8s %s\n", when,
                h.contains("cycle") ? std::to_string(h["cycle"].get<int64_t>()).c_str() : "-",
                h.value("decision", "?").c_str(),
                champion.contains("version") ? ("v" + champion["version"].dump()).c_str() : "-",
                challenger.contains("version") ? ("v" + challenger["version"].dump()).c_str() : "-",
                holdout.contains("rows") ? holdout["rows"].dump().c_str() : "-",
                holdout.contains("champion_accuracy")
                    ? (fmt_number(holdout, "champion_accuracy") + "/" +
                       fmt_number(holdout, "challenger_accuracy"))
                          .c_str()
                    : "-",
                fmt_number(holdout, "p_value").c_str(), h.value("why", "").c_str());
  }
  return Status::Ok();
}

}  // namespace

void register_improve_command(CLI::App& app, int* exit_code) {
  auto a = std::make_shared<ImproveArgs>();
  ImproveOptions& o = a->options;
  CLI::App* c = app.add_subcommand("improve", kImproveHelp);
  c->footer(
      "A check reads the champion's labelled production rows (the prediction log of a server "
      "started with --prediction-log inputs, joined to its feedback) and its live monitor; when a "
      "trigger fires and the cool-down has passed, a cycle builds a snapshot (the champion's "
      "training snapshot plus the production rows, repeated, minus a held-out share chosen by "
      "id hash), trains a challenger with the champion's recorded config, compares both on the "
      "held-out rows (McNemar), and only if the challenger is better pushes it, points "
      "NAME@candidate at it, canaries it on the route (kiln rollout's checks) and promotes "
      "NAME@production. Decisions: $KILN_HOME/improve/NAME/history.jsonl (kiln improve history "
      "NAME). Exit: 0 a decision was made (promoted, rejected, rolled back, skipped, none), 1 "
      "the cycle failed, 2 bad input.\nExample:\n  kiln improve fmnist --server "
      "http://127.0.0.1:8000 --route fmnist --champion-target stable --candidate-target canary "
      "--trigger accuracy --trigger drift --cooldown 30m --watch");
  c->add_option("name", a->name, "registry model name (served as NAME@production)");
  c->add_option("--server", o.server, "the kiln serve, http://127.0.0.1:PORT");
  c->add_option("--route", o.route, "the server's route for NAME (its weights move)");
  c->add_option("--champion-target", o.champion_target,
                "route target serving NAME@production (monitored; its logged rows are used)");
  c->add_option("--candidate-target", o.candidate_target,
                "route target serving NAME@candidate (the canary)");
  c->add_option("--trigger", a->triggers,
                "what starts a cycle: drift, accuracy, calibration, new-data, schedule "
                "(repeatable; default "
                "drift and accuracy)");
  c->add_flag("--force", o.force, "run a cycle now, whatever the triggers and the cool-down");
  c->add_option("--cooldown", a->cooldown, "no cycle starts sooner after the last one")
      ->default_val("10m");
  c->add_option("--every", a->every, "the schedule trigger's interval")->default_val("60m");
  c->add_option("--calibration-margin", o.calibration_margin,
                "calibration trigger: a classifier's live expected calibration error above the "
                "bundle's test one plus this")
      ->default_val(0.05)
      ->check(CLI::Range(0.0, 1.0));
  c->add_option("--accuracy-margin", o.accuracy_margin,
                "accuracy trigger: live accuracy below the bundle's test accuracy minus this "
                "(a regressor: live MAE above the bundle's test MAE times 1 + this)")
      ->default_val(0.05)
      ->check(CLI::Range(0.0, 1.0));
  c->add_option("--min-rows", o.min_rows, "labelled production rows needed for a cycle")
      ->default_val(200)
      ->check(CLI::PositiveNumber);
  c->add_option("--min-new-rows", o.min_new_rows,
                "new-data trigger: labelled rows since the last cycle")
      ->default_val(200)
      ->check(CLI::PositiveNumber);
  c->add_option("--holdout", o.holdout,
                "share of production rows held out for the comparison (by id hash: never "
                "trained on)")
      ->default_val(0.3)
      ->check(CLI::Range(0.01, 0.99));
  c->add_option("--compare", o.compare,
                "classifiers: the held-out test a challenger must pass: accuracy (McNemar) or "
                "log-loss (paired bootstrap of the mean log loss)")
      ->default_val("accuracy")
      ->check(CLI::IsMember({"accuracy", "log-loss"}));
  c->add_option("--alpha", o.alpha, "significance of the held-out comparison")
      ->default_val(0.05)
      ->check(CLI::Range(0.0, 1.0));
  c->add_option("--repeat", o.production_repeat,
                "times each production training row enters the train split (0: enough to make "
                "half of it, at most 10)")
      ->default_val(0)
      ->check(CLI::NonNegativeNumber);
  c->add_option("--set", o.train_overrides,
                "override the champion's training config, e.g. --set epochs=3");
  c->add_option("--steps", a->steps, "canary weights per step")->default_val("25,50,100");
  c->add_option("--interval", a->interval, "canary time per step")->default_val("20s");
  c->add_option("--max-error-rate", o.max_error_rate, "canary: largest failed share")
      ->default_val(0.01)
      ->check(CLI::Range(0.0, 1.0));
  c->add_option("--max-p99-ms", o.max_p99_ms, "canary: largest p99 (ms)")
      ->check(CLI::PositiveNumber);
  c->add_option("--min-requests", o.min_requests,
                "canary: fewer requests in a step make it inconclusive (rolled back)")
      ->default_val(20)
      ->check(CLI::PositiveNumber);
  c->add_option("--reload-timeout", a->reload_timeout,
                "how long the server may take to load a new version")
      ->default_val("60s");
  c->add_option("--log-dir", a->log_dir, "the prediction logs (default $KILN_HOME/logs)");
  add_flag(*c, Flag::kApiKeyFile, &o.api_key_file)
      ->description("the server's API key file (sent as 'Authorization: Bearer KEY')");
  c->add_flag("--watch", a->watch, "check again every --check-every until interrupted");
  c->add_option("--check-every", a->check_every, "with --watch")->default_val("30s");
  c->add_flag("--json", a->json, "print each decision as JSON (progress on stderr)");
  CLI::App* history = c->add_subcommand("history", "the recorded decisions for a model");
  history->add_option("name", a->history_name, "registry model name")->required();
  history->add_flag("--json", a->history_json, "JSON instead of a table");
  history->callback([a, exit_code] {
    Status st = show_history(*a);
    *exit_code = st.ok() ? 0 : report_failure(st);
  });
  c->callback([a, c, exit_code] {
    if (c->got_subcommand("history")) return;
    Status st = run(*a);
    *exit_code = st.ok() ? 0 : report_failure(st);
  });
}

}  // namespace kiln::cli
