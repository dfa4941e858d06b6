// `kiln pipeline run|status|show|dag PIPELINE.yaml` (both binaries, torch-free): the stages of a
// pipeline file run as `kiln` subprocesses, cached by content hash, gated, recorded in
// $KILN_HOME/pipelines.db.
#include <cstdio>
#include <iostream>
#include <memory>

#include "kiln/cli/commands.h"
#include "kiln/cli/flags.h"
#include "kiln/core/files.h"
#include "kiln/loadtest/serve_process.h"
#include "kiln/pipeline/dag_render.h"
#include "kiln/pipeline/pipeline_file.h"
#include "kiln/pipeline/run_store.h"
#include "kiln/pipeline/runner.h"

namespace kiln::cli {
namespace {

using namespace kiln::pipeline;

struct PipelineArgs {
  std::string file;
  int jobs = 1;
  std::vector<std::string> force;
  bool dry_run = false;
  bool json = false;
  std::string svg;
};

Expected<std::unique_ptr<RunStore>> open_store() {
  return RunStore::Open(kiln_home() / "pipelines.db");
}

Json record_json(const StageRecord& r) {
  Json inputs = Json::object();
  for (const auto& [k, v] : r.inputs) inputs[k] = v;
  return Json{{"stage", r.stage},     {"status", r.status},         {"reason", r.reason},
              {"started", r.started}, {"duration_s", r.duration_s}, {"exit_code", r.exit_code},
              {"outputs", r.outputs}, {"dep_hash", r.dep_hash}};
}

std::string seconds(double s) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f s", s);
  return buf;
}

int run_run(const PipelineArgs& a) {
  if (a.jobs < 1) return report_failure(Status::InvalidArgument("--jobs must be at least 1"));
  auto file = read_pipeline_file(a.file);
  if (!file.ok()) return report_failure(file.status());
  auto store = open_store();
  if (!store.ok()) return report_failure(store.status());
  RunOptions options(loadtest::self_executable());
  options.jobs(a.jobs).force(a.force).dry_run(a.dry_run).home(kiln_home());
  auto summary = run_pipeline(*file, **store, options, std::cerr);
  if (!summary.ok()) return report_failure(summary.status());
  if (a.json) {
    Json stages = Json::array();
    for (const StageRecord& r : summary->stages) stages.push_back(record_json(r));
    std::cout << Json{{"run", summary->run_id}, {"ok", summary->ok()}, {"stages", stages}}.dump(2)
              << "\n";
  } else if (!a.dry_run) {
    int ran = 0, skipped = 0, bad = 0;
    for (const StageRecord& r : summary->stages) {
      ran += r.status == "done";
      skipped += r.status == "skipped";
      bad += r.status == "failed" || r.status == "blocked";
    }
    std::cout << "pipeline run " << summary->run_id << ": " << ran << " ran, " << skipped
              << " skipped (up to date), " << bad << " failed or blocked\n";
  }
  return summary->ok() ? 0 : 1;
}

int run_status(const PipelineArgs& a) {
  auto file = read_pipeline_file(a.file);
  if (!file.ok()) return report_failure(file.status());
  auto store = open_store();
  if (!store.ok()) return report_failure(store.status());
  auto states = pipeline_status(*file, **store);
  if (!states.ok()) return report_failure(states.status());
  if (a.json) {
    Json out = Json::array();
    for (const StageState& s : *states)
      out.push_back({{"stage", s.stage}, {"state", s.state}, {"detail", s.detail}});
    std::cout << out.dump(2) << "\n";
    return 0;
  }
  size_t width = 5;
  for (const StageState& s : *states) width = std::max(width, s.stage.size());
  for (const StageState& s : *states) {
    std::string name = s.stage;
    name.resize(width + 2, ' ');
    std::cout << name << s.state << (s.detail.empty() ? "" : " (" + s.detail + ")") << "\n";
  }
  return 0;
}

int run_show(const PipelineArgs& a) {
  auto file = read_pipeline_file(a.file);
  if (!file.ok()) return report_failure(file.status());
  auto store = open_store();
  if (!store.ok()) return report_failure(store.status());
  auto run = (*store)->last_run(file->path.string());
  if (!run.ok()) return report_failure(run.status());
  if (!*run)
    return report_failure(Status::NotFound(file->path.string() + ": the pipeline never ran"));
  auto records = (*store)->stages_of_run((*run)->id);
  if (!records.ok()) return report_failure(records.status());
  const std::string run_status = (*run)->finished > 0 ? (*run)->status : "unfinished";
  if (a.json) {
    Json stages = Json::array();
    for (const StageRecord& r : *records) stages.push_back(record_json(r));
    for (const StageSpec& s : file->stages) {
      bool recorded = false;
      for (const StageRecord& r : *records) recorded = recorded || r.stage == s.name;
      if (!recorded) stages.push_back({{"stage", s.name}, {"status", "not recorded"}});
    }
    std::cout << Json{{"run", (*run)->id},
                      {"status", run_status},
                      {"started", (*run)->started},
                      {"finished", (*run)->finished},
                      {"stages", stages}}
                     .dump(2)
              << "\n";
    return 0;
  }
  std::cout << "run " << (*run)->id << " (" << run_status << ")\n";
  for (const StageSpec& s : file->stages) {
    const StageRecord* r = nullptr;
    for (const StageRecord& x : *records)
      if (x.stage == s.name) r = &x;
    std::string name = s.name;
    name.resize(std::max<size_t>(name.size() + 2, 12), ' ');
    if (!r) {
      std::cout << name << "not recorded (the run stopped before it finished)\n";
      continue;
    }
    std::string st = r->status;
    st.resize(9, ' ');
    std::cout << name << st << seconds(r->duration_s) << "  " << r->reason;
    if (r->status == "failed") std::cout << " (exit " << r->exit_code << ")";
    if (!r->outputs.empty()) std::cout << "  outputs " << r->outputs.dump();
    std::cout << "\n";
  }
  return 0;
}

int run_dag(const PipelineArgs& a) {
  auto file = read_pipeline_file(a.file);
  if (!file.ok()) return report_failure(file.status());
  std::cout << dag_text(*file);
  if (!a.svg.empty()) {
    if (Status st = write_file_atomic(a.svg, dag_svg(*file)); !st.ok()) return report_failure(st);
    std::cerr << "wrote " << a.svg << "\n";
  }
  return 0;
}

}  // namespace

