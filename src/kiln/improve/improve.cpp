#include "kiln/improve/improve.h"

#include <fcntl.h>
#include <sys/file.h>
#include <torch/torch.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <ostream>
#include <thread>

#include "kiln/checks/statistics.h"
#include "kiln/core/files.h"
#include "kiln/data/snapshot.h"
#include "kiln/features/one_hot.h"
#include "kiln/features/pipeline.h"
#include "kiln/improve/production_rows.h"
#include "kiln/loadtest/target.h"
#include "kiln/model/bundle.h"
#include "kiln/model/manifest.h"
#include "kiln/registry/model_store.h"
#include "kiln/rollout/rollout.h"
#include "kiln/train/config.h"
#include "kiln/train/eval_inputs.h"
#include "kiln/train/metrics.h"
#include "kiln/train/trainer.h"

namespace kiln::improve {

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

double unix_now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

double round3(double v) { return std::round(v * 1000) / 1000; }
double round4(double v) { return std::round(v * 10000) / 10000; }

/// The server, with the API key header when there is one.
struct Server {
  loadtest::Target target;
  std::vector<std::string> headers;

  static Expected<Server> Connect(const ImproveOptions& o) {
    Server s;
    Expected<loadtest::Target> t = loadtest::parse_target(o.server, false);
    if (!t.ok()) return Status(t.status().code(), "--server: " + t.status().message());
    s.target = *t;
    if (!o.api_key_file.empty()) {
      KILN_ASSIGN_OR_RETURN(std::string header, loadtest::api_key_header(o.api_key_file));
      s.headers.push_back(std::move(header));
    }
    return s;
  }
  Expected<Json> get(const std::string& path) const {
    KILN_ASSIGN_OR_RETURN(loadtest::HttpReply r,
                          loadtest::http_exchange(target, path, "", 10000, headers));
    if (r.status != 200)
      return Status::Unavailable("GET " + path + ": HTTP " + std::to_string(r.status) + " " +
                                 r.body.substr(0, 200));
    Json j = Json::parse(r.body, nullptr, false);
    if (j.is_discarded()) return Status::Unavailable("GET " + path + ": not JSON");
    return j;
  }
  Status post(const std::string& path, const Json& body) const {
    KILN_ASSIGN_OR_RETURN(loadtest::HttpReply r,
                          loadtest::http_exchange(target, path, body.dump(), 10000, headers));
    if (r.status != 200)
      return Status::Unavailable("POST " + path + ": HTTP " + std::to_string(r.status) + " " +
                                 r.body.substr(0, 200));
    return Status::Ok();
  }
  /// Waits until `model` serves `version` (the server re-resolves aliases by itself).
  Status wait_for_version(const std::string& model, int64_t version, int64_t timeout_ms) const {
    return rollout::wait_for_served_version(target, headers, model, version, timeout_ms);
  }
};

Status append_history(const std::string& name, const Json& record) {
  const fs::path path = history_path(name);
  std::string text;
  std::error_code ec;
  if (fs::exists(path, ec)) {
    KILN_ASSIGN_OR_RETURN(text, read_file(path));
  }
  if (!text.empty() && text.back() != '\n') text += '\n';
  text += record.dump() + "\n";
  return write_file_atomic(path, text);
}

/// The last decision that ran a cycle (not a skip), or null.
Json last_cycle(const std::vector<Json>& history) {
  for (auto it = history.rbegin(); it != history.rend(); ++it)
    if (it->value("decision", "") != "skipped") return *it;
  return Json();
}

/// The snapshot directory under $KILN_HOME/snapshots whose content hash is `hash`.
Expected<fs::path> find_snapshot(const std::string& hash) {
  const fs::path root = kiln_home() / "snapshots";
  std::error_code ec;
  if (hash.size() >= 12 && fs::is_directory(root, ec))
    for (const auto& e : fs::directory_iterator(root, ec)) {
      const std::string n = e.path().filename().string();
      if (n.size() > 12 && n.compare(n.size() - 12, 12, hash.substr(0, 12)) == 0) return e.path();
    }
  return Status::NotFound("the champion's training snapshot " + hash.substr(0, 12) + " is not in " +
                          root.string() + " (improve retrains on it plus the production rows)");
}

/// The class index of a feedback truth: a label or an index.
Expected<int64_t> class_of(const Json& truth, const std::vector<std::string>& labels,
                           const std::string& id) {
  if (truth.is_string()) {
    auto it = std::find(labels.begin(), labels.end(), truth.get<std::string>());
    if (it != labels.end()) return static_cast<int64_t>(it - labels.begin());
  } else if (truth.is_number_integer()) {
    const int64_t k = truth.get<int64_t>();
    if (k >= 0 && k < static_cast<int64_t>(labels.size())) return k;
  }
  return Status::InvalidArgument("feedback for '" + id + "': truth " + truth.dump() +
                                 " is not one of the model's classes");
}

/// A regression target from a feedback item's truth (a finite number).
Expected<float> number_of(const Json& truth, const std::string& id) {
  if (truth.is_number() && std::isfinite(truth.get<double>())) return truth.get<float>();
  return Status::InvalidArgument("feedback for '" + id + "': truth " + truth.dump() +
                                 " is not a number (the model is a regression)");
}

Json class_counts(const torch::Tensor& y, const std::vector<std::string>& labels) {
  Json c = Json::object();
  torch::Tensor counts = torch::bincount(y, {}, static_cast<int64_t>(labels.size()));
  for (size_t k = 0; k < labels.size(); ++k)
    c[labels[k]] = counts[static_cast<int64_t>(k)].item<int64_t>();
  return c;
}

/// Rows as the served module takes them: float32 [n, shape...].
torch::Tensor served_tensor(const std::vector<const LabelledRow*>& rows,
                            const std::vector<int64_t>& shape) {
  int64_t width = 1;
  for (int64_t d : shape) width *= d;
  torch::Tensor x = torch::empty({static_cast<int64_t>(rows.size()), width}, torch::kFloat32);
  float* p = x.data_ptr<float>();
  for (size_t i = 0; i < rows.size(); ++i)
    std::copy(rows[i]->inputs.begin(), rows[i]->inputs.end(), p + static_cast<int64_t>(i) * width);
  std::vector<int64_t> full{static_cast<int64_t>(rows.size())};
  full.insert(full.end(), shape.begin(), shape.end());
  return x.reshape(full);
}

struct Cycle {
  Json record;
  Clock::time_point phase_start = Clock::now();
  void phase(const std::string& name) {
    record["phases"][name + "_s"] = round3(seconds_since(phase_start));
    phase_start = Clock::now();
  }
};

}  // namespace

