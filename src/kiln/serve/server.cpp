#include "kiln/serve/server.h"

#include <torch/torch.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <charconv>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <limits>
#include <map>
#include <mutex>
#include <string>
#include <thread>

#include "kiln/core/files.h"
#include "kiln/core/idle_trim.h"
#include "kiln/core/logging.h"
#include "kiln/core/version.h"
#include "kiln/model/manifest.h"
#include "kiln/monitor/gpu_stats.h"
#include "kiln/monitor/metrics.h"
#include "kiln/monitor/process_stats.h"
#include "kiln/serve/dashboard_page.h"
#include "kiln/serve/live_monitor.h"
#include "kiln/serve/protocol.h"
#include "kiln/serve/router.h"

namespace kiln::serve {

namespace {

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

HttpResponse json_response(int status, std::string body) {
  return HttpResponse(status, std::move(body));
}

HttpResponse error_response(int status, const std::string& message) {
  std::string body = "{\"error\": ";
  append_json_string(&body, message);
  body += "}";
  return HttpResponse(status, std::move(body));
}

int http_status_for(const Status& s) {
  switch (s.code()) {
    case StatusCode::kInvalidArgument:
    case StatusCode::kAlreadyExists:
    case StatusCode::kFailedPrecondition:
      return 400;
    case StatusCode::kNotFound:
      return 404;
    case StatusCode::kUnavailable:
      return 503;
    default:
      return 500;
  }
}

std::vector<std::string_view> split_path(std::string_view target) {
  if (auto q = target.find('?'); q != std::string_view::npos) target = target.substr(0, q);
  std::vector<std::string_view> parts;
  parts.reserve(8);
  size_t i = 0;
  while (i < target.size()) {
    while (i < target.size() && target[i] == '/') ++i;
    size_t j = i;
    while (j < target.size() && target[j] != '/') ++j;
    if (j > i) parts.emplace_back(target.substr(i, j - i));
    i = j;
  }
  return parts;
}

/// The percent-decoded value of query parameter `name` in a request target ("" when absent).
std::string query_parameter(std::string_view target, std::string_view name) {
  const size_t q = target.find('?');
  if (q == std::string_view::npos) return {};
  std::string_view query = target.substr(q + 1);
  while (!query.empty()) {
    const size_t amp = query.find('&');
    const std::string_view pair = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view() : query.substr(amp + 1);
    const size_t eq = pair.find('=');
    if (pair.substr(0, eq) != name || eq == std::string_view::npos) continue;
    std::string value;
    const std::string_view raw = pair.substr(eq + 1);
    for (size_t i = 0; i < raw.size(); ++i) {
      if (raw[i] == '%' && i + 2 < raw.size() &&
          std::isxdigit(static_cast<unsigned char>(raw[i + 1])) &&
          std::isxdigit(static_cast<unsigned char>(raw[i + 2]))) {
        value += static_cast<char>(std::stoi(std::string(raw.substr(i + 1, 2)), nullptr, 16));
        i += 2;
      } else {
        value += raw[i] == '+' ? ' ' : raw[i];
      }
    }
    return value;
  }
  return {};
}

/// `target` with the value of any key= query parameter masked, for the access log.
std::string mask_key_parameter(std::string_view target) {
  std::string out(target);
  const size_t q = out.find('?');
  if (q == std::string::npos) return out;
  for (size_t at = out.find("key=", q); at != std::string::npos; at = out.find("key=", at + 1)) {
    if (out[at - 1] != '?' && out[at - 1] != '&') continue;
    const size_t end = std::min(out.find('&', at), out.size());
    out.replace(at + 4, end - at - 4, "***");
  }
  return out;
}

void append_shape(std::string* out, const std::vector<int64_t>& shape) {
  *out += "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) *out += ",";
    *out += std::to_string(shape[i]);
  }
  *out += "]";
}

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string s;
  append_shape(&s, shape);
  return s;
}

Json tensor_json(const std::string& name, const std::string& datatype,
                 const std::vector<int64_t>& sample_shape) {
  std::vector<int64_t> shape{-1};
  shape.insert(shape.end(), sample_shape.begin(), sample_shape.end());
  return Json{{"name", name}, {"datatype", datatype}, {"shape", shape}};
}

}  // namespace

/// The model versions the IO thread submitted requests to since its last round of socket
/// events (null on other threads).
thread_local std::vector<std::shared_ptr<ModelVersion>>* t_submitted = nullptr;

/// After a round of socket events (or a timeout): drives the batchers this IO thread submitted
/// to (see DynamicBatcher::dispatch); the answers it writes may resume pipelined requests, which
/// submit again: repeat. Returns when the earliest waiting batch is due.
Clock::time_point run_submitted() {
  thread_local std::vector<std::shared_ptr<ModelVersion>> submitted;
  thread_local std::vector<std::shared_ptr<ModelVersion>> waiting;
  if (!t_submitted) t_submitted = &submitted;
  Clock::time_point next = Clock::time_point::max();
  do {
    for (auto& mv : submitted)
      if (std::find(waiting.begin(), waiting.end(), mv) == waiting.end()) waiting.push_back(mv);
    submitted.clear();
    next = Clock::time_point::max();
    for (size_t i = 0; i < waiting.size();) {
      const Clock::time_point due = waiting[i]->batcher().dispatch();
      if (due == Clock::time_point::max()) {
        waiting.erase(waiting.begin() + static_cast<std::ptrdiff_t>(i));
      } else {
        next = std::min(next, due);
        ++i;
      }
    }
  } while (!submitted.empty());
  return next;
}

/// Hands a finished request's rows to its version's live monitor: the classes and confidences
/// (classifiers) or the predictions the model gave.
void record_live(LiveMonitor& live, const ModelSignature& sig, const std::string& id,
                 const std::vector<double>& monitored, const std::vector<double>& intensity,
                 const torch::Tensor& output) {
  // Plain loops over the float32 rows: a few LibTorch ops here would cost more than the
  // request's own parsing (tens of microseconds of dispatch each).
  const torch::Tensor out = output.scalar_type() == torch::kFloat32 && output.is_contiguous()
                                ? output
                                : output.to(torch::kFloat32).contiguous();
  const int64_t rows = out.size(0), width = out.numel() / std::max<int64_t>(1, rows);
  const float* p = out.data_ptr<float>();
  const bool profiled = !monitored.empty();
  // Scratch kept per batcher thread: no allocation per request.
  thread_local std::vector<int64_t> predicted;
  thread_local std::vector<double> confidence, predictions;
  predicted.clear();
  confidence.clear();
  predictions.clear();
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = p + r * width;
    if (sig.classifier()) {
      int64_t best = 0;
      for (int64_t k = 1; k < width; ++k)
        if (row[k] > row[best]) best = k;
      predicted.push_back(best);
      // The confidence enters only the drift window, which takes admitted (profiled) rows.
      if (profiled) {
        double denominator = 0;
        for (int64_t k = 0; k < width; ++k) denominator += std::exp(double(row[k]) - row[best]);
        confidence.push_back(1.0 / denominator);
      }
    } else {
      predictions.push_back(row[0]);
    }
  }
  live.record(id, monitored, intensity, predicted, confidence, predictions);
}

/// Hands a finished request's rows to the prediction log: what it captured of the inputs and the
/// first output as float32 (a copy; the log's writer thread formats them).
void log_predictions(PredictionLog& log, std::shared_ptr<const LoggedModel> model,
                     const std::string& id, LoggedInputs inputs, const torch::Tensor& output) {
  const torch::Tensor out = output.scalar_type() == torch::kFloat32 && output.is_contiguous()
                                ? output
                                : output.to(torch::kFloat32).contiguous();
  const float* p = out.data_ptr<float>();
  log.log_predictions(std::move(model), id, out.size(0), std::move(inputs),
                      std::vector<float>(p, p + out.numel()));
}

