#include "kiln/loadtest/report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

namespace kiln::loadtest {
namespace {

double us(int64_t ns) { return static_cast<double>(ns) / 1e3; }

const double kPercentiles[] = {50, 90, 99, 99.9};

std::string pct_key(double p) {
  char buf[32];
  if (p == std::floor(p))
    std::snprintf(buf, sizeof buf, "p%d_us", static_cast<int>(p));
  else
    std::snprintf(buf, sizeof buf, "p%g_us", p);
  return buf;
}

std::string fmt(const char* f, double v) {
  char buf[256];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

}  // namespace

std::string format_ns(double ns) {
  if (ns >= 1e9) return fmt("%.2f s", ns / 1e9);
  if (ns >= 1e6) return fmt("%.2f ms", ns / 1e6);
  if (ns >= 1e3) return fmt("%.0f us", ns / 1e3);
  return fmt("%.0f ns", ns);
}

Json result_json(const LoadResult& r) {
  Json j;
  j["mode"] = r.open_loop ? "open" : "closed";
  j["intended_rate_per_s"] = r.open_loop ? Json(r.intended_rate) : Json(nullptr);
  j["achieved_rate_per_s"] = r.achieved_rate();
  j["connections"] = r.connections;
  j["threads"] = r.threads;
  j["duration_s"] = r.duration_s;
  j["elapsed_s"] = r.elapsed_s;
  j["requests"] = {{"scheduled", r.scheduled},
                   {"sent", r.sent},
                   {"completed", r.completed},
                   {"unsent", r.unsent},
                   {"unfinished", r.unfinished}};
  Json codes = Json::object();
  for (const auto& [code, n] : r.status_counts) codes[std::to_string(code)] = n;
  j["status_codes"] = codes;
  j["errors"] = {{"total", r.errors()},         {"status", r.errors_status},
                 {"connect", r.errors_connect}, {"read", r.errors_read},
                 {"write", r.errors_write},     {"timeout", r.errors_timeout}};
  if (!r.first_error.empty()) j["errors"]["first"] = r.first_error;
  j["error_ratio"] =
      r.finished() > 0 ? static_cast<double>(r.errors()) / static_cast<double>(r.finished()) : 0.0;
  j["late_sends"] = r.late_sends;
  j["max_send_lag_us"] = us(r.max_send_lag_ns);
  Json lat;
  lat["count"] = r.latency_ns.total_count();
  lat["min_us"] = us(r.latency_ns.min());
  lat["mean_us"] = r.latency_ns.mean() / 1e3;
  for (double p : kPercentiles) lat[pct_key(p)] = us(r.latency_ns.value_at_percentile(p));
  lat["max_us"] = us(r.latency_ns.max());
  j["latency"] = lat;
  const Histogram& u = r.latency_from_send_ns;
  Json from_send{{"count", u.total_count()}};
  for (double p : kPercentiles) from_send[pct_key(p)] = us(u.value_at_percentile(p));
  from_send["max_us"] = us(u.max());
  j["latency_from_send"] = from_send;
  Json tl = Json::array();
  for (size_t s = 0; s < r.timeline.size(); ++s) {
    const SecondStats& x = r.timeline[s];
    Json row{{"second", s}, {"requests", x.requests}, {"errors", x.errors}};
    const bool has = x.latency_ns && x.latency_ns->total_count() > 0;
    row["p50_us"] = has ? Json(us(x.latency_ns->value_at_percentile(50))) : Json(nullptr);
    row["p99_us"] = has ? Json(us(x.latency_ns->value_at_percentile(99))) : Json(nullptr);
    row["max_us"] = has ? Json(us(x.latency_ns->max())) : Json(nullptr);
    tl.push_back(row);
  }
  j["timeline"] = tl;
  return j;
}

std::string result_text(const LoadResult& r) {
  std::string o;
  char line[640];
  if (r.open_loop)
    std::snprintf(line, sizeof line,
                  "open loop: intended %.0f req/s, achieved %.0f req/s over %.2f s, %d "
                  "connections, %d thread(s)\n",
                  r.intended_rate, r.achieved_rate(), r.elapsed_s, r.connections, r.threads);
  else
    std::snprintf(line, sizeof line,
                  "closed loop: %d connections, achieved %.0f req/s over %.2f s, %d thread(s)\n",
                  r.connections, r.achieved_rate(), r.elapsed_s, r.threads);
  o += line;
  std::snprintf(line, sizeof line,
                "requests: %lld sent, %lld answered, %lld unsent at the end, %lld unfinished\n",
                static_cast<long long>(r.sent), static_cast<long long>(r.completed),
                static_cast<long long>(r.unsent), static_cast<long long>(r.unfinished));
  o += line;
  std::string codes;
  for (const auto& [code, n] : r.status_counts)
    codes += (codes.empty() ? "" : ", ") + std::to_string(code) + ": " + std::to_string(n);
  o += "status codes: " + (codes.empty() ? std::string("-") : codes) + "\n";
  std::snprintf(line, sizeof line,
                "errors: %lld (status>=400 %lld, connect %lld, read %lld, write %lld, timeout "
                "%lld)\n",
                static_cast<long long>(r.errors()), static_cast<long long>(r.errors_status),
                static_cast<long long>(r.errors_connect), static_cast<long long>(r.errors_read),
                static_cast<long long>(r.errors_write), static_cast<long long>(r.errors_timeout));
  o += line;
  if (!r.first_error.empty()) o += "first error: " + r.first_error + "\n";
  if (r.latency_ns.total_count() == 0) {
    o += "latency: no answers\n";
  } else {
    const Histogram& h = r.latency_ns;
    o += "latency";
    o += r.open_loop ? " (from the intended send time):" : " (from the actual send time):";
    o += "\n  min " + format_ns(static_cast<double>(h.min())) + "  mean " + format_ns(h.mean());
    for (double p : kPercentiles)
      o += "  p" + fmt("%g", p) + " " + format_ns(static_cast<double>(h.value_at_percentile(p)));
    o += "  max " + format_ns(static_cast<double>(h.max())) + "\n";
    if (r.open_loop) {
      const Histogram& u = r.latency_from_send_ns;
      o += "  from the actual send (not corrected):";
      for (double p : kPercentiles)
        o += "  p" + fmt("%g", p) + " " + format_ns(static_cast<double>(u.value_at_percentile(p)));
      o += "  max " + format_ns(static_cast<double>(u.max())) + "\n";
    }
  }
  if (r.open_loop && r.late_sends > 0) {
    std::snprintf(line, sizeof line,
                  "warning: %lld requests (%.1f%%) went out more than 1 ms after their intended "
                  "time (max %s late): all %d connections were busy or the generator fell "
                  "behind; their latency counts from the intended time (coordinated omission "
                  "corrected). Raise --connections if the server is not the bottleneck.\n",
                  static_cast<long long>(r.late_sends),
                  100.0 * static_cast<double>(r.late_sends) /
                      static_cast<double>(std::max<int64_t>(1, r.sent)),
                  format_ns(static_cast<double>(r.max_send_lag_ns)).c_str(), r.connections);
    o += line;
  }
  o += "timeline (by completion second):\n   sec   requests  errors        p50        p99\n";
  for (size_t s = 0; s < r.timeline.size(); ++s) {
    const SecondStats& x = r.timeline[s];
    const bool has = x.latency_ns && x.latency_ns->total_count() > 0;
    std::snprintf(
        line, sizeof line, "  %4zu %10lld %7lld %10s %10s\n", s, static_cast<long long>(x.requests),
        static_cast<long long>(x.errors),
        has ? format_ns(static_cast<double>(x.latency_ns->value_at_percentile(50))).c_str() : "-",
        has ? format_ns(static_cast<double>(x.latency_ns->value_at_percentile(99))).c_str() : "-");
    o += line;
  }
  return o;
}

std::string slo_text(const std::vector<SloCheck>& checks) {
  std::string o;
  for (const auto& c : checks) {
    o += c.ok ? "  ok    " : "  FAIL  ";
    o += c.term.text + "  observed ";
    o += c.term.kind == SloTerm::Kind::kErrors ? fmt("%.3f%%", 100 * c.observed)
                                               : format_ns(c.observed);
    o += "\n";
  }
  return o;
}

Json slo_json(const std::vector<SloCheck>& checks) {
  Json a = Json::array();
  for (const auto& c : checks) {
    Json t{{"term", c.term.text}, {"ok", c.ok}};
    if (c.term.kind == SloTerm::Kind::kErrors) {
      t["max_error_ratio"] = c.term.max_error_ratio;
      t["observed_error_ratio"] = c.observed;
    } else {
      t["percentile"] = c.term.percentile;
      t["bound_us"] = c.term.bound_ns / 1e3;
      t["observed_us"] = c.observed / 1e3;
    }
    a.push_back(t);
  }
  return a;
}

std::string timeline_svg(const LoadResult& r, const std::string& title) {
  const double W = 800, H = 400, L = 70, R = 20, T = 40, B = 50;
  const size_t n = r.timeline.size();
  double ymax = 0;
  for (const auto& x : r.timeline)
    if (x.latency_ns && x.latency_ns->total_count())
      ymax = std::max(ymax, x.latency_ns->max() / 1e6);
  if (ymax <= 0) ymax = 1;
  // A round upper bound: 1, 2 or 5 times a power of ten.
  const double mag = std::pow(10.0, std::floor(std::log10(ymax)));
  double top = mag;
  for (double m : {1.0, 2.0, 5.0, 10.0})
    if (m * mag >= ymax) {
      top = m * mag;
      break;
    }
  const double xs = (W - L - R) / std::max<double>(1.0, static_cast<double>(n));
  auto px = [&](size_t s) { return L + (static_cast<double>(s) + 0.5) * xs; };
  auto py = [&](double ms) { return T + (H - T - B) * (1 - ms / top); };
  std::string o;
  o += fmt("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" ", W) +
       fmt("height=\"%.0f\" font-family=\"sans-serif\" font-size=\"12\">\n", H);
  o += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  std::string esc;
  for (char c : title) {
    if (c == '<')
      esc += "&lt;";
    else if (c == '&')
      esc += "&amp;";
    else if (c == '>')
      esc += "&gt;";
    else
      esc += c;
  }
  o += fmt("<text x=\"%.0f\" y=\"20\" font-size=\"14\">", L) + esc + "</text>\n";
  for (int g = 0; g <= 5; ++g) {
    const double v = top * g / 5;
    o += fmt("<line x1=\"%.1f\" ", L) + fmt("y1=\"%.1f\" ", py(v)) + fmt("x2=\"%.1f\" ", W - R) +
         fmt("y2=\"%.1f\" stroke=\"#ddd\"/>\n", py(v));
    o += fmt("<text x=\"%.1f\" ", L - 6) + fmt("y=\"%.1f\" text-anchor=\"end\">", py(v) + 4) +
         fmt("%g</text>\n", v);
  }
  const size_t step = std::max<size_t>(1, n / 10);
  for (size_t s = 0; s < n; s += step)
    o += fmt("<text x=\"%.1f\" ", px(s)) + fmt("y=\"%.1f\" text-anchor=\"middle\">", H - B + 16) +
         std::to_string(s) + "</text>\n";
  o += fmt("<text x=\"%.1f\" ", (L + W - R) / 2) +
       fmt("y=\"%.1f\" text-anchor=\"middle\">time (s, by completion)</text>\n", H - 12);
  o += fmt("<text x=\"14\" y=\"%.1f\" ", (T + H - B) / 2) +
       fmt("transform=\"rotate(-90 14 %.1f)\" text-anchor=\"middle\">latency (ms)</text>\n",
           (T + H - B) / 2);
  const struct {
    const char* name;
    const char* color;
    int which;
  } series[] = {{"p50", "#1f77b4", 0}, {"p99", "#ff7f0e", 1}, {"max", "#d62728", 2}};
  int li = 0;
  for (const auto& sr : series) {
    std::string pts;
    for (size_t s = 0; s < n; ++s) {
      const auto& h = r.timeline[s].latency_ns;
      if (!h || h->total_count() == 0) continue;
      const double v = sr.which == 0   ? h->value_at_percentile(50) / 1e6
                       : sr.which == 1 ? h->value_at_percentile(99) / 1e6
                                       : h->max() / 1e6;
      pts += fmt("%.1f,", px(s)) + fmt("%.1f ", py(v));
    }
    o += std::string("<polyline fill=\"none\" stroke=\"") + sr.color +
         "\" stroke-width=\"2\" points=\"" + pts + "\"/>\n";
    const double lx = W - R - 150 + li * 50;
    o += fmt("<line x1=\"%.0f\" y1=\"30\" ", lx) + fmt("x2=\"%.0f\" y2=\"30\" ", lx + 14) +
         "stroke=\"" + sr.color + "\" stroke-width=\"2\"/>";
    o += fmt("<text x=\"%.0f\" y=\"34\">", lx + 17) + sr.name + "</text>\n";
    ++li;
  }
  o += "</svg>\n";
  return o;
}

}  // namespace kiln::loadtest
