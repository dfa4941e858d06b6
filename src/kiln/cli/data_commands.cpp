// `kiln data profile` (both binaries; `data prepare` is in data_prepare_command.cpp).
#include <cstdio>
#include <iostream>

#include "kiln/cli/commands.h"
#include "kiln/cli/flags.h"
#include "kiln/core/files.h"
#include "kiln/core/json.h"
#include "kiln/data/profile.h"
#include "kiln/data/spec.h"

namespace kiln::cli {
namespace {

struct ProfileArgs {
  std::string dataset;
  std::string target;
  std::vector<std::string> categorical;
  std::vector<std::string> target_encoded;
  std::string report;
  bool json = false;
  double outlier_z = 100.0;
  int64_t limit = 0;
  std::vector<std::string> na;
};

int run_profile(const ProfileArgs& a) {
  Expected<data::DatasetSpec> spec =
      data::resolve_dataset(a.dataset, a.target, a.categorical, a.target_encoded);
  if (!spec.ok()) return report_failure(spec.status());
  data::ProfileOptions options;
  options.outlier_z(a.outlier_z).limit(a.limit);
  if (!a.na.empty()) options.na_tokens(a.na);
  // Tables are profiled here; images need LibTorch (kiln-engine).
  Expected<Json> report = Json();
  if (spec->kind == data::DatasetKind::kImages) {
    if (!engine_hooks().profile_dataset) return hand_off_to_engine();
    report = engine_hooks().profile_dataset(*spec, options);
  } else {
    report = data::profile_table_dataset(*spec, options);
  }
  if (!report.ok()) return report_failure(report.status());
  if (!a.report.empty()) {
    Status st = write_json_file_atomic(a.report, *report);
    if (!st.ok()) return report_failure(st);
  }
  if (a.json)
    std::cout << report->dump(2) << "\n";
  else
    std::cout << data::render_profile(*report);
  return 0;
}

}  // namespace

CLI::App* register_data_commands(CLI::App& app, int* exit_code) {
  CLI::App* data = app.add_subcommand("data", kDataVerbsHelp);
  data->require_subcommand(1);

  auto profile_args = std::make_shared<ProfileArgs>();
  CLI::App* profile = data->add_subcommand(
      "profile", "Profile a dataset (YAML spec or CSV): rows, classes, features, quality issues");
  profile->add_option("dataset", profile_args->dataset, "dataset spec (.yaml) or CSV file")
      ->required();
  add_flag(*profile, Flag::kTarget, &profile_args->target);
  add_flag(*profile, Flag::kCategorical, &profile_args->categorical);
  add_flag(*profile, Flag::kTargetEncode, &profile_args->target_encoded);
  add_flag(*profile, Flag::kReport, &profile_args->report);
  add_flag(*profile, Flag::kJson, &profile_args->json);
  add_flag(*profile, Flag::kOutlierZ, &profile_args->outlier_z)->check(CLI::PositiveNumber);
  add_flag(*profile, Flag::kLimit, &profile_args->limit)->check(CLI::NonNegativeNumber);
  add_flag(*profile, Flag::kNaTokens, &profile_args->na);
  profile->callback([profile_args, exit_code] { *exit_code = run_profile(*profile_args); });

  return data;
}

}  // namespace kiln::cli
