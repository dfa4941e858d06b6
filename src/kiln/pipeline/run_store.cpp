#include "kiln/pipeline/run_store.h"

#include <sqlite3.h>

#include "kiln/core/sqlite_statement.h"

namespace kiln::pipeline {
namespace {

constexpr const char* kDatabase = "pipelines.db";  // names the file in errors

constexpr const char* kSchema = R"sql(
CREATE TABLE IF NOT EXISTS runs (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  pipeline TEXT NOT NULL,
  started REAL NOT NULL,
  finished REAL NOT NULL DEFAULT 0,
  status TEXT NOT NULL DEFAULT 'running');
CREATE TABLE IF NOT EXISTS stages (
  run_id INTEGER NOT NULL REFERENCES runs(id),
  pipeline TEXT NOT NULL,
  stage TEXT NOT NULL,
  status TEXT NOT NULL,
  reason TEXT NOT NULL,
  started REAL NOT NULL,
  duration_s REAL NOT NULL,
  exit_code INTEGER NOT NULL,
  outputs TEXT NOT NULL,
  dep_hash TEXT NOT NULL,
  inputs TEXT NOT NULL,
  PRIMARY KEY (run_id, stage));
CREATE INDEX IF NOT EXISTS stages_by_name ON stages(pipeline, stage, run_id);
)sql";

constexpr const char* kStageColumns =
    "run_id, stage, status, reason, started, duration_s, exit_code, outputs, dep_hash, inputs";

}  // namespace

Expected<std::unique_ptr<RunStore>> RunStore::Open(const fs::path& db_path) {
  std::error_code ec;
  fs::create_directories(db_path.parent_path(), ec);
  KILN_ASSIGN_OR_RETURN(SqliteConnection db, open_sqlite_wal(db_path));
  char* error = nullptr;
  if (sqlite3_exec(db.get(), kSchema, nullptr, nullptr, &error) != SQLITE_OK) {
    std::string message = error ? error : "unknown error";
    sqlite3_free(error);
    return Status::IoError(db_path.string() + ": " + message);
  }
  return std::unique_ptr<RunStore>(new RunStore(std::move(db)));
}

Expected<int64_t> RunStore::begin_run(const std::string& pipeline, double started) {
  SqliteStatement st(db_.get(), "INSERT INTO runs (pipeline, started) VALUES (?, ?)", kDatabase);
  KILN_RETURN_IF_ERROR(st.status());
  st.bind(1, pipeline);
  st.bind(2, started);
  KILN_RETURN_IF_ERROR(st.done());
  return static_cast<int64_t>(sqlite3_last_insert_rowid(db_.get()));
}

Status RunStore::finish_run(int64_t run_id, const std::string& status, double finished) {
  SqliteStatement st(db_.get(), "UPDATE runs SET status = ?, finished = ? WHERE id = ?", kDatabase);
  KILN_RETURN_IF_ERROR(st.status());
  st.bind(1, status);
  st.bind(2, finished);
  st.bind(3, run_id);
  return st.done();
}

Status RunStore::record_stage(const StageRecord& r) {
  SqliteStatement st(
      db_.get(),
      "INSERT OR REPLACE INTO stages (run_id, pipeline, stage, status, reason, started, "
      "duration_s, exit_code, outputs, dep_hash, inputs) VALUES "
      "(?, (SELECT pipeline FROM runs WHERE id = ?), ?, ?, ?, ?, ?, ?, ?, ?, ?)",
      kDatabase);
  KILN_RETURN_IF_ERROR(st.status());
  Json inputs = Json::object();
  for (const auto& [k, v] : r.inputs) inputs[k] = v;
  st.bind(1, r.run_id);
  st.bind(2, r.run_id);
  st.bind(3, r.stage);
  st.bind(4, r.status);
  st.bind(5, r.reason);
  st.bind(6, r.started);
  st.bind(7, r.duration_s);
  st.bind(8, static_cast<int64_t>(r.exit_code));
  st.bind(9, r.outputs.dump());
  st.bind(10, r.dep_hash);
  st.bind(11, inputs.dump());
  return st.done();
}

