#include "kiln/rollout/state.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <iterator>

#include "support/test_support.h"

namespace kiln::rollout {
namespace {

TEST(RolloutStateTest, RoundTripsThroughTheStateFile) {
  testing::TempDir dir;
  RolloutState s;
  s.options = RolloutOptions("cancer", "http://127.0.0.1:8000", "canary");
  s.options.steps({25, 50, 100})
      .interval_ms(1500)
      .max_p99_ms(12.5)
      .promote("bc@production=3")
      .metrics_from({"http://127.0.0.1:9100", "http://127.0.0.1:9101"})
      .follow_timeout_ms(2500)
      .cluster("/srv/kiln/fmnist.yaml");
  s.current_step = 1;
  s.started = utc_now();
  s.history.push_back({{"step", 1}, {"verdict", "pass"}, {"requests", 420}});
  const auto path = dir / "rollouts" / "cancer.json";
  ASSERT_TRUE(save_rollout_state(path, s).ok());
  Expected<RolloutState> back = load_rollout_state(path);
  ASSERT_TRUE(back.ok()) << back.status().message();
  EXPECT_EQ(back->to_json(), s.to_json());
  EXPECT_EQ(back->options.steps_, (std::vector<int>{25, 50, 100}));
  EXPECT_EQ(back->options.interval_ms_, 1500);
  EXPECT_EQ(back->options.promote_, "bc@production=3");
  EXPECT_EQ(back->options.metrics_from_.size(), 2u);
  EXPECT_EQ(back->options.follow_timeout_ms_, 2500);
  EXPECT_EQ(back->options.cluster_, "/srv/kiln/fmnist.yaml");
  EXPECT_EQ(back->status, "running");
  EXPECT_FALSE(back->updated.empty());
  // No temp file is left beside it.
  const auto files = std::distance(std::filesystem::directory_iterator(dir / "rollouts"),
                                   std::filesystem::directory_iterator());
  EXPECT_EQ(files, 1);
}

TEST(RolloutStateTest, MissingAndCorruptFilesAreNamed) {
  testing::TempDir dir;
  EXPECT_EQ(load_rollout_state(dir / "none.json").status().code(), StatusCode::kNotFound);
  testing::write_text(dir / "bad.json", R"({"route": "cancer"})");
  Expected<RolloutState> bad = load_rollout_state(dir / "bad.json");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("bad.json"), std::string::npos);
  EXPECT_FALSE(rollout_state_path("../x").ok());
  ::setenv("KILN_HOME", dir.path().c_str(), 1);
  EXPECT_EQ(*rollout_state_path("cancer"), dir / "rollouts" / "cancer.json");
}

}  // namespace
}  // namespace kiln::rollout