/// Metric children of one model version, resolved once (Family::with() takes a lock and a map
/// lookup; a request touches eight of them).
struct VersionMetrics {
  monitor::Counter* success = nullptr;
  monitor::Counter* client_error = nullptr;
  monitor::Counter* timeout = nullptr;
  monitor::Counter* server_error = nullptr;
  monitor::Counter* samples = nullptr;
  monitor::Histogram* queue_seconds = nullptr;
  monitor::Histogram* compute_seconds = nullptr;
  monitor::Histogram* request_seconds = nullptr;
  monitor::Histogram* batch_size = nullptr;
  monitor::Gauge* in_flight = nullptr;
  std::unique_ptr<LiveMonitor> live;          ///< null when live monitoring is off
  std::shared_ptr<const LoggedModel> logged;  ///< null when there is no prediction log
};

struct InferenceServer::Impl {
  ServerOptions options;
  std::unique_ptr<monitor::MetricsRegistry> metrics;
  std::unique_ptr<ModelManager> models;
  std::unique_ptr<HttpServer> http;
  std::unique_ptr<PredictionLog> prediction_log;  ///< null when off
  PredictionLogMetrics prediction_log_metrics;
  std::atomic<HttpServer*> http_ptr{nullptr};  // for the batchers' arrivals hint
  std::atomic<bool> stopping{false};
  std::atomic<bool> shut_down{false};
  std::atomic<uint64_t> requests_received{0};  ///< every request handled (the trimmer's activity)
  std::unique_ptr<IdleMemoryTrimmer> trimmer;  ///< null when ServerOptions::idle_trim_ms_ is 0
  monitor::Counter* memory_trims = nullptr;    ///< kiln_memory_trims_total
  monitor::Counter* memory_trimmed_bytes = nullptr;

  monitor::CounterFamily* requests = nullptr;
  monitor::CounterFamily* http_requests = nullptr;
  monitor::CounterFamily* samples = nullptr;
  monitor::HistogramFamily* queue_seconds = nullptr;
  monitor::HistogramFamily* compute_seconds = nullptr;
  monitor::HistogramFamily* request_seconds = nullptr;
  monitor::HistogramFamily* batch_size = nullptr;
  monitor::GaugeFamily* in_flight = nullptr;
  /// kiln_http_requests_total{code} children by status code, resolved on first use.
  std::array<std::atomic<monitor::Counter*>, 600> code_counters{};
  LiveMonitorMetrics live_metrics;
  /// --route: served names that split traffic between served models (fixed at start).
  std::map<std::string, std::unique_ptr<TrafficRouter>> routers;
  std::map<std::string, RouteSpec> routes_started_as;  ///< each route's --route spec
  std::mutex route_weights_mu;  ///< one POST /v2/routes at a time: set, then kept on disk
  /// Applies weights other servers sharing route_weights_dir_ keep (a cluster's replicas: a POST
  /// to any of them moves all), checking every poll interval; not started without routes.
  std::thread route_watcher;
  std::mutex route_watcher_mu;
  std::condition_variable route_watcher_cv;
  bool route_watcher_stop = false;

  void watch_kept_route_weights(std::chrono::milliseconds period) {
    std::map<std::string, std::filesystem::file_time_type> seen;
    std::map<std::string, std::string> warned;  // the last problem logged per route
    std::unique_lock<std::mutex> lock(route_watcher_mu);
    while (!route_watcher_cv.wait_for(lock, period, [this] { return route_watcher_stop; })) {
      lock.unlock();
      for (auto& [name, router] : routers) {
        const std::filesystem::path file = KeptRouteWeights::file(options.route_weights_dir_, name);
        std::error_code ec;
        const auto written = std::filesystem::last_write_time(file, ec);
        if (ec || (seen.count(name) && seen[name] == written)) continue;
        seen[name] = written;
        std::lock_guard<std::mutex> set_lock(route_weights_mu);
        Expected<std::optional<RouteSpec>> kept = KeptRouteWeights::load(
            options.route_weights_dir_, routes_started_as.at(name), /*remove_stale=*/false);
        if (!kept.ok()) {
          if (warned[name] != kept.status().message())
            KILN_LOG_WARN("route {}: kept weights ignored: {}", name, kept.status().message());
          warned[name] = kept.status().message();
          continue;
        }
        warned.erase(name);
        if (!*kept || (*kept)->to_string() == router->spec().to_string()) continue;
        if (router->set_weights((*kept)->weights()).ok())
          KILN_LOG_INFO("route {}: weights now {} (set through another server, kept in {})", name,
                        router->spec().to_string(), file.string());
      }
      lock.lock();
    }
  }
  monitor::CounterFamily* route_requests = nullptr;   // {route, target}
  monitor::CounterFamily* shadow_requests = nullptr;  // {route, target, outcome}
  const std::string id_prefix = [] {
    char buf[24];
    std::snprintf(buf, sizeof buf, "%08llx-",
                  static_cast<unsigned long long>(
                      std::chrono::system_clock::now().time_since_epoch().count() & 0xffffffffULL));
    return std::string(buf);
  }();
  std::atomic<uint64_t> id_counter{1};

  void init_metrics() {
    auto& m = *metrics;
    requests = &m.counter("kiln_inference_requests_total",
                          "Inference requests by model, version and outcome (success, "
                          "client_error, timeout, server_error).",
                          {"model", "version", "outcome"});
    samples =
        &m.counter("kiln_inference_samples_total",
                   "Samples (batch rows) inferred, by model and version.", {"model", "version"});
    const auto latency = monitor::exponential_buckets(0.00005, 2, 16);  // 50 us .. 1.6 s
    queue_seconds =
        &m.histogram("kiln_inference_queue_seconds", "Time requests waited in the batcher queue.",
                     {"model", "version"}, latency);
    compute_seconds = &m.histogram("kiln_inference_compute_seconds",
                                   "Forward time of the batch each request ran in.",
                                   {"model", "version"}, latency);
    request_seconds = &m.histogram("kiln_inference_request_duration_seconds",
                                   "Inference request time from parsed headers to response.",
                                   {"model", "version"}, latency);
    std::vector<double> sizes;
    for (int64_t b = 1; b <= 1024; b *= 2) sizes.push_back(static_cast<double>(b));
    batch_size = &m.histogram("kiln_inference_batch_size",
                              "Rows in the batch each request ran in (one observation per "
                              "request).",
                              {"model", "version"}, sizes);
    in_flight = &m.gauge("kiln_inference_requests_in_flight",
                         "Inference requests received and not yet answered.", {"model"});
    http_requests =
        &m.counter("kiln_http_requests_total", "HTTP requests by status code.", {"code"});
    m.counter("kiln_model_load_failures_total", "Model versions that failed to load.", {"model"});
    m.counter("kiln_model_loads_total", "Model versions loaded.", {"model"});
    monitor::register_process_metrics(m);
    monitor::register_gpu_metrics(m);  // absent where there is no NVIDIA driver
    const std::vector<std::string> mv_labels = {"model", "version"};
    live_metrics.drift_share = &m.gauge(
        "kiln_drift_share", "Share of input features drifted in the live window.", mv_labels);
    live_metrics.feature_psi =
        &m.gauge("kiln_feature_psi",
                 "Population stability index of a feature in the live window against the "
                 "training reference.",
                 {"model", "version", "feature"});
    live_metrics.prediction_psi = &m.gauge(
        "kiln_prediction_psi",
        "Population stability index of the predicted classes (or predictions) in the live window.",
        mv_labels);
    live_metrics.window_rows =
        &m.gauge("kiln_drift_window_rows", "Rows in the live drift window.", mv_labels);
    live_metrics.live_accuracy = &m.gauge(
        "kiln_live_accuracy", "Accuracy over the latest rows labelled by feedback.", mv_labels);
    live_metrics.live_labelled_rows =
        &m.gauge("kiln_live_labelled_rows", "Rows the live accuracy is computed over.", mv_labels);
    live_metrics.reference_accuracy =
        &m.gauge("kiln_reference_accuracy", "Test accuracy the bundle records.", mv_labels);
    live_metrics.live_calibration_error =
        &m.gauge("kiln_live_calibration_error",
                 "Expected calibration error (15 bins) of a classifier's top-1 confidence over "
                 "the latest rows labelled by feedback.",
                 mv_labels);
    live_metrics.reference_calibration_error =
        &m.gauge("kiln_reference_calibration_error", "Test calibration error the bundle records.",
                 mv_labels);
    live_metrics.quality_issues = &m.counter(
        "kiln_input_quality_issues_total",
        "Input values refused or flagged: non_finite (refused), out_of_range (outside the "
        "training range), out_of_vocabulary (a categorical code training never saw), missing "
        "(NaN an imputer fills).",
        {"model", "version", "kind"});
    route_requests = &m.counter("kiln_route_requests_total",
                                "Requests to a route (--route), by the target model they went to.",
                                {"route", "target"});
    shadow_requests = &m.counter(
        "kiln_shadow_requests_total",
        "Requests copied to a route's shadow, by outcome: agree or disagree (its answer against "
        "the one returned: arg-max class, or value), shadow_error, uncompared.",
        {"route", "target", "outcome"});
    live_metrics.feedback =
        &m.counter("kiln_feedback_total", "Ground-truth labels joined to predictions.", mv_labels);
    prediction_log_metrics.lines =
        &m.counter("kiln_prediction_log_lines_total",
                   "Lines (predicted rows and feedback items) written to the prediction log.")
             .with({});
    prediction_log_metrics.dropped =
        &m.counter("kiln_prediction_log_dropped_total",
                   "Predicted rows and feedback items not logged: the log's queue was full (the "
                   "disk is slower than the traffic), a line was longer than a log file may be, "
                   "or a write failed.")
             .with({});
    memory_trims = &m.counter("kiln_memory_trims_total",
                              "Times the server, idle after a burst, gave its freed heap back to "
                              "the kernel (--idle-trim-ms).")
                        .with({});
    memory_trimmed_bytes =
        &m.counter("kiln_memory_trimmed_bytes_total", "Resident bytes those trims gave back.")
             .with({});
  }

