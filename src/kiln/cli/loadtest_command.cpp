// `kiln loadtest`: an open-loop (coordinated-omission-safe) or closed-loop HTTP load generator
// against a URL or a `kiln serve` it starts itself (--model). Torch-free: runs in the front.
#include <cstdio>
#include <fstream>
#include <iostream>
#include <memory>

#include "kiln/cli/commands.h"
#include "kiln/cli/flags.h"
#include "kiln/loadtest/find_max.h"
#include "kiln/loadtest/generator.h"
#include "kiln/loadtest/report.h"
#include "kiln/loadtest/serve_process.h"
#include "kiln/loadtest/slo.h"
#include "kiln/loadtest/target.h"

namespace kiln::cli {
namespace {

using namespace kiln::loadtest;

constexpr double kDefaultRate = 1000;
constexpr int kDefaultConnections = 64;
/// Without an `errors<` SLO term, more failed requests than this share fail the run (exit 1).
constexpr double kMaxErrorRatio = 0.01;

struct LoadtestArgs {
  std::string url;
  std::string model;
  std::string path;
  double rate = 0;
  int connections = 0;
  double duration = 10;
  double timeout = 10;
  int threads = 1;
  std::string body;
  int64_t header_length = -1;
  std::string data;
  std::vector<std::string> drop_columns;
  bool find_max = false;
  std::string slo;
  double stage_duration = 3;
  bool json = false;
  std::string svg;
  bool allow_remote = false;
};

Status bad(const std::string& message) { return Status::InvalidArgument(message); }

/// "/v2/models/NAME/infer" -> NAME; "" if the path is not an infer path.
std::string model_of_infer_path(const std::string& path) {
  const std::string prefix = "/v2/models/";
  if (path.rfind(prefix, 0) != 0) return "";
  const std::string rest = path.substr(prefix.size());
  const size_t slash = rest.find('/');
  if (slash == std::string::npos) return "";
  const std::string tail = rest.substr(slash);
  if (tail != "/infer" && tail.find("/versions/") != 0) return "";
  return rest.substr(0, slash);
}

/// The requests to cycle: --body, --data rows, zeros for --model, or a GET of the URL.
Expected<std::vector<std::string>> build_requests(const LoadtestArgs& a, const Target& target,
                                                  const std::string& model) {
  std::string path = target.path;
  if (!a.path.empty()) path = a.path;
  if (!a.body.empty()) {
    KILN_ASSIGN_OR_RETURN(RequestBody body, read_body_file(a.body, a.header_length));
    return std::vector<std::string>{build_request(target, path, body.bytes, body.headers())};
  }
  const bool infer = !a.data.empty() || (!model.empty() && a.path.empty());
  if (!infer) return std::vector<std::string>{build_request(target, path, "")};
  std::string name = model;
  if (name.empty()) name = model_of_infer_path(path);
  if (name.empty())
    return bad("--data needs an infer URL (http://HOST:PORT/v2/models/NAME/infer) or --model");
  if (a.path.empty() && model_of_infer_path(path).empty()) path = "/v2/models/" + name + "/infer";
  KILN_ASSIGN_OR_RETURN(HttpReply meta, http_exchange(target, "/v2/models/" + name));
  if (meta.status != 200)
    return Status::InvalidArgument("GET /v2/models/" + name + ": HTTP " +
                                   std::to_string(meta.status) + " " + meta.body);
  KILN_ASSIGN_OR_RETURN(ModelInput input, parse_model_metadata(name, meta.body));
  std::vector<std::string> bodies;
  if (!a.data.empty()) {
    KILN_ASSIGN_OR_RETURN(bodies, csv_bodies(a.data, a.drop_columns, input));
  } else {
    bodies.push_back(zeros_body(input));
  }
  std::vector<std::string> requests;
  requests.reserve(bodies.size());
  for (const auto& b : bodies) requests.push_back(build_request(target, path, b));
  return requests;
}

int run_loadtest(LoadtestArgs a) {
  // ---- validate the command line (exit 2)
  if (a.url.empty() == a.model.empty())
    return report_failure(bad("give a URL or --model REF (exactly one)"));
  if (!a.body.empty() && !a.data.empty())
    return report_failure(bad("--body and --data are alternatives: give one"));
  if (a.header_length >= 0 && a.body.empty())
    return report_failure(bad("--header-length applies to --body"));
  if (!a.drop_columns.empty() && a.data.empty())
    return report_failure(bad("--drop-column applies to --data"));
  if (a.find_max && a.slo.empty())
    return report_failure(bad("--find-max needs --slo (e.g. --slo 'p99<5ms')"));
  if (a.find_max && !a.svg.empty())
    return report_failure(bad("--svg plots a single run; it does not apply to --find-max"));
  if (!a.path.empty() && a.path[0] != '/') return report_failure(bad("--path must start with '/'"));
  std::vector<SloTerm> slo;
  if (!a.slo.empty()) {
    auto parsed = parse_slo(a.slo);
    if (!parsed.ok()) return report_failure(parsed.status());
    slo = *parsed;
  }
  const bool open_loop = a.rate > 0 || a.connections == 0 || a.find_max;
  const double rate = open_loop ? (a.rate > 0 ? a.rate : kDefaultRate) : 0;
  const int connections = a.connections > 0 ? a.connections : kDefaultConnections;

  // ---- the server: given, or started here
  std::unique_ptr<ServeProcess> server;
  std::string url = a.url;
  std::string model;
  if (!a.model.empty()) {
    if (!a.json)
      std::fprintf(stderr, "kiln loadtest: starting kiln serve --model %s\n", a.model.c_str());
    auto s = ServeProcess::Start(self_executable(), a.model, {});
    if (!s.ok()) return report_failure(s.status());
    server = std::move(*s);
    if (server->models().empty())
      return report_failure(Status::FailedPrecondition("kiln serve reported no model"));
    model = server->models()[0];
    url = "http://127.0.0.1:" + std::to_string(server->port()) +
          (a.path.empty() ? "/v2/models/" + model + "/infer" : a.path);
  }
  auto target = parse_target(url, a.allow_remote);
  if (!target.ok()) return report_failure(target.status());
  auto requests = build_requests(a, *target, model);
  if (!requests.ok()) return report_failure(requests.status());

  LoadOptions options(*target, *requests);
  options.rate(rate)
      .connections(connections)
      .duration_s(a.duration)
      .timeout_s(a.timeout)
      .threads(a.threads)
      .drain_s(std::min(a.timeout, 2.0));
  if (!a.json)
    std::fprintf(stderr, "kiln loadtest: %s %s, %s for %g s (%d connections)\n",
                 requests->front().substr(0, requests->front().find(' ')).c_str(), url.c_str(),
                 open_loop
                     ? (std::to_string(static_cast<int64_t>(rate)) + " req/s open loop").c_str()
                     : "closed loop",
                 a.find_max ? a.stage_duration : a.duration, connections);

  int exit_code = 0;
  Json out;
  if (a.find_max) {
    FindMaxOptions fm;
    fm.start_rate = rate;
    fm.stage_s = a.stage_duration;
    auto result = find_max(options, slo, fm, [&](const FindMaxStage& s) {
      if (a.json) return;
      std::printf("  stage %8.0f req/s: achieved %8.0f req/s, p99 %10s, errors %.3f%%  %s%s\n",
                  s.rate, s.achieved_rate, format_ns(static_cast<double>(s.p99_ns)).c_str(),
                  100 * s.error_ratio, s.ok ? "holds" : "breaks: ", s.why.c_str());
      std::fflush(stdout);
    });
    if (!result.ok()) return report_failure(result.status());
    if (result->best_rate <= 0) exit_code = 1;
    if (a.json) {
      Json stages = Json::array();
      for (const auto& s : result->stages)
        stages.push_back({{"rate_per_s", s.rate},
                          {"achieved_rate_per_s", s.achieved_rate},
                          {"p99_us", static_cast<double>(s.p99_ns) / 1e3},
                          {"error_ratio", s.error_ratio},
                          {"ok", s.ok},
                          {"why", s.why},
                          {"slo", slo_json(s.checks)}});
      out = {{"url", url},
             {"slo", a.slo},
             {"max_rate_per_s", result->best_rate},
             {"stage_duration_s", a.stage_duration},
             {"stages", stages}};
    } else if (result->best_rate > 0) {
      std::printf("highest rate holding %s: %.0f req/s\n", a.slo.c_str(), result->best_rate);
    } else {
      std::printf("no rate held %s (not even the start rate %.0f req/s)\n", a.slo.c_str(), rate);
    }
  } else {
    auto result = run_load(options);
    if (!result.ok()) return report_failure(result.status());
    const LoadResult& r = *result;
    const int64_t finished = r.finished();
    const std::vector<SloCheck> checks = check_slo(slo, r.latency_ns, finished, r.errors());
    bool has_error_term = false;
    for (const auto& t : slo) has_error_term |= t.kind == SloTerm::Kind::kErrors;
    const double error_ratio =
        finished > 0 ? static_cast<double>(r.errors()) / static_cast<double>(finished) : 1.0;
    const bool too_many_errors = !has_error_term && error_ratio > kMaxErrorRatio;
    if (!slo_ok(checks) || too_many_errors || r.completed == 0) exit_code = 1;
    if (a.json) {
      out = result_json(r);
      out["url"] = url;
      if (!slo.empty()) {
        out["slo"] = slo_json(checks);
        out["slo_ok"] = slo_ok(checks);
      }
    } else {
      std::fputs(result_text(r).c_str(), stdout);
      if (!checks.empty()) std::fputs(("slo:\n" + slo_text(checks)).c_str(), stdout);
      if (too_many_errors)
        std::printf("FAIL: %.2f%% of requests failed (more than %.0f%%)\n", 100 * error_ratio,
                    100 * kMaxErrorRatio);
    }
    if (!a.svg.empty()) {
      std::ofstream f(a.svg);
      f << timeline_svg(r, "kiln loadtest " + url);
      if (!f) return report_failure(Status::IoError("--svg " + a.svg + ": cannot write"));
    }
  }
  if (a.json) std::cout << out.dump(2) << "\n";
  if (server) {
    Status stopped = server->stop();
    if (!stopped.ok()) std::fprintf(stderr, "kiln loadtest: %s\n", stopped.message().c_str());
  }
  return exit_code;
}

}  // namespace

void register_loadtest_command(CLI::App& app, int* exit_code) {
  auto a = std::make_shared<LoadtestArgs>();
  CLI::App* c = app.add_subcommand("loadtest", kLoadtestHelp);
  c->footer(
      "Open loop (default, or --rate): request i is due at start + i/rate and its latency counts "
      "from then, so a server stall shows in the percentiles (coordinated omission corrected, as "
      "in wrk2). --connections without --rate: closed loop, each connection sends again when "
      "answered (latency from the actual send). Exit: 0 ok, 1 an SLO failed or more than 1% of "
      "requests failed, 2 bad input.\n"
      "Examples:\n"
      "  kiln loadtest http://127.0.0.1:8000/v2/health/ready --rate 20000 --duration 5\n"
      "  kiln loadtest --model runs/bc/bundle --rate 500 --json\n"
      "  kiln loadtest http://127.0.0.1:8000/v2/models/bc/infer --data bc.csv --drop-column "
      "diagnosis --find-max --slo 'p99<5ms,errors<0.1%'");
  c->add_option("url", a->url,
                "target URL (http://HOST:PORT/PATH; loopback only without --allow-remote)");
  c->add_option(
      "--model,-m", a->model,
      "start `kiln serve` on this bundle directory or registry ref (NAME@ALIAS) on a free "
      "loopback port, load it, stop it at the end; default request: one row of zeros");
  c->add_option("--path", a->path, "request path (default: the URL's, or the model's infer path)");
  c->add_option("--rate,-R", a->rate,
                "intended requests per second (open loop; default 1000 unless only --connections "
                "is given)")
      ->check(CLI::PositiveNumber);
  c->add_option("--connections,-c", a->connections,
                "keep-alive connections (default 64); alone: closed loop")
      ->check(CLI::PositiveNumber);
  c->add_option("--duration,-d", a->duration, "seconds to send for (at most 3600)")
      ->default_val(10)
      ->check(CLI::Range(0.001, 3600.0));
  c->add_option("--timeout", a->timeout, "per-request timeout in seconds (a timeout error)")
      ->default_val(10)
      ->check(CLI::PositiveNumber);
  c->add_option("--threads", a->threads,
                "event-loop threads, each with rate/N and connections/N (default 1)")
      ->default_val(1)
      ->check(CLI::Range(1, 64));
  c->add_option("--body", a->body,
                "request body file: a JSON OIP request, or a binary one (JSON header then tensor "
                "bytes; the header length is found by parsing the leading JSON object)");
  c->add_option("--header-length", a->header_length,
                "the JSON header's length in a binary --body (Inference-Header-Content-Length); "
                "default: detected")
      ->check(CLI::NonNegativeNumber);
  c->add_option("--data", a->data,
                "CSV (header line) whose rows become one-row infer requests, cycled; input "
                "name/shape from GET /v2/models/NAME (a Kiln table model's columns by name, "
                "text columns sent as BYTES)");
  c->add_option("--drop-column", a->drop_columns,
                "a --data column to leave out (label; repeatable)");
  c->add_flag("--find-max", a->find_max,
              "step the rate up (x1.5 per stage from --rate), then bisect: report the highest "
              "rate that holds --slo");
  c->add_option("--slo", a->slo,
                "objectives, comma-separated: pNN[.N]<VALUE(us|ms|s), errors<X% (e.g. "
                "'p99<5ms,errors<0.1%'); a failed one exits 1");
  c->add_option("--stage-duration", a->stage_duration, "seconds per --find-max stage")
      ->default_val(3)
      ->check(CLI::Range(0.5, 600.0));
  add_flag(*c, Flag::kJson, &a->json)
      ->description("print the result as JSON (latencies in microseconds: *_us keys)");
  c->add_option("--svg", a->svg, "write a plot of per-second p50/p99/max latency to this SVG file");
  c->add_flag("--allow-remote", a->allow_remote,
              "allow a target that is not loopback (127.0.0.0/8, ::1, localhost)");
  c->callback([a, exit_code] { *exit_code = run_loadtest(*a); });
}

}  // namespace kiln::cli
