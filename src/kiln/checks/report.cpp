#include "kiln/checks/report.h"

#include <algorithm>
#include <cstdio>
#include <sstream>

#include "kiln/core/xml.h"

namespace kiln::checks {

const char* to_string(Outcome o) {
  switch (o) {
    case Outcome::kPass:
      return "pass";
    case Outcome::kFail:
      return "fail";
    case Outcome::kInconclusive:
      return "inconclusive";
    case Outcome::kError:
      return "error";
  }
  return "?";
}

int64_t SuiteResult::count(Outcome o) const {
  return std::count_if(checks.begin(), checks.end(),
                       [o](const CheckResult& c) { return c.outcome == o; });
}

int SuiteResult::exit_code() const {
  if (count(Outcome::kError) > 0) return 2;
  return count(Outcome::kFail) > 0 ? 1 : 0;
}

Json SuiteResult::to_json() const {
  Json list = Json::array();
  for (const auto& c : checks)
    list.push_back({{"name", c.name},
                    {"kind", c.kind},
                    {"result", to_string(c.outcome)},
                    {"measured", c.measured},
                    {"threshold", c.threshold},
                    {"message", c.message},
                    {"seconds", c.seconds},
                    {"details", c.details}});
  return {{"suite", suite},
          {"suite_sha256", suite_sha256},
          {"ref", ref},
          {"bundle", bundle_dir},
          {"data", data},
          {"rows", rows},
          {"started_at", started_at},
          {"seconds", seconds},
          {"passed", passed()},
          {"counts",
           {{"pass", count(Outcome::kPass)},
            {"fail", count(Outcome::kFail)},
            {"inconclusive", count(Outcome::kInconclusive)},
            {"error", count(Outcome::kError)}}},
          {"checks", list}};
}

std::string SuiteResult::junit_xml() const {
  std::ostringstream x;
  char secs[32];
  std::snprintf(secs, sizeof secs, "%.3f", seconds);
  x << "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
    << "<testsuites name=\"kiln test\" tests=\"" << checks.size() << "\" failures=\""
    << count(Outcome::kFail) << "\" errors=\"" << count(Outcome::kError) << "\" time=\"" << secs
    << "\">\n"
    << "  <testsuite name=\"" << xml_escape(suite) << "\" tests=\"" << checks.size()
    << "\" failures=\"" << count(Outcome::kFail) << "\" errors=\"" << count(Outcome::kError)
    << "\" skipped=\"" << count(Outcome::kInconclusive) << "\" time=\"" << secs << "\" timestamp=\""
    << xml_escape(started_at) << "\">\n"
    << "    <properties>\n"
    << "      <property name=\"ref\" value=\"" << xml_escape(ref) << "\"/>\n"
    << "      <property name=\"bundle\" value=\"" << xml_escape(bundle_dir) << "\"/>\n"
    << "      <property name=\"data\" value=\"" << xml_escape(data) << "\"/>\n"
    << "      <property name=\"suite_sha256\" value=\"" << suite_sha256 << "\"/>\n"
    << "    </properties>\n";
  for (const auto& c : checks) {
    std::snprintf(secs, sizeof secs, "%.3f", c.seconds);
    x << "    <testcase name=\"" << xml_escape(c.name) << "\" classname=\"kiln."
      << xml_escape(c.kind) << "\" time=\"" << secs << "\">\n";
    const std::string summary = "measured " + c.measured + ", threshold " + c.threshold;
    if (c.outcome == Outcome::kFail)
      x << "      <failure message=\"" << xml_escape(c.message) << "\" type=\""
        << xml_escape(c.kind) << "\">" << xml_escape(summary) << "</failure>\n";
    else if (c.outcome == Outcome::kError)
      x << "      <error message=\"" << xml_escape(c.message) << "\" type=\"" << xml_escape(c.kind)
        << "\"/>\n";
    else if (c.outcome == Outcome::kInconclusive)
      x << "      <skipped message=\"inconclusive: " << xml_escape(c.message) << "\"/>\n";
    x << "      <system-out>" << xml_escape(summary + "\n" + c.details.dump()) << "</system-out>\n"
      << "    </testcase>\n";
  }
  x << "  </testsuite>\n</testsuites>\n";
  return x.str();
}

std::string SuiteResult::table() const {
  size_t wn = 5, wk = 4, wm = 8, wt = 9;
  for (const auto& c : checks) {
    wn = std::max(wn, c.name.size());
    wk = std::max(wk, c.kind.size());
    wm = std::max(wm, std::min<size_t>(c.measured.size(), 40));
    wt = std::max(wt, std::min<size_t>(c.threshold.size(), 36));
  }
  std::ostringstream t;
  char line[512];
  auto row = [&](const std::string& a, const std::string& b, const std::string& c,
                 const std::string& d, const std::string& e, const std::string& f) {
    std::snprintf(line, sizeof line, "%-*s  %-*s  %-*s  %-*s  %-12s  %s\n", static_cast<int>(wn),
                  a.c_str(), static_cast<int>(wk), b.c_str(), static_cast<int>(wm),
                  c.substr(0, 40).c_str(), static_cast<int>(wt), d.substr(0, 36).c_str(), e.c_str(),
                  f.c_str());
    t << line;
  };
  row("check", "kind", "measured", "threshold", "result", "time");
  for (const auto& c : checks) {
    char secs[32];
    std::snprintf(secs, sizeof secs, "%.2fs", c.seconds);
    row(c.name, c.kind, c.measured, c.threshold, to_string(c.outcome), secs);
  }
  for (const auto& c : checks)
    if (c.outcome != Outcome::kPass && !c.message.empty())
      t << to_string(c.outcome) << ": " << c.name << ": " << c.message << "\n";
  char summary[256];
  std::snprintf(summary, sizeof summary,
                "%s: %lld passed, %lld failed, %lld inconclusive, %lld errors (%.1f s, %lld rows "
                "from %s)\n",
                passed() ? "PASSED" : "FAILED", static_cast<long long>(count(Outcome::kPass)),
                static_cast<long long>(count(Outcome::kFail)),
                static_cast<long long>(count(Outcome::kInconclusive)),
                static_cast<long long>(count(Outcome::kError)), seconds,
                static_cast<long long>(rows), data.c_str());
  t << summary;
  return t.str();
}

}  // namespace kiln::checks
