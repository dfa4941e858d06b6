#include "kiln/train/config.h"

#include <cmath>
#include <limits>
#include <set>

#include "kiln/core/files.h"
#include "kiln/core/hash.h"
#include "kiln/data/spec.h"
#include "kiln/model/device.h"
#include "kiln/model/loss.h"
#include "kiln/model/spec.h"

namespace kiln::train {
namespace {

// ---------------------------------------------------------------------------------------------
// Validation helpers: every error names the source, line (when known) and dotted key path.

class Reader {
 public:
  Reader(std::string source, const std::map<std::string, int>& lines)
      : source_(std::move(source)), lines_(lines) {}

  Status error(const std::string& path, const std::string& what) const {
    std::string where = source_;
    auto it = lines_.find(path);
    if (it != lines_.end()) where += " line " + std::to_string(it->second);
    return Status::InvalidArgument(where + ": " + (path.empty() ? "<top>" : path) + ": " + what);
  }

  Status check_keys(const Json& obj, const std::string& prefix,
                    const std::vector<std::string>& allowed) const {
    if (!obj.is_object()) return error(prefix, "expected a mapping");
    std::set<std::string> ok(allowed.begin(), allowed.end());
    for (const auto& [key, value] : obj.items()) {
      if (ok.count(key)) continue;
      std::string list;
      for (const auto& a : allowed) list += (list.empty() ? "" : ", ") + a;
      return error(prefix.empty() ? key : prefix + "." + key,
                   "unknown key (valid keys: " + list + ")");
    }
    return Status::Ok();
  }

  static std::string join(const std::string& prefix, const std::string& key) {
    return prefix.empty() ? key : prefix + "." + key;
  }

  Status get(const Json& obj, const std::string& prefix, const std::string& key,
             double* out) const {
    if (!obj.contains(key)) return Status::Ok();
    const Json& v = obj[key];
    if (!v.is_number()) return error(join(prefix, key), "expected a number, got " + v.dump());
    *out = v.get<double>();
    if (!std::isfinite(*out)) return error(join(prefix, key), "must be finite");
    return Status::Ok();
  }
  Status get(const Json& obj, const std::string& prefix, const std::string& key, float* out) const {
    double d = *out;
    KILN_RETURN_IF_ERROR(get(obj, prefix, key, &d));
    *out = static_cast<float>(d);
    return Status::Ok();
  }
  Status get(const Json& obj, const std::string& prefix, const std::string& key,
             int64_t* out) const {
    if (!obj.contains(key)) return Status::Ok();
    const Json& v = obj[key];
    if (!v.is_number_integer())
      return error(join(prefix, key), "expected an integer, got " + v.dump());
    *out = v.get<int64_t>();
    return Status::Ok();
  }
  Status get(const Json& obj, const std::string& prefix, const std::string& key, bool* out) const {
    if (!obj.contains(key)) return Status::Ok();
    const Json& v = obj[key];
    if (!v.is_boolean()) return error(join(prefix, key), "expected true or false, got " + v.dump());
    *out = v.get<bool>();
    return Status::Ok();
  }
  Status get(const Json& obj, const std::string& prefix, const std::string& key,
             std::string* out) const {
    if (!obj.contains(key)) return Status::Ok();
    const Json& v = obj[key];
    if (!v.is_string()) return error(join(prefix, key), "expected a string, got " + v.dump());
    *out = v.get<std::string>();
    return Status::Ok();
  }
  Status get_pair(const Json& obj, const std::string& prefix, const std::string& key, double* a,
                  double* b) const {
    if (!obj.contains(key)) return Status::Ok();
    const Json& v = obj[key];
    if (!v.is_array() || v.size() != 2 || !v[0].is_number() || !v[1].is_number())
      return error(join(prefix, key), "expected a list of two numbers, got " + v.dump());
    *a = v[0].get<double>();
    *b = v[1].get<double>();
    return Status::Ok();
  }
  Status one_of(const std::string& path, const std::string& value,
                const std::vector<std::string>& options) const {
    for (const auto& o : options)
      if (o == value) return Status::Ok();
    std::string list;
    for (const auto& o : options) list += (list.empty() ? "" : ", ") + o;
    return error(path, "'" + value + "' is not one of: " + list);
  }
  Status positive(const std::string& path, double v) const {
    return v > 0 ? Status::Ok() : error(path, "must be > 0");
  }
  Status non_negative(const std::string& path, double v) const {
    return v >= 0 ? Status::Ok() : error(path, "must be >= 0");
  }

