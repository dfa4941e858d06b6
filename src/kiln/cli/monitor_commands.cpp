// `kiln monitor drift REF --data ...`: the drift tests `kiln serve` runs on live traffic, offline
// on a file or snapshot split, against the reference profile the bundle recorded at training.
#include <torch/torch.h>

#include <cmath>
#include <cstdio>
#include <iostream>
#include <sstream>

#include "kiln/cli/commands.h"
#include "kiln/cli/flags.h"
#include "kiln/core/files.h"
#include "kiln/core/xml.h"
#include "kiln/model/bundle.h"
#include "kiln/monitor/drift.h"
#include "kiln/train/eval_inputs.h"
#include "kiln/train/reference_profile.h"

namespace kiln::cli {
namespace {

struct DriftArgs {
  std::string ref;
  std::string data;
  std::string split = "test";
  int64_t limit = 0;
  std::string report;
  std::string html;
  bool json = false;
  bool fail_on_drift = false;
};

std::string num(double v, const char* format = "%.4g") {
  char buf[32];
  std::snprintf(buf, sizeof buf, format, v);
  return buf;
}

/// Reference vs current bin shares of one feature as a small inline SVG bar chart.
std::string bins_svg(const monitor::NumericReference& ref, const std::vector<double>& current) {
  const std::vector<double> cur = monitor::shares_in_reference_bins(ref, current);
  const int w = 240, h = 60;
  const double bar = static_cast<double>(w) / static_cast<double>(ref.shares.size());
  double top = 1e-9;
  for (size_t i = 0; i < ref.shares.size(); ++i) top = std::max({top, ref.shares[i], cur[i]});
  std::ostringstream s;
  s << "<svg width=\"" << w << "\" height=\"" << h << "\" viewBox=\"0 0 " << w << " " << h
    << "\" role=\"img\">";
  for (size_t i = 0; i < ref.shares.size(); ++i) {
    const double rh = ref.shares[i] / top * (h - 2), ch = cur[i] / top * (h - 2);
    s << "<rect x=\"" << num(bar * static_cast<double>(i) + 1, "%.1f") << "\" y=\""
      << num(h - rh, "%.1f") << "\" width=\"" << num(bar / 2 - 1, "%.1f") << "\" height=\""
      << num(rh, "%.1f") << "\" fill=\"#8aa\"><title>reference " << num(ref.shares[i])
      << "</title></rect>";
    s << "<rect x=\"" << num(bar * static_cast<double>(i) + bar / 2, "%.1f") << "\" y=\""
      << num(h - ch, "%.1f") << "\" width=\"" << num(bar / 2 - 1, "%.1f") << "\" height=\""
      << num(ch, "%.1f") << "\" fill=\"#d62\"><title>current " << num(cur[i]) << "</title></rect>";
  }
  s << "</svg>";
  return s.str();
}

std::string drift_html(const std::string& ref_name, const std::string& source,
                       const monitor::ReferenceProfile& profile, const monitor::DriftReport& report,
                       const std::vector<double>& features) {
  std::ostringstream h;
  h << "<!doctype html><html><head><meta charset=\"utf-8\"><title>Kiln drift report</title>"
       "<style>body{font:14px sans-serif;margin:2em}table{border-collapse:collapse}"
       "td,th{padding:4px 10px;border-bottom:1px solid #ddd;text-align:left}"
       ".drift{color:#b30;font-weight:bold}</style></head><body>"
    << "<h1>Data drift: " << xml_escape(ref_name) << "</h1><p>" << report.rows
    << " current rows from " << xml_escape(source) << " against the " << profile.rows
    << " training rows the bundle profiled. Drifted features: "
    << num(100 * report.drift_share, "%.0f") << "% ("
    << (report.dataset_drift ? "<span class=\"drift\">dataset drift</span>" : "no dataset drift")
    << "); predicted-class PSI " << num(report.prediction_psi) << ".</p>"
    << "<table><tr><th>feature</th><th>test</th><th>statistic</th><th>p-value</th><th>PSI</th>"
       "<th>out of range</th><th>missing</th><th>drift</th><th>bins: reference / current</th></tr>";
  const size_t f = profile.features.size();
  for (size_t k = 0; k < report.features.size(); ++k) {
    const auto& d = report.features[k];
    h << "<tr><td>" << xml_escape(d.name) << "</td><td>" << d.test << "</td><td>"
      << num(d.statistic) << "</td><td>" << (d.test != "jensen_shannon" ? num(d.p_value) : "-")
      << "</td><td>" << num(d.psi) << "</td><td>" << d.out_of_range + d.out_of_vocabulary
      << "</td><td>" << d.missing << "</td><td" << (d.drifted ? " class=\"drift\">drifted" : ">-")
      << "</td><td>";
    if (k < f) {
      std::vector<double> column(features.size() / f);
      for (size_t r = 0; r < column.size(); ++r) column[r] = features[r * f + k];
      h << bins_svg(profile.features[k], column);
    }
    h << "</td></tr>";
  }
  h << "</table></body></html>\n";
  return h.str();
}

int run_drift(const DriftArgs& a) {
  Expected<model::Bundle> bundle = train::read_model_ref(a.ref);
  if (!bundle.ok()) return report_failure(bundle.status());
  const fs::path profile_path = bundle->file(monitor::kReferenceProfileFile);
  if (!bundle->manifest.contains("files") ||
      !bundle->manifest["files"].contains(monitor::kReferenceProfileFile))
    return report_failure(Status::FailedPrecondition(
        a.ref + ": the bundle has no reference profile (" + monitor::kReferenceProfileFile +
        ": trained by an older Kiln, or imported); train it again to monitor its drift"));
  Expected<Json> profile_json = read_json_file(profile_path);
  if (!profile_json.ok()) return report_failure(profile_json.status());
  Expected<monitor::ReferenceProfile> profile = monitor::ReferenceProfile::from_json(*profile_json);
  if (!profile.ok()) return report_failure(profile.status().with_context(profile_path.string()));
  // Files of raw rows (no labels needed) or a snapshot / dataset spec split.
  const std::string ext = fs::path(a.data).extension().string();
  const bool raw_file = ext == ".csv" || ext == ".npy" || a.data.find("idx") != std::string::npos;
  Expected<train::RawInputs> rows =
      raw_file ? train::read_raw_inputs(*bundle, a.data, /*want_targets=*/false)
               : train::read_labelled_rows(*bundle, a.data, a.split);
  if (!rows.ok()) return report_failure(rows.status());
  torch::Tensor x = rows->x;
  if (a.limit > 0 && x.size(0) > a.limit) x = x.slice(0, 0, a.limit);
  Expected<torch::jit::Module> module = model::load_bundle_module(*bundle);
  if (!module.ok()) return report_failure(module.status());
  Expected<train::MonitoredRows> current =
      train::monitored_rows(*module, profile->schema, x, bundle->task());
  if (!current.ok()) return report_failure(current.status());
  const monitor::DriftReport report =
      monitor::compare_to_reference(*profile, current->features, current->intensity_counts,
                                    current->predicted, current->confidence, current->predictions);
  Json out = report.to_json();
  out["bundle"] = bundle->dir.string();
  out["data"] = rows->source;
  out["reference_rows"] = profile->rows;
  if (!a.report.empty()) {
    Status st = write_json_file_atomic(a.report, out);
    if (!st.ok()) return report_failure(st);
  }
  if (!a.html.empty()) {
    Status st = write_file_atomic(
        a.html, drift_html(a.ref, rows->source, *profile, report, current->features));
    if (!st.ok()) return report_failure(st);
  }
  if (a.json) {
    std::cout << out.dump(2) << "\n";
  } else {
    std::printf("%-28s %-15s %10s %10s %8s %8s %8s  %s\n", "feature", "test", "statistic",
                "p-value", "psi", "outside", "missing", "drift");
    for (const auto& d : report.features)
      std::printf("%-28s %-15s %10.4g %10s %8.4f %8lld %8lld  %s\n", d.name.c_str(), d.test.c_str(),
                  d.statistic, d.test != "jensen_shannon" ? num(d.p_value).c_str() : "-", d.psi,
                  static_cast<long long>(d.out_of_range + d.out_of_vocabulary),
                  static_cast<long long>(d.missing), d.drifted ? "DRIFT" : "-");
    std::printf(
        "%lld rows from %s: %.0f%% of features drifted (%s); predicted classes PSI %.4f%s\n",
        static_cast<long long>(report.rows), rows->source.c_str(), 100 * report.drift_share,
        report.dataset_drift ? "DATASET DRIFT" : "no dataset drift", report.prediction_psi,
        report.prediction_drift ? " (drifted)" : "");
  }
  return a.fail_on_drift && report.dataset_drift ? 1 : 0;
}

}  // namespace

CLI::App* register_monitor_commands(CLI::App& app, int* exit_code) {
  CLI::App* monitor = app.add_subcommand("monitor", kMonitorHelp);
  monitor->require_subcommand(1);
  register_monitor_rules_command(*monitor, exit_code);
  auto da = std::make_shared<DriftArgs>();
  CLI::App* drift = monitor->add_subcommand(
      "drift", "Drift of a dataset against the bundle's reference profile (Evidently's tests)");
  drift->add_option("ref", da->ref, "bundle directory, NAME@VERSION or NAME@ALIAS")->required();
  drift
      ->add_option("--data", da->data,
                   "rows to test: a CSV, .npy or IDX file of raw inputs, a snapshot directory or "
                   "a dataset spec")
      ->required();
  drift->add_option("--split", da->split, "split of a snapshot or spec")->default_str("test");
  drift->add_option("--limit", da->limit, "the first N rows only (0: all)");
  add_flag(*drift, Flag::kReport, &da->report)->description("write the JSON report here");
  drift->add_option("--html", da->html, "write an HTML report (table and per-feature bins) here");
  add_flag(*drift, Flag::kJson, &da->json);
  drift->add_flag("--fail-on-drift", da->fail_on_drift, "exit 1 when the dataset drifted");
  drift->callback([da, exit_code] { *exit_code = run_drift(*da); });
  return monitor;
}

}  // namespace kiln::cli
