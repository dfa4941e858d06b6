#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "kiln/core/expected.h"
#include "kiln/serve/http_server.h"
#include "kiln/serve/model_manager.h"
#include "kiln/serve/prediction_log.h"
#include "kiln/serve/router.h"

namespace kiln::monitor {
class MetricsRegistry;
}

namespace kiln::serve {

/// Options of InferenceServer (the `kiln serve` flags).
struct ServerOptions {
  ServerOptions& http(const HttpServerOptions& v) {
    http_ = v;
    return *this;
  }
  ServerOptions& models(const ModelManagerOptions& v) {
    models_ = v;
    return *this;
  }
  ServerOptions& api_key(std::string v) {
    api_key_ = std::move(v);
    return *this;
  }
  ServerOptions& request_timeout_ms(int64_t v) {
    request_timeout_ms_ = v;
    return *this;
  }
  ServerOptions& access_log(bool v) {
    access_log_ = v;
    return *this;
  }
  /// Rows in each version's live drift window (and labelled rows for live accuracy); 0 turns
  /// live monitoring off.
  ServerOptions& monitor_window(int64_t v) {
    monitor_window_ = v;
    return *this;
  }
  /// The prediction log: one line per inference row and per feedback item. On when its dir_ is
  /// set and its inputs_ is not off; the server names the file `predictions-PORT.jsonl` (PORT
  /// the bound port), so servers sharing a KILN_HOME write separate files.
  ServerOptions& prediction_log(const PredictionLogOptions& v) {
    prediction_log_ = v;
    return *this;
  }
  /// Served names that split traffic between served models (canary, shadow).
  ServerOptions& routes(std::vector<RouteSpec> v) {
    routes_ = std::move(v);
    return *this;
  }
  /// The request header whose value keeps a client on one route target (lower case).
  ServerOptions& route_key_header(std::string v) {
    route_key_header_ = std::move(v);
    return *this;
  }
  /// Where POSTed route weights are kept (KeptRouteWeights: DIR/ROUTE.json), so that a restarted
  /// server resumes them while its --route flag is unchanged; empty: not kept.
  ServerOptions& route_weights_dir(std::filesystem::path v) {
    route_weights_dir_ = std::move(v);
    return *this;
  }
  /// After a burst, once no request came for this long, return the freed heap to the kernel
  /// (IdleMemoryTrimmer); 0: never.
  ServerOptions& idle_trim_ms(int64_t v) {
    idle_trim_ms_ = v;
    return *this;
  }
  HttpServerOptions http_;
  ModelManagerOptions models_;
  std::vector<RouteSpec> routes_;
  std::filesystem::path route_weights_dir_;
  std::string route_key_header_ = "x-kiln-route-key";
  std::string api_key_;                 ///< empty: no authentication
  int64_t request_timeout_ms_ = 30000;  ///< longest a request may wait before its batch runs
  bool access_log_ = false;             ///< one JSON line per request on stderr
  int64_t monitor_window_ = 1000;
  int64_t idle_trim_ms_ = 2000;
  PredictionLogOptions prediction_log_;  ///< default: no directory, no log
};

/// `kiln serve`: the Open Inference Protocol v2 over HTTP (KServe/Triton REST) for the models of a
/// ModelManager, plus GET /metrics (Prometheus text). Routes:
///   GET  /v2/health/live, /v2/health/ready, /v2
///   GET  /v2/models/{name}[/versions/{v}], .../ready
///   POST /v2/models/{name}[/versions/{v}]/infer   (JSON, or the binary tensor data extension;
///        every response carries an id: the request's, or a generated one)
///   GET  /v2/models/{name}[/versions/{v}]/monitor  (live drift, quality, live accuracy: JSON)
///   POST /v2/models/{name}[/versions/{v}]/feedback {"id": ..., "truth": ...} or a list of them
///        (ground truth joined to the remembered prediction; a batch's rows are ID#0, ID#1, ...)
///   GET  /metrics, /v2/monitor (every model's monitor report), /dashboard (the web page)
/// A route (ServerOptions::routes) is a served name: its infer requests go to one of its target
/// models by weight (sticky per route_key_header value), a copy to its shadow (compared, never
/// returned); its metadata, ready, monitor and feedback routes cover its targets.
/// With a prediction log (ServerOptions::prediction_log), every answered row and every feedback
/// item is also a line in it.
/// Errors are {"error": "..."} with 400 (bad request part), 401 (API key), 404 (unknown model,
/// version or route), 405, 413 (body too large), 503 (timed out, shutting down), 500.
/// Thread-safe; owns its HTTP server and model manager.
///
///   KILN_ASSIGN_OR_RETURN(auto srv, InferenceServer::Create(opts, source, {"runs/x/bundle"}));
///   srv->start();                 // serving; srv->port() is bound
///   srv->shutdown(30s);           // stop accepting, finish in-flight requests, drain, stop
class InferenceServer {
 public:
  static Expected<std::unique_ptr<InferenceServer>> Create(const ServerOptions& options,
                                                           std::shared_ptr<ModelSource> source,
                                                           const std::vector<std::string>& refs);
  ~InferenceServer();
  uint16_t port() const;
  /// Served model names and versions, e.g. "mlp:1, iris:3".
  std::string describe_models() const;
  /// Starts the IO threads and the registry poll.
  void start();
  /// Graceful stop: not ready, no new connections, in-flight requests answered (up to `grace`),
  /// batchers drained, threads joined. Blocks. Idempotent.
  void shutdown(std::chrono::milliseconds grace);
  /// The model manager (e.g. to poll at once in tests).
  ModelManager& models();

  struct Impl;

 private:
  explicit InferenceServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace kiln::serve
