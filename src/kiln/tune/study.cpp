#include "kiln/tune/study.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <thread>

#include "kiln/core/files.h"
#include "kiln/core/logging.h"
#include "kiln/core/process.h"
#include "kiln/core/yaml.h"
#include "kiln/train/config.h"
#include "kiln/tune/sampler.h"

namespace kiln::tune {
namespace {

struct Running {
  TrialRecord trial;
  fs::path dir;
  size_t lines_seen = 0;  // metrics.jsonl epoch lines already reported
  bool pruned = false;    // SIGTERM sent by the pruner
};

// A value from the parameter's range, for validating config keys up front.
Json probe_value(const ParamSpec& p) {
  if (p.type == ParamSpec::Type::kCategorical) return p.choices[0];
  if (p.type == ParamSpec::Type::kInt) return p.value_at(0);
  return p.low;
}

std::string trim(const std::string& s) {
  size_t a = s.find_first_not_of(" \t\r\n");
  if (a == std::string::npos) return "";
  size_t b = s.find_last_not_of(" \t\r\n");
  return s.substr(a, b - a + 1);
}

// Parses the last non-empty line of `text` as a number.
bool last_line_number(const std::string& text, double* value, std::string* line) {
  std::istringstream in(text);
  std::string l, last;
  while (std::getline(in, l))
    if (!trim(l).empty()) last = trim(l);
  *line = last;
  if (last.empty()) return false;
  char* end = nullptr;
  *value = std::strtod(last.c_str(), &end);
  return end && *end == '\0' && std::isfinite(*value);
}

// fork + exec with stdout/stderr to files, its own process group, SIGKILL when the tuner dies.
// `exec_path` "" runs argv[0]; the tuner's own binary is run as /proc/self/exe, which stays
// valid even when a rebuild replaces the file during a long study.
Expected<pid_t> spawn(const std::vector<std::string>& argv, const std::vector<std::string>& env,
                      const fs::path& out_file, const fs::path& err_file,
                      const std::string& exec_path) {
  SpawnOptions o;
  o.argv = argv;
  o.exec_path = exec_path;
  o.env = env;
  o.stdout_path = out_file.string();
  o.stderr_path = err_file.string();
  o.group = SpawnOptions::Group::kNewProcessGroup;
  o.parent_death_signal = SIGKILL;
  return spawn_process(o);
}

std::string describe_exit(int status) {
  if (WIFEXITED(status)) return "exit code " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    const int sig = WTERMSIG(status);
    return std::string("killed by signal ") + std::to_string(sig) + " (" + strsignal(sig) + ")" +
           (sig == SIGKILL ? ", possibly out of memory" : "");
  }
  return "status " + std::to_string(status);
}

// Epoch lines of a run's metrics.jsonl (rewritten atomically at every epoch end).
std::vector<Json> read_metrics(const fs::path& dir) {
  std::vector<Json> lines;
  Expected<std::string> text = read_file(dir / "metrics.jsonl");
  if (!text.ok()) return lines;
  std::istringstream in(*text);
  std::string l;
  while (std::getline(in, l)) {
    if (trim(l).empty()) continue;
    Json j = Json::parse(l, nullptr, false);
    if (!j.is_discarded() && j.is_object()) lines.push_back(std::move(j));
  }
  return lines;
}

double metric_of(const Json& line, const std::string& metric) {
  auto it = line.find(metric);
  return it != line.end() && it->is_number() ? it->get<double>() : NAN;
}

/// A finished training trial's value: `metric` ("val_accuracy", ...) as the run's bundle measures
/// it (final_metrics.json: the exported module, as served); NaN when the run has none there.
double served_metric_of(const fs::path& run_dir, const std::string& metric) {
  if (metric.rfind("val_", 0) != 0) return NAN;
  Expected<Json> final_metrics = read_json_file(run_dir / "final_metrics.json");
  if (!final_metrics.ok() || !final_metrics->contains("val")) return NAN;
  return metric_of((*final_metrics)["val"], metric.substr(4));
}

std::string short_params(const Json& params) {
  std::string s;
  for (auto it = params.begin(); it != params.end(); ++it)
    s += (s.empty() ? "" : " ") + it.key() + "=" + value_text(it.value());
  return s;
}

}  // namespace

