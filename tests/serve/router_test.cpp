#include "kiln/serve/router.h"

#include <gtest/gtest.h>

#include <map>

namespace kiln::serve {
namespace {

TEST(RouterTest, ParsesRoutesAndNamesWhatIsWrong) {
  Expected<RouteSpec> r = RouteSpec::parse("cancer=prod:90,cand:10,shadow:next");
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ(r->name, "cancer");
  ASSERT_EQ(r->targets.size(), 2u);
  EXPECT_EQ(r->targets[1], (std::pair<std::string, int64_t>{"cand", 10}));
  EXPECT_EQ(r->shadow, "next");
  EXPECT_EQ(r->to_string(), "cancer=prod:90,cand:10,shadow:next");
  for (const char* bad : {"cancer", "=a:1", "c=a", "c=a:x", "c=a:-1", "c=a:0", "c=a:1,a:2",
                          "c=shadow:b", "c=a:1,shadow:a", "c=a:1,shadow:b,shadow:d", "c d=a:1"}) {
    Expected<RouteSpec> e = RouteSpec::parse(bad);
    EXPECT_FALSE(e.ok()) << bad;
    if (!e.ok()) EXPECT_NE(e.status().message().find("--route"), std::string::npos);
  }
}

TEST(RouterTest, RoundRobinGivesExactProportions) {
  TrafficRouter router(*RouteSpec::parse("m=a:3,b:1,c:0"));
  std::map<std::string, int> seen;
  for (int i = 0; i < 400; ++i) ++seen[router.pick("")];
  EXPECT_EQ(seen["a"], 300);
  EXPECT_EQ(seen["b"], 100);
  EXPECT_EQ(seen["c"], 0);
  // Smooth: never more than 3 of a in a row between the b's.
  std::string run;
  for (int i = 0; i < 8; ++i) run += router.pick("");
  EXPECT_EQ(run.find("aaaa"), std::string::npos) << run;
}

TEST(RouterTest, KeysAreStickyAndMovingWeightMovesOnlyTheMovedShare) {
  TrafficRouter router(*RouteSpec::parse("m=stable:90,canary:10"));
  std::map<std::string, std::string> at10;
  int canary = 0;
  for (int k = 0; k < 2000; ++k) {
    const std::string key = "client-" + std::to_string(k);
    at10[key] = router.pick(key);
    EXPECT_EQ(router.pick(key), at10[key]) << "sticky";
    canary += at10[key] == "canary";
  }
  EXPECT_NEAR(canary, 200, 45);  // 10 % of 2000, binomial sd ~13
  ASSERT_TRUE(router.set_weights({50, 50}).ok());
  int moved_back = 0, now_canary = 0;
  for (const auto& [key, before] : at10) {
    const std::string after = router.pick(key);
    moved_back += before == "canary" && after == "stable";
    now_canary += after == "canary";
  }
  EXPECT_EQ(moved_back, 0) << "a canary client stays on the canary as its weight grows";
  EXPECT_NEAR(now_canary, 1000, 100);
  EXPECT_FALSE(router.set_weights({1}).ok());
  EXPECT_FALSE(router.set_weights({0, 0}).ok());
  EXPECT_FALSE(router.set_weights({-1, 5}).ok());
  EXPECT_EQ(route_key_hash("abc"), 0xe71fa2190541574bULL) << "FNV-1a 64";
}

}  // namespace
}  // namespace kiln::serve
