// `kiln serve`: the inference server (Open Inference Protocol v2 over HTTP).
#include <pthread.h>
#include <signal.h>
#include <torch/torch.h>

#include <cctype>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <memory>
#include <thread>

#include "kiln/cli/commands.h"
#include "kiln/cli/flags.h"
#include "kiln/core/files.h"
#include "kiln/core/logging.h"
#include "kiln/serve/model_source.h"
#include "kiln/serve/server.h"

namespace kiln::cli {
namespace {

struct ServeArgs {
  std::vector<std::string> models;
  std::string host = "127.0.0.1";
  int port = 8000;
  int64_t max_batch = 64;
  int64_t max_delay_us = 2000;
  int64_t batch_gap_us = -1;
  int threads = 0;
  std::string api_key_file;
  int64_t poll_interval_ms = 1000;
  int64_t request_timeout_ms = 30000;
  int64_t max_body_bytes = 16 << 20;
  int io_threads = 1;
  bool access_log = false;
  bool no_prepack = false;
  std::string precision = "auto";
  std::vector<std::string> devices;
  int64_t monitor_window = 1000;
  std::string prediction_log = "hash";
  int64_t prediction_log_max_mb = 64;
  int prediction_log_files = 5;
  std::vector<std::string> routes;
  std::string route_key_header = "X-Kiln-Route-Key";
  int64_t idle_trim_ms = 2000;
};

Expected<std::string> read_api_key(const std::string& path) {
  KILN_ASSIGN_OR_RETURN(std::string key, read_file(path));
  while (!key.empty() && (key.back() == '\n' || key.back() == '\r' || key.back() == ' '))
    key.pop_back();
  if (key.empty()) return Status::InvalidArgument("--api-key-file " + path + ": empty key");
  return key;
}

int run_serve(const ServeArgs& a) {
  // SIGTERM/SIGINT are taken synchronously by this thread (sigwait), so they are blocked before
  // any server thread exists; every thread inherits the mask.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  // Compute threads: --threads, else half the cores (the rest parse and encode HTTP).
  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  const int threads = a.threads > 0 ? a.threads : std::max(1, cores / 2);
  torch::set_num_threads(threads);
  try {
    torch::set_num_interop_threads(1);
  } catch (const std::exception&) {
  }

  std::string api_key;
  if (!a.api_key_file.empty()) {
    Expected<std::string> key = read_api_key(a.api_key_file);
    if (!key.ok()) return report_failure(key.status());
    api_key = *key;
  }
  serve::ServerOptions options;
  options
      .http(serve::HttpServerOptions()
                .host(a.host)
                .port(a.port)
                .io_threads(a.io_threads)
                .max_body_bytes(a.max_body_bytes))
      .models(serve::ModelManagerOptions()
                  .batcher(serve::BatcherOptions()
                               .max_batch(a.max_batch)
                               .max_delay_us(a.max_delay_us)
                               .arrival_gap_us(a.batch_gap_us))
                  .poll_interval_ms(a.poll_interval_ms)
                  .prepack(!a.no_prepack)
                  .precision(a.precision)
                  .devices(a.devices))
      .api_key(api_key)
      .request_timeout_ms(a.request_timeout_ms)
      .access_log(a.access_log)
      .monitor_window(a.monitor_window)
      .idle_trim_ms(a.idle_trim_ms)
      .prediction_log(serve::PredictionLogOptions(kiln_home() / "logs")
                          .inputs(*serve::parse_prediction_log_inputs(a.prediction_log))
                          .max_bytes(a.prediction_log_max_mb << 20)
                          .max_files(a.prediction_log_files));
  std::vector<serve::RouteSpec> routes;
  for (const std::string& r : a.routes) {
    Expected<serve::RouteSpec> spec = serve::RouteSpec::parse(r);
    if (!spec.ok()) return report_failure(spec.status());
    routes.push_back(std::move(*spec));
  }
  std::string key_header = a.route_key_header;
  for (char& c : key_header) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  options.routes(std::move(routes))
      .route_key_header(key_header)
      .route_weights_dir(kiln_home() / "serve" / "routes");
  auto source = std::make_shared<serve::RegistryModelSource>();
  auto server = serve::InferenceServer::Create(options, source, a.models);
  if (!server.ok()) return report_failure(server.status());
  (*server)->start();
  std::printf("kiln serve: ready on http://%s:%u (models: %s)\n", a.host.c_str(),
              static_cast<unsigned>((*server)->port()), (*server)->describe_models().c_str());
  std::fflush(stdout);

  int sig = 0;
  sigwait(&signals, &sig);
  KILN_LOG_INFO("kiln serve: {} received; finishing in-flight requests", strsignal(sig));
  (*server)->shutdown(std::chrono::seconds(30));
  server->reset();
  std::printf("kiln serve: stopped\n");
  std::fflush(stdout);
  return 0;
}

}  // namespace

void register_serve_commands(CLI::App& app, int* exit_code) {
  auto args = std::make_shared<ServeArgs>();
  CLI::App* serve = app.add_subcommand("serve", kServeHelp);
  add_flag(*serve, Flag::kModel, &args->models)->required();
  add_flag(*serve, Flag::kHost, &args->host);
  add_flag(*serve, Flag::kPort, &args->port)->check(CLI::Range(0, 65535));
  add_flag(*serve, Flag::kMaxBatch, &args->max_batch)->check(CLI::PositiveNumber);
  add_flag(*serve, Flag::kMaxDelayUs, &args->max_delay_us)->check(CLI::NonNegativeNumber);
  add_flag(*serve, Flag::kThreads, &args->threads)
      ->check(CLI::NonNegativeNumber)
      ->description(
          "compute (intra-op) threads (default: half the cores; HTTP runs on --io-threads)");
  add_flag(*serve, Flag::kApiKeyFile, &args->api_key_file);
  add_flag(*serve, Flag::kPollIntervalMs, &args->poll_interval_ms)->check(CLI::NonNegativeNumber);
  add_flag(*serve, Flag::kRequestTimeoutMs, &args->request_timeout_ms)
      ->check(CLI::NonNegativeNumber);
  add_flag(*serve, Flag::kMaxBodyBytes, &args->max_body_bytes)->check(CLI::PositiveNumber);
  add_flag(*serve, Flag::kIoThreads, &args->io_threads)->check(CLI::PositiveNumber);
  add_flag(*serve, Flag::kAccessLog, &args->access_log);
  add_flag(*serve, Flag::kNoPrepack, &args->no_prepack);
  add_flag(*serve, Flag::kDevice, &args->devices)
      ->description(
          "where forwards run (repeatable): DEVICE for every model, NAME=DEVICE for one; DEVICE "
          "is auto (the first GPU when LibTorch sees one), cpu, cuda or cuda:N")
      ->default_str("auto");
  add_flag(*serve, Flag::kServePrecision, &args->precision)
      ->check(CLI::IsMember({"auto", "fp32", "bf16"}));
  add_flag(*serve, Flag::kBatchGapUs, &args->batch_gap_us)->check(CLI::Range(-1, 60000000));
  serve
      ->add_option("--monitor-window", args->monitor_window,
                   "rows in each version's live drift window and labelled rows for live "
                   "accuracy (GET .../monitor, POST .../feedback, kiln_drift_* metrics); 0: off")
      ->default_val(1000)
      ->check(CLI::NonNegativeNumber);
  serve
      ->add_option("--prediction-log", args->prediction_log,
                   "one JSON line per predicted row and per feedback item in "
                   "$KILN_HOME/logs/predictions-PORT.jsonl: hash (the row's inputs as the "
                   "XXH3-128 of its float32 bytes), inputs (the values), off (no log)")
      ->default_val("hash")
      ->check(CLI::IsMember({"off", "hash", "inputs"}));
  serve
      ->add_option("--prediction-log-max-mb", args->prediction_log_max_mb,
                   "size at which the prediction log is rotated (to .1, .2, ...), in MiB")
      ->default_val(64)
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 20));
  serve
      ->add_option("--prediction-log-files", args->prediction_log_files,
                   "rotated prediction log files kept (the oldest is deleted); disk use stays "
                   "under max-mb x (files + 1)")
      ->default_val(5)
      ->check(CLI::Range(0, 1000));
  serve->add_option("--route", args->routes,
                    "NAME=TARGET:WEIGHT,TARGET:WEIGHT[,shadow:TARGET]: serve NAME by splitting its "
                    "requests between served models by weight (sticky per --route-key-header), "
                    "and copying each to the shadow (compared, never returned); name the targets "
                    "with --model TARGET=REF. Repeatable");
  serve
      ->add_option("--route-key-header", args->route_key_header,
                   "request header whose value keeps a client on one route target (requests "
                   "without it are spread by weighted round robin)")
      ->default_val("X-Kiln-Route-Key");
  serve
      ->add_option("--idle-trim-ms", args->idle_trim_ms,
                   "after a burst, once no request came for this long, return the freed heap to "
                   "the kernel (resident memory falls back); 0: never")
      ->default_val(2000)
      ->check(CLI::NonNegativeNumber);
  serve->footer(
      "Classifiers also return \"probabilities\" and \"labels\" when the request names them in "
      "\"outputs\". SIGTERM/SIGINT: stop accepting, answer in-flight requests, exit 0.");
  serve->callback([args, exit_code] { *exit_code = run_serve(*args); });
}

}  // namespace kiln::cli
