#include "kiln/pipeline/runner.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <deque>
#include <map>
#include <optional>
#include <set>
#include <sstream>

#include "kiln/core/files.h"
#include "kiln/core/hash.h"
#include "kiln/core/process.h"
#include "kiln/pipeline/content_hash.h"

namespace kiln::pipeline {
namespace {

double now_s() {
  using namespace std::chrono;
  return duration<double>(system_clock::now().time_since_epoch()).count();
}

/// Absolute paths among an outputs record's string values that no longer exist.
void find_missing(const Json& j, std::vector<std::string>* missing) {
  if (j.is_string()) {
    const std::string s = j.get<std::string>();
    std::error_code ec;
    if (!s.empty() && s[0] == '/' && !fs::exists(s, ec)) missing->push_back(s);
  } else if (j.is_structured()) {
    for (const Json& v : j) find_missing(v, missing);
  }
}

std::vector<std::string> missing_outputs(const Json& outputs) {
  std::vector<std::string> missing;
  find_missing(outputs, &missing);
  return missing;
}

/// The output `key` of the nearest upstream stage of `kind` (breadth first), or "".
std::string upstream_output(const PipelineFile& file, const StageSpec& stage, StageKind kind,
                            const std::string& key, const std::map<std::string, Json>& outputs) {
  std::deque<std::string> queue;
  std::set<std::string> seen;
  for (const std::string& u : stage.upstream()) queue.push_back(u);
  while (!queue.empty()) {
    const std::string name = queue.front();
    queue.pop_front();
    if (!seen.insert(name).second) continue;
    const StageSpec* s = file.find(name);
    if (!s) continue;
    auto it = outputs.find(name);
    if (s->kind == kind && it != outputs.end() && it->second.contains(key) &&
        it->second[key].is_string())
      return it->second[key].get<std::string>();
    for (const std::string& u : s->upstream()) queue.push_back(u);
  }
  return "";
}

/// The line after `prefix` ("snapshot ", "pushed ") at the start of a line of `text`, first word.
std::string line_value(const std::string& text, const std::string& prefix) {
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(prefix, 0) != 0) continue;
    std::string rest = line.substr(prefix.size());
    return rest.substr(0, rest.find_first_of(" \t"));
  }
  return "";
}

/// The first lines of a failed stage's output that say what failed (else its first lines).
std::string failure_summary(const std::string& text) {
  std::vector<std::string> lines, failing;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    const auto first = line.find_first_not_of(" \t");
    if (first == std::string::npos) continue;
    // Tables pad their columns: one space between words reads better in a reason.
    std::string squeezed;
    for (char c : line.substr(first))
      if (!(c == ' ' || c == '\t') || (!squeezed.empty() && squeezed.back() != ' '))
        squeezed += c == '\t' ? ' ' : c;
    line = squeezed;
    std::string lower = line;
    std::transform(lower.begin(), lower.end(), lower.begin(), ::tolower);
    if (lower.find("fail") != std::string::npos || lower.find("error") != std::string::npos)
      failing.push_back(line);
    lines.push_back(line);
  }
  const std::vector<std::string>& pick = failing.empty() ? lines : failing;
  std::string out;
  for (size_t i = 0; i < pick.size() && i < 2; ++i) out += (i ? "; " : "") + pick[i];
  if (out.size() > 240) out = out.substr(0, 237) + "...";
  return out.empty() ? "no output" : out;
}

struct Launch {
  std::vector<std::string> argv;
  fs::path cwd;
};

