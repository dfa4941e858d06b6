#include "kiln/loadtest/slo.h"

#include <gtest/gtest.h>

#include "kiln/loadtest/histogram.h"

namespace kiln::loadtest {
namespace {

TEST(LoadtestSlo, ParsesLatencyAndErrorTerms) {
  auto terms = parse_slo("p99<5ms, p99.9<250us,p50<1s,errors<0.1%");
  ASSERT_TRUE(terms.ok()) << terms.status().to_string();
  ASSERT_EQ(terms->size(), 4u);
  EXPECT_EQ((*terms)[0].kind, SloTerm::Kind::kLatency);
  EXPECT_DOUBLE_EQ((*terms)[0].percentile, 99);
  EXPECT_DOUBLE_EQ((*terms)[0].bound_ns, 5e6);
  EXPECT_DOUBLE_EQ((*terms)[1].percentile, 99.9);
  EXPECT_DOUBLE_EQ((*terms)[1].bound_ns, 250e3);
  EXPECT_DOUBLE_EQ((*terms)[2].bound_ns, 1e9);
  EXPECT_EQ((*terms)[3].kind, SloTerm::Kind::kErrors);
  EXPECT_DOUBLE_EQ((*terms)[3].max_error_ratio, 0.001);
  EXPECT_EQ((*terms)[1].text, "p99.9<250us");
}

TEST(LoadtestSlo, RejectsBadTermsNamingThem) {
  for (const char* bad :
       {"", "p99", "p99<5", "p99<5min", "q99<5ms", "p0<1ms", "p101<1ms", "p99<-1ms", "p99<0ms",
        "errors<5", "errors<200%", "p99<5ms,", "p99<5ms,,p50<1ms", "p9x<1ms", "p99<1.2.3ms"}) {
    auto terms = parse_slo(bad);
    EXPECT_FALSE(terms.ok()) << "'" << bad << "' parsed";
    if (!terms.ok()) {
      EXPECT_EQ(terms.status().code(), StatusCode::kInvalidArgument);
      EXPECT_NE(terms.status().message().find("--slo"), std::string::npos);
    }
  }
}

TEST(LoadtestSlo, ChecksAgainstAHistogram) {
  Histogram h;
  for (int i = 0; i < 990; ++i) h.record(1'000'000);  // 1 ms
  for (int i = 0; i < 10; ++i) h.record(20'000'000);  // 20 ms: the top 1%
  auto terms = parse_slo("p99<5ms,p99.9<5ms,errors<1%");
  ASSERT_TRUE(terms.ok());
  auto checks = check_slo(*terms, h, 1000, 5);
  ASSERT_EQ(checks.size(), 3u);
  EXPECT_TRUE(checks[0].ok);
  EXPECT_FALSE(checks[1].ok);
  EXPECT_TRUE(checks[2].ok);
  EXPECT_DOUBLE_EQ(checks[2].observed, 0.005);
  EXPECT_FALSE(slo_ok(checks));
  EXPECT_FALSE(check_slo(*terms, h, 1000, 10)[2].ok);  // 1% is not < 1%
  EXPECT_TRUE(check_slo(*parse_slo("errors<0%"), h, 1000, 0)[0].ok);
  EXPECT_FALSE(check_slo(*parse_slo("errors<0%"), h, 1000, 1)[0].ok);
  EXPECT_FALSE(check_slo(*parse_slo("p50<1s"), Histogram(), 0, 0)[0].ok);  // no data: fail
}

}  // namespace
}  // namespace kiln::loadtest
