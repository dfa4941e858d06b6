#include "kiln/serve/router.h"

#include <gtest/gtest.h>

#include <map>

#include "kiln/core/files.h"
#include "support/test_support.h"

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
    if (!e.ok()) {
      EXPECT_NE(e.status().message().find("--route"), std::string::npos);
    }
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

TEST(RouterTest, KeptWeightsComeBackOnlyUnderTheSameRouteFlag) {
  testing::TempDir dir;
  const RouteSpec flag = *RouteSpec::parse("cancer=stable:90,canary:10");
  Expected<std::optional<RouteSpec>> none = KeptRouteWeights::load(dir.path(), flag);
  ASSERT_TRUE(none.ok()) << none.status().to_string();
  EXPECT_FALSE(none->has_value());

  RouteSpec now = flag;
  now.targets[0].second = 40;
  now.targets[1].second = 60;
  ASSERT_TRUE(KeptRouteWeights::save(dir.path(), flag, now).ok());
  Expected<std::optional<RouteSpec>> kept = KeptRouteWeights::load(dir.path(), flag);
  ASSERT_TRUE(kept.ok()) << kept.status().to_string();
  ASSERT_TRUE(kept->has_value());
  EXPECT_EQ((*kept)->to_string(), "cancer=stable:40,canary:60");

  // Started under another flag: the flag wins and the old file goes, so that going back to the
  // first flag later does not bring back weights set under it long ago.
  const RouteSpec changed = *RouteSpec::parse("cancer=stable:50,canary:50");
  Expected<std::optional<RouteSpec>> stale = KeptRouteWeights::load(dir.path(), changed);
  ASSERT_TRUE(stale.ok());
  EXPECT_FALSE(stale->has_value());
  EXPECT_FALSE(fs::exists(KeptRouteWeights::file(dir.path(), "cancer")));
  EXPECT_FALSE(KeptRouteWeights::load(dir.path(), flag)->has_value());
}

TEST(RouterTest, AKeptWeightsFileThatIsNotOursIsNamedWithTheField) {
  testing::TempDir dir;
  const RouteSpec flag = *RouteSpec::parse("cancer=stable:90,canary:10");
  const fs::path file = KeptRouteWeights::file(dir.path(), "cancer");
  const std::string started = R"("started_as": "cancer=stable:90,canary:10")";
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"{not json", "invalid JSON"},
      {"[]", "started_as"},
      {"{" + started + R"(, "weights": {"stable": 1}})", "weights"},
      {"{" + started + R"(, "weights": {"stable": 1, "other": 2}})", "weights.canary"},
      {"{" + started + R"(, "weights": {"stable": "1", "canary": 2}})", "weights.stable"},
      {"{" + started + R"(, "weights": {"stable": 0, "canary": 0}})", "add up to 0"},
      {"{" + started + R"(, "weights": {"stable": -1, "canary": 2}})", "negative"}};
  for (const auto& [text, field] : cases) {
    ASSERT_TRUE(write_file_atomic(file, text).ok());
    Expected<std::optional<RouteSpec>> r = KeptRouteWeights::load(dir.path(), flag);
    ASSERT_FALSE(r.ok()) << text;
    EXPECT_NE(r.status().message().find(file.string()), std::string::npos) << r.status().message();
    EXPECT_NE(r.status().message().find(field), std::string::npos) << r.status().message();
    EXPECT_NE(r.status().message().find("delete the file"), std::string::npos);
  }
}

}  // namespace
}  // namespace kiln::serve
