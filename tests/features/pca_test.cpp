#include "kiln/features/pca.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <limits>

#include "datasets.h"
#include "kiln/features/scalers.h"

namespace kiln::features {
namespace {

using kiln::testing::TempDir;
using testing::breast_cancer;
using testing::reparse;
using testing::split;

/// Standardised breast_cancer train/test (the scaler fitted on train).
testing::Split standardised() {
  auto [train, test] = split(breast_cancer().x);
  StandardScaler scaler;
  EXPECT_TRUE(scaler.fit(train).ok());
  return {*scaler.apply(train), *scaler.apply(test)};
}

double sum(const std::vector<double>& v) {
  double s = 0;
  for (double d : v) s += d;
  return s;
}

TEST(Pca, ExplainedVarianceIsSortedAndSumsToAtMostOne) {
  auto [train, test] = standardised();
  Pca all;
  ASSERT_TRUE(all.fit(train).ok());
  EXPECT_EQ(all.output_features(), 30);
  const auto& r = all.explained_variance_ratio();
  EXPECT_LE(sum(r), 1.0 + 1e-12);
  EXPECT_NEAR(sum(r), 1.0, 1e-9);  // every component kept
  for (size_t i = 1; i < r.size(); ++i) EXPECT_GE(r[i - 1], r[i]);
  // On standardised data the total variance is F * n / (n - 1) (population-standardised columns).
  const double n = static_cast<double>(train.size(0));
  EXPECT_NEAR(sum(all.explained_variance()), 30 * n / (n - 1), 1e-3);

  Pca five(PcaOptions().n_components(5));
  ASSERT_TRUE(five.fit(train).ok());
  EXPECT_EQ(five.output_features(), 5);
  EXPECT_LT(sum(five.explained_variance_ratio()), 1.0);
  auto z = five.apply(test);
  ASSERT_TRUE(z.ok());
  EXPECT_EQ(z->sizes(), (std::vector<int64_t>{test.size(0), 5}));
}

TEST(Pca, VarianceFractionPicksFewestComponents) {
  auto [train, test] = standardised();
  Pca pca(PcaOptions().variance_fraction(0.95));
  ASSERT_TRUE(pca.fit(train).ok());
  const auto& r = pca.explained_variance_ratio();
  const double kept = sum(r);
  EXPECT_GT(kept, 0.95);
  EXPECT_LE(kept - r.back(), 0.95);  // one fewer would not reach the fraction
  EXPECT_LT(pca.output_features(), 30);
}

TEST(Pca, ComponentsAreOrthonormalWithDeterministicSigns) {
  auto [train, test] = standardised();
  Pca a(PcaOptions().n_components(10));
  ASSERT_TRUE(a.fit(train).ok());
  torch::Tensor c = a.components();
  EXPECT_TRUE(torch::allclose(torch::matmul(c, c.t()), torch::eye(10, torch::kFloat64), 0, 1e-10));
  // svd_flip: each component's largest-magnitude entry is positive.
  torch::Tensor pivot = c.abs().argmax(1, true);
  EXPECT_TRUE((c.gather(1, pivot) > 0).all().item<bool>());
  // Refitting (even on a copy in another layout) gives the same components.
  Pca b(PcaOptions().n_components(10));
  ASSERT_TRUE(b.fit(train.t().contiguous().t()).ok());
  EXPECT_TRUE(torch::allclose(a.components(), b.components(), 0, 1e-12));
  Pca again(PcaOptions().n_components(10));
  ASSERT_TRUE(again.fit(train).ok());
  EXPECT_TRUE(torch::equal(a.components(), again.components()));
}

TEST(Pca, MatchesEigendecompositionOfCovariance) {
  auto [train, test] = standardised();
  Pca pca;
  ASSERT_TRUE(pca.fit(train).ok());
  torch::Tensor x = train.to(torch::kFloat64);
  torch::Tensor xc = x - x.mean(0);
  torch::Tensor cov = torch::matmul(xc.t(), xc) / static_cast<double>(x.size(0) - 1);
  auto [evals, evecs] = torch::linalg_eigh(cov, "L");
  evals = evals.flip(0);
  evecs = evecs.flip(1).t();  // rows = components, descending
  torch::Tensor pivot = evecs.abs().argmax(1, true);
  evecs = evecs * torch::sign(evecs.gather(1, pivot));
  for (int64_t k = 0; k < 30; ++k) {
    EXPECT_NEAR(pca.explained_variance()[k], evals[k].item<double>(),
                1e-9 * evals[0].item<double>())
        << "component " << k;
  }
  // Well-separated leading components agree closely; compare the first 10.
  EXPECT_TRUE(torch::allclose(pca.components().narrow(0, 0, 10), evecs.narrow(0, 0, 10), 0, 1e-7));
  // apply() is the projection of the centred data.
  torch::Tensor expected =
      torch::matmul(test.to(torch::kFloat64) - x.mean(0), pca.components().t());
  auto z = pca.apply(test.to(torch::kFloat64));
  ASSERT_TRUE(z.ok());
  EXPECT_TRUE(torch::allclose(*z, expected, 0, 1e-10));
}

/// Compares with numpy's SVD (with scikit-learn's svd_flip) when a python with numpy exists.
/// KILN_TEST_PYTHON overrides /usr/bin/python3.
TEST(Pca, MatchesNumpyReference) {
  const char* env = std::getenv("KILN_TEST_PYTHON");
  const std::string python = env && *env ? env : "/usr/bin/python3";
  if (std::system((python + " -c 'import numpy' >/dev/null 2>&1").c_str()) != 0) {
    GTEST_SKIP() << python << " with numpy is not available";
  }
  auto [train, test] = standardised();
  TempDir dir;
  {
    std::ofstream out(dir / "x.csv");
    auto a = train.accessor<float, 2>();
    char buf[64];
    for (int64_t r = 0; r < train.size(0); ++r) {
      for (int64_t c = 0; c < train.size(1); ++c) {
        std::snprintf(buf, sizeof buf, "%.17g", static_cast<double>(a[r][c]));
        out << (c ? "," : "") << buf;
      }
      out << "\n";
    }
  }
  kiln::testing::write_text(dir / "ref.py", R"(import json, sys
import numpy as np
x = np.loadtxt(sys.argv[1], delimiter=",")
xc = x - x.mean(axis=0)
u, s, vt = np.linalg.svd(xc, full_matrices=False)
idx = np.argmax(np.abs(vt), axis=1)
vt = vt * np.sign(vt[np.arange(vt.shape[0]), idx])[:, None]
ev = s ** 2 / (x.shape[0] - 1)
print(json.dumps({"components": vt.tolist(), "ratio": (ev / ev.sum()).tolist()}))
)");
  const std::string cmd = python + " " + (dir / "ref.py").string() + " " +
                          (dir / "x.csv").string() + " > " + (dir / "ref.json").string();
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  Json ref = Json::parse(kiln::testing::read_text(dir / "ref.json"));

  Pca pca;
  ASSERT_TRUE(pca.fit(train).ok());
  for (int64_t k = 0; k < 30; ++k) {
    EXPECT_NEAR(pca.explained_variance_ratio()[k], ref["ratio"][k].get<double>(), 1e-12);
  }
  torch::Tensor comps = pca.components();
  for (int64_t k = 0; k < 10; ++k) {
    for (int64_t f = 0; f < 30; ++f) {
      EXPECT_NEAR(comps[k][f].item<double>(), ref["components"][k][f].get<double>(), 1e-8)
          << "component " << k << " feature " << f;
    }
  }
}

TEST(Pca, JsonRoundTripIsBitIdentical) {
  auto [train, test] = standardised();
  for (const PcaOptions& o : {PcaOptions().n_components(7), PcaOptions().variance_fraction(0.9),
                              PcaOptions().n_components(4).whiten(true)}) {
    Pca pca(o);
    ASSERT_TRUE(pca.fit(train).ok());
    Json j = pca.to_json();
    EXPECT_EQ(j["components"].size(), static_cast<size_t>(pca.output_features()));
    EXPECT_EQ(j["components"][0].size(), 30u);
    auto loaded = transform_from_json(reparse(j));
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    EXPECT_TRUE(testing::bit_equal(*(*loaded)->apply(test), *pca.apply(test)));
    EXPECT_EQ((*loaded)->to_json(), j);
  }
}

TEST(Pca, WhitenGivesUnitVarianceOnTrain) {
  auto [train, test] = standardised();
  Pca pca(PcaOptions().n_components(5).whiten(true));
  auto z = pca.fit_apply(train.to(torch::kFloat64));
  ASSERT_TRUE(z.ok());
  torch::Tensor var = z->var(0, /*unbiased=*/true);
  EXPECT_TRUE(torch::allclose(var, torch::ones({5}, torch::kFloat64), 0, 1e-9));
}

TEST(Pca, Errors) {
  auto [train, test] = standardised();
  torch::Tensor holes = train.clone();
  holes.index_put_({4, 7}, std::numeric_limits<float>::quiet_NaN());
  Status s = Pca().fit(holes);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("column 7"), std::string::npos) << s;

  EXPECT_EQ(Pca(PcaOptions().n_components(31)).fit(train).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(Pca(PcaOptions().n_components(3).variance_fraction(0.5)).fit(train).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(Pca().fit(torch::ones({10, 3})).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(Pca().fit(train.narrow(0, 0, 1)).code(), StatusCode::kInvalidArgument);

  Pca pca(PcaOptions().n_components(3));
  ASSERT_TRUE(pca.fit(train).ok());
  auto z = pca.apply(test.narrow(1, 0, 29));
  ASSERT_FALSE(z.ok());
  EXPECT_NE(z.status().message().find("expected 30 features, got 29"), std::string::npos);
}

}  // namespace
}  // namespace kiln::features
