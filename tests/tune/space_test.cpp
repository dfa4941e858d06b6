#include "kiln/tune/space.h"

#include <gtest/gtest.h>

#include "kiln/core/yaml.h"
#include "kiln/tune/study.h"
#include "support/test_support.h"

namespace kiln::tune {
namespace {

Expected<SearchSpace> parse(const std::string& yaml) {
  std::map<std::string, int> lines;
  auto j = yaml_to_json(yaml, &lines);
  EXPECT_TRUE(j.ok()) << j.status();
  return parse_space(*j, "space.yaml", lines);
}

TEST(SpaceTest, ParsesEveryKindAndConditions) {
  auto s = parse(
      "params:\n"
      "  optimizer.lr: {type: float, low: 1.0e-4, high: 0.1, log: true}\n"
      "  batch_size: {type: int, low: 32, high: 256, step: 32}\n"
      "  optimizer.name: {type: categorical, choices: [sgd, adamw]}\n"
      "  optimizer.momentum: {type: float, low: 0.5, high: 0.99, when: {optimizer.name: sgd}}\n");
  ASSERT_TRUE(s.ok()) << s.status();
  ASSERT_EQ(s->params.size(), 4u);
  EXPECT_TRUE(s->params[0].log);
  EXPECT_EQ(s->params[1].cardinality(), 8);
  EXPECT_EQ(s->params[1].value_at(7), 256);
  EXPECT_EQ(s->params[2].cardinality(), 2);
  EXPECT_TRUE(SearchSpace::active(s->params[3], Json{{"optimizer.name", "sgd"}}));
  EXPECT_FALSE(SearchSpace::active(s->params[3], Json{{"optimizer.name", "adamw"}}));
  // Round trip through JSON (what the study stores).
  auto again = parse_space(s->to_json());
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->to_json(), s->to_json());
  EXPECT_EQ(s->difference(*again), "");
}

// A training config that writes `data: PATH` still takes data.* parameters (data.limit, a table
// spec's data.features.pca.n_components), as --set does; a wrong one is named.
TEST(SpaceTest, DataParametersOfAConfigWithTheDataShorthandAreValid) {
  kiln::testing::TempDir dir;
  kiln::testing::write_text(dir / "train.yaml", "data: dataset.yaml\nmodel: {zoo: mlp}\n");
  auto space = parse(
      "params:\n"
      "  data.features.pca.n_components: {type: int, low: 2, high: 20}\n"
      "  data.limit: {type: int, low: 100, high: 200}\n");
  ASSERT_TRUE(space.ok()) << space.status();
  EXPECT_TRUE(validate_config_space((dir / "train.yaml").string(), {}, *space).ok());
  auto wrong = parse("params:\n  data.features.pca.components: {type: int, low: 2, high: 20}\n");
  ASSERT_TRUE(wrong.ok()) << wrong.status();
  const Status st = validate_config_space((dir / "train.yaml").string(), {}, *wrong);
  EXPECT_NE(st.message().find("data.features.pca.components: unknown field"), std::string::npos)
      << st;
}

TEST(SpaceTest, BadInputNamesLineAndParameter) {
  struct Case {
    const char* yaml;
    const char* expect;
  } cases[] = {
      {"params:\n  x: {type: float, low: 1, high: 1}\n", "empty range"},
      {"params:\n  x: {type: float, low: 2, high: 1}\n", "empty range"},
      {"params:\n  x: {type: float, low: 0, high: 1, log: true}\n", "log range needs low > 0"},
      {"params:\n  x: {type: floaty, low: 0, high: 1}\n", "type: expected float"},
      {"params:\n  x: {type: int, low: 0, high: 5, step: 0}\n", "step"},
      {"params:\n  x: {type: categorical, choices: []}\n", "choices"},
      {"params:\n  x: {type: float, low: 0, high: 1, when: {y: 1}}\n", "not a parameter listed"},
      {"params:\n  x: {type: float, low: 0, high: 1, lo: 3}\n", "unknown key"},
      {"parameters: {}\n", "params"},
  };
  for (const auto& c : cases) {
    auto s = parse(c.yaml);
    ASSERT_FALSE(s.ok()) << c.yaml;
    EXPECT_EQ(s.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(s.status().message().find(c.expect), std::string::npos) << s.status().message();
    EXPECT_NE(s.status().message().find("space.yaml"), std::string::npos);
  }
  auto s =
      parse("params:\n  a: {type: float, low: 0, high: 1}\n  x: {type: float, low: 0, high: 0}\n");
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.status().message().find("line 3"), std::string::npos) << s.status().message();
  EXPECT_NE(s.status().message().find("parameter x"), std::string::npos);
}

TEST(SpaceTest, DifferenceNamesChangedAddedAndRemovedParameters) {
  auto a =
      parse("params:\n  x: {type: float, low: 0, high: 1}\n  y: {type: int, low: 0, high: 3}\n");
  auto b =
      parse("params:\n  x: {type: float, low: 0, high: 2}\n  z: {type: int, low: 0, high: 3}\n");
  ASSERT_TRUE(a.ok() && b.ok());
  const std::string d = a->difference(*b);
  EXPECT_NE(d.find("x:"), std::string::npos) << d;
  EXPECT_NE(d.find("y: only in the new space"), std::string::npos) << d;
  EXPECT_NE(d.find("z: only in the study's space"), std::string::npos) << d;
}

TEST(SpaceTest, ValueTextRoundTrips) {
  EXPECT_EQ(value_text(Json(3)), "3");
  EXPECT_EQ(value_text(Json(0.001)), "0.001");
  EXPECT_EQ(value_text(Json("relu")), "relu");
  EXPECT_EQ(std::strtod(value_text(Json(0.1 + 0.2)).c_str(), nullptr), 0.1 + 0.2);
}

}  // namespace
}  // namespace kiln::tune