/// The command line a stage runs (kind stages: the `kiln` binary with the stage's flags).
Expected<Launch> stage_command(const PipelineFile& file, const StageSpec& s,
                               const RunOptions& options, const fs::path& work,
                               const std::map<std::string, Json>& outputs) {
  const std::string kiln = options.kiln_binary_.string();
  Launch l;
  l.cwd = file.directory();
  auto bundle = [&]() -> Expected<std::string> {
    std::string b = upstream_output(file, s, StageKind::kTrain, "bundle", outputs);
    if (b.empty()) b = upstream_output(file, s, StageKind::kTune, "bundle", outputs);
    if (b.empty())
      return Status::FailedPrecondition("stage '" + s.name +
                                        "': no bundle from a train or tune stage");
    return b;
  };
  // The push stage upstream's NAME@VERSION, split: (NAME, VERSION).
  auto pushed_version = [&]() -> Expected<std::pair<std::string, std::string>> {
    const std::string ref = upstream_output(file, s, StageKind::kPush, "ref", outputs);
    const size_t at = ref.rfind('@');
    if (at == std::string::npos)
      return Status::FailedPrecondition("stage '" + s.name + "': no version from a push stage");
    return std::make_pair(ref.substr(0, at), ref.substr(at + 1));
  };
  switch (s.kind) {
    case StageKind::kPrepare:
      l.argv = {kiln, "data", "prepare", s.spec};
      break;
    case StageKind::kTrain: {
      l.argv = {kiln, "train", s.config, "--out", (work / "run").string(), "--overwrite"};
      const std::string snapshot =
          upstream_output(file, s, StageKind::kPrepare, "snapshot", outputs);
      if (!snapshot.empty()) l.argv.insert(l.argv.end(), {"--set", "data=" + snapshot});
      break;
    }
    case StageKind::kTune: {
      // A fresh study per run of the stage (a study of the same name would resume).
      const std::string study = file.path.stem().string() + "-" + s.name + "-" +
                                std::to_string(static_cast<int64_t>(::time(nullptr)));
      l.argv = {kiln, "tune", s.config, "--space", s.space, "--study", study};
      const std::string snapshot =
          upstream_output(file, s, StageKind::kPrepare, "snapshot", outputs);
      if (!snapshot.empty()) l.argv.insert(l.argv.end(), {"--set", "data=" + snapshot});
      l.argv.insert(l.argv.end(), s.args.begin(), s.args.end());
      break;
    }
    case StageKind::kRollout: {
      l.argv = {kiln, "rollout", s.route, "--server", s.server, "--candidate", s.candidate};
      if (!s.alias.empty()) {
        KILN_ASSIGN_OR_RETURN(auto pushed, pushed_version());
        l.argv.insert(l.argv.end(),
                      {"--promote", pushed.first + "@" + s.alias + "=" + pushed.second});
      }
      l.argv.insert(l.argv.end(), s.args.begin(), s.args.end());
      break;
    }
    case StageKind::kTest: {
      KILN_ASSIGN_OR_RETURN(std::string b, bundle());
      l.argv = {kiln, "test", b, "--report", (work / "report.json").string(), "--quiet"};
      if (!s.suite.empty()) l.argv.insert(l.argv.end(), {"--suite", s.suite});
      break;
    }
    case StageKind::kPush: {
      KILN_ASSIGN_OR_RETURN(std::string b, bundle());
      l.argv = {kiln,     "registry",  "push",  b,
                "--name", s.push_name, "--tag", "pipeline=" + file.path.filename().string()};
      if (!s.gate.empty()) l.argv.insert(l.argv.end(), {"--tag", "test.result=passed"});
      break;
    }
    case StageKind::kPromote: {
      KILN_ASSIGN_OR_RETURN(auto pushed, pushed_version());
      l.argv = {kiln, "registry", "alias", "set", pushed.first, s.alias, pushed.second};
      break;
    }
    case StageKind::kShell:
      l.argv = {"/bin/sh", "-c", s.cmd};
      break;
  }
  return l;
}

/// Starts `launch` with stdout and stderr to `log_path`, stdin from /dev/null. Returns the pid.
Expected<pid_t> spawn(const Launch& launch, const fs::path& log_path) {
  // A stage dies with its runner (kill -9 included): none goes on writing into a work directory
  // that the next run starts afresh. Also when the runner died before the child could ask.
  SpawnOptions o;
  o.argv = launch.argv;
  o.cwd = launch.cwd.string();
  o.stdout_path = o.stderr_path = log_path.string();
  o.parent_death_signal = SIGKILL;
  return spawn_process(o);
}

