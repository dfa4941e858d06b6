#include "kiln/model/export_plan.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>

namespace kiln::model {

namespace {

/// A numeric array of `size` entries (any size when size < 0).
Expected<std::vector<double>> doubles_field(const Json& j, const std::string& key, int64_t size,
                                            const std::string& where) {
  if (!j.is_object() || !j.contains(key))
    return Status::InvalidArgument(where + ": missing \"" + key + "\"");
  const Json& v = j.at(key);
  if (!v.is_array())
    return Status::InvalidArgument(where + ": \"" + key + "\" must be an array of numbers");
  if (size >= 0 && static_cast<int64_t>(v.size()) != size)
    return Status::InvalidArgument(where + ": \"" + key + "\" has " + std::to_string(v.size()) +
                                   " values, expected " + std::to_string(size));
  std::vector<double> out;
  out.reserve(v.size());
  for (const Json& e : v) {
    if (!e.is_number())
      return Status::InvalidArgument(where + ": \"" + key + "\" holds a non-number " + e.dump());
    out.push_back(e.get<double>());
  }
  return out;
}

torch::Tensor float_tensor(const std::vector<double>& v) {
  return torch::tensor(v, torch::dtype(torch::kFloat64)).to(torch::kFloat32);
}

Status image_step(const Json& pre, const std::vector<int64_t>& model_shape, Prologue* out) {
  PrologueStep step;
  step.kind = PrologueStep::Kind::kImageNormalize;
  step.where = "preprocessing (image_normalize)";
  const std::string& where = step.where;
  if (model_shape.size() != 3)
    return Status::InvalidArgument(where + ": the model input must be [C,H,W], got " +
                                   shape_str(model_shape));
  const int64_t c = model_shape[0];
  KILN_ASSIGN_OR_RETURN(step.input_scale, layer_double_param(pre, "input_scale", 1.0, where));
  KILN_ASSIGN_OR_RETURN(std::vector<double> mean, doubles_field(pre, "mean", -1, where));
  KILN_ASSIGN_OR_RETURN(std::vector<double> stdev, doubles_field(pre, "std", -1, where));
  for (auto* v : {&mean, &stdev}) {
    if (v->size() == 1 && c != 1) v->assign(static_cast<size_t>(c), v->front());
    if (static_cast<int64_t>(v->size()) != c)
      return Status::InvalidArgument(where + ": mean/std have " + std::to_string(v->size()) +
                                     " values for " + std::to_string(c) + " channels");
  }
  for (double s : stdev)
    if (!(s > 0) || !std::isfinite(s))
      return Status::InvalidArgument(where + ": std values must be positive and finite");
  step.a = float_tensor(mean).reshape({1, c, 1, 1});
  step.b = float_tensor(stdev).reshape({1, c, 1, 1});
  out->steps.push_back(std::move(step));
  return Status::Ok();
}

/// One fitted table transform; `features` is the column count going in (-1: unknown) and
/// coming out.
Status table_step(const Json& s, const std::string& where, size_t index, int64_t* features,
                  Prologue* out) {
  if (!s.is_object() || !s.contains("kind"))
    return Status::InvalidArgument(where + ": expected a transform object with a \"kind\"");
  const std::string kind = s.at("kind").get<std::string>();
  if (!s.value("fitted", false)) return Status::InvalidArgument(where + ": not fitted");
  const int64_t f = *features;
  PrologueStep step;
  step.where = where;
  step.index = index;
  if (kind == "imputer") {
    KILN_ASSIGN_OR_RETURN(std::vector<double> fill, doubles_field(s, "fill", f, where));
    *features = static_cast<int64_t>(fill.size());
    step.kind = PrologueStep::Kind::kImpute;
    step.a = float_tensor(fill);
    out->steps.push_back(std::move(step));
  } else if (kind == "standard_scaler" || kind == "min_max_scaler" || kind == "robust_scaler") {
    KILN_ASSIGN_OR_RETURN(std::vector<double> shift, doubles_field(s, "shift", f, where));
    KILN_ASSIGN_OR_RETURN(std::vector<double> scale,
                          doubles_field(s, "scale", static_cast<int64_t>(shift.size()), where));
    *features = static_cast<int64_t>(shift.size());
    step.kind = PrologueStep::Kind::kShiftScale;
    step.a = float_tensor(shift);
    step.b = float_tensor(scale);
    out->steps.push_back(step);
    const Json opts = s.value("options", Json::object());
    if (kind == "min_max_scaler" && opts.value("clip", false)) {
      PrologueStep clamp;
      clamp.kind = PrologueStep::Kind::kClamp;
      clamp.where = where;
      clamp.index = index;
      KILN_ASSIGN_OR_RETURN(clamp.lo, layer_double_param(opts, "feature_min", 0.0, where));
      KILN_ASSIGN_OR_RETURN(clamp.hi, layer_double_param(opts, "feature_max", 1.0, where));
      out->steps.push_back(std::move(clamp));
    }
  } else if (kind == "variance_threshold") {
    if (!s.contains("kept") || !s.at("kept").is_array() || s.at("kept").empty())
      return Status::InvalidArgument(where + ": missing or empty \"kept\"");
    std::vector<int64_t> kept;
    for (const Json& e : s.at("kept")) {
      if (!e.is_number_integer() || e.get<int64_t>() < 0 || (f >= 0 && e.get<int64_t>() >= f))
        return Status::InvalidArgument(where + ": bad column index " + e.dump() + " in \"kept\"");
      kept.push_back(e.get<int64_t>());
    }
    *features = static_cast<int64_t>(kept.size());
    step.kind = PrologueStep::Kind::kSelect;
    step.a = torch::tensor(kept, torch::dtype(torch::kInt64));
    out->steps.push_back(std::move(step));
  } else if (kind == "pca") {
    KILN_ASSIGN_OR_RETURN(std::vector<double> mean, doubles_field(s, "mean", f, where));
    const auto in = static_cast<int64_t>(mean.size());
    if (!s.contains("components") || !s.at("components").is_array() || s.at("components").empty())
      return Status::InvalidArgument(where + ": missing or empty \"components\"");
    const Json& comps = s.at("components");
    const auto k = static_cast<int64_t>(comps.size());
    std::vector<double> flat;
    for (size_t r = 0; r < comps.size(); ++r) {
      KILN_ASSIGN_OR_RETURN(std::vector<double> row,
                            doubles_field(Json{{"row", comps[r]}}, "row", in,
                                          where + " components[" + std::to_string(r) + "]"));
      flat.insert(flat.end(), row.begin(), row.end());
    }
    // As kiln::features::Pca: projection = components^T in float64, whitened per component.
    torch::Tensor proj =
        torch::tensor(flat, torch::dtype(torch::kFloat64)).reshape({k, in}).t().contiguous();
    if (s.value("options", Json::object()).value("whiten", false)) {
      KILN_ASSIGN_OR_RETURN(std::vector<double> ev,
                            doubles_field(s, "explained_variance", k, where));
      std::vector<double> inv(ev.size(), 1.0);
      for (size_t i = 0; i < ev.size(); ++i)
        if (ev[i] > std::numeric_limits<double>::min()) inv[i] = 1.0 / std::sqrt(ev[i]);
      proj = proj * torch::tensor(inv, torch::dtype(torch::kFloat64));
    }
    *features = k;
    step.kind = PrologueStep::Kind::kProject;
    step.a = float_tensor(mean);
    step.b = proj.to(torch::kFloat32).contiguous();
    out->steps.push_back(std::move(step));
  } else {
    return Status::InvalidArgument(where +
                                   ": not supported by Kiln's export (supported: "
                                   "imputer, standard_scaler, min_max_scaler, robust_scaler, "
                                   "variance_threshold, pca)");
  }
  return Status::Ok();
}

}  // namespace

std::string shape_str(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? "," : "") + std::to_string(shape[i]);
  return s + "]";
}