Expected<std::vector<StageRecord>> RunStore::query_stages(const std::string& sql,
                                                          const std::vector<std::string>& text_args,
                                                          int64_t int_arg) {
  SqliteStatement st(db_.get(), sql.c_str(), kDatabase);
  KILN_RETURN_IF_ERROR(st.status());
  int i = 1;
  for (const std::string& a : text_args) st.bind(i++, a);
  if (text_args.empty()) st.bind(i, int_arg);
  std::vector<StageRecord> out;
  int rc;
  while ((rc = st.step()) == SQLITE_ROW) {
    StageRecord r;
    r.run_id = st.integer(0);
    r.stage = st.text(1);
    r.status = st.text(2);
    r.reason = st.text(3);
    r.started = st.real(4);
    r.duration_s = st.real(5);
    r.exit_code = static_cast<int>(st.integer(6));
    r.outputs = Json::parse(st.text(7), nullptr, false);
    if (r.outputs.is_discarded()) r.outputs = Json::object();
    r.dep_hash = st.text(8);
    Json inputs = Json::parse(st.text(9), nullptr, false);
    if (inputs.is_object())
      for (auto it = inputs.begin(); it != inputs.end(); ++it)
        if (it.value().is_string()) r.inputs[it.key()] = it.value().get<std::string>();
    out.push_back(std::move(r));
  }
  if (rc != SQLITE_DONE)
    return Status::IoError(std::string("pipelines.db: ") + sqlite3_errmsg(db_.get()));
  return out;
}

Expected<std::optional<StageRecord>> RunStore::last_good(const std::string& pipeline,
                                                         const std::string& stage) {
  KILN_ASSIGN_OR_RETURN(
      auto rows, query_stages(std::string("SELECT ") + kStageColumns +
                                  " FROM stages WHERE pipeline = ? AND stage = ? AND status IN "
                                  "('done', 'skipped') ORDER BY run_id DESC LIMIT 1",
                              {pipeline, stage}, 0));
  if (rows.empty()) return std::optional<StageRecord>();
  return std::optional<StageRecord>(rows[0]);
}

Expected<std::optional<StageRecord>> RunStore::last(const std::string& pipeline,
                                                    const std::string& stage) {
  KILN_ASSIGN_OR_RETURN(auto rows,
                        query_stages(std::string("SELECT ") + kStageColumns +
                                         " FROM stages WHERE pipeline = ? AND stage = ? ORDER BY "
                                         "run_id DESC LIMIT 1",
                                     {pipeline, stage}, 0));
  if (rows.empty()) return std::optional<StageRecord>();
  return std::optional<StageRecord>(rows[0]);
}

Expected<std::optional<RunRecord>> RunStore::last_run(const std::string& pipeline) {
  SqliteStatement st(db_.get(),
                     "SELECT id, pipeline, started, finished, status FROM runs WHERE pipeline = ? "
                     "ORDER BY id DESC LIMIT 1",
                     kDatabase);
  KILN_RETURN_IF_ERROR(st.status());
  st.bind(1, pipeline);
  const int rc = st.step();
  if (rc == SQLITE_DONE) return std::optional<RunRecord>();
  if (rc != SQLITE_ROW)
    return Status::IoError(std::string("pipelines.db: ") + sqlite3_errmsg(db_.get()));
  RunRecord r;
  r.id = st.integer(0);
  r.pipeline = st.text(1);
  r.started = st.real(2);
  r.finished = st.real(3);
  r.status = st.text(4);
  return std::optional<RunRecord>(r);
}

Expected<std::vector<StageRecord>> RunStore::stages_of_run(int64_t run_id) {
  return query_stages(std::string("SELECT ") + kStageColumns +
                          " FROM stages WHERE run_id = ? ORDER BY started, stage",
                      {}, run_id);
}

}  // namespace kiln::pipeline