/// A finished stage's outputs from its work dir and log; an error when a promised one is missing.
Expected<Json> collect_outputs(const PipelineFile& file, const StageSpec& s, const fs::path& work,
                               const std::string& log_text,
                               const std::map<std::string, Json>& outputs) {
  Json out = Json::object();
  std::error_code ec;
  switch (s.kind) {
    case StageKind::kPrepare: {
      const std::string snapshot = line_value(log_text, "snapshot ");
      if (snapshot.empty() || !fs::is_directory(fs::absolute(file.directory() / snapshot), ec))
        return Status::FailedPrecondition("no snapshot directory in kiln data prepare's output");
      out["snapshot"] = fs::absolute(file.directory() / snapshot).lexically_normal().string();
      break;
    }
    case StageKind::kTrain:
      if (!fs::is_directory(work / "run" / "bundle", ec))
        return Status::FailedPrecondition("kiln train left no bundle in " +
                                          (work / "run").string());
      out["run"] = (work / "run").string();
      out["bundle"] = (work / "run" / "bundle").string();
      break;
    case StageKind::kTune: {
      const std::string bundle = line_value(log_text, "best bundle ");
      if (bundle.empty() || !fs::is_directory(bundle, ec))
        return Status::FailedPrecondition(
            "kiln tune printed no best bundle (is --keep-trials none among the args?)");
      out["bundle"] = bundle;
      std::string study = line_value(log_text, "study ");
      if (!study.empty() && study.back() == ':') study.pop_back();
      out["study"] = study;
      break;
    }
    case StageKind::kRollout: {
      const std::string promoted = line_value(log_text, "promoted: ");
      out["route"] = s.route;
      if (!promoted.empty()) out["promoted"] = promoted;
      break;
    }
    case StageKind::kTest:
      if (!fs::exists(work / "report.json", ec))
        return Status::FailedPrecondition("kiln test wrote no report");
      out["report"] = (work / "report.json").string();
      break;
    case StageKind::kPush: {
      const std::string ref = line_value(log_text, "pushed ");
      if (ref.empty()) return Status::FailedPrecondition("kiln registry push printed no reference");
      out["ref"] = ref;
      break;
    }
    case StageKind::kPromote: {
      const std::string ref = upstream_output(file, s, StageKind::kPush, "ref", outputs);
      out["alias"] = ref.substr(0, ref.rfind('@')) + "@" + s.alias;
      out["ref"] = ref;
      break;
    }
    case StageKind::kShell:
      break;
  }
  if (!s.outs.empty()) {
    Json outs = Json::array();
    for (const std::string& o : s.outs) {
      const fs::path p = (file.directory() / o).lexically_normal();
      if (!fs::exists(p, ec)) return Status::FailedPrecondition("declared output missing: " + o);
      outs.push_back(p.string());
    }
    out["outs"] = outs;
  }
  return out;
}

struct Running {
  const StageSpec* stage;
  StageRecord record;
  fs::path work;
  fs::path log;
};

std::string format_seconds(double s) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f s", s);
  return buf;
}

}  // namespace

bool RunSummary::ok() const {
  return std::none_of(stages.begin(), stages.end(), [](const StageRecord& r) {
    return r.status == "failed" || r.status == "blocked";
  });
}

fs::path pipeline_work_dir(const PipelineFile& file, const fs::path& home) {
  return home / "pipelines" /
         (file.path.stem().string() + "-" + sha256_hex(file.path.string()).substr(0, 12));
}

