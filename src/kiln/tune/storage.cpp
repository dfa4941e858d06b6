#include "kiln/tune/storage.h"

#include <signal.h>
#include <sqlite3.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cmath>

#include "kiln/core/sqlite.h"
#include "kiln/core/sqlite_statement.h"
#include "kiln/tune/space.h"

namespace kiln::tune {
namespace {

Status db_error(sqlite3* db, const std::string& what) {
  return Status::IoError("studies.db: " + what + ": " + sqlite3_errmsg(db));
}

StudyInfo read_study(SqliteStatement& s) {
  StudyInfo info;
  info.id = s.integer(0);
  info.name = s.text(1);
  info.direction = s.text(2);
  info.space = Json::parse(s.text(3), nullptr, false);
  info.sampler = s.text(4);
  info.pruner = s.text(5);
  info.metric = s.text(6);
  info.objective = s.text(7);
  info.created = s.real(8);
  return info;
}

}  // namespace

double unix_now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

Expected<std::unique_ptr<StudyStorage>> StudyStorage::Open(const std::filesystem::path& path) {
  std::error_code ec;
  if (path.has_parent_path()) std::filesystem::create_directories(path.parent_path(), ec);
  KILN_ASSIGN_OR_RETURN(SqliteConnection db, open_sqlite_wal(path));
  std::unique_ptr<StudyStorage> s(new StudyStorage(db.release()));
  KILN_RETURN_IF_ERROR(s->exec(
      "CREATE TABLE IF NOT EXISTS studies (id INTEGER PRIMARY KEY, name TEXT UNIQUE NOT NULL, "
      "direction TEXT NOT NULL, space TEXT NOT NULL, sampler TEXT, pruner TEXT, metric TEXT, "
      "objective TEXT, created REAL);"
      "CREATE TABLE IF NOT EXISTS trials (id INTEGER PRIMARY KEY, study_id INTEGER NOT NULL, "
      "number INTEGER NOT NULL, state TEXT NOT NULL, value REAL, params TEXT NOT NULL, "
      "tuner_pid INTEGER, orphaned INTEGER NOT NULL DEFAULT 0, started REAL, finished REAL, "
      "duration REAL, note TEXT, out_dir TEXT, UNIQUE(study_id, number));"
      "CREATE TABLE IF NOT EXISTS intermediate (trial_id INTEGER NOT NULL, step INTEGER NOT NULL, "
      "value REAL, PRIMARY KEY(trial_id, step));"));
  return s;
}

StudyStorage::~StudyStorage() { sqlite3_close(db_); }

Status StudyStorage::exec(const std::string& sql) {
  char* err = nullptr;
  if (sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &err) != SQLITE_OK) {
    std::string msg = err ? err : "unknown error";
    sqlite3_free(err);
    return Status::IoError("studies.db: " + msg);
  }
  return Status::Ok();
}

Expected<StudyInfo> StudyStorage::find_study(const std::string& name) {
  SqliteStatement s(
      db_,
      "SELECT id, name, direction, space, sampler, pruner, metric, objective, created FROM "
      "studies WHERE name = ?",
      "studies.db");
  if (!s.ok()) return db_error(db_, "query");
  s.bind(1, name);
  const int rc = s.step();
  if (rc == SQLITE_ROW) return read_study(s);
  if (rc != SQLITE_DONE) return db_error(db_, "query");
  return Status::NotFound("no study named '" + name + "' in " + "studies.db");
}

std::vector<std::string> StudyStorage::study_names() {
  std::vector<std::string> names;
  SqliteStatement s(db_, "SELECT name FROM studies ORDER BY id", "studies.db");
  while (s.ok() && s.step() == SQLITE_ROW) names.push_back(s.text(0));
  return names;
}