 private:
  std::string source_;
  const std::map<std::string, int>& lines_;
};

const std::vector<std::string> kOptimizerKeys = {"name",         "lr",    "momentum", "nesterov",
                                                 "weight_decay", "betas", "eps"};
const std::vector<std::string> kScheduleKeys = {
    "name",   "warmup_epochs", "warmup_steps", "step_size", "gamma", "min_lr",
    "max_lr", "pct_start",     "div_factor",   "final_div", "anneal"};
const std::vector<std::string> kEarlyKeys = {"metric", "patience", "min_delta", "restore_best"};
const std::vector<std::string> kEmaKeys = {"decay", "warmup"};
const std::vector<std::string> kAugmentKeys = {"crop_padding", "hflip",      "translate",
                                               "noise_std",    "erase",      "erase_area",
                                               "erase_ratio",  "erase_value"};
const std::vector<std::string> kDataKeys = {"path", "limit", "features"};

}  // namespace

const std::vector<std::string>& train_config_keys() {
  static const std::vector<std::string> keys = {"data",
                                                "model",
                                                "loss",
                                                "optimizer",
                                                "schedule",
                                                "batch_size",
                                                "accumulate_batches",
                                                "epochs",
                                                "seed",
                                                "grad_clip",
                                                "early_stopping",
                                                "ema",
                                                "checkpoint_every",
                                                "augment",
                                                "precision",
                                                "channels_last",
                                                "threads",
                                                "workers",
                                                "deterministic",
                                                "eval_tta",
                                                "calibration",
                                                "log_every",
                                                "init",
                                                "freeze",
                                                "param_groups",
                                                "distill",
                                                "device"};
  return keys;
}

bool EarlyStoppingConfig::maximize() const {
  return metric == "val_accuracy" || metric == "val_macro_f1" || metric == "val_r2";
}

Json OptimizerConfig::to_json() const {
  Json j;
  j["name"] = name;
  j["lr"] = lr;
  if (name == "sgd") {
    j["momentum"] = momentum;
    j["nesterov"] = nesterov;
  } else {
    j["betas"] = {betas[0], betas[1]};
    j["eps"] = eps;
  }
  j["weight_decay"] = weight_decay;
  return j;
}

Json ScheduleConfig::to_json() const {
  Json j;
  j["name"] = name;
  j["warmup_epochs"] = warmup_epochs;
  j["warmup_steps"] = warmup_steps;
  if (name == "step") {
    j["step_size"] = step_size;
    j["gamma"] = gamma;
  } else if (name == "cosine") {
    j["min_lr"] = min_lr;
  } else if (name == "one_cycle") {
    j["max_lr"] = max_lr;
    j["pct_start"] = pct_start;
    j["div_factor"] = div_factor;
    j["final_div"] = final_div;
    j["anneal"] = anneal;
  }
  return j;
}

Json EarlyStoppingConfig::to_json() const {
  return {{"metric", metric},
          {"patience", patience},
          {"min_delta", min_delta},
          {"restore_best", restore_best}};
}

Json EmaConfig::to_json() const { return {{"decay", decay}, {"warmup", warmup}}; }

Json TrainConfig::to_json() const {
  Json j;
  j["data"] = {{"path", data}, {"limit", data_limit}};
  if (!data_features.is_null()) j["data"]["features"] = data_features;  // only when set: hashes
  j["model"] = model;
  j["loss"] = loss;
  j["optimizer"] = optimizer.to_json();
  j["schedule"] = schedule.to_json();
  j["batch_size"] = batch_size;
  if (accumulate_batches > 1) j["accumulate_batches"] = accumulate_batches;  // hashes stay
  j["epochs"] = epochs;
  j["seed"] = seed;
  j["grad_clip"] = grad_clip;
  j["early_stopping"] = early_stopping.to_json();
  if (ema.enabled()) j["ema"] = ema.to_json();  // only when on, so other configs' hashes stay
  j["checkpoint_every"] = checkpoint_every;
  j["augment"] = augment.to_json();
  j["precision"] = precision;
  j["channels_last"] = channels_last;
  j["threads"] = threads;
  j["workers"] = workers;
  j["deterministic"] = deterministic;
  j["eval_tta"] = eval_tta;
  if (calibration != "none") j["calibration"] = calibration;  // only when on: hashes stay
  j["log_every"] = log_every;
  // Like the fine-tuning keys below, only when set, so the hash of every other config stays.
  if (device != "auto") j["device"] = device;
  // Fine-tuning keys only when set, so the hash of every other config stays what it was.
  if (!init.empty()) j["init"] = init;
  if (!freeze.empty()) j["freeze"] = freeze;
  if (!param_groups.empty()) {
    Json groups = Json::array();
    for (const auto& g : param_groups)
      groups.push_back({{"layers", g.layers}, {"lr_scale", g.lr_scale}});
    j["param_groups"] = groups;
  }
  // One teacher is written as a string, so the hashes of single-teacher runs stay what they were.
  if (!distill.teachers.empty())
    j["distill"] = {{"teacher", distill.teachers.size() == 1 ? Json(distill.teachers.front())
                                                             : Json(distill.teachers)},
                    {"temperature", distill.temperature},
                    {"alpha", distill.alpha}};
  return j;
}

std::string TrainConfig::hash() const { return sha256_hex(canonical_json(to_json())); }

Status apply_override(Json* config, const std::string& assignment) {
  const size_t eq = assignment.find('=');
  if (eq == std::string::npos || eq == 0)
    return Status::InvalidArgument("--set " + assignment + ": expected key.path=value");
  const std::string key = assignment.substr(0, eq);
  Expected<Json> value = yaml_to_json(assignment.substr(eq + 1));
  if (!value.ok())
    return Status::InvalidArgument("--set " + assignment + ": " + value.status().message());
  if (config->is_null()) *config = Json::object();
  Json* node = config;
  size_t start = 0;
  std::string walked;
  while (true) {
    const size_t dot = key.find('.', start);
    const std::string part = key.substr(start, dot == std::string::npos ? dot : dot - start);
    if (part.empty()) return Status::InvalidArgument("--set " + assignment + ": empty key part");
    if (!node->is_object())
      return Status::InvalidArgument("--set " + assignment + ": " + walked +
                                     " is not a mapping (it is " + node->dump() + ")");
    walked += (walked.empty() ? "" : ".") + part;
    if (dot == std::string::npos) {
      (*node)[part] = *value;
      return Status::Ok();
    }
    Json& child = (*node)[part];
    if (child.is_null()) child = Json::object();
    node = &child;
    start = dot + 1;
  }
}

Expected<TrainConfig> parse_train_config(const Json& j, const fs::path& base_dir,
                                         const std::string& source,
                                         const std::map<std::string, int>& lines) {
  Reader r(source, lines);
  KILN_RETURN_IF_ERROR(r.check_keys(j, "", train_config_keys()));
  TrainConfig c;

  // data: a path, or {path, limit}.
  if (!j.contains("data")) return r.error("data", "required (a dataset spec YAML or snapshot dir)");
  const Json& data = j["data"];
  if (data.is_string()) {
    c.data = data.get<std::string>();
  } else if (data.is_object()) {
    KILN_RETURN_IF_ERROR(r.check_keys(data, "data", kDataKeys));
    KILN_RETURN_IF_ERROR(r.get(data, "data", "path", &c.data));
    KILN_RETURN_IF_ERROR(r.get(data, "data", "limit", &c.data_limit));
    if (c.data_limit < 0) return r.error("data.limit", "must be >= 0");
    if (data.contains("features") && !data["features"].is_null()) {
      c.data_features = data["features"];
      data::DatasetSpec check;
      if (Status st = data::read_feature_settings(c.data_features, &check); !st.ok()) {
        const std::string& m = st.message();
        const size_t colon = m.find(": ");
        return r.error("data." + m.substr(0, colon), m.substr(colon + 2));
      }
    }
  } else {
    return r.error("data", "expected a path or a mapping {path, limit}");
  }
  if (c.data.empty()) return r.error("data.path", "required");
  c.data_path =
      fs::path(c.data).is_absolute() || base_dir.empty() ? fs::path(c.data) : base_dir / c.data;

  // model: validated by the model stage.
  if (!j.contains("model"))
    return r.error("model", "required (e.g. {zoo: mlp} or {layers: [...]})");
  c.model = j["model"];
  {
    auto spec = model::parse_model_spec(c.model, "model");
    if (!spec.ok()) return spec.status().with_context(source);
  }
  if (j.contains("loss")) {
    c.loss = j["loss"].is_null() ? Json::object() : j["loss"];
    if (!c.loss.is_object()) return r.error("loss", "expected a mapping");
    auto loss = model::LossOptions::from_json(c.loss);
    if (!loss.ok()) return loss.status().with_context(source + ": loss");
  }

  if (j.contains("optimizer")) {
    const Json& o = j["optimizer"];
    KILN_RETURN_IF_ERROR(r.check_keys(o, "optimizer", kOptimizerKeys));
    KILN_RETURN_IF_ERROR(r.get(o, "optimizer", "name", &c.optimizer.name));
    KILN_RETURN_IF_ERROR(
        r.one_of("optimizer.name", c.optimizer.name, {"sgd", "adam", "adamw", "lbfgs"}));
    if (c.optimizer.name == "adamw") c.optimizer.weight_decay = 0.01;
    if (c.optimizer.name == "lbfgs") c.optimizer.lr = 1.0;
    KILN_RETURN_IF_ERROR(r.get(o, "optimizer", "lr", &c.optimizer.lr));
    KILN_RETURN_IF_ERROR(r.get(o, "optimizer", "momentum", &c.optimizer.momentum));
    KILN_RETURN_IF_ERROR(r.get(o, "optimizer", "nesterov", &c.optimizer.nesterov));
    KILN_RETURN_IF_ERROR(r.get(o, "optimizer", "weight_decay", &c.optimizer.weight_decay));
    KILN_RETURN_IF_ERROR(
        r.get_pair(o, "optimizer", "betas", &c.optimizer.betas[0], &c.optimizer.betas[1]));
    KILN_RETURN_IF_ERROR(r.get(o, "optimizer", "eps", &c.optimizer.eps));
  }
  KILN_RETURN_IF_ERROR(r.positive("optimizer.lr", c.optimizer.lr));
  KILN_RETURN_IF_ERROR(r.non_negative("optimizer.momentum", c.optimizer.momentum));
  KILN_RETURN_IF_ERROR(r.non_negative("optimizer.weight_decay", c.optimizer.weight_decay));
  for (double b : c.optimizer.betas)
    if (b < 0 || b >= 1) return r.error("optimizer.betas", "each beta must be in [0, 1)");
  if (c.optimizer.nesterov && (c.optimizer.name != "sgd" || c.optimizer.momentum <= 0))
    return r.error("optimizer.nesterov", "needs name: sgd and momentum > 0");

  if (j.contains("schedule")) {
    const Json& s = j["schedule"];
    KILN_RETURN_IF_ERROR(r.check_keys(s, "schedule", kScheduleKeys));
    auto& sc = c.schedule;
    KILN_RETURN_IF_ERROR(r.get(s, "schedule", "name", &sc.name));
    KILN_RETURN_IF_ERROR(
        r.one_of("schedule.name", sc.name, {"constant", "step", "cosine", "one_cycle"}));
    KILN_RETURN_IF_ERROR(r.get(s, "schedule", "warmup_epochs", &sc.warmup_epochs));
    KILN_RETURN_IF_ERROR(r.get(s, "schedule", "warmup_steps", &sc.warmup_steps));
    KILN_RETURN_IF_ERROR(r.get(s, "schedule", "step_size", &sc.step_size));
    KILN_RETURN_IF_ERROR(r.get(s, "schedule", "gamma", &sc.gamma));
    KILN_RETURN_IF_ERROR(r.get(s, "schedule", "min_lr", &sc.min_lr));
    KILN_RETURN_IF_ERROR(r.get(s, "schedule", "max_lr", &sc.max_lr));
    KILN_RETURN_IF_ERROR(r.get(s, "schedule", "pct_start", &sc.pct_start));
    KILN_RETURN_IF_ERROR(r.get(s, "schedule", "div_factor", &sc.div_factor));
    KILN_RETURN_IF_ERROR(r.get(s, "schedule", "final_div", &sc.final_div));
    KILN_RETURN_IF_ERROR(r.get(s, "schedule", "anneal", &sc.anneal));
    KILN_RETURN_IF_ERROR(r.one_of("schedule.anneal", sc.anneal, {"cos", "linear"}));
    KILN_RETURN_IF_ERROR(
        r.non_negative("schedule.warmup_epochs", static_cast<double>(sc.warmup_epochs)));
    KILN_RETURN_IF_ERROR(
        r.non_negative("schedule.warmup_steps", static_cast<double>(sc.warmup_steps)));
    KILN_RETURN_IF_ERROR(r.positive("schedule.step_size", static_cast<double>(sc.step_size)));
    KILN_RETURN_IF_ERROR(r.positive("schedule.gamma", sc.gamma));
    KILN_RETURN_IF_ERROR(r.non_negative("schedule.min_lr", sc.min_lr));
    KILN_RETURN_IF_ERROR(r.non_negative("schedule.max_lr", sc.max_lr));
    if (sc.pct_start <= 0 || sc.pct_start >= 1)
      return r.error("schedule.pct_start", "must be in (0, 1)");
    KILN_RETURN_IF_ERROR(r.positive("schedule.div_factor", sc.div_factor));
    KILN_RETURN_IF_ERROR(r.positive("schedule.final_div", sc.final_div));
  }

  KILN_RETURN_IF_ERROR(r.get(j, "", "batch_size", &c.batch_size));
  KILN_RETURN_IF_ERROR(r.positive("batch_size", static_cast<double>(c.batch_size)));
  KILN_RETURN_IF_ERROR(r.get(j, "", "accumulate_batches", &c.accumulate_batches));
  KILN_RETURN_IF_ERROR(r.positive("accumulate_batches", static_cast<double>(c.accumulate_batches)));
  KILN_RETURN_IF_ERROR(r.get(j, "", "epochs", &c.epochs));
  KILN_RETURN_IF_ERROR(r.positive("epochs", static_cast<double>(c.epochs)));
  {
    int64_t seed = 0;
    KILN_RETURN_IF_ERROR(r.get(j, "", "seed", &seed));
    if (seed < 0) return r.error("seed", "must be >= 0");
    c.seed = static_cast<uint64_t>(seed);
  }
  KILN_RETURN_IF_ERROR(r.get(j, "", "grad_clip", &c.grad_clip));
  KILN_RETURN_IF_ERROR(r.non_negative("grad_clip", c.grad_clip));

  if (j.contains("early_stopping")) {
    const Json& e = j["early_stopping"];
    KILN_RETURN_IF_ERROR(r.check_keys(e, "early_stopping", kEarlyKeys));
    auto& es = c.early_stopping;
    KILN_RETURN_IF_ERROR(r.get(e, "early_stopping", "metric", &es.metric));
    KILN_RETURN_IF_ERROR(
        r.one_of("early_stopping.metric", es.metric,
                 {"val_loss", "val_accuracy", "val_macro_f1", "val_mse", "val_mae", "val_r2"}));
    KILN_RETURN_IF_ERROR(r.get(e, "early_stopping", "patience", &es.patience));
    KILN_RETURN_IF_ERROR(
        r.non_negative("early_stopping.patience", static_cast<double>(es.patience)));
    KILN_RETURN_IF_ERROR(r.get(e, "early_stopping", "min_delta", &es.min_delta));
    KILN_RETURN_IF_ERROR(r.non_negative("early_stopping.min_delta", es.min_delta));
    KILN_RETURN_IF_ERROR(r.get(e, "early_stopping", "restore_best", &es.restore_best));
  }
  if (j.contains("ema")) {
    const Json& e = j["ema"];
    if (!e.is_object()) return r.error("ema", "{decay: 0.999, warmup: true}");
    KILN_RETURN_IF_ERROR(r.check_keys(e, "ema", kEmaKeys));
    KILN_RETURN_IF_ERROR(r.get(e, "ema", "decay", &c.ema.decay));
    if (!(c.ema.decay >= 0 && c.ema.decay < 1))
      return r.error("ema.decay", "must be in [0, 1) (0: off), got " + Json(c.ema.decay).dump());
    KILN_RETURN_IF_ERROR(r.get(e, "ema", "warmup", &c.ema.warmup));
  }
  KILN_RETURN_IF_ERROR(r.get(j, "", "checkpoint_every", &c.checkpoint_every));
  KILN_RETURN_IF_ERROR(r.non_negative("checkpoint_every", static_cast<double>(c.checkpoint_every)));

  if (j.contains("augment")) {
    const Json& a = j["augment"];
    KILN_RETURN_IF_ERROR(r.check_keys(a, "augment", kAugmentKeys));
    auto& au = c.augment;
    KILN_RETURN_IF_ERROR(r.get(a, "augment", "crop_padding", &au.crop_padding_));
    KILN_RETURN_IF_ERROR(r.get(a, "augment", "hflip", &au.hflip_));
    KILN_RETURN_IF_ERROR(r.get(a, "augment", "translate", &au.translate_));
    KILN_RETURN_IF_ERROR(r.get(a, "augment", "noise_std", &au.noise_std_));
    KILN_RETURN_IF_ERROR(r.get(a, "augment", "erase", &au.erase_prob_));
    double lo = au.erase_area_min_, hi = au.erase_area_max_;
    KILN_RETURN_IF_ERROR(r.get_pair(a, "augment", "erase_area", &lo, &hi));
    au.erase_area(static_cast<float>(lo), static_cast<float>(hi));
    lo = au.erase_ratio_min_, hi = au.erase_ratio_max_;
    KILN_RETURN_IF_ERROR(r.get_pair(a, "augment", "erase_ratio", &lo, &hi));
    au.erase_ratio(static_cast<float>(lo), static_cast<float>(hi));
    KILN_RETURN_IF_ERROR(r.get(a, "augment", "erase_value", &au.erase_value_));
    Status s = au.validate();
    if (!s.ok()) return r.error("augment", s.message());
  }

  KILN_RETURN_IF_ERROR(r.get(j, "", "precision", &c.precision));
  KILN_RETURN_IF_ERROR(r.one_of("precision", c.precision, {"auto", "fp32", "bf16"}));
  KILN_RETURN_IF_ERROR(r.get(j, "", "channels_last", &c.channels_last));
  KILN_RETURN_IF_ERROR(r.get(j, "", "device", &c.device));
  {
    Status s = model::check_device_name(c.device, "device");
    if (!s.ok()) return r.error("device", s.message().substr(std::string("device: ").size()));
  }
  KILN_RETURN_IF_ERROR(r.get(j, "", "threads", &c.threads));
  KILN_RETURN_IF_ERROR(r.non_negative("threads", static_cast<double>(c.threads)));
  KILN_RETURN_IF_ERROR(r.get(j, "", "workers", &c.workers));
  if (c.workers < 0 || c.workers > 8) return r.error("workers", "must be in 0..8");
  KILN_RETURN_IF_ERROR(r.get(j, "", "deterministic", &c.deterministic));
  KILN_RETURN_IF_ERROR(r.get(j, "", "eval_tta", &c.eval_tta));
  KILN_RETURN_IF_ERROR(r.one_of("eval_tta", c.eval_tta, {"none", "flip"}));
  KILN_RETURN_IF_ERROR(r.get(j, "", "calibration", &c.calibration));
  KILN_RETURN_IF_ERROR(r.one_of("calibration", c.calibration, {"none", "temperature"}));
  KILN_RETURN_IF_ERROR(r.get(j, "", "log_every", &c.log_every));
  KILN_RETURN_IF_ERROR(r.positive("log_every", static_cast<double>(c.log_every)));
  KILN_RETURN_IF_ERROR(r.get(j, "", "init", &c.init));
  // Layer lists: indices or module paths, as strings.
  auto layer_list = [&](const Json& v, const std::string& key,
                        std::vector<std::string>* out) -> Status {
    const Json list = v.is_array() ? v : Json::array({v});
    for (const Json& item : list) {
      if (item.is_number_integer() && item.get<int64_t>() >= 0)
        out->push_back(std::to_string(item.get<int64_t>()));
      else if (item.is_string() && !item.get<std::string>().empty())
        out->push_back(item.get<std::string>());
      else
        return r.error(key,
                       "a list of layer indices or module paths (layers.3), got " + item.dump());
    }
    return Status::Ok();
  };
  if (j.contains("freeze")) KILN_RETURN_IF_ERROR(layer_list(j["freeze"], "freeze", &c.freeze));
  if (j.contains("param_groups")) {
    const Json& groups = j["param_groups"];
    if (!groups.is_array()) return r.error("param_groups", "a list of {layers, lr_scale}");
    for (size_t k = 0; k < groups.size(); ++k) {
      const std::string key = "param_groups." + std::to_string(k);
      const Json& g = groups[k];
      if (!g.is_object() || !g.contains("layers"))
        return r.error(key, "each group is {layers: [...], lr_scale: X}");
      KILN_RETURN_IF_ERROR(r.check_keys(g, key, {"layers", "lr_scale"}));
      TrainConfig::ParamGroup pg;
      KILN_RETURN_IF_ERROR(layer_list(g["layers"], key + ".layers", &pg.layers));
      KILN_RETURN_IF_ERROR(r.get(g, key, "lr_scale", &pg.lr_scale));
      KILN_RETURN_IF_ERROR(r.positive(key + ".lr_scale", pg.lr_scale));
      c.param_groups.push_back(std::move(pg));
    }
  }
  if (j.contains("distill")) {
    const Json& d = j["distill"];
    if (!d.is_object() || !d.contains("teacher"))
      return r.error("distill", "{teacher: REF or [REF, ...], temperature: 4, alpha: 0.7}");
    KILN_RETURN_IF_ERROR(r.check_keys(d, "distill", {"teacher", "temperature", "alpha"}));
    const Json& teacher = d["teacher"];
    const bool listed = teacher.is_array() && !teacher.empty();
    for (const Json& ref : listed ? teacher : Json::array({teacher})) {
      if (!ref.is_string() || ref.get<std::string>().empty())
        return r.error("distill.teacher", "a model reference or a non-empty list of them");
      c.distill.teachers.push_back(ref.get<std::string>());
    }
    KILN_RETURN_IF_ERROR(r.get(d, "distill", "temperature", &c.distill.temperature));
    KILN_RETURN_IF_ERROR(r.positive("distill.temperature", c.distill.temperature));
    KILN_RETURN_IF_ERROR(r.get(d, "distill", "alpha", &c.distill.alpha));
    if (!(c.distill.alpha >= 0 && c.distill.alpha <= 1))
      return r.error("distill.alpha", "must be in [0, 1]");
  }
  if (c.accumulate_batches > 1 && c.optimizer.name == "lbfgs")
    return r.error("accumulate_batches", "lbfgs is full batch: every step sees every row");
  if (c.ema.enabled() && c.optimizer.name == "lbfgs")
    return r.error("ema", "needs a minibatch optimizer (lbfgs takes one full-batch step an epoch)");
  return c;
}

Expected<Json> read_train_config_yaml(const fs::path& path, std::map<std::string, int>* lines) {
  KILN_ASSIGN_OR_RETURN(std::string text, read_file(path));
  Expected<Json> j = yaml_to_json(text, lines);
  if (!j.ok()) return j.status().with_context(path.string());
  if (j->is_null()) *j = Json::object();
  if (j->is_object() && j->contains("data") && (*j)["data"].is_string()) {
    (*j)["data"] = Json{{"path", (*j)["data"]}};
    if (lines && lines->count("data")) (*lines)["data.path"] = (*lines)["data"];
  }
  return j;
}

Expected<TrainConfig> load_train_config(const fs::path& path,
                                        const std::vector<std::string>& overrides) {
  std::map<std::string, int> lines;
  Expected<Json> j = read_train_config_yaml(path, &lines);
  if (!j.ok()) return j.status();
  for (const auto& o : overrides) {
    KILN_RETURN_IF_ERROR(apply_override(&*j, o));
    lines.erase(o.substr(0, o.find('=')));  // the value no longer comes from the file
  }
  KILN_ASSIGN_OR_RETURN(TrainConfig c,
                        parse_train_config(*j, path.parent_path(), path.string(), lines));
  c.config_path = path;
  return c;
}

}  // namespace kiln::train