Expected<RunSummary> run_pipeline(const PipelineFile& file, RunStore& store,
                                  const RunOptions& options, std::ostream& log) {
  for (const std::string& f : options.force_)
    if (!file.find(f))
      return Status::InvalidArgument("--force " + f + ": no such stage in " + file.path.string());
  const fs::path home = options.home_.empty() ? kiln_home() : options.home_;
  const fs::path root = pipeline_work_dir(file, home);
  const std::string key = file.path.string();
  const int jobs = std::max(1, options.jobs_);

  RunSummary summary;
  if (!options.dry_run_) {
    std::error_code ec;
    fs::create_directories(root / "logs", ec);
    if (ec) return Status::IoError((root / "logs").string() + ": " + ec.message());
  }
  // One run of a pipeline at a time: two would race on its work directories.
  std::optional<FileLock> lock;
  if (!options.dry_run_) {
    KILN_ASSIGN_OR_RETURN(
        FileLock held,
        FileLock::TryAcquire(root / "run.lock",
                             Status::Unavailable(key +
                                                 ": another `kiln pipeline run` is running "
                                                 "it (lock " +
                                                 (root / "run.lock").string() + ")")));
    lock.emplace(std::move(held));
    KILN_ASSIGN_OR_RETURN(summary.run_id, store.begin_run(key, now_s()));
  }

  std::map<std::string, std::string> status;  // final status per stage
  std::map<std::string, std::string> hashes;  // dependency hash per decided stage
  std::map<std::string, Json> outputs;        // outputs per done or skipped stage
  std::map<pid_t, Running> running;
  std::set<std::string> started;

  auto finish = [&](StageRecord r) -> Status {
    status[r.stage] = r.status;
    if (!options.dry_run_) KILN_RETURN_IF_ERROR(store.record_stage(r));
    summary.stages.push_back(std::move(r));
    return Status::Ok();
  };

  while (status.size() < file.stages.size()) {
    for (const StageSpec& s : file.stages) {
      if (started.count(s.name)) continue;
      const auto up = s.upstream();
      if (!std::all_of(up.begin(), up.end(), [&](const std::string& u) { return status.count(u); }))
        continue;
      StageRecord r;
      r.run_id = summary.run_id;
      r.stage = s.name;
      r.started = now_s();
      // Blocked: a gate that did not pass, or an upstream stage that failed or was blocked.
      std::string blocked;
      if (!s.gate.empty() && status[s.gate] == "failed") {
        std::string text;
        if (auto t = read_file(root / "logs" / (s.gate + ".log")); t.ok()) text = *t;
        blocked = "not blessed: " + s.gate + " failed (" + failure_summary(text) + ")";
      }
      for (const std::string& u : up) {
        if (!blocked.empty()) break;
        if (status[u] == "failed") blocked = "upstream " + u + " failed";
        if (status[u] == "blocked")
          blocked =
              (u == s.gate ? "not blessed: " : "") + std::string("upstream ") + u + " was blocked";
      }
      started.insert(s.name);
      if (!blocked.empty()) {
        r.status = "blocked";
        r.reason = blocked;
        log << "blocked " << s.name << ": " << blocked << "\n";
        KILN_RETURN_IF_ERROR(finish(r));
        continue;
      }
      KILN_ASSIGN_OR_RETURN(r.inputs, stage_inputs(file, s, hashes));
      r.dep_hash = dependency_hash(r.inputs);
      hashes[s.name] = r.dep_hash;
      KILN_ASSIGN_OR_RETURN(std::optional<StageRecord> last, store.last_good(key, s.name));
      const bool forced = std::count(options.force_.begin(), options.force_.end(), s.name) > 0;
      std::optional<std::map<std::string, std::string>> last_inputs;
      if (last) last_inputs = last->inputs;
      const CacheDecision d =
          decide(r.inputs, last_inputs, forced,
                 last ? missing_outputs(last->outputs) : std::vector<std::string>{});
      r.reason = d.reason;
      if (!d.run) {
        r.status = "skipped";
        r.outputs = last->outputs;
        outputs[s.name] = r.outputs;
        log << "skip " << s.name << ": up to date\n";
        KILN_RETURN_IF_ERROR(finish(r));
        continue;
      }
      if (options.dry_run_) {
        r.status = "would run";
        log << "would run " << s.name << ": " << d.reason << "\n";
        // Downstream stages see the outputs they had, so the plan goes on past this stage.
        if (last) outputs[s.name] = last->outputs;
        KILN_RETURN_IF_ERROR(finish(r));
        continue;
      }
      started.erase(s.name);  // launched below when a job slot is free
      if (static_cast<int>(running.size()) >= jobs) continue;
      started.insert(s.name);
      const fs::path work = root / s.name;
      std::error_code ec;
      fs::remove_all(work, ec);  // a stage starts from an empty work dir (DVC removes outs)
      fs::create_directories(work, ec);
      const fs::path log_path = root / "logs" / (s.name + ".log");
      auto launch = stage_command(file, s, options, work, outputs);
      if (!launch.ok()) {
        r.status = "failed";
        r.reason += "; " + launch.status().message();
        r.exit_code = -1;
        log << "failed " << s.name << ": " << launch.status().message() << "\n";
        KILN_RETURN_IF_ERROR(finish(r));
        continue;
      }
      log << "run " << s.name << " (" << d.reason << ")\n" << std::flush;
      KILN_ASSIGN_OR_RETURN(pid_t pid, spawn(*launch, log_path));
      r.started = now_s();
      running[pid] = Running{&s, r, work, log_path};
    }
    if (running.empty()) {
      if (status.size() < file.stages.size())
        return Status::Internal("pipeline runner: no stage can start (" + file.path.string() + ")");
      break;
    }
    int wstatus = 0;
    const pid_t pid = ::waitpid(-1, &wstatus, 0);
    if (pid < 0) {
      if (errno == EINTR) continue;
      return Status::IoError(std::string("waitpid: ") + std::strerror(errno));
    }
    auto it = running.find(pid);
    if (it == running.end()) continue;
    Running done = std::move(it->second);
    running.erase(it);
    StageRecord& r = done.record;
    r.duration_s = now_s() - r.started;
    r.exit_code = WIFEXITED(wstatus) ? WEXITSTATUS(wstatus) : 128 + WTERMSIG(wstatus);
    std::string text;
    if (auto t = read_file(done.log); t.ok()) text = *t;
    if (r.exit_code == 0) {
      auto collected = collect_outputs(file, *done.stage, done.work, text, outputs);
      if (collected.ok()) {
        r.status = "done";
        r.outputs = *collected;
        outputs[r.stage] = r.outputs;
      } else {
        r.status = "failed";
        r.reason += "; " + collected.status().message();
      }
    } else {
      r.status = "failed";
    }
    log << r.status << " " << r.stage << " in " << format_seconds(r.duration_s);
    if (r.status == "failed")
      log << " (exit " << r.exit_code << "): " << failure_summary(text) << " [log "
          << done.log.string() << "]";
    log << "\n" << std::flush;
    KILN_RETURN_IF_ERROR(finish(r));
  }
  if (!options.dry_run_)
    KILN_RETURN_IF_ERROR(store.finish_run(summary.run_id, summary.ok() ? "ok" : "failed", now_s()));
  return summary;
}