Expected<StudyInfo> StudyStorage::create_or_load_study(const StudyInfo& wanted) {
  // Insert-if-absent, then compare: two tuners starting the same study at once both succeed.
  SqliteStatement s(
      db_,
      "INSERT INTO studies (name, direction, space, sampler, pruner, metric, objective, "
      "created) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(name) DO NOTHING",
      "studies.db");
  if (!s.ok()) return db_error(db_, "insert study");
  s.bind(1, wanted.name)
      .bind(2, wanted.direction)
      .bind(3, wanted.space.dump())
      .bind(4, wanted.sampler)
      .bind(5, wanted.pruner)
      .bind(6, wanted.metric)
      .bind(7, wanted.objective)
      .bind(8, unix_now());
  if (s.step() != SQLITE_DONE) return db_error(db_, "insert study");
  KILN_ASSIGN_OR_RETURN(StudyInfo found, find_study(wanted.name));
  if (found.space != wanted.space) {
    Expected<SearchSpace> a = parse_space(wanted.space), b = parse_space(found.space);
    std::string diff = a.ok() && b.ok() ? a->difference(*b) : std::string("spaces differ");
    return Status::InvalidArgument("study '" + wanted.name +
                                   "' exists with a different search space (" + diff +
                                   "); use another --study name");
  }
  if (found.direction != wanted.direction)
    return Status::InvalidArgument("study '" + wanted.name + "' exists with direction " +
                                   found.direction + ", not " + wanted.direction +
                                   "; use another --study name");
  if (found.metric != wanted.metric)
    return Status::InvalidArgument("study '" + wanted.name + "' exists with metric '" +
                                   found.metric + "', not '" + wanted.metric +
                                   "'; use another --study name");
  return found;
}

Expected<TrialRecord> StudyStorage::create_trial(int64_t study_id, const Json& params,
                                                 int64_t tuner_pid, const std::string& out_dir,
                                                 int64_t max_trials) {
  KILN_RETURN_IF_ERROR(exec("BEGIN IMMEDIATE"));
  TrialRecord t;
  if (max_trials >= 0) {
    SqliteStatement q(db_, "SELECT COUNT(*) FROM trials WHERE study_id = ? AND orphaned = 0",
                      "studies.db");
    q.bind(1, study_id);
    if (q.step() != SQLITE_ROW) {
      exec("ROLLBACK");
      return db_error(db_, "count trials");
    }
    const int64_t counted = q.integer(0);
    if (counted >= max_trials) {
      exec("ROLLBACK");
      return Status::FailedPrecondition("the study already has " + std::to_string(counted) +
                                        " of its " + std::to_string(max_trials) + " trials");
    }
  }
  {
    SqliteStatement q(db_, "SELECT COALESCE(MAX(number), -1) + 1 FROM trials WHERE study_id = ?",
                      "studies.db");
    q.bind(1, study_id);
    if (q.step() != SQLITE_ROW) {
      exec("ROLLBACK");
      return db_error(db_, "number trial");
    }
    t.number = q.integer(0);
  }
  t.params = params;
  t.started = unix_now();
  t.out_dir = out_dir;
  SqliteStatement s(
      db_,
      "INSERT INTO trials (study_id, number, state, params, tuner_pid, started, out_dir) "
      "VALUES (?, ?, 'running', ?, ?, ?, ?)",
      "studies.db");
  s.bind(1, study_id)
      .bind(2, t.number)
      .bind(3, params.dump())
      .bind(4, tuner_pid)
      .bind(5, t.started)
      .bind(6, out_dir);
  if (s.step() != SQLITE_DONE) {
    exec("ROLLBACK");
    return db_error(db_, "insert trial");
  }
  t.id = sqlite3_last_insert_rowid(db_);
  KILN_RETURN_IF_ERROR(exec("COMMIT"));
  return t;
}

Status StudyStorage::set_out_dir(int64_t trial_id, const std::string& out_dir) {
  SqliteStatement s(db_, "UPDATE trials SET out_dir = ? WHERE id = ?", "studies.db");
  s.bind(1, out_dir).bind(2, trial_id);
  return s.step() == SQLITE_DONE ? Status::Ok() : db_error(db_, "update trial");
}

