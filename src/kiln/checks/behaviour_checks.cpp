// Checks of how the model behaves off the beaten path: boundary (batch sizes, extreme and
// non-finite values, noise, few samples), invariance and directional expectations (CheckList's
// INV and DIR).
#include <torch/torch.h>

#include <cmath>

#include "kiln/checks/check_context.h"
#include "kiln/checks/statistics.h"

namespace kiln::checks::detail {
namespace {

/// The scale perturbations are measured in: 255 for pixel images, each feature's standard
/// deviation (ignoring NaN) for tables, as a tensor broadcastable against rows. A categorical
/// column's code is not a quantity to nudge: its scale is 0, so noise leaves it as it is.
torch::Tensor value_scale(const Context& ctx) {
  if (ctx.images) return torch::full({1}, 255.0f);
  torch::Tensor x = ctx.rows.x;
  torch::Tensor present = ~torch::isnan(x);
  torch::Tensor filled = torch::where(present, x, torch::zeros_like(x));
  torch::Tensor count = present.sum(0).clamp_min(1).to(torch::kFloat32);
  torch::Tensor mean = filled.sum(0) / count;
  torch::Tensor var = (torch::where(present, x - mean, torch::zeros_like(x)).pow(2)).sum(0) / count;
  torch::Tensor scale = var.sqrt().clamp_min(1e-12);
  const model::TableColumns columns(ctx.bundle);
  for (size_t j = 0; j < columns.size() && static_cast<int64_t>(j) < scale.size(0); ++j)
    if (columns.categorical(j)) scale[static_cast<int64_t>(j)] = 0;
  return scale.unsqueeze(0);
}

/// Share of rows whose prediction did not change: the same class, or for regression a change of
/// at most `tolerance` times the targets' standard deviation.
double unchanged_share(const Context& ctx, const torch::Tensor& before, const torch::Tensor& after,
                       double tolerance) {
  if (ctx.classification)
    return (before.argmax(1) == after.argmax(1)).to(torch::kFloat64).mean().item<double>();
  const double sd = ctx.rows.targets.to(torch::kFloat64).std().item<double>();
  torch::Tensor d = (before.reshape({-1}) - after.reshape({-1})).abs().to(torch::kFloat64);
  return (d <= tolerance * std::max(sd, 1e-12)).to(torch::kFloat64).mean().item<double>();
}

double headline_of(const Context& ctx, const torch::Tensor& outputs, const torch::Tensor& targets) {
  Expected<Json> m = metrics_of(ctx, outputs, targets);
  if (!m.ok()) return NAN;
  Expected<double> v = metric_value(*m, headline_metric(ctx));
  return v.ok() ? *v : NAN;
}

torch::Tensor shift_images(const torch::Tensor& x, int64_t dy, int64_t dx) {
  torch::Tensor out = torch::zeros_like(x);
  const int64_t h = x.size(2), w = x.size(3);
  using torch::indexing::Slice;
  out.index_put_(
      {Slice(), Slice(), Slice(std::max<int64_t>(dy, 0), h + std::min<int64_t>(dy, 0)),
       Slice(std::max<int64_t>(dx, 0), w + std::min<int64_t>(dx, 0))},
      x.index({Slice(), Slice(), Slice(std::max<int64_t>(-dy, 0), h - std::max<int64_t>(dy, 0)),
               Slice(std::max<int64_t>(-dx, 0), w - std::max<int64_t>(dx, 0))}));
  return out;
}

}  // namespace

Status run_boundary(Context& ctx, const CheckSpec& spec, CheckResult& result) {
  std::vector<std::string> failures;
  const torch::Tensor& x = ctx.rows.x;
  // 1. Batch 1 and the largest batch give the same outputs row for row.
  const int64_t max_batch =
      std::min<int64_t>(spec.params.value("max_batch", int64_t{256}), ctx.n());
  torch::Tensor head = x.slice(0, 0, max_batch);
  KILN_ASSIGN_OR_RETURN(torch::Tensor big, train::run_module(ctx.module, head, max_batch));
  std::vector<torch::Tensor> singles;
  const int64_t single_rows = std::min<int64_t>(max_batch, 64);
  for (int64_t i = 0; i < single_rows; ++i) {
    KILN_ASSIGN_OR_RETURN(torch::Tensor one,
                          train::run_module(ctx.module, head.slice(0, i, i + 1), 1));
    singles.push_back(one);
  }
  const double batch_diff =
      (torch::cat(singles).to(torch::kFloat32) - big.slice(0, 0, single_rows).to(torch::kFloat32))
          .abs()
          .max()
          .item<double>();
  const double scale = std::max(1.0, big.abs().max().item<double>());
  result.details["batch_1_vs_" + std::to_string(max_batch) + "_max_abs_diff"] = batch_diff;
  if (!(batch_diff <= 1e-4 * scale))
    failures.push_back("batch 1 and batch " + std::to_string(max_batch) + " differ by " +
                       fmt(batch_diff));

  // 2. All-zero and all-max inputs give finite outputs.
  torch::Tensor maxima = ctx.images ? torch::full_like(x.slice(0, 0, 1), 255.0f)
                                    : std::get<0>(torch::nan_to_num(x, 0.0).max(0, true));
  for (const auto& [name, probe] :
       {std::make_pair(std::string("all-zero"), torch::zeros_like(x.slice(0, 0, 1))),
        std::make_pair(std::string("all-max"), maxima)}) {
    KILN_ASSIGN_OR_RETURN(torch::Tensor out, ctx.forward(probe));
    const bool finite = torch::isfinite(out).all().item<bool>();
    result.details[name + "_finite"] = finite;
    if (!finite) failures.push_back(name + " input gives non-finite outputs");
  }

  // 3. Non-finite inputs: the serving gate refuses them (NaN only where an imputer fills it in).
  const bool allow_nan = model::accepts_missing_values(ctx.bundle.preprocessing());
  const int64_t row_size = x[0].numel();
  for (float bad :
       {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity()}) {
    torch::Tensor probe = x.slice(0, 0, 1).clone().contiguous();
    probe.view({-1})[row_size / 2] = bad;
    Status gate = model::check_input_values(probe.data_ptr<float>(), 1, row_size, allow_nan);
    const std::string what = std::isnan(bad) ? "nan" : "inf";
    if (std::isnan(bad) && allow_nan) {
      KILN_ASSIGN_OR_RETURN(torch::Tensor out, ctx.forward(probe));
      const bool finite = torch::isfinite(out).all().item<bool>();
      result.details["nan_imputed_finite"] = finite;
      if (!gate.ok() || !finite)
        failures.push_back("a missing value (NaN) is not imputed to a finite output");
    } else {
      result.details[what + "_refused"] = gate.ok() ? "no" : gate.message();
      if (gate.ok()) failures.push_back("a " + what + " input is not refused");
    }
  }

  // 4. A robustness curve: the headline metric under Gaussian noise of sigma × the value scale.
  torch::Tensor rows = x.index_select(0, ctx.sample);
  torch::Tensor targets = ctx.rows.targets.index_select(0, ctx.sample);
  const double clean = headline_of(ctx, ctx.outputs.index_select(0, ctx.sample), targets);
  double chance = 0.0;
  if (ctx.classification) {
    torch::Tensor counts = torch::bincount(targets, {}, static_cast<int64_t>(ctx.labels.size()));
    chance = counts.max().item<double>() / static_cast<double>(targets.numel());
  }
  result.details["clean"] = clean;
  std::string curve;
  if (spec.params.contains("noise")) {
    torch::Tensor scale_t = value_scale(ctx);
    torch::Generator gen = at::detail::createCPUGenerator(ctx.suite->seed + 1);
    for (const auto& level : spec.params["noise"]) {
      if (!level.is_object() || !level.contains("sigma") || !level["sigma"].is_number())
        return Status::InvalidArgument("noise: each level is {sigma: S[, min_accuracy: A]}");
      const double sigma = level["sigma"].get<double>();
      torch::Tensor noisy = rows + torch::randn(rows.sizes(), gen) * (sigma * scale_t);
      if (ctx.images) noisy = noisy.clamp(0, 255);
      KILN_ASSIGN_OR_RETURN(torch::Tensor out, ctx.forward(noisy));
      const double v = headline_of(ctx, out, targets);
      // Without a named minimum the model must keep at least half its lift over chance.
      const double need = level.contains("min_accuracy") ? level["min_accuracy"].get<double>()
                          : level.contains("min_r2")     ? level["min_r2"].get<double>()
                                                         : chance + 0.5 * (clean - chance);
      result.details["noise"].push_back({{"sigma", sigma}, {"value", v}, {"min", need}});
      curve += (curve.empty() ? "" : " ") + fmt(sigma) + ":" + fmt(v);
      if (!(v >= need))
        failures.push_back("under noise sigma " + fmt(sigma) + " " + headline_metric(ctx) + " " +
                           fmt(v) + " < " + fmt(need));
    }
  }

  // 5. Few samples per class: accuracy on k rows of each class.
  if (spec.params.contains("few_per_class")) {
    const Json& few = spec.params["few_per_class"];
    if (!ctx.classification) return Status::InvalidArgument("few_per_class needs a classifier");
    const int64_t k = few.value("samples", int64_t{5});
    std::vector<int64_t> pick;
    for (size_t c = 0; c < ctx.labels.size(); ++c) {
      torch::Tensor idx = torch::nonzero(ctx.rows.targets == static_cast<int64_t>(c)).reshape({-1});
      for (int64_t i = 0; i < std::min<int64_t>(k, idx.numel()); ++i)
        pick.push_back(idx[i].item<int64_t>());
    }
    torch::Tensor p = torch::tensor(pick, torch::kLong);
    const double v =
        headline_of(ctx, ctx.outputs.index_select(0, p), ctx.rows.targets.index_select(0, p));
    const double need = few.value("min_accuracy", chance + 0.5 * (clean - chance));
    result.details["few_per_class"] = {
        {"samples", k}, {"rows", p.numel()}, {"accuracy", v}, {"min", need}};
    if (!(v >= need))
      failures.push_back(std::to_string(k) + " per class: accuracy " + fmt(v) + " < " + fmt(need));
  }

  result.measured = "batch diff " + fmt(batch_diff) + (curve.empty() ? "" : ", noise " + curve);
  result.threshold = "batch diff <= 1e-4, finite, non-finite refused";
  result.outcome = failures.empty() ? Outcome::kPass : Outcome::kFail;
  for (const auto& f : failures) result.message += (result.message.empty() ? "" : "; ") + f;
  return Status::Ok();
}

Status run_invariance(Context& ctx, const CheckSpec& spec, CheckResult& result) {
  const std::string kind = spec.params["perturbation"].get<std::string>();
  const double min_unchanged = spec.params["min_unchanged"].get<double>();
  const double tolerance = spec.params.value("tolerance", 0.01);
  torch::Tensor idx = ctx.sample;
  if (spec.params.contains("rows"))
    idx = idx.slice(0, 0, std::max<int64_t>(1, spec.params["rows"].get<int64_t>()));
  torch::Tensor rows = ctx.rows.x.index_select(0, idx);
  torch::Tensor before = ctx.outputs.index_select(0, idx);
  std::vector<std::pair<std::string, torch::Tensor>> variants;
  if (kind == "shift" || kind == "brightness" || kind == "flip") {
    if (!ctx.images)
      return Status::InvalidArgument("perturbation '" + kind + "' needs an image model");
    if (kind == "shift") {
      const int64_t k = spec.params.value("pixels", int64_t{1});
      variants = {{"right", shift_images(rows, 0, k)},
                  {"left", shift_images(rows, 0, -k)},
                  {"down", shift_images(rows, k, 0)},
                  {"up", shift_images(rows, -k, 0)}};
    } else if (kind == "brightness") {
      const double factor = spec.params.value("factor", 0.9);
      variants = {{"x" + fmt(factor), (rows * factor).clamp(0, 255)}};
    } else {
      variants = {{"horizontal", rows.flip({3})}};
    }
  } else if (kind == "jitter") {
    if (ctx.images)
      return Status::InvalidArgument(
          "perturbation 'jitter' is for tables (use shift or brightness)");
    torch::Generator gen = at::detail::createCPUGenerator(ctx.suite->seed + 2);
    torch::Tensor noise = (torch::rand(rows.sizes(), gen) * 2 - 1) * (tolerance * value_scale(ctx));
    variants = {{"jitter", rows + noise}};
  } else {
    return Status::InvalidArgument("perturbation '" + kind + "' (shift, brightness, flip, jitter)");
  }
  double worst = 1.0;
  std::string worst_name;
  for (const auto& [name, perturbed] : variants) {
    KILN_ASSIGN_OR_RETURN(torch::Tensor after, ctx.forward(perturbed));
    const double share = unchanged_share(ctx, before, after, tolerance);
    result.details["unchanged"][name] = share;
    if (share < worst) {
      worst = share;
      worst_name = name;
    }
  }
  result.details["rows"] = idx.numel();
  result.measured =
      "unchanged " + fmt(worst) + (variants.size() > 1 ? " (" + worst_name + ")" : "");
  result.threshold = ">= " + fmt(min_unchanged);
  result.outcome = worst >= min_unchanged ? Outcome::kPass : Outcome::kFail;
  if (result.outcome == Outcome::kFail)
    result.message = kind + " " + worst_name + " changed " + fmt(100 * (1 - worst)) +
                     "% of the predictions (at most " + fmt(100 * (1 - min_unchanged)) +
                     "% allowed)";
  return Status::Ok();
}

Status run_directional(Context& ctx, const CheckSpec& spec, CheckResult& result) {
  if (ctx.images) return Status::InvalidArgument("directional checks take a table model's feature");
  const std::string feature = spec.params["feature"].get<std::string>();
  const std::string expect = spec.params["expect"].get<std::string>();
  if (expect != "increasing" && expect != "decreasing")
    return Status::InvalidArgument("expect: '" + expect + "' (increasing or decreasing)");
  const int64_t column = ctx.bundle.feature_index(feature);
  if (column < 0)
    return Status::InvalidArgument("feature '" + feature + "' is not one of the bundle's");
  int64_t output = 0;
  if (ctx.classification) {
    if (!spec.params.contains("output"))
      return Status::InvalidArgument("a classifier's directional check needs 'output' (a class)");
    const std::string cls = spec.params["output"].get<std::string>();
    auto it = std::find(ctx.labels.begin(), ctx.labels.end(), cls);
    if (it == ctx.labels.end()) return Status::InvalidArgument("no class '" + cls + "'");
    output = it - ctx.labels.begin();
  }
  const double delta = spec.params.value("delta", 1.0);
  const double tolerance = spec.params.value("tolerance", 0.0);
  const double min_pass = spec.params.value("min_pass", 0.9);
  torch::Tensor idx = ctx.sample;
  torch::Tensor rows = ctx.rows.x.index_select(0, idx).clone();
  torch::Tensor scale = value_scale(ctx);
  rows.select(1, column).add_(delta * scale[0][column].item<double>());
  KILN_ASSIGN_OR_RETURN(torch::Tensor after, ctx.forward(rows));
  torch::Tensor before = ctx.outputs.index_select(0, idx);
  auto score = [&](const torch::Tensor& out) {
    return ctx.classification ? torch::softmax(out, 1).select(1, output) : out.reshape({-1});
  };
  torch::Tensor change = score(after) - score(before);
  if (expect == "decreasing") change = -change;
  const double share = (change >= -tolerance).to(torch::kFloat64).mean().item<double>();
  result.details = {{"rows", idx.numel()},
                    {"share_as_expected", share},
                    {"mean_change", change.mean().item<double>()}};
  result.measured = "as expected " + fmt(share);
  result.threshold = ">= " + fmt(min_pass);
  result.outcome = share >= min_pass ? Outcome::kPass : Outcome::kFail;
  if (result.outcome == Outcome::kFail)
    result.message = "raising '" + feature + "' by " + fmt(delta) +
                     " s.d. moved the output against '" + expect + "' on " +
                     fmt(100 * (1 - share)) + "% of the rows";
  return Status::Ok();
}

}  // namespace kiln::checks::detail