Expected<std::vector<StageState>> pipeline_status(const PipelineFile& file, RunStore& store) {
  const std::string key = file.path.string();
  std::map<std::string, std::string> hashes;
  std::vector<StageState> out;
  for (const StageSpec& s : file.stages) {
    KILN_ASSIGN_OR_RETURN(auto inputs, stage_inputs(file, s, hashes));
    hashes[s.name] = dependency_hash(inputs);
    KILN_ASSIGN_OR_RETURN(std::optional<StageRecord> latest, store.last(key, s.name));
    KILN_ASSIGN_OR_RETURN(std::optional<StageRecord> good, store.last_good(key, s.name));
    StageState st;
    st.stage = s.name;
    std::optional<std::map<std::string, std::string>> last_inputs;
    if (good) last_inputs = good->inputs;
    const CacheDecision d =
        decide(inputs, last_inputs, false,
               good ? missing_outputs(good->outputs) : std::vector<std::string>{});
    if (latest && (latest->status == "failed" || latest->status == "blocked") &&
        (!good || good->run_id < latest->run_id)) {
      st.state = latest->status;
      st.detail = latest->status == "failed"
                      ? "exit " + std::to_string(latest->exit_code) + "; it ran: " + latest->reason
                      : latest->reason;
    } else if (!good) {
      st.state = "never run";
    } else if (d.run) {
      st.state = "changed";
      st.detail = d.reason.rfind("changed: ", 0) == 0 ? d.reason.substr(9) : d.reason;
    } else {
      st.state = "up to date";
    }
    out.push_back(st);
  }
  return out;
}

}  // namespace kiln::pipeline