  /// A version's live monitor, with the reference profile and test accuracy its bundle records.
  std::unique_ptr<LiveMonitor> make_live_monitor(const ModelVersion& mv) {
    if (options.monitor_window_ <= 0) return nullptr;
    const std::filesystem::path dir = mv.resolved().bundle_dir;
    std::shared_ptr<const monitor::ReferenceProfile> reference;
    Expected<Json> profile = read_json_file(dir / monitor::kReferenceProfileFile);
    if (profile.ok()) {
      Expected<monitor::ReferenceProfile> parsed = monitor::ReferenceProfile::from_json(*profile);
      if (parsed.ok())
        reference = std::make_shared<const monitor::ReferenceProfile>(std::move(*parsed));
      else
        KILN_LOG_WARN("{}: reference profile unreadable, drift unavailable: {}", mv.name(),
                      parsed.status().message());
    }
    LiveMonitorOptions lo;
    lo.window = options.monitor_window_;
    return std::make_unique<LiveMonitor>(mv.name(), mv.version(), std::move(reference),
                                         mv.signature().labels, mv.test_score(), live_metrics, lo,
                                         mv.signature().reference_calibration_error);
  }

  /// A request id for a response whose request gave none: unique within this server's life.
  std::string generated_id() {
    return id_prefix + std::to_string(id_counter.fetch_add(1, std::memory_order_relaxed));
  }

  VersionMetrics& version_metrics(ModelVersion& mv) {
    return mv.attached<VersionMetrics>([&] {
      auto vm = std::make_unique<VersionMetrics>();
      const std::string& n = mv.name();
      const std::string& v = mv.version();
      vm->success = &requests->with({n, v, "success"});
      vm->client_error = &requests->with({n, v, "client_error"});
      vm->timeout = &requests->with({n, v, "timeout"});
      vm->server_error = &requests->with({n, v, "server_error"});
      vm->samples = &samples->with({n, v});
      vm->queue_seconds = &queue_seconds->with({n, v});
      vm->compute_seconds = &compute_seconds->with({n, v});
      vm->request_seconds = &request_seconds->with({n, v});
      vm->batch_size = &batch_size->with({n, v});
      vm->in_flight = &in_flight->with({n});
      vm->live = make_live_monitor(mv);
      if (prediction_log)
        vm->logged = std::make_shared<const LoggedModel>(LoggedModel{
            n, v,
            mv.signature().classifier() ? mv.signature().labels : std::vector<std::string>()});
      return vm.release();
    });
  }

  monitor::Counter& code_counter(int code) {
    if (code < 0 || code >= static_cast<int>(code_counters.size()))
      return http_requests->with({std::to_string(code)});
    monitor::Counter* c = code_counters[static_cast<size_t>(code)].load(std::memory_order_acquire);
    if (!c) {
      c = &http_requests->with({std::to_string(code)});
      code_counters[static_cast<size_t>(code)].store(c, std::memory_order_release);
    }
    return *c;
  }

  bool authorized(const HttpRequest& req) const {
    if (options.api_key_.empty()) return true;
    if (const std::string_view* auth = req.find_header("authorization")) {
      if (auth->rfind("Bearer ", 0) == 0 && auth->substr(7) == options.api_key_) return true;
    }
    const std::string_view* key = req.find_header("x-api-key");
    return key && *key == options.api_key_;
  }

  /// Sends a response: counts its status, writes the access log line when asked for.
  struct Send {
    Impl* impl;
    HttpReply reply;
    Clock::time_point t0;
    std::shared_ptr<const std::string> method_target;  // access log only: "METHOD\nTARGET"
    /// Routes: sees (and may add to) the response before it goes out.
    std::function<void(HttpResponse&)> inspect;
    /// false for a shadow's copy of a request: no client; nothing is counted, logged or sent.
    bool to_client = true;
    void operator()(HttpResponse&& res) const {
      if (inspect) inspect(res);
      if (!to_client) return;
      impl->code_counter(res.status).inc();
      if (method_target) {
        const size_t nl = method_target->find('\n');
        impl->log_access(method_target->substr(0, nl), method_target->substr(nl + 1),
                         static_cast<unsigned>(res.status), t0);
      }
      reply(std::move(res));
    }
  };