Expected<std::pair<int64_t, int64_t>> layer_pair_param(const Json& params, const std::string& key,
                                                       std::pair<int64_t, int64_t> fallback,
                                                       const std::string& where) {
  if (!params.is_object() || !params.contains(key) || params.at(key).is_null()) return fallback;
  const Json& v = params.at(key);
  if (v.is_number_integer()) return std::make_pair(v.get<int64_t>(), v.get<int64_t>());
  if (v.is_array() && v.size() == 2 && v[0].is_number_integer() && v[1].is_number_integer())
    return std::make_pair(v[0].get<int64_t>(), v[1].get<int64_t>());
  return Status::InvalidArgument(where + ": \"" + key + "\" must be an integer or [h, w], got " +
                                 v.dump());
}

Expected<double> layer_double_param(const Json& params, const std::string& key, double fallback,
                                    const std::string& where) {
  if (!params.is_object() || !params.contains(key) || params.at(key).is_null()) return fallback;
  const Json& v = params.at(key);
  if (!v.is_number() || !std::isfinite(v.get<double>()))
    return Status::InvalidArgument(where + ": \"" + key + "\" must be a finite number, got " +
                                   v.dump());
  return v.get<double>();
}

Expected<std::pair<int64_t, int64_t>> projection_stride(const torch::Tensor& w,
                                                        const std::vector<int64_t>& in,
                                                        const std::vector<int64_t>& out,
                                                        const std::string& where) {
  if (w.dim() != 4 || w.size(1) != in[0] || w.size(2) != 1 || w.size(3) != 1 || out.size() != 3 ||
      w.size(0) != out[0])
    return Status::InvalidArgument(where + ": shortcut weight " + shape_str(w.sizes().vec()) +
                                   " does not map " + shape_str(in) + " to " + shape_str(out));
  auto axis = [](int64_t from, int64_t to) -> int64_t {
    for (int64_t s = 1; s <= from; ++s)
      if (window_out(from, 1, s, 0) == to) return s;
    return 0;
  };
  const int64_t sh = axis(in[1], out[1]), sw = axis(in[2], out[2]);
  if (sh == 0 || sw == 0)
    return Status::InvalidArgument(where + ": no 1x1 shortcut stride maps " + shape_str(in) +
                                   " to " + shape_str(out));
  return std::make_pair(sh, sw);
}

