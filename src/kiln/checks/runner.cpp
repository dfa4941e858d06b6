#include "kiln/checks/runner.h"

#include <torch/torch.h>

#include <chrono>
#include <cstdio>

#include "kiln/checks/check_context.h"
#include "kiln/core/clock.h"
#include "kiln/core/files.h"
#include "kiln/model/bundle.h"
#include "kiln/train/metrics.h"

namespace kiln::checks {
namespace detail {

/// Rows per forward pass: large enough to amortise the call, small enough that a CNN's
/// activations stay in cache instead of faulting in fresh pages every batch.
constexpr int64_t kForwardBatch = 256;

Expected<torch::Tensor> Context::forward(const torch::Tensor& x) {
  KILN_ASSIGN_OR_RETURN(torch::Tensor out, train::run_module(module, x, kForwardBatch));
  return out.to(torch::kFloat32);
}

Expected<torch::Tensor> Context::outputs_of(const std::string& ref) {
  auto it = others.find(ref);
  if (it == others.end()) {
    KILN_ASSIGN_OR_RETURN(model::Bundle b, train::read_model_ref(ref));
    if (b.raw_input_shape() != bundle.raw_input_shape())
      return Status::InvalidArgument(ref +
                                     ": takes inputs of another shape than the model under "
                                     "test, so it cannot be scored on the same rows");
    std::vector<std::string> mine = bundle.labels(), theirs = b.labels();
    std::sort(mine.begin(), mine.end());
    std::sort(theirs.begin(), theirs.end());
    if (b.task() != bundle.task() || mine != theirs)
      return Status::InvalidArgument(ref +
                                     ": has another task or other classes than the model "
                                     "under test");
    // Compared as served on this CPU, like the model under test.
    KILN_ASSIGN_OR_RETURN(torch::jit::Module m,
                          model::load_bundle_module(b, model::auto_precision(b)));
    it = others.emplace(ref, std::make_pair(std::move(b), std::move(m))).first;
  }
  KILN_ASSIGN_OR_RETURN(torch::Tensor out,
                        train::run_module(it->second.second, rows.x, kForwardBatch));
  // Its output columns in the order of the model under test's labels (the same classes may be
  // listed in another order).
  const std::vector<std::string> theirs = it->second.first.labels();
  if (!labels.empty() && theirs != labels) {
    std::vector<int64_t> column;
    for (const auto& l : labels)
      column.push_back(std::find(theirs.begin(), theirs.end(), l) - theirs.begin());
    out = out.index_select(1, torch::tensor(column, torch::kLong));
  }
  return out.to(torch::kFloat32);
}

torch::Tensor predictions_of(const Context& ctx, const torch::Tensor& outputs) {
  return ctx.classification ? outputs.argmax(1) : outputs.reshape({-1});
}

Expected<Json> metrics_of(const Context& ctx, const torch::Tensor& outputs,
                          const torch::Tensor& targets) {
  if (ctx.classification) return train::classifier_metrics(outputs, targets, ctx.labels);
  return train::regression_metrics(outputs.reshape({-1}), targets);
}

Expected<double> metric_value(const Json& metrics, const std::string& metric,
                              const std::string& cls) {
  if (metric == "recall" || metric == "precision" || metric == "f1") {
    if (!metrics.contains("per_class"))
      return Status::InvalidArgument("'" + metric + "' needs a classification model");
    if (cls.empty()) return Status::InvalidArgument("'" + metric + "' needs a 'class'");
    if (!metrics["per_class"].contains(cls))
      return Status::InvalidArgument("no class '" + cls + "' among the model's labels");
    return metrics["per_class"][cls][metric].get<double>();
  }
  if (!metrics.contains(metric) || !metrics[metric].is_number())
    return Status::InvalidArgument(
        "metric '" + metric +
        "' is not one this task reports (classification: accuracy, "
        "macro_f1, recall, precision, f1, ece, nll; regression: r2, mae, mse)");
  return metrics[metric].get<double>();
}

bool greater_is_better(const std::string& metric) {
  return metric != "mae" && metric != "mse" && metric != "ece" && metric != "nll";
}

std::string headline_metric(const Context& ctx) { return ctx.classification ? "accuracy" : "r2"; }

std::string fmt(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.4g", v);
  return buf;
}

}  // namespace detail

namespace {

using detail::Context;

detail::CheckFn check_function(const std::string& kind) {
  static const std::map<std::string, detail::CheckFn> fns = {
      {"smoke", detail::run_smoke},
      {"model", detail::run_model},
      {"trivial_baseline", detail::run_trivial_baseline},
      {"recorded_metrics", detail::run_recorded_metrics},
      {"boundary", detail::run_boundary},
      {"invariance", detail::run_invariance},
      {"directional", detail::run_directional},
      {"ensemble", detail::run_ensemble},
      {"serve", detail::run_serve},
      {"compare", detail::run_compare},
      {"latency", detail::run_latency}};
  auto it = fns.find(kind);
  return it == fns.end() ? detail::CheckFn() : it->second;
}

}  // namespace

Expected<SuiteResult> run_suite(const Suite& suite, const RunOptions& options) {
  const auto start = std::chrono::steady_clock::now();
  SuiteResult result;
  result.suite = suite.name;
  result.suite_sha256 = suite.sha256;
  result.ref = options.ref_;
  result.started_at = utc_now_iso8601();

  Context ctx;
  ctx.suite = &suite;
  ctx.options = &options;
  KILN_ASSIGN_OR_RETURN(ctx.bundle, train::read_model_ref(options.ref_));
  result.bundle_dir = ctx.bundle.dir.string();
  const std::string task = ctx.bundle.task();
  if (task != "classification" && task != "regression")
    return Status::InvalidArgument(options.ref_ + ": a '" + task +
                                   "' bundle has no task or labels to test against");
  ctx.classification = task == "classification";
  ctx.labels = ctx.bundle.labels();
  ctx.images = ctx.bundle.raw_input_shape().size() == 3;
  ctx.precision = model::auto_precision(ctx.bundle);
  KILN_ASSIGN_OR_RETURN(ctx.module, model::load_bundle_module(ctx.bundle, ctx.precision));

  std::string data = options.data_.empty() ? suite.data : options.data_;
  const std::string split = options.split_.empty() ? suite.split : options.split_;
  if (data.empty()) {
    data = train::lineage_snapshot_dir(ctx.bundle).string();
    if (data.empty())
      return Status::InvalidArgument(
          options.ref_ +
          ": no labelled rows to test on: give --data (a CSV, snapshot or dataset spec), or "
          "'data:' in the suite (the snapshot the bundle was trained on is not in " +
          (kiln_home() / "snapshots").string() + ")");
  }
  KILN_ASSIGN_OR_RETURN(ctx.rows, train::read_labelled_rows(ctx.bundle, data, split));
  if (!ctx.rows.targets.defined() || ctx.n() == 0)
    return Status::InvalidArgument(data + ": no labelled rows");
  result.data = ctx.rows.source;
  result.rows = ctx.n();
  KILN_ASSIGN_OR_RETURN(ctx.outputs, ctx.forward(ctx.rows.x));
  {
    torch::Generator gen = at::detail::createCPUGenerator(static_cast<uint64_t>(suite.seed));
    torch::Tensor perm = torch::randperm(ctx.n(), gen, torch::kLong);
    ctx.sample = std::get<0>(perm.slice(0, 0, std::min<int64_t>(suite.rows, ctx.n())).sort());
  }

  for (const CheckSpec& spec : suite.checks) {
    CheckResult r;
    r.name = spec.name;
    r.kind = spec.kind;
    const auto t0 = std::chrono::steady_clock::now();
    detail::CheckFn fn = check_function(spec.kind);
    Status st =
        fn ? Status::Ok() : Status::InvalidArgument("unknown check kind '" + spec.kind + "'");
    if (st.ok()) {
      try {
        st = fn(ctx, spec, r);
      } catch (const std::exception& e) {
        st = Status::Internal(std::string("the check threw: ") + e.what());
      }
    }
    if (!st.ok()) {
      r.outcome = Outcome::kError;
      r.message = suite.where(spec) + ": " + st.message();
    }
    r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (options.on_check_) options.on_check_(r);
    result.checks.push_back(std::move(r));
  }
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return result;
}

}  // namespace kiln::checks