Expected<Trigger> parse_trigger(const std::string& text) {
  if (text == "drift") return Trigger::kDrift;
  if (text == "accuracy") return Trigger::kAccuracy;
  if (text == "calibration") return Trigger::kCalibration;
  if (text == "new-data") return Trigger::kNewData;
  if (text == "schedule") return Trigger::kSchedule;
  return Status::InvalidArgument(
      "--trigger: '" + text + "' is not one of drift, accuracy, calibration, new-data, schedule");
}

const char* to_string(Trigger t) {
  switch (t) {
    case Trigger::kDrift:
      return "drift";
    case Trigger::kAccuracy:
      return "accuracy";
    case Trigger::kCalibration:
      return "calibration";
    case Trigger::kNewData:
      return "new-data";
    case Trigger::kSchedule:
      return "schedule";
  }
  return "?";
}

fs::path history_path(const std::string& name) {
  return kiln_home() / "improve" / name / "history.jsonl";
}

Expected<std::vector<Json>> read_history(const std::string& name) {
  std::vector<Json> out;
  const fs::path path = history_path(name);
  std::error_code ec;
  if (!fs::exists(path, ec)) return out;
  KILN_ASSIGN_OR_RETURN(std::string text, read_file(path));
  size_t start = 0;
  int line = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    ++line;
    if (end > start) {
      Json j = Json::parse(text.substr(start, end - start), nullptr, false);
      if (j.is_discarded())
        return Status::DataLoss(path.string() + " line " + std::to_string(line) + ": not JSON");
      out.push_back(std::move(j));
    }
    start = end + 1;
  }
  return out;
}

