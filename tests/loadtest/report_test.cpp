#include "kiln/loadtest/report.h"

#include <gtest/gtest.h>

namespace kiln::loadtest {
namespace {

LoadResult sample_result() {
  LoadResult r;
  r.open_loop = true;
  r.intended_rate = 100;
  r.connections = 4;
  r.duration_s = 2;
  r.elapsed_s = 2;
  r.scheduled = r.sent = 200;
  r.completed = 199;
  r.errors_timeout = 1;
  r.status_counts[200] = 198;
  r.status_counts[503] = 1;
  r.errors_status = 1;
  r.timeline.resize(2);
  for (int i = 0; i < 199; ++i) {
    const int64_t v = (i + 1) * 10'000;  // 10 us .. 1.99 ms
    r.latency_ns.record(v);
    SecondStats& s = r.timeline[static_cast<size_t>(i / 100)];
    ++s.requests;
    if (!s.latency_ns) s.latency_ns = std::make_unique<Histogram>(100'000'000'000, 2);
    s.latency_ns->record(v);
  }
  return r;
}

TEST(LoadtestReport, JsonNamesUnitsAndCountsErrorsByKind) {
  const Json j = result_json(sample_result());
  EXPECT_EQ(j["mode"], "open");
  EXPECT_DOUBLE_EQ(j["achieved_rate_per_s"].get<double>(), 99.5);
  EXPECT_EQ(j["errors"]["total"], 2);
  EXPECT_EQ(j["errors"]["timeout"], 1);
  EXPECT_EQ(j["errors"]["status"], 1);
  EXPECT_EQ(j["status_codes"]["503"], 1);
  EXPECT_NEAR(j["latency"]["p50_us"].get<double>(), 1000, 1);
  EXPECT_NEAR(j["latency"]["p99_us"].get<double>(), 1980, 2);
  EXPECT_TRUE(j["latency"].contains("p99.9_us"));
  EXPECT_DOUBLE_EQ(j["latency"]["max_us"].get<double>(), 1990);
  ASSERT_EQ(j["timeline"].size(), 2u);
  EXPECT_EQ(j["timeline"][1]["requests"], 99);
  EXPECT_TRUE(j["timeline"][0].contains("p99_us"));
}

TEST(LoadtestReport, TextAndSvg) {
  const LoadResult r = sample_result();
  const std::string text = result_text(r);
  EXPECT_NE(text.find("intended 100 req/s"), std::string::npos) << text;
  EXPECT_NE(text.find("timeout 1"), std::string::npos) << text;
  EXPECT_NE(text.find("503: 1"), std::string::npos) << text;
  const std::string svg = timeline_svg(r, "a <title> & more");
  EXPECT_EQ(svg.rfind("<svg xmlns=\"http://www.w3.org/2000/svg\"", 0), 0u);
  EXPECT_NE(svg.find("a &lt;title&gt; &amp; more"), std::string::npos);
  EXPECT_EQ(svg.find("<title>"), std::string::npos);
  EXPECT_NE(svg.find(">p99</text>"), std::string::npos);
  EXPECT_EQ(format_ns(1'500'000), "1.50 ms");
  EXPECT_EQ(format_ns(2'500'000'000), "2.50 s");
  EXPECT_EQ(format_ns(850'000), "850 us");
}

}  // namespace
}  // namespace kiln::loadtest