  void handle(const HttpRequest& req, HttpReply reply);
  void log_access(std::string_view method, std::string_view target, unsigned code,
                  Clock::time_point t0) const {
    if (!options.access_log_) return;
    std::string line = "{\"ts\": " +
                       std::to_string(std::chrono::duration<double>(
                                          std::chrono::system_clock::now().time_since_epoch())
                                          .count()) +
                       ", \"method\": ";
    append_json_string(&line, method);
    line += ", \"path\": ";
    append_json_string(&line, mask_key_parameter(target));
    line += ", \"status\": " + std::to_string(code) +
            ", \"ms\": " + std::to_string(seconds_since(t0) * 1000) + "}\n";
    std::fputs(line.c_str(), stderr);
  }
  void rejected(unsigned status, const std::string& reason) {
    code_counter(static_cast<int>(status)).inc();
    log_access("-", "- (" + reason + ")", status, Clock::now());
  }
  /// `fallback_id`: the id a request without one gets ("" : a generated one); a route gives the
  /// primary and its shadow the same, so feedback reaches both.
  void handle_infer(const HttpRequest& req, const std::string& name, const std::string& version,
                    const Send& send, const std::string& fallback_id = "");
  HttpResponse model_metadata(const ModelVersion& mv) const;
  /// Ground truth for remembered predictions; each item goes to the first of `monitors` that
  /// remembers its id (a route's targets), and also to `also` (its shadow) when given.
  HttpResponse handle_feedback(const std::vector<LiveMonitor*>& monitors, const std::string& body,
                               LiveMonitor* also = nullptr);
  void handle_route(const HttpRequest& req, TrafficRouter& router, const std::string& action,
                    bool whole_model, const Send& send);
  void route_infer(const HttpRequest& req, TrafficRouter& router, const Send& send);
  /// A route's split: {"name", "spec", "targets": [{"model", "weight"}], "shadow"}.
  static Json route_json(const TrafficRouter& router) {
    const RouteSpec spec = router.spec();
    Json targets = Json::array();
    for (const auto& t : spec.targets)
      targets.push_back({{"model", t.first}, {"weight", t.second}});
    Json j = {{"name", spec.name}, {"spec", spec.to_string()}, {"targets", targets}};
    if (!spec.shadow.empty()) j["shadow"] = spec.shadow;
    return j;
  }
  /// POST /v2/routes/NAME {"weights": {"stable": 75, "canary": 25}}: a rollout step. Every
  /// target needs a weight; the split changes at once for the next request.
  HttpResponse set_route_weights(TrafficRouter& router, const std::string& body) {
    Json doc = Json::parse(body, nullptr, false);
    if (doc.is_discarded() || !doc.is_object() || !doc.contains("weights") ||
        !doc["weights"].is_object())
      return error_response(400, "give {\"weights\": {\"TARGET\": WEIGHT, ...}}");
    const RouteSpec spec = router.spec();
    std::vector<int64_t> weights;
    for (const auto& t : spec.targets) {
      if (!doc["weights"].contains(t.first) || !doc["weights"][t.first].is_number_integer())
        return error_response(400, "weights." + t.first + ": an integer weight is needed");
      weights.push_back(doc["weights"][t.first].get<int64_t>());
    }
    if (doc["weights"].size() != spec.targets.size())
      return error_response(400, "weights: route \"" + spec.name + "\" has targets " +
                                     spec.to_string().substr(spec.name.size() + 1));
    std::lock_guard<std::mutex> lock(route_weights_mu);
    const RouteSpec before = router.spec();
    if (Status st = router.set_weights(weights); !st.ok())
      return error_response(400, "weights: " + st.message());
    if (!options.route_weights_dir_.empty()) {
      Status kept = KeptRouteWeights::save(options.route_weights_dir_,
                                           routes_started_as.at(spec.name), router.spec());
      if (!kept.ok()) {  // not kept, not applied: a restart would silently undo it
        (void)router.set_weights(before.weights());
        return error_response(500, "weights not changed: cannot keep them: " + kept.message());
      }
    }
    KILN_LOG_INFO("route {}: weights now {}", spec.name, router.spec().to_string());
    return json_response(200, route_json(router).dump());
  }
  /// GET /v2/monitor: every served model's current version and its live monitor report.
  Json monitor_overview() {
    Json models = Json::array();
    for (const std::string& name : this->models->names()) {
      std::shared_ptr<ModelVersion> mv = this->models->current(name);
      if (!mv) continue;
      VersionMetrics& vm = version_metrics(*mv);
      if (vm.live) {
        models.push_back(vm.live->report());
      } else {
        models.push_back({{"model", name}, {"version", mv->version()}, {"monitoring", false}});
      }
    }
    // The server's clock: the dashboard's rates divide by it, not by the browser's (which a
    // background tab or a headless browser's virtual time skews).
    const double now =
        std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
    return {{"models", models}, {"monitor_window", options.monitor_window_}, {"time", now}};
  }
  /// The version `version` ("" = current) of `name`, or an error response.
  std::shared_ptr<ModelVersion> find(const std::string& name, const std::string& version,
                                     HttpResponse* error) const {
    auto mv = models->current(name);
    if (!mv) {
      *error = error_response(404, "unknown model \"" + name + "\"");
      return nullptr;
    }
    if (!version.empty() && version != mv->version()) {
      *error = error_response(404, "model \"" + name + "\" has no version \"" + version +
                                       "\" ready (serving version " + mv->version() + ")");
      return nullptr;
    }
    return mv;
  }
};

void InferenceServer::Impl::handle(const HttpRequest& req, HttpReply reply) {
  requests_received.fetch_add(1, std::memory_order_relaxed);
  const auto t0 = Clock::now();
  const std::string_view method = req.method;
  const std::string_view target = req.target;
  // Every response goes through `send`: status counter and the optional access log.
  Send send{this, std::move(reply), t0, nullptr, {}, true};
  if (options.access_log_)
    send.method_target =
        std::make_shared<const std::string>(std::string(method) + "\n" + std::string(target));

  const std::vector<std::string_view> p = split_path(target);
  const bool get = method == "GET" || method == "HEAD";  // HEAD: the GET headers, no body
  const bool post = method == "POST";
  auto method_not_allowed = [&] {
    send(error_response(405, std::string(method) + " is not allowed on " + std::string(target)));
  };
  if (p.size() == 3 && p[0] == "v2" && p[1] == "health" && (p[2] == "live" || p[2] == "ready")) {
    if (!get) return method_not_allowed();
    if (p[2] == "live") return send(json_response(200, "{\"live\": true}"));
    if (stopping) return send(json_response(503, "{\"ready\": false}"));
    return send(json_response(200, "{\"ready\": true}"));
  }
  if (p.size() == 1 && p[0] == "dashboard") {
    if (!get) return method_not_allowed();
    // A browser cannot send the key as a header when it opens a page, so the page alone also
    // takes it as ?key=KEY (the access log masks it); the page then sends it as a header with
    // every request for data.
    if (!authorized(req) &&
        !(!options.api_key_.empty() && query_parameter(target, "key") == options.api_key_))
      return send(
          HttpResponse(401,
                       "<!doctype html><title>Kiln</title><p>Missing or wrong API key: open "
                       "/dashboard?key=KEY.</p>",
                       "text/html; charset=utf-8"));
    HttpResponse res(200, std::string(dashboard_page()), "text/html; charset=utf-8");
    res.headers.emplace_back("Cache-Control", "no-store");
    res.headers.emplace_back("Content-Security-Policy",
                             "default-src 'self'; script-src 'unsafe-inline'; "
                             "style-src 'unsafe-inline'; img-src 'self' data:");
    res.headers.emplace_back("Referrer-Policy", "no-referrer");
    return send(std::move(res));
  }
  if (!authorized(req)) {
    HttpResponse res = error_response(401,
                                      "missing or wrong API key (send 'Authorization: Bearer KEY' "
                                      "or 'X-API-Key: KEY')");
    res.headers.emplace_back("WWW-Authenticate", "Bearer");
    return send(std::move(res));
  }
  if (p.size() == 1 && p[0] == "metrics") {
    if (!get) return method_not_allowed();
    return send(HttpResponse(200, metrics->expose(), "text/plain; version=0.0.4; charset=utf-8"));
  }
  if (p.size() >= 2 && p.size() <= 3 && p[0] == "v2" && p[1] == "routes") {
    if (p.size() == 2) {
      if (!get) return method_not_allowed();
      Json all = Json::array();
      for (const auto& [name, router] : routers) all.push_back(route_json(*router));
      return send(json_response(200, Json{{"routes", all}}.dump()));
    }
    auto route = routers.find(std::string(p[2]));
    if (route == routers.end())
      return send(error_response(404, "no route \"" + std::string(p[2]) + "\""));
    if (get) return send(json_response(200, route_json(*route->second).dump()));
    if (!post) return method_not_allowed();
    return send(set_route_weights(*route->second, std::string(req.body)));
  }
  if (p.size() == 2 && p[0] == "v2" && p[1] == "monitor") {
    if (!get) return method_not_allowed();
    return send(json_response(200, monitor_overview().dump()));
  }
  if (p.size() == 1 && p[0] == "v2") {
    if (!get) return method_not_allowed();
    std::string body = "{\"name\": \"kiln\", \"version\": ";
    append_json_string(&body, kVersion);
    body += ", \"extensions\": [\"binary_tensor_data\"]}";
    return send(json_response(200, std::move(body)));
  }
  if (p.size() >= 3 && p[0] == "v2" && p[1] == "models") {
    const std::string name(p[2]);
    std::string version;
    size_t rest = 3;
    if (p.size() >= 5 && p[3] == "versions") {
      version = std::string(p[4]);
      rest = 5;
    }
    const std::string_view action = p.size() == rest + 1 ? p[rest] : std::string_view();
    if (auto route = routers.find(name); route != routers.end() && p.size() <= rest + 1) {
      if (!version.empty())
        return send(error_response(404, "\"" + name +
                                            "\" is a route: it has no versions (address one of "
                                            "its target models for that)"));
      if (action == "infer" ? !post : !(action == "feedback" ? post : get))
        return method_not_allowed();
      return handle_route(req, *route->second, std::string(action), p.size() == rest, send);
    }
    if (p.size() == rest + 1 && (action == "monitor" || action == "feedback")) {
      if (action == "monitor" ? !get : !post) return method_not_allowed();
      HttpResponse err;
      auto mv = find(name, version, &err);
      if (!mv) return send(std::move(err));
      VersionMetrics& vm = version_metrics(*mv);
      if (!vm.live)
        return send(error_response(404, "live monitoring is off (kiln serve --monitor-window 0)"));
      if (action == "monitor") return send(json_response(200, vm.live->report().dump()));
      return send(handle_feedback({vm.live.get()}, std::string(req.body)));
    }
    if (p.size() <= rest + 1 && (action.empty() || action == "ready" || action == "infer")) {
      if (action == "infer") {
        if (!post) return method_not_allowed();
        return handle_infer(req, name, version, send);
      }
      if (!get) return method_not_allowed();
      HttpResponse err;
      auto mv = find(name, version, &err);
      if (!mv) return send(std::move(err));
      if (action == "ready") {
        std::string body = "{\"name\": ";
        append_json_string(&body, name);
        body += ", \"ready\": true}";
        return send(json_response(200, std::move(body)));
      }
      return send(model_metadata(*mv));
    }
  }
  send(error_response(404, "no route for " + std::string(method) + " " + std::string(target)));
}

