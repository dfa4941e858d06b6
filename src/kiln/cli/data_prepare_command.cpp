// `kiln data prepare` (kiln-engine: preparing writes tensors).
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include "kiln/cli/commands.h"
#include "kiln/cli/flags.h"
#include "kiln/core/files.h"
#include "kiln/core/json.h"
#include "kiln/data/prepare.h"
#include "kiln/data/spec.h"

namespace kiln::cli {
namespace {

namespace fs = std::filesystem;

struct PrepareArgs {
  std::string dataset;
  std::string target;
  std::vector<std::string> categorical;
  std::vector<std::string> target_encoded;
  std::string out;
  std::string seed;
  int64_t limit = 0;
  bool json = false;
};

/// One line per feature selection or reduction step of a table snapshot's transforms: which
/// columns a variance threshold dropped, how much of the training variance PCA keeps.
void print_feature_steps(const Json& manifest) {
  if (!manifest.contains("transforms") || !manifest["transforms"].contains("steps")) return;
  std::vector<std::string> numeric;  // the pipeline's input columns, in order
  for (const Json& f : manifest["schema"].value("features", Json::array()))
    if (f.value("type", "numeric") == "numeric") numeric.push_back(f.value("name", ""));
  for (const Json& step : manifest["transforms"]["steps"]) {
    const std::string kind = step.value("kind", "");
    if (kind == "variance_threshold" && step.contains("kept") && step.contains("variances")) {
      const size_t in = step["variances"].size();
      std::vector<bool> kept(in, false);
      for (const Json& k : step["kept"])
        if (k.get<size_t>() < in) kept[k.get<size_t>()] = true;
      std::string dropped;
      for (size_t i = 0; i < in; ++i)
        if (!kept[i])
          dropped += (dropped.empty() ? "" : ", ") +
                     (i < numeric.size() ? numeric[i] : "#" + std::to_string(i));
      std::cout << "features: variance_threshold kept " << step["kept"].size() << " of " << in
                << " columns" << (dropped.empty() ? "" : " (dropped: " + dropped + ")") << "\n";
    } else if (kind == "pca" && step.contains("explained_variance_ratio")) {
      double kept = 0;
      for (const Json& r : step["explained_variance_ratio"]) kept += r.get<double>();
      char share[32];
      std::snprintf(share, sizeof share, "%.1f%%", 100 * kept);
      std::cout << "features: pca " << step["explained_variance_ratio"].size() << " components, "
                << share << " of the training variance\n";
    }
  }
}

int run_prepare(const PrepareArgs& a) {
  Expected<data::DatasetSpec> spec =
      data::resolve_dataset(a.dataset, a.target, a.categorical, a.target_encoded);
  if (!spec.ok()) return report_failure(spec.status());
  fs::path out = a.out.empty() ? kiln_home() / "snapshots" : fs::path(a.out);
  data::PrepareOptions options(out);
  if (!a.seed.empty()) {
    try {
      size_t pos = 0;
      options.seed(std::stoull(a.seed, &pos));
      if (pos != a.seed.size()) throw std::invalid_argument(a.seed);
    } catch (const std::exception&) {
      return report_failure(
          Status::InvalidArgument("--seed: '" + a.seed + "' is not a non-negative integer"));
    }
  }
  options.limit(a.limit);
  Expected<data::PrepareResult> result = data::prepare_dataset(*spec, options);
  if (!result.ok()) return report_failure(result.status());
  const Json& m = result->manifest;
  if (a.json) {
    std::cout << Json{{"snapshot", result->snapshot_dir.string()},
                      {"content_hash", result->content_hash},
                      {"splits", m["splits"]},
                      {"cleaning", m["cleaning"]}}
                     .dump(2)
              << "\n";
    return 0;
  }
  std::cout << "snapshot " << result->snapshot_dir.string() << "\n";
  std::cout << "content hash " << result->content_hash << "\n";
  for (const auto& [name, s] : m["splits"].items())
    std::cout << "  " << name << ": " << s["rows"].get<int64_t>() << " rows, x "
              << s["x_shape"].dump() << "\n";
  print_feature_steps(m);
  const Json& c = m["cleaning"];
  if (c.contains("dropped_rows")) {
    std::cout << "cleaning: " << c["rows_read"].get<int64_t>() << " rows read, "
              << c["rows_kept"].get<int64_t>() << " kept, " << c["dropped_rows"].size()
              << " dropped, " << c["ragged_rejected"].size() << " ragged rejected, "
              << c["imputed_cells"].get<int64_t>() << " cells imputed, "
              << c["clipped_cells"].get<int64_t>() << " clipped\n";
    for (const auto& r : c["ragged_rejected"])
      std::cout << "  rejected line " << r["line"].get<int64_t>() << ": "
                << r["fields"].get<int64_t>() << " fields, expected "
                << r["expected"].get<int64_t>() << "\n";
    for (const auto& d : c["dropped_rows"])
      std::cout << "  dropped line " << d["line"].get<int64_t>() << ": "
                << d["reason"].get<std::string>() << "\n";
  }
  return 0;
}

}  // namespace

void register_data_prepare_command(CLI::App& data, int* exit_code) {
  auto prepare_args = std::make_shared<PrepareArgs>();
  CLI::App* prepare = data.add_subcommand("prepare", kDataPrepareHelp);
  prepare->add_option("dataset", prepare_args->dataset, "dataset spec (.yaml) or CSV file")
      ->required();
  add_flag(*prepare, Flag::kTarget, &prepare_args->target);
  add_flag(*prepare, Flag::kCategorical, &prepare_args->categorical);
  add_flag(*prepare, Flag::kTargetEncode, &prepare_args->target_encoded);
  add_flag(*prepare, Flag::kOut, &prepare_args->out)
      ->description(
          "directory that receives the snapshot <name>-<hash> (default $KILN_HOME/snapshots)");
  add_flag(*prepare, Flag::kSeed, &prepare_args->seed);
  add_flag(*prepare, Flag::kLimit, &prepare_args->limit)->check(CLI::NonNegativeNumber);
  add_flag(*prepare, Flag::kJson, &prepare_args->json);
  prepare->callback([prepare_args, exit_code] { *exit_code = run_prepare(*prepare_args); });
}

}  // namespace kiln::cli
