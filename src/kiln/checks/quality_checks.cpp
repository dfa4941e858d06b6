// Checks of what the model gets right: model (thresholds, slices), trivial_baseline,
// recorded_metrics, compare (champion/challenger) and ensemble.
#include <torch/torch.h>

#include <cmath>

#include "kiln/checks/check_context.h"
#include "kiln/checks/statistics.h"
#include "kiln/core/csv.h"

namespace kiln::checks::detail {
namespace {

/// Row indices a model check's `slice` selects (all rows without one).
Expected<torch::Tensor> slice_rows(const Context& ctx, const Json& slice) {
  const int64_t n = ctx.n();
  if (slice.is_null()) return torch::arange(n, torch::kLong);
  for (const auto& [key, value] : slice.items())
    if (key != "class" && key != "column" && key != "values" && key != "min" && key != "max")
      return Status::InvalidArgument("slice: unknown field '" + key +
                                     "' (class, or column with values or min/max)");
  std::vector<int64_t> keep;
  if (slice.contains("class")) {
    if (!ctx.classification) return Status::InvalidArgument("slice: 'class' needs a classifier");
    const std::string cls = slice["class"].get<std::string>();
    auto it = std::find(ctx.labels.begin(), ctx.labels.end(), cls);
    if (it == ctx.labels.end())
      return Status::InvalidArgument("slice: no class '" + cls + "' among the model's labels");
    return torch::nonzero(ctx.rows.targets == (it - ctx.labels.begin())).reshape({-1});
  }
  if (!slice.contains("column") || !slice["column"].is_string())
    return Status::InvalidArgument("slice: give 'class', or 'column' with 'values' or 'min'/'max'");
  const std::string column = slice["column"].get<std::string>();
  const bool has_range = slice.contains("min") || slice.contains("max");
  if (!slice.contains("values") && !has_range)
    return Status::InvalidArgument("slice: column '" + column + "' needs 'values' or 'min'/'max'");
  const double lo = slice.value("min", -INFINITY), hi = slice.value("max", INFINITY);
  auto value_matches = [&](const std::string& cell) {
    double v;
    const bool numeric = parse_double(cell, &v);
    if (slice.contains("values")) {
      for (const auto& want : slice["values"]) {
        if (want.is_string() && want.get<std::string>() == cell) return true;
        if (want.is_number() && numeric && want.get<double>() == v) return true;
      }
      return false;
    }
    return numeric && v >= lo && v <= hi;
  };
  if (ctx.rows.table) {  // a CSV: any of its columns
    const int64_t c = ctx.rows.table->column_index(column);
    if (c < 0) return Status::InvalidArgument("slice: the data has no column '" + column + "'");
    for (int64_t r = 0; r < n; ++r)
      if (value_matches(ctx.rows.table->rows[static_cast<size_t>(r)][static_cast<size_t>(c)]))
        keep.push_back(r);
  } else {  // a snapshot of a table: the bundle's raw feature columns
    const int64_t c = ctx.bundle.feature_index(column);
    if (c < 0 || ctx.images)
      return Status::InvalidArgument("slice: '" + column +
                                     "' is not a feature column of the bundle (column slices of "
                                     "a snapshot take feature columns; give a CSV for others)");
    torch::Tensor col = ctx.rows.x.select(1, c).to(torch::kFloat64).contiguous();
    const double* v = col.data_ptr<double>();
    for (int64_t r = 0; r < n; ++r) {
      char buf[64];
      std::snprintf(buf, sizeof buf, "%.17g", v[r]);
      if (!std::isnan(v[r]) && value_matches(buf)) keep.push_back(r);
    }
  }
  return torch::tensor(keep, torch::kLong);
}

Status apply_threshold(const MetricThreshold& t, double value, std::optional<double> baseline,
                       CheckResult& result) {
  std::string why;
  result.outcome = threshold_passes(t, value, baseline, &why) ? Outcome::kPass : Outcome::kFail;
  result.measured = fmt(value) + (baseline ? " (baseline " + fmt(*baseline) + ")" : "");
  result.threshold = t.describe();
  result.message = why;
  return Status::Ok();
}

}  // namespace

Status run_model(Context& ctx, const CheckSpec& spec, CheckResult& result) {
  const std::string metric = spec.params["metric"].get<std::string>();
  KILN_ASSIGN_OR_RETURN(MetricThreshold t,
                        MetricThreshold::from_json(spec.params, greater_is_better(metric)));
  KILN_ASSIGN_OR_RETURN(torch::Tensor idx, slice_rows(ctx, spec.params.value("slice", Json())));
  if (idx.numel() == 0) return Status::InvalidArgument("the slice selects no rows");
  torch::Tensor outputs = ctx.outputs.index_select(0, idx);
  torch::Tensor targets = ctx.rows.targets.index_select(0, idx);
  KILN_ASSIGN_OR_RETURN(Json metrics, metrics_of(ctx, outputs, targets));
  torch::Tensor baseline_outputs;
  if (spec.params.contains("baseline")) {
    KILN_ASSIGN_OR_RETURN(torch::Tensor all, ctx.outputs_of(spec.params["baseline"]));
    baseline_outputs = all.index_select(0, idx);
  }
  result.details["rows"] = idx.numel();
  if (spec.params.value("per_class", false)) {
    if (!ctx.classification) return Status::InvalidArgument("per_class needs a classifier");
    Json baseline_metrics;
    if (baseline_outputs.defined()) {
      KILN_ASSIGN_OR_RETURN(baseline_metrics, metrics_of(ctx, baseline_outputs, targets));
    }
    std::string worst_class;
    double worst = INFINITY;
    std::string failures;
    result.outcome = Outcome::kPass;
    for (const auto& cls : ctx.labels) {
      if (metrics["per_class"][cls].value("support", 0) == 0) continue;
      KILN_ASSIGN_OR_RETURN(double v, metric_value(metrics, metric, cls));
      std::optional<double> base;
      if (!baseline_metrics.is_null()) {
        KILN_ASSIGN_OR_RETURN(double b, metric_value(baseline_metrics, metric, cls));
        base = b;
      }
      result.details["per_class"][cls] = v;
      std::string why;
      if (!threshold_passes(t, v, base, &why)) {
        result.outcome = Outcome::kFail;
        failures += (failures.empty() ? "" : "; ") + cls + ": " + why;
      }
      if (v < worst) {
        worst = v;
        worst_class = cls;
      }
    }
    result.measured = "worst " + worst_class + " " + fmt(worst);
    result.threshold = t.describe() + " per class";
    result.message = failures;
    return Status::Ok();
  }
  const std::string cls = spec.params.value("class", "");
  KILN_ASSIGN_OR_RETURN(double value, metric_value(metrics, metric, cls));
  std::optional<double> baseline;
  if (baseline_outputs.defined()) {
    KILN_ASSIGN_OR_RETURN(Json bm, metrics_of(ctx, baseline_outputs, targets));
    KILN_ASSIGN_OR_RETURN(double b, metric_value(bm, metric, cls));
    baseline = b;
  }
  result.details["value"] = value;
  if (baseline) result.details["baseline"] = *baseline;
  return apply_threshold(t, value, baseline, result);
}

Status run_trivial_baseline(Context& ctx, const CheckSpec& spec, CheckResult& result) {
  const double alpha = spec.params.value("alpha", ctx.suite->alpha);
  const int64_t n = ctx.n();
  if (ctx.classification) {
    torch::Tensor counts =
        torch::bincount(ctx.rows.targets, {}, static_cast<int64_t>(ctx.labels.size()));
    const int64_t majority_class = counts.argmax().item<int64_t>();
    const double p0 = static_cast<double>(counts.max().item<int64_t>()) / static_cast<double>(n);
    const int64_t correct =
        (predictions_of(ctx, ctx.outputs) == ctx.rows.targets).sum().item<int64_t>();
    const double accuracy = static_cast<double>(correct) / static_cast<double>(n);
    // One-sided exact binomial test: could always answering the majority class score this well?
    const double p = binomial_sf(correct, n, p0);
    result.outcome = p < alpha && accuracy > p0 ? Outcome::kPass : Outcome::kFail;
    result.measured = "accuracy " + fmt(accuracy) + " vs " + fmt(p0) + ", p=" + fmt(p);
    result.threshold = "p < " + fmt(alpha);
    result.details = {{"accuracy", accuracy},
                      {"majority_class", ctx.labels[static_cast<size_t>(majority_class)]},
                      {"majority_accuracy", p0},
                      {"p_value", p},
                      {"rows", n}};
    if (result.outcome == Outcome::kFail)
      result.message = "accuracy " + fmt(accuracy) +
                       " is not significantly above always answering '" +
                       ctx.labels[static_cast<size_t>(majority_class)] + "' (" + fmt(p0) + ")";
    return Status::Ok();
  }
  // Regression: the mean of the targets against the model, squared errors paired by row.
  torch::Tensor y = ctx.rows.targets.to(torch::kFloat64);
  torch::Tensor model_err = (predictions_of(ctx, ctx.outputs).to(torch::kFloat64) - y).pow(2);
  torch::Tensor mean_err = (y - y.mean()).pow(2);
  const double* me = model_err.contiguous().data_ptr<double>();
  torch::Tensor mean_err_c = mean_err.contiguous();
  const double* be = mean_err_c.data_ptr<double>();
  BootstrapResult b = paired_bootstrap(
      n,
      [&](const std::vector<int64_t>& rows, int which) {
        double s = 0;
        for (int64_t r : rows) s += which == 1 ? me[r] : be[r];
        return -s / static_cast<double>(rows.size());
      },
      1000, ctx.suite->seed);
  result.outcome = b.p_not_better < alpha ? Outcome::kPass : Outcome::kFail;
  result.measured =
      "mse " + fmt(-b.challenger) + " vs " + fmt(-b.champion) + ", p=" + fmt(b.p_not_better);
  result.threshold = "p < " + fmt(alpha);
  result.details = {{"mse", -b.challenger},
                    {"mean_predictor_mse", -b.champion},
                    {"p_value", b.p_not_better},
                    {"rows", n}};
  if (result.outcome == Outcome::kFail)
    result.message = "mse " + fmt(-b.challenger) +
                     " is not significantly below predicting the mean (" + fmt(-b.champion) + ")";
  return Status::Ok();
}

Status run_recorded_metrics(Context& ctx, const CheckSpec& spec, CheckResult& result) {
  // The recorded metrics of the module under test (its number format's, e.g. bf16's).
  const Json recorded = ctx.bundle.test_metrics(ctx.precision);
  result.threshold = "recorded - " + fmt(spec.params.value("max_drop", 0.02)) + " - 2 s.e.";
  if (!recorded.is_object()) {
    result.outcome = Outcome::kInconclusive;
    result.measured = "-";
    result.message = "the bundle records no test metrics to compare with";
    return Status::Ok();
  }
  KILN_ASSIGN_OR_RETURN(Json metrics, metrics_of(ctx, ctx.outputs, ctx.rows.targets));
  std::vector<std::string> names;
  if (spec.params.contains("metrics")) {
    for (const auto& m : spec.params["metrics"]) names.push_back(m.get<std::string>());
  } else {
    names = ctx.classification ? std::vector<std::string>{"accuracy", "macro_f1"}
                               : std::vector<std::string>{"r2"};
  }
  const double max_drop = spec.params.value("max_drop", 0.02);
  const double n = static_cast<double>(ctx.n());
  result.outcome = Outcome::kPass;
  std::string measured;
  for (const auto& name : names) {
    if (!recorded.contains(name) || !recorded[name].is_number()) continue;
    KILN_ASSIGN_OR_RETURN(double v, metric_value(metrics, name));
    const double was = recorded[name].get<double>();
    // Sampling error of a proportion on these rows (accuracy-like metrics in [0, 1]).
    const double se = name == "accuracy" || name == "macro_f1"
                          ? std::sqrt(std::max(was * (1 - was), 1e-4) / n)
                          : 0.0;
    const bool gib = greater_is_better(name);
    const double allowed = gib ? was - max_drop - 2 * se : was * (1 + max_drop) + 2 * se;
    const bool ok = gib ? v >= allowed : v <= allowed;
    result.details[name] = {{"measured", v}, {"recorded", was}, {"allowed", allowed}};
    measured += (measured.empty() ? "" : ", ") + name + " " + fmt(v) + "/" + fmt(was);
    if (!ok) {
      result.outcome = Outcome::kFail;
      result.message += (result.message.empty() ? "" : "; ") + name + " " + fmt(v) +
                        " is far below the recorded " + fmt(was) + " (allowed " + fmt(allowed) +
                        ")";
    }
  }
  result.measured = measured.empty() ? "-" : measured;
  if (measured.empty()) {
    result.outcome = Outcome::kInconclusive;
    result.message = "none of the metrics is recorded in the bundle";
  }
  return Status::Ok();
}

Status run_compare(Context& ctx, const CheckSpec& spec, CheckResult& result) {
  const std::string baseline_ref = spec.params["baseline"].get<std::string>();
  const std::string metric = spec.params.value("metric", headline_metric(ctx));
  const double alpha = spec.params.value("alpha", ctx.suite->alpha);
  const std::string expect = spec.params.value("expect", "not_worse");
  if (expect != "not_worse" && expect != "better")
    return Status::InvalidArgument("expect: '" + expect + "' (not_worse or better)");
  KILN_ASSIGN_OR_RETURN(torch::Tensor base_out, ctx.outputs_of(baseline_ref));
  std::string verdict;
  if (metric == "accuracy") {
    if (!ctx.classification) return Status::InvalidArgument("accuracy needs a classifier");
    torch::Tensor mine = predictions_of(ctx, ctx.outputs) == ctx.rows.targets;
    torch::Tensor theirs = predictions_of(ctx, base_out) == ctx.rows.targets;
    const int64_t b = (theirs & ~mine).sum().item<int64_t>();
    const int64_t c = (mine & ~theirs).sum().item<int64_t>();
    McNemarResult m = mcnemar(b, c);
    verdict = mcnemar_verdict(m, alpha);
    const double n = static_cast<double>(ctx.n());
    result.measured = verdict + " (p=" + fmt(m.p_value) + ")";
    result.details = {{"test", m.exact ? "mcnemar_exact" : "mcnemar_chi2_corrected"},
                      {"b_baseline_only_right", b},
                      {"c_candidate_only_right", c},
                      {"statistic", m.statistic},
                      {"p_value", m.p_value},
                      {"candidate", mine.sum().item<int64_t>() / n},
                      {"baseline", theirs.sum().item<int64_t>() / n}};
  } else {
    const bool gib = greater_is_better(metric);
    torch::Tensor mine_out = ctx.outputs, base_out_all = base_out;
    Status metric_error = Status::Ok();
    BootstrapResult br = paired_bootstrap(
        ctx.n(),
        [&](const std::vector<int64_t>& rows, int which) {
          torch::Tensor idx = torch::tensor(rows, torch::kLong);
          const torch::Tensor& out = which == 1 ? mine_out : base_out_all;
          Expected<Json> m =
              metrics_of(ctx, out.index_select(0, idx), ctx.rows.targets.index_select(0, idx));
          if (!m.ok()) {
            metric_error = m.status();
            return 0.0;
          }
          Expected<double> v = metric_value(*m, metric);
          if (!v.ok()) {
            metric_error = v.status();
            return 0.0;
          }
          return gib ? *v : -*v;
        },
        spec.params.value("resamples", int64_t{1000}), ctx.suite->seed);
    KILN_RETURN_IF_ERROR(metric_error);
    verdict = bootstrap_verdict(br, alpha);
    const double p = verdict == "worse" ? br.p_not_worse : br.p_not_better;
    result.measured = verdict + " (p=" + fmt(p) + ")";
    const double sign = gib ? 1.0 : -1.0;
    result.details = {{"test", "paired_bootstrap"},
                      {"metric", metric},
                      {"candidate", sign * br.challenger},
                      {"baseline", sign * br.champion},
                      {"p_not_better", br.p_not_better},
                      {"p_not_worse", br.p_not_worse},
                      {"delta_ci95", {sign * br.ci_low, sign * br.ci_high}}};
  }
  result.details["verdict"] = verdict;
  result.details["baseline_ref"] = baseline_ref;
  result.threshold = (expect == "better" ? "better than " : "not worse than ") + baseline_ref +
                     " at alpha " + fmt(alpha);
  if (verdict == "worse") {
    result.outcome = Outcome::kFail;
    result.message = "significantly worse than " + baseline_ref + " on " + metric;
  } else if (verdict == "better") {
    result.outcome = Outcome::kPass;
  } else if (expect == "better") {
    result.outcome = Outcome::kFail;
    result.message = "not significantly better than " + baseline_ref + " on " + metric;
  } else {
    result.outcome = Outcome::kInconclusive;
    result.message = "no significant difference from " + baseline_ref + " on " + metric;
  }
  return Status::Ok();
}

Status run_ensemble(Context& ctx, const CheckSpec& spec, CheckResult& result) {
  const std::string metric = headline_metric(ctx);
  const double tolerance = spec.params.value("tolerance", 0.005);
  std::vector<torch::Tensor> member_outputs = {ctx.outputs};
  std::vector<std::string> names = {"(model under test)"};
  for (const auto& m : spec.params["members"]) {
    if (!m.is_string()) return Status::InvalidArgument("members: each is a bundle reference");
    KILN_ASSIGN_OR_RETURN(torch::Tensor out, ctx.outputs_of(m.get<std::string>()));
    member_outputs.push_back(out);
    names.push_back(m.get<std::string>());
  }
  if (member_outputs.size() < 2)
    return Status::InvalidArgument("members: name at least one other bundle");
  torch::Tensor mean;
  for (const auto& out : member_outputs) {
    torch::Tensor p = ctx.classification ? torch::softmax(out, 1) : out;
    mean = mean.defined() ? mean + p : p;
  }
  mean = mean / static_cast<double>(member_outputs.size());
  // log of the mean probability: argmax is unchanged, and metrics_of takes logits.
  torch::Tensor ensemble_out = ctx.classification ? mean.clamp_min(1e-12).log() : mean;
  KILN_ASSIGN_OR_RETURN(Json em, metrics_of(ctx, ensemble_out, ctx.rows.targets));
  KILN_ASSIGN_OR_RETURN(double ensemble_value, metric_value(em, metric));
  double best = -INFINITY;
  std::string best_name;
  for (size_t i = 0; i < member_outputs.size(); ++i) {
    KILN_ASSIGN_OR_RETURN(Json mm, metrics_of(ctx, member_outputs[i], ctx.rows.targets));
    KILN_ASSIGN_OR_RETURN(double v, metric_value(mm, metric));
    result.details["members"][names[i]] = v;
    if (v > best) {
      best = v;
      best_name = names[i];
    }
  }
  result.details["ensemble"] = ensemble_value;
  result.measured = metric + " " + fmt(ensemble_value) + " vs best " + fmt(best);
  result.threshold = ">= best member - " + fmt(tolerance);
  result.outcome = ensemble_value >= best - tolerance ? Outcome::kPass : Outcome::kFail;
  if (result.outcome == Outcome::kFail)
    result.message = "the ensemble of " + std::to_string(member_outputs.size()) + " (" + metric +
                     " " + fmt(ensemble_value) + ") falls below its best member " + best_name +
                     " (" + fmt(best) + ")";
  return Status::Ok();
}

}  // namespace kiln::checks::detail