namespace {

Status check_options(const ImproveOptions& o) {
  if (o.name.empty()) return Status::InvalidArgument("a model name is required");
  for (const auto& [flag, v] : {std::pair<const char*, const std::string*>{"--server", &o.server},
                                {"--route", &o.route},
                                {"--champion-target", &o.champion_target},
                                {"--candidate-target", &o.candidate_target}})
    if (v->empty()) return Status::InvalidArgument(std::string(flag) + " is required");
  if (o.champion_target == o.candidate_target)
    return Status::InvalidArgument("--champion-target and --candidate-target must differ");
  if (!(o.holdout > 0 && o.holdout < 1))
    return Status::InvalidArgument("--holdout: a share in (0, 1)");
  if (o.triggers.empty() && !o.force)
    return Status::InvalidArgument("no --trigger given (or --force)");
  return Status::Ok();
}

/// Which triggers fire now, with the numbers behind each ("" when none).
Expected<std::vector<std::string>> fired_triggers(const ImproveOptions& o, const Server& server,
                                                  const Json& last, int64_t labelled_rows,
                                                  Json* evidence) {
  std::vector<std::string> fired;
  Json monitor;
  for (Trigger t : o.triggers) {
    if ((t == Trigger::kDrift || t == Trigger::kAccuracy || t == Trigger::kCalibration) &&
        monitor.is_null()) {
      KILN_ASSIGN_OR_RETURN(monitor, server.get("/v2/models/" + o.champion_target + "/monitor"));
    }
    switch (t) {
      case Trigger::kDrift: {
        const Json& d = monitor.contains("drift") ? monitor["drift"] : Json::object();
        (*evidence)["drift_share"] = d.value("drift_share", 0.0);
        if (d.value("dataset_drift", false))
          fired.push_back("drift (share " + std::to_string(d.value("drift_share", 0.0)) + ")");
        break;
      }
      case Trigger::kAccuracy: {
        const Json& live = monitor.contains("live") ? monitor["live"] : Json::object();
        const int64_t n = live.value("labelled_rows", int64_t{0});
        (*evidence)["live_labelled_rows"] = n;
        if (live.contains("mae") && live.contains("reference_mae") && n >= 30) {
          // A regressor: its live mean absolute error above the bundle's test MAE by more than
          // the margin, read as a share (0.05: 5% worse).
          const double mae = live["mae"].get<double>();
          const double ref = live["reference_mae"].get<double>();
          (*evidence)["live_mae"] = mae;
          (*evidence)["reference_mae"] = ref;
          if (mae > ref * (1 + o.accuracy_margin))
            fired.push_back("accuracy (live MAE " + std::to_string(mae) + " > bundle " +
                            std::to_string(ref) + " x " + std::to_string(1 + o.accuracy_margin) +
                            ")");
        }
        if (live.contains("accuracy") && live.contains("reference_accuracy") && n >= 30) {
          const double acc = live["accuracy"].get<double>();
          const double ref = live["reference_accuracy"].get<double>();
          (*evidence)["live_accuracy"] = acc;
          (*evidence)["reference_accuracy"] = ref;
          if (acc < ref - o.accuracy_margin)
            fired.push_back("accuracy (live " + std::to_string(acc) + " < bundle " +
                            std::to_string(ref) + " - " + std::to_string(o.accuracy_margin) + ")");
        }
        break;
      }
      case Trigger::kCalibration: {
        const Json& live = monitor.contains("live") ? monitor["live"] : Json::object();
        const int64_t n = live.value("labelled_rows", int64_t{0});
        (*evidence)["live_labelled_rows"] = n;
        if (live.contains("calibration_error") && live.contains("reference_calibration_error") &&
            n >= 30) {
          const double ece = live["calibration_error"].get<double>();
          const double ref = live["reference_calibration_error"].get<double>();
          (*evidence)["live_calibration_error"] = ece;
          (*evidence)["reference_calibration_error"] = ref;
          if (ece > ref + o.calibration_margin)
            fired.push_back("calibration (live ECE " + std::to_string(ece) + " > bundle " +
                            std::to_string(ref) + " + " + std::to_string(o.calibration_margin) +
                            ")");
        }
        break;
      }
      case Trigger::kNewData: {
        const int64_t before = last.is_object() && last.contains("rows")
                                   ? last["rows"].value("labelled_rows", int64_t{0})
                                   : 0;
        (*evidence)["new_labelled_rows"] = labelled_rows - before;
        if (labelled_rows - before >= o.min_new_rows)
          fired.push_back("new-data (" + std::to_string(labelled_rows - before) +
                          " labelled rows since the last cycle)");
        break;
      }
      case Trigger::kSchedule: {
        const double since = last.is_null() ? 1e18 : unix_now() - last.value("started", 0.0);
        if (since * 1000 >= static_cast<double>(o.schedule_ms))
          fired.push_back("schedule (" +
                          (last.is_null() ? std::string("no cycle yet")
                                          : std::to_string(static_cast<int64_t>(since)) +
                                                " s since the last cycle") +
                          ")");
        break;
      }
    }
  }
  return fired;
}

/// Builds the challenger's snapshot: the base snapshot's train split plus the production training
/// rows (repeated), its val split, and the held-out production rows as the test split.
Expected<fs::path> build_snapshot(const ImproveOptions& o, const model::Bundle& champion,
                                  int64_t champion_version,
                                  const std::vector<const LabelledRow*>& train_rows,
                                  const std::vector<const LabelledRow*>& holdout_rows,
                                  int64_t* repeat_out, Json* about) {
  const std::string hash = champion.manifest.contains("lineage")
                               ? champion.manifest["lineage"].value("snapshot_hash", "")
                               : std::string();
  if (hash.empty())
    return Status::FailedPrecondition(
        "the champion's bundle records no training snapshot (lineage.snapshot_hash)");
  KILN_ASSIGN_OR_RETURN(fs::path dir, find_snapshot(hash));
  KILN_ASSIGN_OR_RETURN(data::Snapshot snap, data::read_snapshot(dir));
  // A snapshot an earlier cycle built: start again from its base, with all production rows.
  if (snap.manifest.contains("improve")) {
    KILN_ASSIGN_OR_RETURN(dir, find_snapshot(snap.manifest["improve"].value("base_snapshot", "")));
    KILN_ASSIGN_OR_RETURN(snap, data::read_snapshot(dir));
  }
  const std::string kind = snap.manifest.value("kind", "");
  if (kind != "images" && kind != "table")
    return Status::FailedPrecondition(dir.string() + ": a snapshot of kind '" + kind +
                                      "'; kiln improve builds on image and table snapshots");
  if (!snap.splits.count("train"))
    return Status::FailedPrecondition(dir.string() + ": no train split");
  const bool table = kind == "table";
  // A table's production rows are the raw columns the served module took; the snapshot's x is
  // them through the transforms fitted on the base train split, which the challenger keeps (so
  // its module folds the same ones).
  std::unique_ptr<features::Pipeline> transforms;
  std::vector<std::unique_ptr<features::OneHotEncoder>> encoders;  // categorical columns
  if (table) {
    if (!snap.splits.at("train").raw_x.defined() || !snap.manifest.contains("transforms"))
      return Status::FailedPrecondition(
          dir.string() +
          ": this table snapshot keeps no raw rows (prepared by an older Kiln), so production "
          "rows cannot join it; prepare the data again");
    if (snap.manifest.contains("categorical_encoders"))
      for (const Json& e : snap.manifest["categorical_encoders"]) {
        KILN_ASSIGN_OR_RETURN(auto encoder,
                              features::OneHotEncoder::from_json(e.value("encoder", Json())));
        encoders.push_back(std::move(encoder));
      }
    if (snap.splits.at("train").raw_x.size(1) > static_cast<int64_t>(encoders.size())) {
      KILN_ASSIGN_OR_RETURN(transforms, features::Pipeline::from_json(snap.manifest["transforms"]));
    }
  }
  // A table's prepared rows from its served ones (the raw numeric columns, then a code per
  // categorical column): the base train split's fitted transforms, then each categorical
  // column's block (one-hot, or a target encoding's table row: OneHotEncoder::apply).
  auto prepare_rows = [&](const torch::Tensor& raw) -> Expected<torch::Tensor> {
    const int64_t numeric = raw.size(1) - static_cast<int64_t>(encoders.size());
    std::vector<torch::Tensor> blocks;
    if (numeric > 0) {
      KILN_ASSIGN_OR_RETURN(torch::Tensor x, transforms->apply(raw.slice(1, 0, numeric)));
      blocks.push_back(x.to(torch::kFloat32));
    }
    for (size_t k = 0; k < encoders.size(); ++k) {
      const int64_t at = numeric + static_cast<int64_t>(k);
      KILN_ASSIGN_OR_RETURN(torch::Tensor onehot,
                            encoders[k]->apply(raw.slice(1, at, at + 1).contiguous()));
      blocks.push_back(onehot.to(torch::kFloat32));
    }
    return torch::cat(blocks, 1).contiguous();
  };
  const std::vector<std::string> labels = champion.labels();
  const bool regression = champion.task() == "regression";
  const std::vector<int64_t> shape = champion.raw_input_shape();
  int64_t width = 1;
  for (int64_t d : shape) width *= d;
  auto to_split = [&](const std::vector<const LabelledRow*>& rows,
                      int64_t repeat) -> Expected<data::SplitTensors> {
    const int64_t n = static_cast<int64_t>(rows.size());
    // Images: uint8 pixels, as their snapshots keep them. Tables: the raw float columns.
    torch::Tensor x = torch::empty({n, width}, table ? torch::kFloat32 : torch::kUInt8);
    torch::Tensor y = torch::empty({n}, regression ? torch::kFloat32 : torch::kLong);
    for (int64_t i = 0; i < n; ++i) {
      const LabelledRow& r = *rows[static_cast<size_t>(i)];
      if (static_cast<int64_t>(r.inputs.size()) != width)
        return Status::InvalidArgument("production row '" + r.id +
                                       "': " + std::to_string(r.inputs.size()) +
                                       " inputs, the model takes " + std::to_string(width));
      if (table) {
        std::copy(r.inputs.begin(), r.inputs.end(), x.data_ptr<float>() + i * width);
      } else {
        uint8_t* xp = x.data_ptr<uint8_t>();
        for (int64_t k = 0; k < width; ++k)
          xp[i * width + k] = static_cast<uint8_t>(
              std::clamp(std::lround(r.inputs[static_cast<size_t>(k)]), 0L, 255L));
      }
      if (regression) {
        KILN_ASSIGN_OR_RETURN(y.data_ptr<float>()[i], number_of(r.truth, r.id));
      } else {
        KILN_ASSIGN_OR_RETURN(y.data_ptr<int64_t>()[i], class_of(r.truth, labels, r.id));
      }
    }
    data::SplitTensors s;
    if (table) {
      s.raw_x = x;
      KILN_ASSIGN_OR_RETURN(s.x, prepare_rows(x));
    } else {
      std::vector<int64_t> full{n};
      full.insert(full.end(), shape.begin(), shape.end());
      s.x = x.reshape(full);
    }
    s.y = y;
    if (repeat > 1) {
      s.x = s.x.repeat_interleave(repeat, 0);
      s.y = s.y.repeat_interleave(repeat, 0);
      if (s.raw_x.defined()) s.raw_x = s.raw_x.repeat_interleave(repeat, 0);
    }
    return s;
  };
  const data::SplitTensors& base_train = snap.splits.at("train");
  const int64_t base_rows = base_train.x.size(0);
  int64_t repeat = o.production_repeat;
  if (repeat <= 0)
    repeat = std::clamp<int64_t>(
        base_rows / std::max<int64_t>(1, static_cast<int64_t>(train_rows.size())), 1, 10);
  KILN_ASSIGN_OR_RETURN(data::SplitTensors prod, to_split(train_rows, repeat));
  KILN_ASSIGN_OR_RETURN(data::SplitTensors held, to_split(holdout_rows, 1));
  held.y = held.y.to(base_train.y.scalar_type());
  std::map<std::string, data::SplitTensors> splits;
  data::SplitTensors train;
  train.x = torch::cat({base_train.x, prod.x.to(base_train.x.scalar_type())}, 0);
  train.y = torch::cat({base_train.y, prod.y.to(base_train.y.scalar_type())}, 0);
  if (table) train.raw_x = torch::cat({base_train.raw_x, prod.raw_x}, 0);
  splits["train"] = train;
  if (snap.splits.count("val")) splits["val"] = snap.splits.at("val");
  splits["test"] = held;
  Json manifest = snap.manifest;
  manifest.erase("files");
  manifest.erase("content_hash");
  for (const auto& [name, s] : splits) {
    Json& m = manifest["splits"][name];
    if (name != "val") m.erase("source_lines");  // production rows come from no file line
    m["rows"] = s.x.size(0);
    m["x_shape"] = s.x.sizes().vec();
    if (!regression) m["class_counts"] = class_counts(s.y, labels);
  }
  manifest["improve"] = {{"base_snapshot", snap.hash()},
                         {"model", o.name},
                         {"champion_version", champion_version},
                         {"production_train_rows", static_cast<int64_t>(train_rows.size())},
                         {"production_repeat", repeat},
                         {"holdout_rows", static_cast<int64_t>(holdout_rows.size())},
                         {"test_split", "held-out production rows"}};
  *repeat_out = repeat;
  *about = manifest["improve"];
  const std::string base_name = manifest.value("name", o.name);
  return data::write_snapshot(kiln_home() / "snapshots", base_name + "-improve", manifest, splits);
}

/// The outputs of a bundle's served module on `x`.
Expected<torch::Tensor> predict(const model::Bundle& bundle, const torch::Tensor& x) {
  KILN_ASSIGN_OR_RETURN(torch::jit::Module m, model::load_bundle_module(bundle));
  return train::run_module(m, x, 256);
}

/// Champion vs challenger on the held-out rows: McNemar on the rows each got right
/// (classifiers), a paired bootstrap of the mean absolute error (regression). The "holdout"
/// record, with its "verdict" (better / worse / inconclusive for the challenger).
Expected<Json> compare_on_holdout(const ImproveOptions& o, const model::Bundle& champion,
                                  const model::Bundle& challenger,
                                  const std::vector<const LabelledRow*>& rows) {
  const torch::Tensor x = served_tensor(rows, champion.raw_input_shape());
  const int64_t n = static_cast<int64_t>(rows.size());
  KILN_ASSIGN_OR_RETURN(torch::Tensor champion_out, predict(champion, x));
  KILN_ASSIGN_OR_RETURN(torch::Tensor challenger_out, predict(challenger, x));
  if (champion.task() == "regression") {
    std::vector<double> truth(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) {
      KILN_ASSIGN_OR_RETURN(float t, number_of(rows[static_cast<size_t>(i)]->truth,
                                               rows[static_cast<size_t>(i)]->id));
      truth[static_cast<size_t>(i)] = t;
    }
    const torch::Tensor a = champion_out.reshape({n, -1}).select(1, 0).to(torch::kDouble);
    const torch::Tensor b = challenger_out.reshape({n, -1}).select(1, 0).to(torch::kDouble);
    const double* pa = a.data_ptr<double>();
    const double* pb = b.data_ptr<double>();
    // Greater is better: the negated mean absolute error over the resampled rows.
    auto neg_mae = [&](const std::vector<int64_t>& idx, int model) {
      const double* p = model == 0 ? pa : pb;
      double sum = 0;
      for (int64_t i : idx) sum += std::abs(p[i] - truth[static_cast<size_t>(i)]);
      return -sum / static_cast<double>(std::max<size_t>(1, idx.size()));
    };
    const checks::BootstrapResult r = checks::paired_bootstrap(n, neg_mae, 1000, 0);
    return Json{{"rows", n},
                {"champion_mae", round3(-r.champion)},
                {"challenger_mae", round3(-r.challenger)},
                {"mae_reduction_ci95", {round3(r.ci_low), round3(r.ci_high)}},
                {"p_not_better", r.p_not_better},
                {"test", "paired_bootstrap_mae"},
                {"verdict", checks::bootstrap_verdict(r, o.alpha)}};
  }
  torch::Tensor y = torch::empty({n}, torch::kLong);
  int64_t* yp = y.data_ptr<int64_t>();
  for (int64_t i = 0; i < n; ++i) {
    const LabelledRow& r = *rows[static_cast<size_t>(i)];
    KILN_ASSIGN_OR_RETURN(yp[i], class_of(r.truth, champion.labels(), r.id));
  }
  const torch::Tensor champion_right = champion_out.argmax(1) == y;
  const torch::Tensor challenger_right = challenger_out.argmax(1) == y;
  const int64_t b = (champion_right & ~challenger_right).sum().item<int64_t>();
  const int64_t c = (challenger_right & ~champion_right).sum().item<int64_t>();
  const checks::McNemarResult m = checks::mcnemar(b, c);
  const double rows_n = static_cast<double>(std::max<int64_t>(1, n));
  Json h = {{"rows", n},
            {"champion_accuracy", round3(champion_right.sum().item<int64_t>() / rows_n)},
            {"challenger_accuracy", round3(challenger_right.sum().item<int64_t>() / rows_n)},
            {"b_champion_only_right", b},
            {"c_challenger_only_right", c},
            {"p_value", m.p_value},
            {"test", m.exact ? "mcnemar_exact" : "mcnemar_chi2_corrected"},
            {"verdict", checks::mcnemar_verdict(m, o.alpha)}};
  // The probabilities' quality on the same rows: log loss (per row, for the bootstrap) and ECE.
  auto row_nll = [&](const torch::Tensor& out) {
    return -torch::log_softmax(out.to(torch::kDouble), 1)
                .gather(1, y.reshape({-1, 1}))
                .reshape({-1});
  };
  const torch::Tensor nll_a = row_nll(champion_out).contiguous(),
                      nll_b = row_nll(challenger_out).contiguous();
  KILN_ASSIGN_OR_RETURN(const double ece_a, train::expected_calibration_error(champion_out, y));
  KILN_ASSIGN_OR_RETURN(const double ece_b, train::expected_calibration_error(challenger_out, y));
  h["champion_nll"] = round4(nll_a.mean().item<double>());
  h["challenger_nll"] = round4(nll_b.mean().item<double>());
  h["champion_ece"] = round4(ece_a);
  h["challenger_ece"] = round4(ece_b);
  if (o.compare == "log-loss") {
    const double* pa = nll_a.data_ptr<double>();
    const double* pb = nll_b.data_ptr<double>();
    // Greater is better: the negated mean log loss over the resampled rows.
    auto neg_nll = [&](const std::vector<int64_t>& idx, int model) {
      const double* p = model == 0 ? pa : pb;
      double sum = 0;
      for (int64_t i : idx) sum += p[i];
      return -sum / static_cast<double>(std::max<size_t>(1, idx.size()));
    };
    const checks::BootstrapResult r = checks::paired_bootstrap(n, neg_nll, 1000, 0);
    h["nll_reduction_ci95"] = {round4(r.ci_low), round4(r.ci_high)};
    h["p_not_better"] = r.p_not_better;
    h["test"] = "paired_bootstrap_nll";
    h["verdict"] = checks::bootstrap_verdict(r, o.alpha);
  }
  return h;
}

Expected<Json> run_cycle(const ImproveOptions& o, const Server& server, const ProductionRows& rows,
                         Cycle& cycle, std::ostream& out) {
  Json& rec = cycle.record;
  // The champion, as the registry names it now.
  const std::string champion_ref = o.name + "@" + o.champion_alias;
  KILN_ASSIGN_OR_RETURN(registry::ResolvedModel resolved,
                        registry::resolve_model_ref(champion_ref));
  KILN_ASSIGN_OR_RETURN(model::Bundle champion, model::read_bundle(resolved.bundle_dir));
  rec["champion"] = {{"version", resolved.version}};
  if (champion.task() != "classification" && champion.task() != "regression")
    return Status::FailedPrecondition("kiln improve: a model of task '" + champion.task() +
                                      "'; it compares classifiers and regressors");

  std::vector<const LabelledRow*> train_rows, holdout_rows;
  for (const LabelledRow& r : rows.rows)
    (in_holdout(r.id, o.holdout) ? holdout_rows : train_rows).push_back(&r);
  if (static_cast<int64_t>(holdout_rows.size()) > o.max_holdout_rows)
    holdout_rows.erase(holdout_rows.begin(),
                       holdout_rows.end() - static_cast<std::ptrdiff_t>(o.max_holdout_rows));
  out << "improve: " << train_rows.size() << " production rows to train on, " << holdout_rows.size()
      << " held out\n";

  int64_t repeat = 1;
  Json about;
  KILN_ASSIGN_OR_RETURN(
      fs::path snapshot_dir,
      build_snapshot(o, champion, resolved.version, train_rows, holdout_rows, &repeat, &about));
  rec["snapshot"] = {{"dir", snapshot_dir.string()}, {"production_repeat", repeat}};
  out << "improve: snapshot " << snapshot_dir.filename().string() << "\n";
  cycle.phase("snapshot");

  // The challenger: the champion's own training config on the new snapshot.
  Json config = champion.manifest.value("training", Json::object());
  config["data"] = snapshot_dir.string();
  for (const std::string& s : o.train_overrides)
    KILN_RETURN_IF_ERROR(train::apply_override(&config, s));
  KILN_ASSIGN_OR_RETURN(train::TrainConfig cfg,
                        train::parse_train_config(config, {}, "the champion's training config"));
  const fs::path run_dir =
      history_path(o.name).parent_path() / ("cycle-" + std::to_string(rec["cycle"].get<int64_t>()));
  std::error_code ec;
  fs::remove_all(run_dir, ec);
  out << "improve: training the challenger in " << run_dir.string() << "\n";
  out.flush();
  KILN_ASSIGN_OR_RETURN(
      train::TrainResult trained,
      train::train(cfg, train::TrainOptions(run_dir).snapshot_dir(kiln_home() / "snapshots")));
  if (trained.bundle_dir.empty()) return Status::Internal("training wrote no bundle");
  rec["challenger"] = {{"run_dir", run_dir.string()},
                       {"epochs", trained.epochs},
                       {"train_seconds", round3(trained.seconds)}};
  cycle.phase("train");

  // Champion vs challenger on the held-out production rows, as the server received them.
  KILN_ASSIGN_OR_RETURN(model::Bundle challenger, model::read_bundle(trained.bundle_dir));
  if (challenger.labels() != champion.labels())
    return Status::Internal("the challenger's classes differ from the champion's");
  KILN_ASSIGN_OR_RETURN(rec["holdout"], compare_on_holdout(o, champion, challenger, holdout_rows));
  const Json& h = rec["holdout"];
  const std::string verdict = h["verdict"].get<std::string>();
  if (h.contains("champion_mae"))
    out << "improve: held-out production rows " << holdout_rows.size() << ": MAE champion "
        << h["champion_mae"].get<double>() << ", challenger " << h["challenger_mae"].get<double>()
        << " (paired bootstrap, p(not better)=" << h["p_not_better"].get<double>()
        << "): " << verdict << "\n";
  else if (h["test"] == "paired_bootstrap_nll")
    out << "improve: held-out production rows " << holdout_rows.size() << ": log loss champion "
        << h["champion_nll"].get<double>() << ", challenger " << h["challenger_nll"].get<double>()
        << " (paired bootstrap, p(not better)=" << h["p_not_better"].get<double>() << "; accuracy "
        << h["champion_accuracy"].get<double>() << " vs " << h["challenger_accuracy"].get<double>()
        << "): " << verdict << "\n";
  else
    out << "improve: held-out production rows " << holdout_rows.size() << ": champion "
        << h["champion_accuracy"].get<double>() << ", challenger "
        << h["challenger_accuracy"].get<double>()
        << " (McNemar b=" << h["b_champion_only_right"].get<int64_t>()
        << " c=" << h["c_challenger_only_right"].get<int64_t>()
        << " p=" << h["p_value"].get<double>() << "): " << verdict << "\n";
  cycle.phase("compare");
  if (verdict != "better") {
    rec["decision"] = "rejected";
    rec["why"] = verdict == "worse"
                     ? "the challenger is worse than the champion on the held-out rows"
                     : "the challenger is not better than the champion on the held-out rows "
                       "(" +
                           h["test"].get<std::string>() + ": " + verdict + ")";
    return rec;
  }

  // Push, point the candidate alias at it, and wait for the server to load it.
  KILN_ASSIGN_OR_RETURN(auto store, registry::open_model_store());
  KILN_ASSIGN_OR_RETURN(
      registry::VersionInfo pushed,
      store->push(registry::PushRequest(trained.bundle_dir, o.name)
                      .parent(o.name + "@" + std::to_string(resolved.version))
                      .tag("improve.cycle", std::to_string(rec["cycle"].get<int64_t>()))
                      .description("kiln improve: champion v" + std::to_string(resolved.version) +
                                   " + " + std::to_string(train_rows.size()) +
                                   " labelled production rows")));
  KILN_RETURN_IF_ERROR(store->set_alias(o.name, o.candidate_alias, pushed.version));
  rec["challenger"]["version"] = pushed.version;
  out << "improve: pushed " << o.name << " v" << pushed.version << " as @" << o.candidate_alias
      << "\n";
  KILN_RETURN_IF_ERROR(
      server.wait_for_version(o.candidate_target, pushed.version, o.reload_timeout_ms));
  cycle.phase("push");

  // The canary: `kiln rollout`'s path, promoting the champion alias at the end.
  rollout::RolloutOptions ro(o.route, o.server, o.candidate_target);
  ro.steps(o.steps)
      .interval_ms(o.step_interval_ms)
      .max_error_rate(o.max_error_rate)
      .max_p99_ms(o.max_p99_ms)
      .min_requests(o.min_requests)
      .api_key_file(o.api_key_file)
      .promote(o.name + "@" + o.champion_alias + "=" + std::to_string(pushed.version));
  auto promote = [&store](const rollout::PromoteTarget& p) {
    return store->set_alias(p.name, p.alias, p.version);
  };
  KILN_ASSIGN_OR_RETURN(fs::path state_path, rollout::rollout_state_path(o.route));
  KILN_ASSIGN_OR_RETURN(auto r, rollout::Rollout::Create(ro, state_path, promote));
  if (o.interrupted) r->set_interrupted(o.interrupted);
  const Status rolled = r->start(out);
  cycle.phase("rollout");
  if (!rolled.ok()) {
    rec["decision"] = "rolled_back";
    rec["why"] = rolled.message();
    return rec;
  }
  // Promoted: once the champion target serves the new version, it takes the traffic again and
  // the candidate target waits, at weight 0, for the next cycle.
  KILN_RETURN_IF_ERROR(
      server.wait_for_version(o.champion_target, pushed.version, o.reload_timeout_ms));
  KILN_RETURN_IF_ERROR(
      server.post("/v2/routes/" + o.route,
                  Json{{"weights", {{o.champion_target, 100}, {o.candidate_target, 0}}}}));
  cycle.phase("promote");
  rec["decision"] = "promoted";
  rec["why"] = "better on " + std::to_string(holdout_rows.size()) +
               " held-out production rows and healthy through the canary";
  out << "improve: promoted " << o.name << " v" << pushed.version << " to @" << o.champion_alias
      << "\n";
  return rec;
}

}  // namespace

