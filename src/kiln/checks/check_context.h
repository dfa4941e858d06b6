#pragma once
// Internal to kiln_checks: what every check of one suite run shares, and the helpers they use.

#include <torch/script.h>

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "kiln/checks/report.h"
#include "kiln/checks/runner.h"
#include "kiln/checks/suite.h"
#include "kiln/model/manifest.h"
#include "kiln/train/eval_inputs.h"

namespace kiln::checks::detail {

/// The model under test and its rows, loaded once per suite run. Owned by run_suite().
struct Context {
  const Suite* suite = nullptr;
  const RunOptions* options = nullptr;
  model::Bundle bundle;
  /// The number format `kiln serve --precision auto` serves the bundle in on this CPU (bf16 where
  /// the bundle records a bf16 module and the CPU has avx512_bf16, else fp32): what is tested.
  std::string precision = "fp32";
  torch::jit::Module module;  ///< the bundle's module in `precision`
  train::RawInputs rows;      ///< x float32 N×raw shape, targets
  bool classification = false;
  bool images = false;
  std::vector<std::string> labels;
  torch::Tensor outputs;  ///< module(rows.x), float32 N×K (regression: N×1)
  torch::Tensor sample;   ///< int64 indices of the perturbation checks' rows (suite.rows, seeded)
  /// Other bundles a check named (baselines, ensemble members), loaded once.
  std::map<std::string, std::pair<model::Bundle, torch::jit::Module>> others;

  int64_t n() const { return rows.x.size(0); }
  /// The module's outputs for `x` (batches of 1024). Errors carry the module's message.
  Expected<torch::Tensor> forward(const torch::Tensor& x);
  /// Outputs of another bundle (by ref) on all rows; it must take the same raw inputs.
  Expected<torch::Tensor> outputs_of(const std::string& ref);
};

/// Class indices (classification) or the N predictions (regression) from outputs.
torch::Tensor predictions_of(const Context& ctx, const torch::Tensor& outputs);
/// The metrics of train/metrics.h for `outputs` against `targets`.
Expected<Json> metrics_of(const Context& ctx, const torch::Tensor& outputs,
                          const torch::Tensor& targets);
/// One number out of metrics_of(): accuracy, macro_f1, recall/precision/f1 (with `cls`), r2, mae,
/// mse. InvalidArgument names an unknown metric or class.
Expected<double> metric_value(const Json& metrics, const std::string& metric,
                              const std::string& cls = "");
/// Whether a greater value of `metric` is better (false for mae, mse).
bool greater_is_better(const std::string& metric);
/// The default metric of the task: accuracy or r2.
std::string headline_metric(const Context& ctx);
/// "%.4g"
std::string fmt(double v);

/// One check function per kind; each fills `result` (outcome, measured, threshold, message,
/// details). A returned error becomes an "error" result.
using CheckFn = std::function<Status(Context&, const CheckSpec&, CheckResult&)>;
Status run_smoke(Context& ctx, const CheckSpec& spec, CheckResult& result);
Status run_model(Context& ctx, const CheckSpec& spec, CheckResult& result);
Status run_trivial_baseline(Context& ctx, const CheckSpec& spec, CheckResult& result);
Status run_recorded_metrics(Context& ctx, const CheckSpec& spec, CheckResult& result);
Status run_boundary(Context& ctx, const CheckSpec& spec, CheckResult& result);
Status run_invariance(Context& ctx, const CheckSpec& spec, CheckResult& result);
Status run_directional(Context& ctx, const CheckSpec& spec, CheckResult& result);
Status run_ensemble(Context& ctx, const CheckSpec& spec, CheckResult& result);
Status run_serve(Context& ctx, const CheckSpec& spec, CheckResult& result);
Status run_compare(Context& ctx, const CheckSpec& spec, CheckResult& result);
Status run_latency(Context& ctx, const CheckSpec& spec, CheckResult& result);

}  // namespace kiln::checks::detail