void drop_trial_outputs(const fs::path& trial_dir) {
  std::error_code ec;
  const fs::path run = trial_dir / "run";
  if (!fs::is_directory(run, ec)) return;
  std::vector<fs::path> doomed;
  for (fs::directory_iterator it(run, ec), end; !ec && it != end; it.increment(ec))
    if (it->path().filename() != "metrics.jsonl") doomed.push_back(it->path());
  for (const auto& p : doomed) fs::remove_all(p, ec);
}

std::string substitute(const std::string& cmd, const Json& params, const SearchSpace& space) {
  std::string out = cmd;
  for (const auto& p : space.params) {
    const std::string key = "{" + p.name + "}";
    auto it = params.find(p.name);
    const std::string v = it != params.end() ? value_text(*it) : "";
    for (size_t pos = out.find(key); pos != std::string::npos; pos = out.find(key, pos + v.size()))
      out.replace(pos, key.size(), v);
  }
  return out;
}

Status validate_config_space(const std::string& config, const std::vector<std::string>& overrides,
                             const SearchSpace& space) {
  std::map<std::string, int> lines;
  KILN_ASSIGN_OR_RETURN(Json base, train::read_train_config_yaml(config, &lines));
  for (const auto& o : overrides) KILN_RETURN_IF_ERROR(train::apply_override(&base, o));
  const fs::path dir = fs::path(config).parent_path();
  KILN_RETURN_IF_ERROR(train::parse_train_config(base, dir, config, lines).status());
  for (const auto& p : space.params) {
    Json j = base;
    Status st = train::apply_override(&j, p.name + "=" + value_text(probe_value(p)));
    if (st.ok()) st = train::parse_train_config(j, dir, config).status();
    if (!st.ok())
      return Status::InvalidArgument("space parameter " + p.name + " is not a valid key of " +
                                     config + ": " + st.message());
  }
  return Status::Ok();
}

