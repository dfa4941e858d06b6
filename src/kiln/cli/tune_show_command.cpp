// `kiln tune show` (both binaries): a study's trials, best trial, importance and SVG plots.
#include <iostream>

#include "kiln/cli/commands.h"
#include "kiln/cli/flags.h"
#include "kiln/core/files.h"
#include "kiln/tune/report.h"
#include "kiln/tune/storage.h"

namespace kiln::cli {
namespace {

namespace fs = std::filesystem;

struct ShowArgs {
  std::string study;
  std::string out;
  bool json = false;
};

int run_show(const ShowArgs& a) {
  Expected<std::unique_ptr<tune::StudyStorage>> db =
      tune::StudyStorage::Open(kiln_home() / "studies.db");
  if (!db.ok()) return report_failure(db.status());
  Expected<tune::StudyInfo> study = (*db)->find_study(a.study);
  if (!study.ok()) {
    std::string names;
    for (const auto& n : (*db)->study_names()) names += (names.empty() ? "" : ", ") + n;
    return report_failure(Status::NotFound("no study named '" + a.study + "' in " +
                                           (kiln_home() / "studies.db").string() +
                                           (names.empty() ? "" : " (studies: " + names + ")")));
  }
  Expected<std::vector<tune::TrialRecord>> trials = (*db)->trials(study->id);
  if (!trials.ok()) return report_failure(trials.status());
  const fs::path plots =
      a.out.empty() ? kiln_home() / "studies" / study->name / "plots" : fs::path(a.out);
  Status st = tune::write_study_plots(*study, *trials, plots);
  if (!st.ok()) return report_failure(st);
  if (a.json) {
    Json j = tune::study_json(*study, *trials);
    j["plots"] = {{"history", (plots / "history.svg").string()},
                  {"parallel_coordinates", (plots / "parallel_coordinates.svg").string()},
                  {"importance", (plots / "importance.svg").string()}};
    std::cout << j.dump(2) << "\n";
  } else {
    std::cout << tune::study_table(*study, *trials);
    std::cout << "plots: " << plots.string() << "/{history,parallel_coordinates,importance}.svg\n";
  }
  return 0;
}

}  // namespace

CLI::App* register_tune_show_command(CLI::App& tune, int* exit_code) {
  auto sa = std::make_shared<ShowArgs>();
  CLI::App* show = add_verb_subcommand(
      tune, "show", "A study's trials, best trial, parameter importance; SVG plots");
  show->add_option("study", sa->study, "study name")->required();
  add_flag(*show, Flag::kJson, &sa->json);
  add_flag(*show, Flag::kOut, &sa->out)
      ->description("directory for the SVG plots (default $KILN_HOME/studies/STUDY/plots)");
  show->callback([sa, exit_code] { *exit_code = run_show(*sa); });
  return show;
}

}  // namespace kiln::cli