Status StudyStorage::report(int64_t trial_id, int64_t step, double value) {
  SqliteStatement s(db_,
                    "INSERT OR REPLACE INTO intermediate (trial_id, step, value) VALUES (?, ?, ?)",
                    "studies.db");
  s.bind(1, trial_id).bind(2, step).bind(3, value);
  return s.step() == SQLITE_DONE ? Status::Ok() : db_error(db_, "report");
}

Status StudyStorage::finish(int64_t trial_id, TrialState state, double value,
                            const std::string& note) {
  SqliteStatement s(
      db_,
      "UPDATE trials SET state = ?, value = ?, note = ?, finished = ?, duration = ? - started "
      "WHERE id = ?",
      "studies.db");
  const double now = unix_now();
  s.bind(1, std::string(trial_state_name(state)))
      .bind(2, value)
      .bind(3, note)
      .bind(4, now)
      .bind(5, now)
      .bind(6, trial_id);
  return s.step() == SQLITE_DONE ? Status::Ok() : db_error(db_, "finish trial");
}

Expected<std::vector<TrialRecord>> StudyStorage::trials(int64_t study_id) {
  std::vector<TrialRecord> out;
  {
    SqliteStatement s(
        db_,
        "SELECT id, number, state, value, params, orphaned, started, duration, note, out_dir "
        "FROM trials WHERE study_id = ? ORDER BY number",
        "studies.db");
    if (!s.ok()) return db_error(db_, "query trials");
    s.bind(1, study_id);
    int rc;
    while ((rc = s.step()) == SQLITE_ROW) {
      TrialRecord t;
      t.id = s.integer(0);
      t.number = s.integer(1);
      t.state = trial_state_from_name(s.text(2));
      t.value = s.real(3);
      t.params = Json::parse(s.text(4), nullptr, false);
      if (t.params.is_discarded()) t.params = Json::object();
      t.orphaned = s.integer(5) != 0;
      t.started = s.real(6);
      t.duration = s.real(7);
      t.note = s.text(8);
      t.out_dir = s.text(9);
      out.push_back(std::move(t));
    }
    if (rc != SQLITE_DONE) return db_error(db_, "query trials");
  }
  if (out.empty()) return out;
  SqliteStatement s(
      db_,
      "SELECT i.trial_id, i.step, i.value FROM intermediate i JOIN trials t ON t.id = "
      "i.trial_id WHERE t.study_id = ?",
      "studies.db");
  s.bind(1, study_id);
  std::map<int64_t, TrialRecord*> by_id;
  for (auto& t : out) by_id[t.id] = &t;
  while (s.step() == SQLITE_ROW) {
    auto it = by_id.find(s.integer(0));
    if (it != by_id.end()) it->second->intermediate[s.integer(1)] = s.real(2);
  }
  return out;
}

Expected<int64_t> StudyStorage::fail_orphans(int64_t study_id) {
  std::vector<std::pair<int64_t, int64_t>> running;  // id, pid
  {
    SqliteStatement s(db_,
                      "SELECT id, tuner_pid FROM trials WHERE study_id = ? AND state = 'running'",
                      "studies.db");
    s.bind(1, study_id);
    while (s.step() == SQLITE_ROW) running.emplace_back(s.integer(0), s.integer(1));
  }
  int64_t n = 0;
  for (const auto& [id, pid] : running) {
    const bool alive = pid > 0 && (::kill(static_cast<pid_t>(pid), 0) == 0 || errno == EPERM);
    if (alive && pid != ::getpid()) continue;  // another live tuner owns it
    SqliteStatement s(
        db_,
        "UPDATE trials SET state = 'failed', orphaned = 1, note = 'the tuner running it died; "
        "re-run', finished = ? WHERE id = ?",
        "studies.db");
    s.bind(1, unix_now()).bind(2, id);
    if (s.step() != SQLITE_DONE) return db_error(db_, "mark orphans");
    ++n;
  }
  return n;
}

}  // namespace kiln::tune