Expected<TuneResult> run_study(const TuneOptions& o) {
  const bool training = !o.config_.empty();
  if (training == !o.objective_cmd_.empty())
    return Status::InvalidArgument("give either a training CONFIG.yaml or --objective-cmd");
  if (o.trials_ < 1) return Status::InvalidArgument("--trials must be >= 1");
  if (o.workers_ < 1) return Status::InvalidArgument("--workers must be >= 1");
  KILN_ASSIGN_OR_RETURN(std::unique_ptr<Sampler> sampler,
                        make_sampler(o.sampler_, o.seed_, o.maximize_));
  AshaOptions asha = o.asha_;
  if (training && asha.max_resource == 0 &&
      std::none_of(o.space_.params.begin(), o.space_.params.end(),
                   [](const ParamSpec& p) { return p.name == "epochs"; })) {
    // Every trial trains the config's epochs: ASHA's top rung is known.
    Expected<train::TrainConfig> config = train::load_train_config(o.config_, o.overrides_);
    if (config.ok()) asha.max_resource = config->epochs;
  }
  KILN_ASSIGN_OR_RETURN(std::unique_ptr<Pruner> pruner, make_pruner(o.pruner_, o.maximize_, asha));
  if (pruner && !training)
    return Status::InvalidArgument(
        "--pruner needs a training config (black-box objectives report no intermediate values)");

  const fs::path home = o.home_.empty() ? kiln_home() : o.home_;
  KILN_ASSIGN_OR_RETURN(std::unique_ptr<StudyStorage> db, StudyStorage::Open(home / "studies.db"));
  StudyInfo wanted;
  wanted.name = o.study_;
  wanted.direction = o.maximize_ ? "maximize" : "minimize";
  wanted.space = o.space_.to_json();
  wanted.sampler = o.sampler_;
  wanted.pruner = o.pruner_;
  wanted.metric = training ? o.metric_ : "";
  wanted.objective = training ? fs::absolute(o.config_).string() : o.objective_cmd_;
  KILN_ASSIGN_OR_RETURN(StudyInfo study, db->create_or_load_study(wanted));
  KILN_ASSIGN_OR_RETURN(int64_t orphans, db->fail_orphans(study.id));
  if (orphans > 0 && !o.quiet_)
    std::fprintf(stderr, "tune: %lld trial(s) left running by a dead tuner marked failed; re-run\n",
                 static_cast<long long>(orphans));

  const fs::path study_dir = home / "studies" / study.name;
  std::error_code ec;
  fs::create_directories(study_dir, ec);
  const std::string binary = !o.kiln_binary_.empty()
                                 ? o.kiln_binary_.string()
                                 : fs::read_symlink("/proc/self/exe", ec).string();
  const unsigned cores = std::max(1u, std::thread::hardware_concurrency());
  const int64_t threads = std::max<int64_t>(1, static_cast<int64_t>(cores) / o.workers_);

  std::map<pid_t, Running> running;
  TuneResult result;
  const auto t0 = std::chrono::steady_clock::now();
  bool exhausted = false;  // the sampler has nothing more to propose
  bool full = false;       // every trial is claimed: wait for ours, then check the others'
  auto elapsed = [&] {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  };

  auto finish = [&](Running& r, TrialState state, double value, const std::string& note,
                    const std::vector<TrialRecord>& history) -> Status {
    KILN_RETURN_IF_ERROR(db->finish(r.trial.id, state, value, note));
    if (o.quiet_) return Status::Ok();
    std::vector<TrialRecord> h = history;
    for (auto& t : h)
      if (t.id == r.trial.id) t.state = state, t.value = value;
    const TrialRecord* best = best_trial(h, o.maximize_);
    std::string line = "trial " + std::to_string(r.trial.number) + " " + trial_state_name(state);
    if (std::isfinite(value)) line += " value " + value_text(value);
    if (!note.empty()) line += " (" + note + ")";
    line += ": " + short_params(r.trial.params);
    if (best)
      line += "; best " + value_text(best->value) + " (trial " + std::to_string(best->number) + ")";
    std::fprintf(stderr, "%s\n", line.c_str());
    return Status::Ok();
  };

  // --keep-trials best | none: drop the training output of finished trials that are not the
  // best (each once; the study's best is recomputed from the database every time).
  std::set<int64_t> dropped;
  auto tidy = [&](const std::vector<TrialRecord>& h) {
    if (o.keep_trials_ == "all") return;
    const TrialRecord* best = best_trial(h, o.maximize_);
    for (const auto& t : h) {
      if (!t.finished() || t.out_dir.empty() || (best && t.id == best->id) || dropped.count(t.id))
        continue;
      drop_trial_outputs(t.out_dir);
      dropped.insert(t.id);
    }
  };

  while (true) {
    KILN_ASSIGN_OR_RETURN(std::vector<TrialRecord> history, db->trials(study.id));
    tidy(history);
    int64_t counted = 0;
    for (const auto& t : history)
      if (t.finished() && !t.orphaned) ++counted;
    const bool timed_out = o.timeout_ > 0 && elapsed() >= o.timeout_;
    if (!exhausted && !full && !timed_out && static_cast<int64_t>(running.size()) < o.workers_ &&
        counted + static_cast<int64_t>(running.size()) < o.trials_) {
      const int64_t number = history.empty() ? 0 : history.back().number + 1;
      Expected<Json> params = sampler->sample(o.space_, history, number);
      if (!params.ok()) {
        if (params.status().code() != StatusCode::kNotFound) return params.status();
        if (!o.quiet_) std::fprintf(stderr, "tune: %s\n", params.status().message().c_str());
        exhausted = true;
        continue;
      }
      // The claim re-checks the count inside one transaction: another tuner on the same study
      // may have claimed trials since `history` was read.
      Expected<TrialRecord> claimed =
          db->create_trial(study.id, *params, ::getpid(), "", o.trials_);
      if (!claimed.ok()) {
        if (claimed.status().code() != StatusCode::kFailedPrecondition) return claimed.status();
        full = true;  // claim no more while this tuner's own trials run
        continue;
      }
      TrialRecord trial = std::move(*claimed);
      Running r;
      r.trial = trial;
      r.dir = study_dir / ("trial-" + std::to_string(trial.number));
      fs::remove_all(r.dir, ec);
      fs::create_directories(r.dir, ec);
      KILN_RETURN_IF_ERROR(db->set_out_dir(trial.id, r.dir.string()));
      std::vector<std::string> argv, env;
      env.push_back("KILN_THREADS=" + std::to_string(threads));
      env.push_back("OMP_NUM_THREADS=" + std::to_string(threads));
      env.push_back("KILN_TUNE_TRIAL=" + std::to_string(trial.number));
      fs::path out_file, err_file;
      if (training) {
        argv = {binary, "train", o.config_};
        for (const auto& s : o.overrides_) argv.insert(argv.end(), {"--set", s});
        for (auto it = params->begin(); it != params->end(); ++it)
          argv.insert(argv.end(), {"--set", it.key() + "=" + value_text(it.value())});
        argv.insert(argv.end(), {"--set", "threads=" + std::to_string(threads), "--out",
                                 (r.dir / "run").string()});
        out_file = r.dir / "stdout.txt";
        err_file = r.dir / "train.log";
      } else {
        argv = {"/bin/sh", "-c", substitute(o.objective_cmd_, *params, o.space_)};
        out_file = r.dir / "stdout.txt";
        err_file = r.dir / "stderr.txt";
      }
      {
        Json cmd = argv;
        write_file_atomic(r.dir / "command.json", cmd.dump(2) + "\n");
      }
      Expected<pid_t> pid = spawn(argv, env, out_file, err_file,
                                  training && o.kiln_binary_.empty() ? "/proc/self/exe" : "");
      if (!pid.ok()) {
        KILN_RETURN_IF_ERROR(finish(r, TrialState::kFailed, NAN, pid.status().message(), history));
        continue;
      }
      ++result.launched;
      running.emplace(*pid, std::move(r));
      continue;
    }
    if (running.empty()) {
      if (!full || timed_out) break;
      // The study is full and the trials still running belong to other tuners on it. Wait for
      // them: if one of those tuners dies, its trials become orphaned failures and their places
      // are claimed here, so the study still ends with N trials.
      KILN_ASSIGN_OR_RETURN(int64_t orphaned, db->fail_orphans(study.id));
      if (orphaned > 0 && !o.quiet_)
        std::fprintf(stderr, "tune: %lld trial(s) of a tuner that died marked failed; re-run\n",
                     static_cast<long long>(orphaned));
      const bool room = orphaned > 0 ||
                        std::count_if(history.begin(), history.end(),
                                      [](const TrialRecord& t) { return !t.orphaned; }) < o.trials_;
      const bool others_running =
          std::any_of(history.begin(), history.end(),
                      [](const TrialRecord& t) { return t.state == TrialState::kRunning; });
      if (room) {
        full = false;  // claim (and sample) again
      } else if (!others_running) {
        break;
      } else {
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
      }
      continue;
    }

    // Poll the running trials: new epochs (and pruning), then exits.
    bool reported = false;
    if (training) {
      for (auto& [pid, r] : running) {
        if (r.pruned) continue;
        std::vector<Json> lines = read_metrics(r.dir / "run");
        for (size_t i = r.lines_seen; i < lines.size(); ++i) {
          const int64_t step = lines[i].value("epoch", static_cast<int64_t>(i + 1));
          const double v = metric_of(lines[i], o.metric_);
          KILN_RETURN_IF_ERROR(db->report(r.trial.id, step, v));
          r.trial.intermediate[step] = v;
          reported = true;
          if (pruner) {
            KILN_ASSIGN_OR_RETURN(std::vector<TrialRecord> all, db->trials(study.id));
            if (pruner->should_prune(r.trial, step, all)) {
              ::kill(-pid, SIGTERM);
              ::kill(pid, SIGTERM);
              r.pruned = true;
              break;
            }
          }
        }
        r.lines_seen = std::max(r.lines_seen, lines.size());
      }
    }
    bool reaped = false;
    for (auto it = running.begin(); it != running.end();) {
      int status = 0;
      const pid_t got = ::waitpid(it->first, &status, WNOHANG);
      if (got != it->first) {
        ++it;
        continue;
      }
      reaped = true;
      ::kill(-it->first, SIGKILL);  // anything the trial left in its group
      Running& r = it->second;
      KILN_ASSIGN_OR_RETURN(std::vector<TrialRecord> now, db->trials(study.id));
      if (r.pruned) {
        const auto& last = *r.trial.intermediate.rbegin();
        KILN_RETURN_IF_ERROR(finish(r, TrialState::kPruned, NAN,
                                    "pruned at epoch " + std::to_string(last.first), now));
      } else if (!(WIFEXITED(status) && WEXITSTATUS(status) == 0)) {
        std::string note = describe_exit(status);
        Expected<std::string> err = read_file(r.dir / (training ? "train.log" : "stderr.txt"));
        if (err.ok()) {
          std::string last;
          std::istringstream in(*err);
          for (std::string l; std::getline(in, l);)
            if (!trim(l).empty()) last = trim(l);
          if (!last.empty()) note += ": " + last.substr(0, 300);
        }
        KILN_RETURN_IF_ERROR(finish(r, TrialState::kFailed, NAN, note, now));
      } else if (training) {
        std::vector<Json> lines = read_metrics(r.dir / "run");
        double best = NAN;
        for (size_t i = 0; i < lines.size(); ++i) {
          const int64_t step = lines[i].value("epoch", static_cast<int64_t>(i + 1));
          const double v = metric_of(lines[i], o.metric_);
          if (i >= r.lines_seen) KILN_RETURN_IF_ERROR(db->report(r.trial.id, step, v));
          if (std::isfinite(v) && (!std::isfinite(best) || (o.maximize_ ? v > best : v < best)))
            best = v;
        }
        // The trial's value is its bundle's (the served module's), not its best epoch's.
        const double served = served_metric_of(r.dir / "run", o.metric_);
        if (std::isfinite(served)) best = served;
        if (std::isfinite(best))
          KILN_RETURN_IF_ERROR(finish(r, TrialState::kComplete, best, "", now));
        else
          KILN_RETURN_IF_ERROR(finish(r, TrialState::kFailed, NAN,
                                      "metrics.jsonl has no finite " + o.metric_ + " value", now));
      } else {
        Expected<std::string> out = read_file(r.dir / "stdout.txt");
        double v = NAN;
        std::string line;
        if (out.ok() && last_line_number(*out, &v, &line))
          KILN_RETURN_IF_ERROR(finish(r, TrialState::kComplete, v, "", now));
        else
          KILN_RETURN_IF_ERROR(
              finish(r, TrialState::kFailed, NAN,
                     "the last line printed is not a number: '" + line.substr(0, 100) + "'", now));
      }
      it = running.erase(it);
    }
    // Training trials take seconds per epoch: poll gently so the tuner does not steal their cores.
    if (!reaped && !reported)
      std::this_thread::sleep_for(std::chrono::milliseconds(training ? 200 : 20));
  }
  KILN_ASSIGN_OR_RETURN(result.trials, db->trials(study.id));
  tidy(result.trials);
  result.study = study;
  return result;
}

}  // namespace kiln::tune