void InferenceServer::Impl::handle_route(const HttpRequest& req, TrafficRouter& router,
                                         const std::string& action, bool whole_model,
                                         const Send& send) {
  const RouteSpec spec = router.spec();
  if (action == "infer") return route_infer(req, router, send);
  std::vector<std::shared_ptr<ModelVersion>> targets;
  for (const auto& t : spec.targets) {
    HttpResponse err;
    auto mv = find(t.first, "", &err);
    if (!mv) return send(std::move(err));
    targets.push_back(std::move(mv));
  }
  std::shared_ptr<ModelVersion> shadow;
  if (!spec.shadow.empty()) {
    HttpResponse err;
    shadow = find(spec.shadow, "", &err);
  }
  Json route = {{"name", spec.name}, {"spec", spec.to_string()}, {"targets", Json::array()}};
  for (size_t i = 0; i < spec.targets.size(); ++i)
    route["targets"].push_back({{"model", spec.targets[i].first},
                                {"version", targets[i]->version()},
                                {"weight", spec.targets[i].second}});
  if (shadow) route["shadow"] = {{"model", spec.shadow}, {"version", shadow->version()}};
  if (whole_model) {
    // The first target's metadata under the route's name: every target takes the same input.
    HttpResponse meta = model_metadata(*targets.front());
    Json body = Json::parse(meta.body);
    body["name"] = spec.name;
    body["parameters"]["route"] = route;
    return send(json_response(200, body.dump()));
  }
  if (action == "ready") {
    std::string body = "{\"name\": ";
    append_json_string(&body, spec.name);
    body += ", \"ready\": true}";
    return send(json_response(200, std::move(body)));
  }
  std::vector<LiveMonitor*> monitors;
  Json reports = Json::array();
  for (auto& mv : targets)
    if (LiveMonitor* live = version_metrics(*mv).live.get()) {
      monitors.push_back(live);
      reports.push_back(live->report());
    }
  LiveMonitor* shadow_live = shadow ? version_metrics(*shadow).live.get() : nullptr;
  if (monitors.empty())
    return send(error_response(404, "live monitoring is off (kiln serve --monitor-window 0)"));
  if (action == "feedback")
    return send(handle_feedback(monitors, std::string(req.body), shadow_live));
  route["reports"] = reports;
  if (shadow_live) route["shadow_report"] = shadow_live->report();
  return send(json_response(200, route.dump()));
}

namespace {

/// The first output's per-row answer in an infer response body: the arg-max class (a row of
/// several values) or the value; empty when the body is not a JSON answer.
std::vector<double> answers_of(const std::string& body) {
  Json doc = Json::parse(body, nullptr, false);
  std::vector<double> out;
  if (doc.is_discarded() || !doc.contains("outputs") || doc["outputs"].empty()) return out;
  const Json& o = doc["outputs"][0];
  if (!o.contains("data") || !o.contains("shape") || !o["data"].is_array()) return out;
  const std::vector<int64_t> shape = o["shape"].get<std::vector<int64_t>>();
  const Json& data = o["data"];
  const int64_t rows = shape.empty() ? 1 : shape[0];
  if (rows <= 0 || data.empty() || data.size() % static_cast<size_t>(rows) != 0) return out;
  const size_t width = data.size() / static_cast<size_t>(rows);
  for (size_t r = 0; r < static_cast<size_t>(rows); ++r) {
    if (!data[r * width].is_number()) return {};
    size_t best = 0;
    for (size_t k = 1; k < width; ++k)
      if (data[r * width + k].get<double>() > data[r * width + best].get<double>()) best = k;
    out.push_back(width == 1 ? data[r * width].get<double>() : static_cast<double>(best));
  }
  return out;
}

/// A request's primary and shadow answers, compared once both are in. Thread-safe.
struct ShadowComparison {
  std::mutex mu;
  int arrived = 0;
  int primary_status = 0, shadow_status = 0;
  std::string primary_body, shadow_body;
  monitor::CounterFamily* outcomes = nullptr;
  std::string route, shadow;

  void arrive(bool is_primary, const HttpResponse& res) {
    std::unique_lock<std::mutex> lock(mu);
    (is_primary ? primary_status : shadow_status) = res.status;
    if (std::string_view(res.content_type) == "application/json")
      (is_primary ? primary_body : shadow_body) = res.body;
    if (++arrived < 2) return;
    lock.unlock();
    std::string outcome;
    if (shadow_status != 200) {
      outcome = "shadow_error";
    } else if (primary_status != 200) {
      outcome = "uncompared";
    } else {
      const std::vector<double> a = answers_of(primary_body), b = answers_of(shadow_body);
      if (a.empty() || a.size() != b.size()) {
        outcome = "uncompared";
      } else {
        bool same = true;
        for (size_t i = 0; i < a.size(); ++i)
          same &= std::fabs(a[i] - b[i]) <= 1e-6 * std::max(1.0, std::fabs(a[i]));
        outcome = same ? "agree" : "disagree";
      }
    }
    outcomes->with({route, shadow, outcome}).inc();
  }
};

}  // namespace

