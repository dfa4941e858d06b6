#include "kiln/rollout/plan.h"

#include <gtest/gtest.h>

namespace kiln::rollout {
namespace {

TEST(ParseDurationTest, MillisecondsSecondsMinutes) {
  EXPECT_EQ(*parse_duration_ms("500ms", "--interval"), 500);
  EXPECT_EQ(*parse_duration_ms("30s", "--interval"), 30000);
  EXPECT_EQ(*parse_duration_ms("1.5s", "--interval"), 1500);
  EXPECT_EQ(*parse_duration_ms("2m", "--interval"), 120000);
}

TEST(ParseDurationTest, BadDurationsNameTheFlag) {
  for (const char* bad : {"", "30", "s", "-1s", "0s", "1h", "3x", "0.1ms", "1e9m"}) {
    Expected<int64_t> d = parse_duration_ms(bad, "--interval");
    ASSERT_FALSE(d.ok()) << bad;
    EXPECT_EQ(d.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(d.status().message().find("--interval"), std::string::npos) << bad;
  }
}

TEST(ParseStepsTest, IncreasingWeightsEndingAt100) {
  EXPECT_EQ(*parse_steps("10,25,50,100", "--steps"), (std::vector<int>{10, 25, 50, 100}));
  EXPECT_EQ(*parse_steps("100", "--steps"), (std::vector<int>{100}));
}

TEST(ParseStepsTest, BadStepsNameTheFlagAndTheItem) {
  for (const char* bad :
       {"10,5,100", "10,10,100", "10,50", "0,100", "50,101", "10,,100", "a", "", "10,100,"}) {
    Expected<std::vector<int>> s = parse_steps(bad, "--steps");
    ASSERT_FALSE(s.ok()) << bad;
    EXPECT_EQ(s.status().message().rfind("--steps", 0), 0u) << s.status().message();
  }
  EXPECT_NE(parse_steps("10,5,100", "--steps").status().message().find("10 then 5"),
            std::string::npos);
}

TEST(StepWeightsTest, StableTargetsShareTheRest) {
  EXPECT_EQ(step_weights({"stable", "canary"}, "canary", 25).dump(),
            R"({"stable":75,"canary":25})");
  EXPECT_EQ(step_weights({"a", "canary", "b"}, "canary", 25).dump(),
            R"({"a":38,"canary":25,"b":37})");
  EXPECT_EQ(step_weights({"stable", "canary"}, "canary", 0).dump(), R"({"stable":100,"canary":0})");
}

TEST(ParsePromoteTest, NameAliasVersion) {
  Expected<PromoteTarget> p = parse_promote("bc@production=7");
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->name, "bc");
  EXPECT_EQ(p->alias, "production");
  EXPECT_EQ(p->version, 7);
  for (const char* bad : {"bc", "bc@production", "@p=1", "bc@=1", "bc@p=0", "bc@p=x"})
    EXPECT_FALSE(parse_promote(bad).ok()) << bad;
}

}  // namespace
}  // namespace kiln::rollout