Status check_output_shape(const std::vector<int64_t>& shape, const std::string& where) {
  for (int64_t d : shape)
    if (d <= 0)
      return Status::InvalidArgument(where + ": output shape " + shape_str(shape) +
                                     " is empty (input too small)");
  return Status::Ok();
}

Status check_linear_weight(const torch::Tensor& w, const std::vector<int64_t>& in,
                           const std::string& where) {
  if (w.dim() != 2 || in.empty() || w.size(1) != in.back())
    return Status::InvalidArgument(where + ": weight " + shape_str(w.sizes().vec()) +
                                   " does not take input " + shape_str(in));
  return Status::Ok();
}

Status check_batch_norm_stats(const torch::Tensor& running_mean, const std::vector<int64_t>& in,
                              const std::string& where) {
  if (running_mean.dim() != 1 || in.empty() || running_mean.size(0) != in[0])
    return Status::InvalidArgument(where + ": running_mean " +
                                   shape_str(running_mean.sizes().vec()) +
                                   " does not match input " + shape_str(in));
  return Status::Ok();
}

Expected<Window2d> conv2d_window(const Json& params, const torch::Tensor& w,
                                 const std::vector<int64_t>& in, const std::string& where) {
  if (w.dim() != 4 || in.size() != 3 || w.size(1) != in[0])
    return Status::InvalidArgument(where + ": weight " + shape_str(w.sizes().vec()) +
                                   " does not take input " + shape_str(in));
  Window2d out;
  out.kernel = {w.size(2), w.size(3)};
  KILN_ASSIGN_OR_RETURN(out.stride, layer_pair_param(params, "stride", {1, 1}, where));
  KILN_ASSIGN_OR_RETURN(out.padding, layer_pair_param(params, "padding", {0, 0}, where));
  out.out_shape = {w.size(0), window_out(in[1], w.size(2), out.stride.first, out.padding.first),
                   window_out(in[2], w.size(3), out.stride.second, out.padding.second)};
  return out;
}