void register_pipeline_command(CLI::App& app, int* exit_code) {
  CLI::App* pipeline = app.add_subcommand(
      "pipeline",
      "Run a pipeline file (prepare, train, test, push, shell stages): content-hash cached, "
      "gated, parallel up to --jobs, recorded in $KILN_HOME/pipelines.db");
  pipeline->require_subcommand(1);
  auto add_file = [](CLI::App* sub, PipelineArgs* args) {
    sub->add_option("pipeline", args->file, "pipeline file (.yaml)")->required();
  };
  auto ra = std::make_shared<PipelineArgs>();
  CLI::App* run = pipeline->add_subcommand(
      "run", "Run the stages whose inputs changed (exit 1: a stage failed or a gate blocked)");
  add_file(run, ra.get());
  run->add_option("--jobs,-j", ra->jobs, "independent stages run at once")->default_val(1);
  run->add_option("--force", ra->force, "run this stage even if up to date (repeatable)")
      ->allow_extra_args(false);  // `--force train PIPELINE.yaml`: the file is no stage
  run->add_flag("--dry-run", ra->dry_run, "print what would run and why; run nothing");
  add_flag(*run, Flag::kJson, &ra->json);
  run->callback([ra, exit_code] { *exit_code = run_run(*ra); });

  auto sa = std::make_shared<PipelineArgs>();
  CLI::App* status = pipeline->add_subcommand(
      "status", "Per stage: up to date, changed (which input), never run, failed or blocked");
  add_file(status, sa.get());
  add_flag(*status, Flag::kJson, &sa->json);
  status->callback([sa, exit_code] { *exit_code = run_status(*sa); });

  auto wa = std::make_shared<PipelineArgs>();
  CLI::App* show = pipeline->add_subcommand(
      "show", "The last run: each stage's status, duration, reason and outputs");
  add_file(show, wa.get());
  add_flag(*show, Flag::kJson, &wa->json);
  show->callback([wa, exit_code] { *exit_code = run_show(*wa); });

  auto da = std::make_shared<PipelineArgs>();
  CLI::App* dag = pipeline->add_subcommand(
      "dag", "Draw the stage graph: text in topological order, and --svg FILE");
  add_file(dag, da.get());
  dag->add_option("--svg", da->svg, "also write the graph as SVG here");
  dag->callback([da, exit_code] { *exit_code = run_dag(*da); });
}

}  // namespace kiln::cli