Expected<Json> run_improve(const ImproveOptions& options, std::ostream& out) {
  KILN_RETURN_IF_ERROR(check_options(options));
  ImproveOptions o = options;
  if (o.log_dir.empty()) o.log_dir = kiln_home() / "logs";
  const fs::path lock_path = history_path(o.name).parent_path() / ".lock";
  KILN_ASSIGN_OR_RETURN(
      FileLock lock,
      FileLock::TryAcquire(lock_path, Status::AlreadyExists("another `kiln improve` is running for "
                                                            "this model (" +
                                                            lock_path.string() + ")")));
  KILN_ASSIGN_OR_RETURN(Server server, Server::Connect(o));
  KILN_ASSIGN_OR_RETURN(std::vector<Json> history, read_history(o.name));
  const Json last = last_cycle(history);

  Cycle cycle;
  Json& rec = cycle.record;
  rec["started"] = round3(unix_now());
  rec["model"] = o.name;
  // The labelled production rows of the route's targets.
  KILN_ASSIGN_OR_RETURN(ProductionRows rows,
                        read_production_rows(o.log_dir, {o.champion_target, o.candidate_target}));
  rec["rows"] = rows.to_json();
  cycle.phase("collect");
  Json evidence = Json::object();
  KILN_ASSIGN_OR_RETURN(
      std::vector<std::string> fired,
      fired_triggers(o, server, last, static_cast<int64_t>(rows.rows.size()), &evidence));
  if (o.force) fired.insert(fired.begin(), "forced (--force)");
  rec["triggers"] = fired;
  rec["evidence"] = evidence;
  if (fired.empty()) {
    rec["decision"] = "none";
    rec["why"] = "no trigger fired";
    out << "improve: no trigger fired (" << evidence.dump() << ")\n";
    return rec;  // printed, not recorded: a watch loop checks often
  }
  out << "improve: triggered by " << fired.front() << (fired.size() > 1 ? " and more" : "") << "\n";
  const double since_last = last.is_null() ? 1e18 : unix_now() - last.value("started", 0.0);
  if (!o.force && since_last * 1000 < static_cast<double>(o.cooldown_ms)) {
    rec["decision"] = "skipped";
    rec["why"] = "cool-down: the last cycle started " + std::to_string(int64_t(since_last)) +
                 " s ago, the cool-down is " + std::to_string(o.cooldown_ms / 1000) + " s";
  } else if (static_cast<int64_t>(rows.rows.size()) < o.min_rows) {
    rec["decision"] = "skipped";
    rec["why"] =
        std::to_string(rows.rows.size()) + " labelled production rows, " +
        std::to_string(o.min_rows) + " needed" +
        (rows.hashed_predictions > 0
             ? " (" + std::to_string(rows.hashed_predictions) +
                   " predictions were logged as hashes: serve with --prediction-log inputs)"
             : "");
  } else {
    rec["cycle"] =
        static_cast<int64_t>(1 + std::count_if(history.begin(), history.end(),
                                               [](const Json& h) { return h.contains("cycle"); }));
    Expected<Json> done = run_cycle(o, server, rows, cycle, out);
    if (!done.ok()) {
      rec["decision"] = "failed";
      rec["why"] = done.status().message();
    }
  }
  rec["finished"] = round3(unix_now());
  rec["seconds"] = round3(rec["finished"].get<double>() - rec["started"].get<double>());
  out << "improve: " << rec["decision"].get<std::string>() << ": " << rec["why"].get<std::string>()
      << "\n";
  KILN_RETURN_IF_ERROR(append_history(o.name, rec));
  return rec;
}

}  // namespace kiln::improve