Expected<Window2d> pool2d_window(const Json& params, const std::vector<int64_t>& in,
                                 const std::string& where) {
  Window2d out;
  KILN_ASSIGN_OR_RETURN(out.kernel, layer_pair_param(params, "kernel", {2, 2}, where));
  KILN_ASSIGN_OR_RETURN(out.stride, layer_pair_param(params, "stride", out.kernel, where));
  KILN_ASSIGN_OR_RETURN(out.padding, layer_pair_param(params, "padding", {0, 0}, where));
  out.out_shape = {in[0], window_out(in[1], out.kernel.first, out.stride.first, out.padding.first),
                   window_out(in[2], out.kernel.second, out.stride.second, out.padding.second)};
  return out;
}

int64_t CategoricalTail::width() const {
  int64_t width = 0;
  for (size_t j = 0; j < sizes.size(); ++j)
    width += j < target_tables.size() && target_tables[j].defined() ? target_tables[j].size(1)
                                                                    : sizes[j];
  return width;
}

Json table_preprocessing(const Json& numeric, const Json& categorical_encoders) {
  if (!categorical_encoders.is_array() || categorical_encoders.empty()) return numeric;
  Json categorical = Json::array();
  for (const Json& e : categorical_encoders) {
    const bool has_encoder = e.contains("encoder") && e["encoder"].is_object();
    categorical.push_back(
        {{"column", e.value("column", "")},
         {"categories",
          has_encoder ? e["encoder"].value("categories", Json::array()) : Json::array()}});
    if (has_encoder && e["encoder"].contains("target_encoding") &&
        e["encoder"]["target_encoding"].is_object())
      categorical.back()["target_table"] =
          e["encoder"]["target_encoding"].value("table", Json::array());
  }
  // A table of categorical columns alone has an empty, never fitted numeric pipeline.
  const bool no_numeric =
      numeric.is_null() || (numeric.is_object() && numeric.value("kind", "") == "pipeline" &&
                            !numeric.value("fitted", false));
  return {
      {"kind", "table"}, {"numeric", no_numeric ? Json() : numeric}, {"categorical", categorical}};
}

namespace {

/// {"kind": "table"}: the numeric part's steps on the raw input's first columns, the
/// categorical codes in its last ones.
Expected<Prologue> table_prologue(const Json& pre, const std::vector<int64_t>& model_shape) {
  CategoricalTail tail;
  if (!pre.contains("categorical") || !pre.at("categorical").is_array() ||
      pre.at("categorical").empty())
    return Status::InvalidArgument("preprocessing (table): \"categorical\" must list columns");
  for (const Json& c : pre.at("categorical")) {
    const std::string where =
        "preprocessing (table): categorical[" + std::to_string(tail.columns.size()) + "]";
    if (!c.is_object() || !c.contains("column") || !c.at("column").is_string())
      return Status::InvalidArgument(where + ": \"column\" must be a string");
    if (!c.contains("categories") || !c.at("categories").is_array() || c.at("categories").empty())
      return Status::InvalidArgument(where + " (" + c.at("column").get<std::string>() +
                                     "): \"categories\" must be a non-empty array");
    const std::string column = c.at("column").get<std::string>();
    const auto k = static_cast<int64_t>(c.at("categories").size());
    torch::Tensor table;
    if (c.contains("target_table")) {
      // K rows of d finite numbers.
      const Json& rows = c.at("target_table");
      const bool rectangular = rows.is_array() && static_cast<int64_t>(rows.size()) == k &&
                               rows[0].is_array() && !rows[0].empty() &&
                               std::all_of(rows.begin(), rows.end(), [&](const Json& r) {
                                 return r.is_array() && r.size() == rows[0].size() &&
                                        std::all_of(r.begin(), r.end(), [](const Json& v) {
                                          return v.is_number() && std::isfinite(v.get<double>());
                                        });
                               });
      if (!rectangular)
        return Status::InvalidArgument(where + " (" + column + "): \"target_table\" must hold " +
                                       std::to_string(k) +
                                       " rows (one per category) of equally many numbers");
      const auto d = static_cast<int64_t>(rows[0].size());
      std::vector<float> values;
      values.reserve(static_cast<size_t>(k * d));
      for (const Json& r : rows)
        for (const Json& v : r) values.push_back(v.get<float>());
      table = torch::tensor(values, torch::kFloat32).reshape({k, d});
    }
    tail.columns.push_back(column);
    tail.sizes.push_back(k);
    tail.target_tables.push_back(table);
  }
  const int64_t encoded = tail.width();
  if (model_shape.size() != 1 || model_shape[0] < encoded)
    return Status::InvalidArgument("preprocessing (table): " + std::to_string(encoded) +
                                   " encoded categorical columns do not fit the model's input " +
                                   shape_str(model_shape));
  const Json numeric = pre.contains("numeric") ? pre.at("numeric") : Json();
  if (numeric.is_object() && numeric.value("kind", "") == "table")
    return Status::InvalidArgument("preprocessing (table): \"numeric\" is a table again");
  KILN_ASSIGN_OR_RETURN(Prologue out, parse_prologue(numeric, {model_shape[0] - encoded}));
  out.raw_shape = {out.raw_shape[0] + static_cast<int64_t>(tail.columns.size())};
  out.categorical = std::move(tail);
  return out;
}

}  // namespace