void InferenceServer::Impl::route_infer(const HttpRequest& req, TrafficRouter& router,
                                        const Send& send) {
  std::string_view key;
  if (const std::string_view* h = req.find_header(options.route_key_header_)) key = *h;
  const std::string target = router.pick(key);
  route_requests->with({router.name(), target}).inc();
  Send primary = send;
  std::shared_ptr<ShadowComparison> comparison;
  if (!router.shadow().empty()) {
    comparison = std::make_shared<ShadowComparison>();
    comparison->outcomes = shadow_requests;
    comparison->route = router.name();
    comparison->shadow = router.shadow();
  }
  primary.inspect = [target, comparison](HttpResponse& res) {
    res.headers.emplace_back("X-Kiln-Route-Target", target);
    if (comparison) comparison->arrive(true, res);
  };
  if (!comparison) return handle_infer(req, target, "", primary);
  const std::string id = generated_id();
  handle_infer(req, target, "", primary, id);
  // The shadow gets the same request; its answer is compared and logged, never returned.
  Send shadow{this,
              HttpReply(),
              Clock::now(),
              nullptr,
              [comparison](HttpResponse& res) { comparison->arrive(false, res); },
              false};
  handle_infer(req, router.shadow(), "", shadow, id);
}

HttpResponse InferenceServer::Impl::handle_feedback(const std::vector<LiveMonitor*>& monitors,
                                                    const std::string& body, LiveMonitor* also) {
  Json doc = Json::parse(body, nullptr, false);
  if (doc.is_discarded()) return error_response(400, "feedback: the body is not JSON");
  if (doc.is_object() && doc.contains("feedback")) doc = doc["feedback"];
  if (doc.is_object()) doc = Json::array({doc});
  if (!doc.is_array() || doc.empty())
    return error_response(400, "feedback: give {\"id\": ..., \"truth\": ...} or a list of them");
  Json results = Json::array();
  int64_t joined = 0, duplicate = 0, unknown = 0;
  for (size_t i = 0; i < doc.size(); ++i) {
    const Json& item = doc[i];
    const std::string where = "feedback[" + std::to_string(i) + "]";
    if (!item.is_object() || !item.contains("id") || !item["id"].is_string() ||
        !item.contains("truth"))
      return error_response(400, where + ": needs \"id\" (a string) and \"truth\"");
    const std::string id = item["id"].get<std::string>();
    Expected<std::string> r = Status::NotFound(id);
    LiveMonitor* live = monitors.front();
    for (LiveMonitor* m : monitors) {
      r = m->feedback(id, item["truth"]);
      live = m;
      if (r.ok() || r.status().code() != StatusCode::kNotFound) break;
    }
    if (!r.ok() && r.status().code() == StatusCode::kInvalidArgument)
      return error_response(400, where + "." + r.status().message());
    if (also) (void)also->feedback(id, item["truth"]);  // the shadow's live accuracy
    const std::string outcome = r.ok() ? *r : "unknown";
    joined += outcome == "joined";
    duplicate += outcome == "duplicate";
    unknown += outcome == "unknown";
    results.push_back({{"id", item["id"]}, {"result", outcome}});
    if (prediction_log)
      prediction_log->log_feedback(live->model(), live->version(), id, item["truth"].dump());
  }
  Json answer = {
      {"joined", joined}, {"duplicate", duplicate}, {"unknown", unknown}, {"results", results}};
  return json_response(200, answer.dump());
}

HttpResponse InferenceServer::Impl::model_metadata(const ModelVersion& mv) const {
  const ModelSignature& sig = mv.signature();
  Json outputs = Json::array();
  for (const auto& o : sig.outputs) outputs.push_back(tensor_json(o.name, "FP32", o.shape));
  if (sig.classifier()) {
    outputs.push_back(tensor_json("probabilities", "FP32", sig.outputs[0].shape));
    outputs.push_back(tensor_json("labels", "BYTES", {}));
  }
  Json body{{"name", mv.name()},
            {"versions", Json::array({mv.version()})},
            {"platform", "pytorch_torchscript"},
            {"inputs", Json::array({tensor_json(sig.input.name, "FP32", sig.input.shape)})},
            {"outputs", outputs}};
  Json params{{"max_batch_size", options.models_.batcher_.max_batch_},
              {"precision", mv.precision()},
              {"device", mv.device()}};
  // Served from the registry (NAME@VERSION or NAME@ALIAS): which version, for rollouts.
  if (mv.resolved().version > 0) params["registry_version"] = mv.resolved().version;
  if (!sig.task.empty()) params["task"] = sig.task;
  if (!sig.labels.empty()) params["labels"] = sig.labels;
  // A table's columns in input order; a categorical one takes its category's index.
  if (sig.features.is_array()) params["features"] = sig.features;
  if (sig.calibration.is_object()) params["calibration"] = sig.calibration;
  body["parameters"] = params;
  return json_response(200, body.dump());
}

