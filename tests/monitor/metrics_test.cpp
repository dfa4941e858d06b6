#include "kiln/monitor/metrics.h"

#include <gtest/gtest.h>

#include <thread>
#include <vector>

#include "kiln/monitor/process_stats.h"

namespace kiln::monitor {
namespace {

TEST(Metrics, CounterGaugeExposition) {
  MetricsRegistry reg;
  auto& c = reg.counter("kiln_things_total", "Things.", {"model", "outcome"});
  c.with({"a", "ok"}).inc();
  c.with({"a", "ok"}).inc(2);
  c.with({"b\"x", "bad"}).inc();
  reg.gauge("kiln_level", "Level.").with({}).set(1.5);
  const std::string text = reg.expose();
  EXPECT_NE(text.find("# HELP kiln_things_total Things.\n# TYPE kiln_things_total counter\n"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("kiln_things_total{model=\"a\",outcome=\"ok\"} 3\n"), std::string::npos);
  EXPECT_NE(text.find("kiln_things_total{model=\"b\\\"x\",outcome=\"bad\"} 1\n"),
            std::string::npos);
  EXPECT_NE(text.find("# TYPE kiln_level gauge\nkiln_level 1.5\n"), std::string::npos) << text;
}

TEST(Metrics, HistogramIsCumulativeWithInfSumAndCount) {
  MetricsRegistry reg;
  auto& h = reg.histogram("kiln_lat_seconds", "Latency.", {"m"}, {0.1, 1, 10});
  for (double v : {0.05, 0.1, 0.5, 5.0, 50.0}) h.with({"x"}).observe(v);
  const std::string text = reg.expose();
  EXPECT_NE(text.find("kiln_lat_seconds_bucket{m=\"x\",le=\"0.1\"} 2\n"), std::string::npos)
      << text;
  EXPECT_NE(text.find("kiln_lat_seconds_bucket{m=\"x\",le=\"1\"} 3\n"), std::string::npos);
  EXPECT_NE(text.find("kiln_lat_seconds_bucket{m=\"x\",le=\"10\"} 4\n"), std::string::npos);
  EXPECT_NE(text.find("kiln_lat_seconds_bucket{m=\"x\",le=\"+Inf\"} 5\n"), std::string::npos);
  EXPECT_NE(text.find("kiln_lat_seconds_sum{m=\"x\"} 55.65\n"), std::string::npos);
  EXPECT_NE(text.find("kiln_lat_seconds_count{m=\"x\"} 5\n"), std::string::npos);
}

TEST(Metrics, ConcurrentUpdatesAreNotLost) {
  MetricsRegistry reg;
  auto& c = reg.counter("kiln_n_total", "N.").with({});
  auto& h = reg.histogram("kiln_h_seconds", "H.", {}, {1}).with({});
  std::vector<std::thread> ts;
  for (int t = 0; t < 4; ++t)
    ts.emplace_back([&] {
      for (int i = 0; i < 10000; ++i) {
        c.inc();
        h.observe(0.5);
      }
    });
  for (auto& t : ts) t.join();
  EXPECT_EQ(c.value(), 40000);
  EXPECT_EQ(h.snapshot().count, 40000u);
  EXPECT_DOUBLE_EQ(h.snapshot().sum, 20000);
}

TEST(ProcessStats, ReadsThisProcess) {
  Expected<ProcessStats> s = read_process_stats();
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_GT(s->resident_bytes, 1 << 20);
  EXPECT_GE(s->threads, 1);
  EXPECT_GT(s->open_fds, 0);
  EXPECT_GT(s->start_time_seconds, 1.6e9);
  MetricsRegistry reg;
  register_process_metrics(reg);
  const std::string text = reg.expose();
  for (const char* name : {"process_cpu_seconds_total ", "process_resident_memory_bytes ",
                           "process_threads ", "process_open_fds "})
    EXPECT_NE(text.find(std::string("\n") + name), std::string::npos) << name << "\n" << text;
}

}  // namespace
}  // namespace kiln::monitor