Expected<Prologue> parse_prologue(const Json& pre, const std::vector<int64_t>& model_shape) {
  Prologue out;
  out.raw_shape = model_shape;
  if (pre.is_null() || (pre.is_object() && pre.empty())) return out;
  if (!pre.is_object() || !pre.contains("kind") || !pre.at("kind").is_string())
    return Status::InvalidArgument("preprocessing: expected an object with a \"kind\", got " +
                                   pre.dump().substr(0, 80));
  if (pre.at("kind").get<std::string>() == "table") return table_prologue(pre, model_shape);
  if (pre.at("kind").get<std::string>() == "image_normalize") {
    KILN_RETURN_IF_ERROR(image_step(pre, model_shape, &out));
    return out;
  }

  // Tables: a pipeline (possibly nested) or a single fitted transform.
  std::vector<const Json*> steps;
  std::function<Status(const Json&)> flatten = [&](const Json& t) -> Status {
    if (t.is_object() && t.value("kind", "") == "pipeline") {
      if (!t.value("fitted", false))
        return Status::InvalidArgument("preprocessing pipeline: not fitted");
      if (!t.contains("steps") || !t.at("steps").is_array())
        return Status::InvalidArgument("preprocessing pipeline: missing \"steps\" array");
      for (const Json& s : t.at("steps")) KILN_RETURN_IF_ERROR(flatten(s));
      return Status::Ok();
    }
    steps.push_back(&t);
    return Status::Ok();
  };
  KILN_RETURN_IF_ERROR(flatten(pre));
  int64_t features = -1;
  if (pre.contains("input_features") && pre.at("input_features").is_number_integer())
    features = pre.at("input_features").get<int64_t>();
  const int64_t raw_features = [&] {
    if (features >= 0) return features;
    for (const Json* s : steps)
      if (s->is_object() && s->contains("input_features") &&
          s->at("input_features").is_number_integer())
        return s->at("input_features").get<int64_t>();
    return int64_t{-1};
  }();
  features = raw_features;
  for (size_t i = 0; i < steps.size(); ++i) {
    const Json& s = *steps[i];
    const std::string skind = s.is_object() ? s.value("kind", "?") : "?";
    const std::string where = "preprocessing step " + std::to_string(i) + " (" + skind + ")";
    KILN_RETURN_IF_ERROR(table_step(s, where, i, &features, &out));
  }
  if (features < 0) {
    if (model_shape.size() != 1)
      return Status::InvalidArgument(
          "preprocessing: a table pipeline needs a 1-D model input, got " + shape_str(model_shape));
    return out;  // an empty pipeline: identity
  }
  if (model_shape != std::vector<int64_t>{features})
    return Status::InvalidArgument("preprocessing outputs " + std::to_string(features) +
                                   " features but the model takes " + shape_str(model_shape));
  out.raw_shape = {raw_features};
  return out;
}

}  // namespace kiln::model