void InferenceServer::Impl::handle_infer(const HttpRequest& req, const std::string& name,
                                         const std::string& version, const Send& send,
                                         const std::string& fallback_id) {
  const auto t0 = Clock::now();
  HttpResponse err;
  std::shared_ptr<ModelVersion> mv = find(name, version, &err);
  if (!mv) return send(std::move(err));
  VersionMetrics& vm = version_metrics(*mv);
  auto fail = [&](int status, monitor::Counter* outcome, const std::string& message) {
    outcome->inc();
    send(error_response(status, message));
  };

  size_t json_length = req.body.size();
  if (const std::string_view* h = req.find_header("inference-header-content-length")) {
    size_t n = 0;
    auto r = std::from_chars(h->data(), h->data() + h->size(), n);
    if (h->empty() || r.ec != std::errc() || r.ptr != h->data() + h->size())
      return fail(400, vm.client_error, "Inference-Header-Content-Length: not a number");
    json_length = n;
  }
  Expected<InferRequest> parsed = parse_infer_request(req.body, json_length);
  if (!parsed.ok()) return fail(400, vm.client_error, parsed.status().message());
  InferRequest& r = *parsed;
  const ModelSignature& sig = mv->signature();
  if (r.inputs.size() != 1)
    return fail(400, vm.client_error,
                "inputs: model \"" + name + "\" takes 1 input (\"" + sig.input.name + "\"), got " +
                    std::to_string(r.inputs.size()));
  InputTensor& in = r.inputs[0];
  if (in.name != sig.input.name)
    return fail(400, vm.client_error,
                "inputs[0].name: \"" + in.name + "\" is not an input of model \"" + name +
                    "\" (it takes \"" + sig.input.name + "\")");
  std::vector<int64_t> want{-1};
  want.insert(want.end(), sig.input.shape.begin(), sig.input.shape.end());
  auto want_text = [&] {
    return shape_text(want) + (sig.input.shape.size() > 1
                                   ? " (or [-1," + std::to_string(sig.sample_numel) + "] flattened)"
                                   : "");
  };
  if (in.shape.empty())
    return fail(400, vm.client_error,
                "inputs[0].shape: [] is not batched; the model takes " + want_text());
  const int64_t rows = in.shape[0];
  int64_t per_row = 1;
  for (size_t i = 1; i < in.shape.size(); ++i)
    if (__builtin_mul_overflow(per_row, in.shape[i], &per_row))
      return fail(400, vm.client_error,
                  "inputs[0].shape: " + shape_text(in.shape) + " is too large");
  const bool exact =
      in.shape.size() == sig.input.shape.size() + 1 &&
      std::equal(sig.input.shape.begin(), sig.input.shape.end(), in.shape.begin() + 1);
  const bool flat = in.shape.size() == 2 && per_row == sig.sample_numel;
  if (!exact && !flat)
    return fail(
        400, vm.client_error,
        "inputs[0].shape: " + shape_text(in.shape) + " does not match the model's " + want_text());
  if (rows < 1)
    return fail(400, vm.client_error, "inputs[0].shape: the batch dimension must be at least 1");
  int64_t elements = 0;
  if (__builtin_mul_overflow(rows, per_row, &elements))
    return fail(400, vm.client_error, "inputs[0].shape: " + shape_text(in.shape) + " is too large");
  if (static_cast<int64_t>(in.data.size()) != elements)
    return fail(400, vm.client_error,
                "inputs[0]: shape " + shape_text(in.shape) + " holds " + std::to_string(elements) +
                    " elements, the data has " + std::to_string(in.data.size()));
  if (in.datatype == "BYTES") {
    // A table's columns as text: numbers for numeric columns ("" is missing), category names
    // for categorical ones (their codes; "" is the missing category).
    if (sig.columns.size() == 0 || static_cast<int64_t>(sig.columns.size()) != per_row)
      return fail(400, vm.client_error,
                  "inputs[0].datatype: BYTES is for table models (each column as text); model \"" +
                      name + "\" takes FP32");
    for (int64_t k = 0; k < elements; ++k) {
      const size_t column = static_cast<size_t>(k % per_row);
      const std::string& text = in.text[static_cast<size_t>(k)];
      float& value = in.data[static_cast<size_t>(k)];
      if (sig.columns.categorical(column)) {
        value = sig.columns.code(column, text, text.empty());
        continue;
      }
      if (text.empty()) {
        value = std::numeric_limits<float>::quiet_NaN();
        continue;
      }
      const auto parsed = std::from_chars(text.data(), text.data() + text.size(), value);
      if (parsed.ec != std::errc() || parsed.ptr != text.data() + text.size())
        return fail(400, vm.client_error,
                    "inputs[0].data[" + std::to_string(k) + "] (row " +
                        std::to_string(k / per_row) + ", column '" + sig.columns.name(column) +
                        "'): \"" + text.substr(0, 40) + "\" is not a number");
    }
  } else if (sig.columns.any_categorical() && static_cast<int64_t>(sig.columns.size()) == per_row) {
    // FP32 for a table with categorical columns: those take codes (BYTES converted them above).
    for (int64_t row = 0; row < rows; ++row)
      for (size_t column : sig.columns.categorical_columns()) {
        const int64_t k = row * per_row + static_cast<int64_t>(column);
        if (std::string why = sig.columns.code_error(column, in.data[static_cast<size_t>(k)]);
            !why.empty())
          return fail(400, vm.client_error,
                      "inputs[0].data[" + std::to_string(k) + "] (row " + std::to_string(row) +
                          "): " + why);
      }
  }
  if (Status values = model::check_input_values(in.data.data(), rows, per_row, sig.accepts_missing);
      !values.ok()) {
    if (vm.live) vm.live->count_quality_issue("non_finite");
    return fail(400, vm.client_error, "inputs[0]: " + values.message());
  }
  const int64_t max_batch = options.models_.batcher_.max_batch_;
  if (rows > max_batch)
    return fail(400, vm.client_error,
                "inputs[0].shape: a batch of " + std::to_string(rows) +
                    " rows exceeds the server's max batch of " + std::to_string(max_batch));
  // Which outputs, in which form.
  struct Out {
    std::string name;
    int index;  // signature output index; -1 probabilities, -2 labels
    bool binary;
  };
  std::vector<Out> outs;
  if (r.outputs.empty()) {
    for (size_t i = 0; i < sig.outputs.size(); ++i)
      outs.push_back({sig.outputs[i].name, static_cast<int>(i), r.binary_data_output});
  } else {
    for (size_t k = 0; k < r.outputs.size(); ++k) {
      const RequestedOutput& o = r.outputs[k];
      int index = -100;
      for (size_t i = 0; i < sig.outputs.size(); ++i)
        if (sig.outputs[i].name == o.name) index = static_cast<int>(i);
      if (sig.classifier() && o.name == "probabilities") index = -1;
      if (sig.classifier() && o.name == "labels") index = -2;
      if (index == -100) {
        std::string known;
        for (const auto& so : sig.outputs)
          known += (known.empty() ? "\"" : ", \"") + so.name + "\"";
        if (sig.classifier()) known += ", \"probabilities\", \"labels\"";
        return fail(400, vm.client_error,
                    "outputs[" + std::to_string(k) + "].name: model \"" + name +
                        "\" has no output \"" + o.name + "\" (it has " + known + ")");
      }
      outs.push_back({o.name, index, o.binary || r.binary_data_output});
    }
  }

  // Live monitoring: the monitored features are taken here, before the rows go to the batch.
  std::vector<double> monitored, intensity;
  if (vm.live && vm.live->admit(rows))
    vm.live->extract(in.data.data(), rows, &monitored, &intensity);
  if (!r.has_id) r.id = fallback_id.empty() ? generated_id() : fallback_id;
  LoggedInputs logged_inputs;  // what the prediction log keeps of the rows (hashes or values)
  if (vm.logged)
    logged_inputs = prediction_log->capture_inputs(in.data.data(), rows,
                                                   static_cast<int64_t>(in.data.size()) / rows);
  BatchJob job;
  job.rows = rows;
  job.data = std::move(in.data);
  if (options.request_timeout_ms_ > 0)
    job.deadline = Clock::now() + std::chrono::milliseconds(options.request_timeout_ms_);
  vm.in_flight->inc();
  job.done = [mv, vmp = &vm, send, outs = std::move(outs), id = std::move(r.id),
              monitored = std::move(monitored), intensity = std::move(intensity),
              logged_inputs = std::move(logged_inputs), log = prediction_log.get(),
              t0](BatchResult&& result) mutable {
    const VersionMetrics& vm = *vmp;
    const std::string& name = mv->name();
    const std::string& v = mv->version();
    vm.in_flight->dec();
    if (!result.status.ok()) {
      const bool timeout = result.status.code() == StatusCode::kUnavailable;
      (timeout ? vm.timeout : vm.server_error)->inc();
      vm.request_seconds->observe(seconds_since(t0));
      return send(error_response(http_status_for(result.status), result.status.message()));
    }
    const ModelSignature& sig = mv->signature();
    std::string body;
    std::string binary;
    body.reserve(256 + 16 * static_cast<size_t>(result.outputs[0].numel()));
    body += "{\"model_name\": ";
    append_json_string(&body, name);
    body += ", \"model_version\": ";
    append_json_string(&body, v);
    body += ", \"id\": ";
    append_json_string(&body, id);
    body += ", \"outputs\": [";
    for (size_t k = 0; k < outs.size(); ++k) {
      const Out& o = outs[k];
      if (k) body += ", ";
      body += "{\"name\": ";
      append_json_string(&body, o.name);
      if (o.index == -2) {  // labels: arg-max class names
        torch::Tensor idx = result.outputs[0].argmax(1).contiguous();
        const int64_t n = idx.size(0);
        body += ", \"datatype\": \"BYTES\", \"shape\": [" + std::to_string(n) + "]";
        const int64_t* ip = idx.data_ptr<int64_t>();
        if (o.binary) {
          const size_t before = binary.size();
          for (int64_t i = 0; i < n; ++i) {
            const std::string& l = sig.labels[static_cast<size_t>(ip[i])];
            const uint32_t len = static_cast<uint32_t>(l.size());
            binary.append(reinterpret_cast<const char*>(&len), 4);
            binary += l;
          }
          body +=
              ", \"parameters\": {\"binary_data_size\": " + std::to_string(binary.size() - before) +
              "}}";
        } else {
          body += ", \"data\": [";
          for (int64_t i = 0; i < n; ++i) {
            if (i) body += ",";
            append_json_string(&body, sig.labels[static_cast<size_t>(ip[i])]);
          }
          body += "]}";
        }
        continue;
      }
      torch::Tensor t = o.index == -1 ? torch::softmax(result.outputs[0], 1).contiguous()
                                      : result.outputs[static_cast<size_t>(o.index)].contiguous();
      body += ", \"datatype\": \"FP32\", \"shape\": ";
      append_shape(&body, t.sizes().vec());
      const float* fp = t.data_ptr<float>();
      const int64_t n = t.numel();
      if (o.binary) {
        binary.append(reinterpret_cast<const char*>(fp), static_cast<size_t>(n) * sizeof(float));
        body += ", \"parameters\": {\"binary_data_size\": " +
                std::to_string(static_cast<size_t>(n) * sizeof(float)) + "}}";
      } else {
        body += ", \"data\": [";
        for (int64_t i = 0; i < n; ++i) {
          if (i) body += ",";
          append_json_float(&body, fp[i]);
        }
        body += "]}";
      }
    }
    body += "]}";
    HttpResponse res;
    if (binary.empty() &&
        std::none_of(outs.begin(), outs.end(), [](const Out& o) { return o.binary; })) {
      res.body = std::move(body);
    } else {
      res.content_type = "application/octet-stream";
      res.headers.emplace_back("Inference-Header-Content-Length", std::to_string(body.size()));
      res.body = std::move(body) + binary;
    }
    if (vm.live) record_live(*vm.live, sig, id, monitored, intensity, result.outputs[0]);
    if (vm.logged)
      log_predictions(*log, vm.logged, id, std::move(logged_inputs), result.outputs[0]);
    vm.success->inc();
    vm.samples->inc(static_cast<double>(result.outputs[0].size(0)));
    vm.queue_seconds->observe(result.queue_seconds);
    vm.compute_seconds->observe(result.compute_seconds);
    vm.batch_size->observe(static_cast<double>(result.batch_size));
    vm.request_seconds->observe(seconds_since(t0));
    send(std::move(res));
  };
  // On an IO thread the batch is dispatched after the round of socket events (run_submitted);
  // anywhere else the batcher's worker is woken as usual.
  Status s;
  if (t_submitted) {
    s = mv->batcher().submit_deferred(std::move(job));
    if (s.ok() && (t_submitted->empty() || t_submitted->back() != mv)) t_submitted->push_back(mv);
  } else {
    s = mv->batcher().submit(std::move(job));
  }
  if (!s.ok()) {
    vm.in_flight->dec();
    fail(503, vm.server_error, s.message());
  }
}

