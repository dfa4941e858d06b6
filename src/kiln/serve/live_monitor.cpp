#include "kiln/serve/live_monitor.h"

#include <algorithm>
#include <cmath>

#include "kiln/monitor/calibration.h"

namespace kiln::serve {

LiveMonitor::LiveMonitor(std::string model, std::string version,
                         std::shared_ptr<const monitor::ReferenceProfile> reference,
                         std::vector<std::string> labels, double reference_score,
                         const LiveMonitorMetrics& metrics, const LiveMonitorOptions& options,
                         double reference_calibration_error)
    : model_(std::move(model)),
      version_(std::move(version)),
      reference_(std::move(reference)),
      labels_(std::move(labels)),
      options_(options),
      metrics_(metrics),
      remembered_(options.remembered_predictions),
      reference_score_(reference_score),
      reference_calibration_error_(labels_.empty() ? -1 : reference_calibration_error) {
  feature_count_ = reference_ ? reference_->features.size() : 0;
  if (metrics_.reference_accuracy && reference_score_ >= 0 && !labels_.empty())
    metrics_.reference_accuracy->with({model_, version_}).set(reference_score_);
  if (metrics_.reference_calibration_error && reference_calibration_error_ >= 0)
    metrics_.reference_calibration_error->with({model_, version_})
        .set(reference_calibration_error_);
}

void LiveMonitor::extract(const float* x, int64_t rows, std::vector<double>* features,
                          std::vector<double>* intensity) const {
  if (!reference_) return;
  if (reference_->schema.kind != "image") {
    monitor::extract_features(reference_->schema, x, rows, features, nullptr);
    return;
  }
  const int64_t numel = reference_->schema.row_numel();
  std::vector<double> counts;
  for (int64_t r = 0; r < rows; ++r) {
    counts.clear();
    monitor::extract_features(reference_->schema, x + r * numel, 1, features, &counts);
    intensity->insert(intensity->end(), counts.begin(), counts.end());
  }
}

bool LiveMonitor::admit(int64_t rows) {
  if (!reference_) return false;
  if (options_.max_rows_per_second <= 0) return true;
  const int64_t second = std::chrono::duration_cast<std::chrono::seconds>(
                             std::chrono::steady_clock::now().time_since_epoch())
                             .count();
  int64_t seen = admit_second_.load(std::memory_order_relaxed);
  if (seen != second && admit_second_.compare_exchange_strong(seen, second))
    admitted_rows_.store(0, std::memory_order_relaxed);
  if (admitted_rows_.fetch_add(rows, std::memory_order_relaxed) + rows <=
      options_.max_rows_per_second)
    return true;
  skipped_rows_.fetch_add(rows, std::memory_order_relaxed);
  return false;
}

void LiveMonitor::count_quality_issue(const std::string& kind, double n) {
  if (metrics_.quality_issues) metrics_.quality_issues->with({model_, version_, kind}).inc(n);
}

void LiveMonitor::record(const std::string& id, std::vector<double> features,
                         const std::vector<double>& intensity,
                         const std::vector<int64_t>& predicted,
                         const std::vector<double>& confidence,
                         const std::vector<double>& predictions) {
  const size_t rows = std::max(predicted.size(), predictions.size());
  int64_t out_of_range = 0, out_of_vocabulary = 0, missing = 0;
  std::lock_guard<std::mutex> lock(mu_);
  // Remember each row's prediction under id (one row) or id#k (row k of a batch): a
  // regressor's output, a classifier's class and top-1 confidence.
  for (size_t r = 0; r < rows; ++r)
    remembered_.remember(
        id, static_cast<int64_t>(r), static_cast<int64_t>(rows),
        r < predicted.size() ? predicted[r] : -1,
        r < predictions.size() ? predictions[r] : (r < confidence.size() ? confidence[r] : 0.0));
  rows_total_ += static_cast<int64_t>(rows);
  if (!reference_ || feature_count_ == 0) return;
  const size_t window = static_cast<size_t>(options_.window);
  if (ring_features_.empty()) {
    ring_features_.assign(window * feature_count_, 0.0);
    ring_predicted_.assign(window, -1);
    ring_confidence_.assign(window, 0.0);
    ring_predictions_.assign(window, 0.0);
  }
  if (!intensity.empty() && rows > 0 && intensity_bins_ == 0) {
    intensity_bins_ = intensity.size() / rows;
    ring_intensity_.assign(window * intensity_bins_, 0.0);
  }
  for (size_t r = 0; r < rows && (r + 1) * feature_count_ <= features.size(); ++r) {
    const double* row = features.data() + r * feature_count_;
    for (size_t k = 0; k < feature_count_; ++k) {
      const double v = row[k];
      const monitor::NumericReference& ref = reference_->features[k];
      if (std::isnan(v))
        ++missing;
      else if (ref.categorical()
                   ? !std::binary_search(ref.categories.begin(), ref.categories.end(), v)
                   : (v < ref.min || v > ref.max))
        ++(ref.categorical() ? out_of_vocabulary : out_of_range);
    }
    std::copy(row, row + feature_count_,
              ring_features_.begin() + static_cast<std::ptrdiff_t>(ring_next_ * feature_count_));
    if (intensity_bins_ > 0 && (r + 1) * intensity_bins_ <= intensity.size())
      std::copy(
          intensity.begin() + static_cast<std::ptrdiff_t>(r * intensity_bins_),
          intensity.begin() + static_cast<std::ptrdiff_t>((r + 1) * intensity_bins_),
          ring_intensity_.begin() + static_cast<std::ptrdiff_t>(ring_next_ * intensity_bins_));
    ring_predicted_[ring_next_] = r < predicted.size() ? predicted[r] : -1;
    ring_confidence_[ring_next_] = r < confidence.size() ? confidence[r] : 0.0;
    ring_predictions_[ring_next_] = r < predictions.size() ? predictions[r] : 0.0;
    ring_next_ = (ring_next_ + 1) % window;
    ring_filled_ = std::min(window, ring_filled_ + 1);
  }
  if (out_of_range) count_quality_issue("out_of_range", static_cast<double>(out_of_range));
  if (missing) count_quality_issue("missing", static_cast<double>(missing));
  if (out_of_vocabulary)
    count_quality_issue("out_of_vocabulary", static_cast<double>(out_of_vocabulary));
  out_of_vocabulary_total_ += out_of_vocabulary;
  out_of_range_total_ += out_of_range;
  missing_total_ += missing;
  rows_since_recompute_ += static_cast<int64_t>(std::min(rows, features.size() / feature_count_));
  const auto now = std::chrono::steady_clock::now();
  if (now - last_recompute_ >= options_.recompute_interval) recompute_locked();
}

void LiveMonitor::recompute_locked() {
  if (!reference_ || rows_since_recompute_ == 0 || ring_filled_ == 0) return;
  last_recompute_ = std::chrono::steady_clock::now();
  rows_since_recompute_ = 0;
  // The statistics do not depend on row order: the filled part of each ring is the window.
  const auto rows = static_cast<std::ptrdiff_t>(ring_filled_);
  std::vector<double> features(
      ring_features_.begin(),
      ring_features_.begin() + rows * static_cast<std::ptrdiff_t>(feature_count_));
  std::vector<double> intensity(intensity_bins_, 0.0);
  for (std::ptrdiff_t r = 0; r < rows && intensity_bins_ > 0; ++r)
    for (size_t b = 0; b < intensity_bins_; ++b)
      intensity[b] += ring_intensity_[static_cast<size_t>(r) * intensity_bins_ + b];
  std::vector<int64_t> predicted;
  std::vector<double> confidence, predictions;
  if (!labels_.empty()) {
    predicted.assign(ring_predicted_.begin(), ring_predicted_.begin() + rows);
    confidence.assign(ring_confidence_.begin(), ring_confidence_.begin() + rows);
  } else {
    predictions.assign(ring_predictions_.begin(), ring_predictions_.begin() + rows);
  }
  monitor::DriftReport report = monitor::compare_to_reference(*reference_, features, intensity,
                                                              predicted, confidence, predictions);
  if (static_cast<int64_t>(ring_filled_) >= options_.window) {
    ++windows_checked_;
    windows_drifted_ += report.dataset_drift;
  }
  if (metrics_.drift_share) metrics_.drift_share->with({model_, version_}).set(report.drift_share);
  if (metrics_.prediction_psi)
    metrics_.prediction_psi->with({model_, version_}).set(report.prediction_psi);
  if (metrics_.window_rows)
    metrics_.window_rows->with({model_, version_}).set(static_cast<double>(report.rows));
  if (metrics_.feature_psi)
    for (const auto& f : report.features)
      metrics_.feature_psi->with({model_, version_, f.name}).set(f.psi);
  append_history_locked(report);
  last_report_ = std::move(report);
}

void LiveMonitor::append_history_locked(const monitor::DriftReport& report) {
  const auto now = std::chrono::steady_clock::now();
  if (!history_.empty() && now - last_history_ < options_.history_interval) {
    // Within the interval the newest point follows the window, so the plot ends at "now".
    history_.pop_back();
  } else {
    last_history_ = now;
  }
  HistoryPoint point;
  point.unix_seconds =
      std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  point.rows_total = rows_total_;
  point.drift_share = report.drift_share;
  point.prediction_psi = report.prediction_psi;
  point.live_score = live_score_locked();
  point.feature_psi.reserve(report.features.size());
  for (const auto& f : report.features) point.feature_psi.push_back(f.psi);
  history_.push_back(std::move(point));
  while (static_cast<int64_t>(history_.size()) > std::max<int64_t>(1, options_.history_points))
    history_.pop_front();
}

double LiveMonitor::live_score_locked() const {
  if (labelled_scores_.empty()) return std::nan("");
  double sum = 0;
  for (double s : labelled_scores_) sum += s;
  return sum / static_cast<double>(labelled_scores_.size());
}

double LiveMonitor::live_calibration_error_locked() const {
  if (labelled_calibration_.empty()) return std::nan("");
  double total = 0;
  for (double gap : calibration_gap_) total += std::abs(gap);
  return total / static_cast<double>(labelled_calibration_.size());
}

Expected<std::string> LiveMonitor::feedback(const std::string& id, const Json& truth) {
  std::lock_guard<std::mutex> lock(mu_);
  PredictionMemory::Entry* found = remembered_.find(id);
  if (!found)
    return Status::NotFound("no prediction with id '" + id + "' is remembered (the last " +
                            std::to_string(options_.remembered_predictions) +
                            " are; a batch's rows are ID#0, ID#1, ...)");
  PredictionMemory::Entry& m = *found;
  double score;
  if (!labels_.empty()) {
    int64_t cls = -1;
    if (truth.is_string()) {
      auto pos = std::find(labels_.begin(), labels_.end(), truth.get<std::string>());
      if (pos != labels_.end()) cls = pos - labels_.begin();
    } else if (truth.is_number_integer()) {
      cls = truth.get<int64_t>();
    }
    if (cls < 0 || cls >= static_cast<int64_t>(labels_.size()))
      return Status::InvalidArgument("truth: " + truth.dump() +
                                     " is not one of the model's classes");
    score = cls == m.predicted ? 1.0 : 0.0;
  } else {
    if (!truth.is_number())
      return Status::InvalidArgument("truth: a number for a regression model");
    score = std::fabs(truth.get<double>() - m.prediction);
  }
  if (m.labelled) return std::string("duplicate");
  m.labelled = true;
  labelled_scores_.push_back(score);
  if (!labels_.empty()) {
    const int64_t bin = monitor::calibration_bin(m.prediction);
    const double gap = score - m.prediction;  // score: 1 right, 0 wrong
    labelled_calibration_.emplace_back(bin, gap);
    if (calibration_gap_.empty()) calibration_gap_.assign(monitor::kCalibrationBins, 0.0);
    calibration_gap_[static_cast<size_t>(bin)] += gap;
  }
  ++labelled_total_;
  while (static_cast<int64_t>(labelled_scores_.size()) > options_.window)
    labelled_scores_.pop_front();
  while (static_cast<int64_t>(labelled_calibration_.size()) > options_.window) {
    const auto [bin, gap] = labelled_calibration_.front();
    calibration_gap_[static_cast<size_t>(bin)] -= gap;
    labelled_calibration_.pop_front();
  }
  const double mean = live_score_locked();
  if (metrics_.live_accuracy && !labels_.empty())
    metrics_.live_accuracy->with({model_, version_}).set(mean);
  if (metrics_.live_calibration_error && !labels_.empty())
    metrics_.live_calibration_error->with({model_, version_}).set(live_calibration_error_locked());
  if (metrics_.live_labelled_rows)
    metrics_.live_labelled_rows->with({model_, version_})
        .set(static_cast<double>(labelled_scores_.size()));
  if (metrics_.feedback) metrics_.feedback->with({model_, version_}).inc();
  return std::string("joined");
}

Json LiveMonitor::history_json_locked() const {
  Json t = Json::array(), rows = Json::array(), share = Json::array(), prediction = Json::array(),
       live = Json::array(), names = Json::array(), psi = Json::array();
  // The features of the latest report (the reference's, and for images the intensity
  // histogram); every history point has the same ones.
  if (last_report_)
    for (const auto& f : last_report_->features) {
      names.push_back(f.name);
      psi.push_back(Json::array());
    }
  for (const HistoryPoint& p : history_) {
    t.push_back(std::round(p.unix_seconds * 1000) / 1000);
    rows.push_back(p.rows_total);
    share.push_back(p.drift_share);
    prediction.push_back(p.prediction_psi);
    live.push_back(std::isnan(p.live_score) ? Json() : Json(p.live_score));
    for (size_t k = 0; k < psi.size() && k < p.feature_psi.size(); ++k)
      psi[k].push_back(p.feature_psi[k]);
  }
  return {
      {"t", t},       {"rows_total", rows}, {"drift_share", share}, {"prediction_psi", prediction},
      {"live", live}, {"features", names},  {"feature_psi", psi}};
}

Json LiveMonitor::report() {
  std::lock_guard<std::mutex> lock(mu_);
  if (rows_since_recompute_ > 0) recompute_locked();
  Json j = {{"model", model_},
            {"version", version_},
            {"rows_total", rows_total_},
            {"window", options_.window},
            {"rows_not_profiled", skipped_rows_.load(std::memory_order_relaxed)},
            {"max_rows_per_second", options_.max_rows_per_second},
            {"quality",
             {{"out_of_range", out_of_range_total_},
              {"out_of_vocabulary", out_of_vocabulary_total_},
              {"missing", missing_total_}}}};
  if (!reference_) {
    j["drift"] = {{"available", false},
                  {"reason", "the bundle has no reference profile (trained by an older Kiln)"}};
  } else if (last_report_) {
    j["drift"] = last_report_->to_json();
    j["drift"]["available"] = true;
    j["drift"]["windows_checked"] = windows_checked_;
    j["drift"]["windows_drifted"] = windows_drifted_;
    j["reference"] = {{"rows", reference_->rows}};
    if (!reference_->labels.empty()) {
      j["reference"]["labels"] = reference_->labels;
      j["reference"]["predicted_shares"] = reference_->predicted_shares;
      j["reference"]["class_prior"] = reference_->class_prior;
    }
  } else {
    j["drift"] = {{"available", true}, {"rows", 0}};
  }
  Json live = {{"labelled_rows", static_cast<int64_t>(labelled_scores_.size())},
               {"labelled_total", labelled_total_}};
  if (!labelled_scores_.empty()) live[labels_.empty() ? "mae" : "accuracy"] = live_score_locked();
  if (reference_score_ >= 0)
    live[labels_.empty() ? "reference_mae" : "reference_accuracy"] = reference_score_;
  if (!labelled_calibration_.empty()) live["calibration_error"] = live_calibration_error_locked();
  if (reference_calibration_error_ >= 0)
    live["reference_calibration_error"] = reference_calibration_error_;
  j["live"] = live;
  j["history"] = history_json_locked();
  return j;
}

}  // namespace kiln::serve