InferenceServer::InferenceServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

InferenceServer::~InferenceServer() { shutdown(std::chrono::milliseconds(0)); }

Expected<std::unique_ptr<InferenceServer>> InferenceServer::Create(
    const ServerOptions& options, std::shared_ptr<ModelSource> source,
    const std::vector<std::string>& refs) {
  if (options.models_.batcher_.max_batch_ < 1)
    return Status::InvalidArgument("--max-batch must be at least 1");
  if (options.models_.batcher_.max_delay_us_ < 0)
    return Status::InvalidArgument("--max-delay-us must not be negative");
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  Impl* self = impl.get();
  impl->options.models_.batcher_.arrivals(
      std::make_shared<std::atomic<int64_t>>(0), [self]() -> int64_t {
        HttpServer* http = self->http_ptr.load(std::memory_order_acquire);
        return http ? http->open_connections() : 0;
      });
  impl->metrics = std::make_unique<monitor::MetricsRegistry>();
  impl->init_metrics();
  KILN_ASSIGN_OR_RETURN(
      impl->models,
      ModelManager::Create(std::move(source), refs, impl->options.models_, impl->metrics.get()));
  Impl* raw = impl.get();
  KILN_ASSIGN_OR_RETURN(
      impl->http,
      HttpServer::Create(
          HttpServerOptions(options.http_).after_events(run_submitted),
          [raw](const HttpRequest& req, HttpReply reply) { raw->handle(req, std::move(reply)); },
          [raw](unsigned status, const std::string& reason) { raw->rejected(status, reason); }));
  impl->http_ptr.store(impl->http.get(), std::memory_order_release);
  for (const RouteSpec& route : options.routes_) {
    const std::string where = "--route " + route.to_string();
    if (impl->models->current(route.name) || impl->routers.count(route.name))
      return Status::InvalidArgument(where + ": \"" + route.name +
                                     "\" is already a served model or route");
    std::vector<std::string> needed;
    for (const auto& t : route.targets) needed.push_back(t.first);
    if (!route.shadow.empty()) needed.push_back(route.shadow);
    for (const std::string& t : needed)
      if (!impl->models->current(t))
        return Status::InvalidArgument(where + ": no served model \"" + t +
                                       "\" (serve it with --model " + t + "=REF)");
    auto router = std::make_unique<TrafficRouter>(route);
    if (!options.route_weights_dir_.empty()) {
      KILN_ASSIGN_OR_RETURN(std::optional<RouteSpec> kept,
                            KeptRouteWeights::load(options.route_weights_dir_, route));
      if (kept) {
        KILN_RETURN_IF_ERROR(router->set_weights(kept->weights()));
        KILN_LOG_INFO("route {}: weights {} restored from {} (set by POST /v2/routes/{})",
                      route.name, kept->to_string(),
                      KeptRouteWeights::file(options.route_weights_dir_, route.name).string(),
                      route.name);
      }
    }
    impl->routes_started_as.emplace(route.name, route);
    impl->routers.emplace(route.name, std::move(router));
  }
  if (!options.prediction_log_.dir_.empty() &&
      options.prediction_log_.inputs_ != PredictionLogInputs::kOff) {
    PredictionLogOptions lo = options.prediction_log_;
    lo.file_name("predictions-" + std::to_string(impl->http->port()) + ".jsonl");
    KILN_ASSIGN_OR_RETURN(impl->prediction_log,
                          PredictionLog::Create(lo, impl->prediction_log_metrics));
  }
  return std::unique_ptr<InferenceServer>(new InferenceServer(std::move(impl)));
}

uint16_t InferenceServer::port() const { return impl_->http->port(); }

ModelManager& InferenceServer::models() { return *impl_->models; }

std::string InferenceServer::describe_models() const {
  std::string out;
  for (const std::string& name : impl_->models->names()) {
    auto mv = impl_->models->current(name);
    if (!mv) continue;
    out += (out.empty() ? "" : ", ") + name + ":" + mv->version();
  }
  return out;
}

void InferenceServer::start() {
  impl_->http->start();
  impl_->models->start_polling();
  const int64_t poll_ms = impl_->options.models_.poll_interval_ms_;
  if (!impl_->routers.empty() && !impl_->options.route_weights_dir_.empty() && poll_ms > 0) {
    Impl* impl = impl_.get();
    impl_->route_watcher = std::thread(
        [impl, poll_ms] { impl->watch_kept_route_weights(std::chrono::milliseconds(poll_ms)); });
  }
  if (impl_->options.idle_trim_ms_ > 0) {
    Impl* impl = impl_.get();
    impl_->trimmer = std::make_unique<IdleMemoryTrimmer>(
        [impl] { return impl->requests_received.load(std::memory_order_relaxed); },
        std::chrono::milliseconds(impl_->options.idle_trim_ms_),
        [impl](int64_t released) {
          impl->memory_trims->inc();
          impl->memory_trimmed_bytes->inc(static_cast<double>(released));
          KILN_LOG_DEBUG("idle: gave {} MiB of freed heap back to the kernel",
                         released / (1 << 20));
        });
  }
}

void InferenceServer::shutdown(std::chrono::milliseconds grace) {
  if (!impl_ || impl_->shut_down.exchange(true)) return;
  impl_->stopping = true;
  impl_->trimmer.reset();
  if (impl_->route_watcher.joinable()) {
    {
      std::lock_guard<std::mutex> lock(impl_->route_watcher_mu);
      impl_->route_watcher_stop = true;
    }
    impl_->route_watcher_cv.notify_all();
    impl_->route_watcher.join();
  }
  impl_->http->stop_accepting();
  if (!impl_->http->wait_idle(grace))
    KILN_LOG_WARN("shutdown: {} requests still in flight after {} ms", impl_->http->in_flight(),
                  grace.count());
  impl_->models->stop();  // drains the batchers: queued jobs still reply
  impl_->http->wait_idle(std::chrono::milliseconds(1000));
  impl_->http->stop();
  if (impl_->prediction_log) impl_->prediction_log->close();  // writes every queued line
}

}  // namespace kiln::serve
