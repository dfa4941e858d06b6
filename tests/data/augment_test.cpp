#include "kiln/data/augment.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>

#include "kiln/data/images.h"
#include "support/test_support.h"

namespace kiln::data {
namespace {

// 64 real Fashion-MNIST images as float32 in [0, 1], N×1×28×28.
const torch::Tensor& real_images() {
  static const torch::Tensor images = [] {
    const auto dir = kiln::testing::fashion_mnist_dir();
    auto set =
        read_idx_images(dir / "t10k-images-idx3-ubyte.gz", dir / "t10k-labels-idx1-ubyte.gz", 64);
    if (!set.ok()) throw std::runtime_error(set.status().to_string());
    return set->images.to(torch::kFloat32).div(255.f).contiguous();
  }();
  return images;
}

torch::Tensor augment(const AugmentOptions& options, const torch::Tensor& x, uint64_t seed = 1) {
  auto aug = Augmenter::Create(options);
  if (!aug.ok()) throw std::runtime_error(aug.status().to_string());
  Rng rng(seed);
  auto out = aug->augmented(x, rng);
  if (!out.ok()) throw std::runtime_error(out.status().to_string());
  return *out;
}

// `shifted(x, dy, dx)(y, x') = x(y - dy, x' - dx)`, zero outside.
torch::Tensor shifted(const torch::Tensor& img, int64_t dy, int64_t dx) {
  const int64_t h = img.size(-2), w = img.size(-1);
  torch::Tensor out = torch::zeros_like(img);
  const int64_t y0 = std::max<int64_t>(0, dy), y1 = std::min(h, h + dy);
  const int64_t x0 = std::max<int64_t>(0, dx), x1 = std::min(w, w + dx);
  if (y0 < y1 && x0 < x1) {
    using torch::indexing::Slice;
    out.index_put_({"...", Slice(y0, y1), Slice(x0, x1)},
                   img.index({"...", Slice(y0 - dy, y1 - dy), Slice(x0 - dx, x1 - dx)}));
  }
  return out;
}

// The shift in [-max, max]² that turns `in` into `out`, or nullopt.
std::optional<std::pair<int64_t, int64_t>> find_shift(const torch::Tensor& in,
                                                      const torch::Tensor& out, int64_t max) {
  for (int64_t dy = -max; dy <= max; ++dy)
    for (int64_t dx = -max; dx <= max; ++dx)
      if (torch::equal(shifted(in, dy, dx), out)) return std::make_pair(dy, dx);
  return std::nullopt;
}

TEST(AugmentRng, StreamsAreReproducibleAndInRange) {
  Rng a = Rng::from_key(1, 2, 3), b = Rng::from_key(1, 2, 3), c = Rng::from_key(1, 2, 4);
  bool differs = false;
  for (int i = 0; i < 100; ++i) {
    const uint64_t va = a.next();
    EXPECT_EQ(va, b.next());
    differs |= va != c.next();
  }
  EXPECT_TRUE(differs);
  Rng r(7);
  std::vector<int> counts(5, 0);
  double sum = 0, sum_sq = 0;
  for (int i = 0; i < 20000; ++i) {
    const int64_t k = r.uniform_int(-2, 2);
    ASSERT_GE(k, -2);
    ASSERT_LE(k, 2);
    ++counts[k + 2];
    const double u = r.uniform();
    ASSERT_GE(u, 0.0);
    ASSERT_LT(u, 1.0);
    float n1, n2;
    r.normal_pair(&n1, &n2);
    sum += n1 + n2;
    sum_sq += n1 * n1 + n2 * n2;
  }
  for (int c : counts) EXPECT_NEAR(c, 4000, 300);
  EXPECT_NEAR(sum / 40000, 0.0, 0.03);
  EXPECT_NEAR(sum_sq / 40000, 1.0, 0.03);
}

TEST(AugmentOptions, ValidateNamesTheField) {
  EXPECT_TRUE(AugmentOptions().validate().ok());
  EXPECT_FALSE(AugmentOptions().enabled());
  auto bad = [](const AugmentOptions& o) { return o.validate(); };
  EXPECT_EQ(bad(AugmentOptions().hflip(1.5f)).code(), StatusCode::kInvalidArgument);
  EXPECT_NE(bad(AugmentOptions().hflip(1.5f)).message().find("hflip"), std::string::npos);
  EXPECT_EQ(bad(AugmentOptions().crop_padding(-1)).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(bad(AugmentOptions().noise_std(-0.1f)).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(bad(AugmentOptions().erase(1.f).erase_area(0.5f, 0.1f)).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(bad(AugmentOptions().erase_ratio(0.f, 1.f)).code(), StatusCode::kInvalidArgument);
  EXPECT_FALSE(Augmenter::Create(AugmentOptions().erase(-0.1f)).ok());
  const Json j = AugmentOptions().crop_padding(2).hflip(0.5f).to_json();
  EXPECT_EQ(j["crop_padding"], 2);
  EXPECT_FLOAT_EQ(j["hflip"].get<float>(), 0.5f);
}

TEST(AugmentApply, RejectsWrongTensors) {
  auto aug = Augmenter::Create(AugmentOptions().hflip(1.f));
  ASSERT_TRUE(aug.ok());
  Rng rng(1);
  torch::Tensor rank3 = torch::zeros({2, 28, 28});
  EXPECT_EQ(aug->apply(rank3, rng).code(), StatusCode::kInvalidArgument);
  torch::Tensor u8 = torch::zeros({2, 1, 28, 28}, torch::kUInt8);
  EXPECT_EQ(aug->apply(u8, rng).code(), StatusCode::kInvalidArgument);
  torch::Tensor cl = torch::zeros({2, 3, 8, 8}).contiguous(torch::MemoryFormat::ChannelsLast);
  EXPECT_EQ(aug->apply(cl, rng).code(), StatusCode::kInvalidArgument);
  torch::Tensor undefined;
  EXPECT_EQ(aug->apply(undefined, rng).code(), StatusCode::kInvalidArgument);
}

TEST(AugmentApply, ProbabilityZeroIsIdentity) {
  const torch::Tensor& x = real_images();
  EXPECT_TRUE(torch::equal(augment(AugmentOptions(), x), x));
  EXPECT_TRUE(torch::equal(
      augment(AugmentOptions().hflip(0.f).erase(0.f).noise_std(0.f).crop_padding(0), x), x));
}

TEST(AugmentApply, FlipWithProbabilityOneIsExactMirror) {
  const torch::Tensor& x = real_images();
  EXPECT_TRUE(torch::equal(augment(AugmentOptions().hflip(1.f), x), torch::flip(x, {3})));
  // Multi-channel, non-square.
  torch::Tensor rgb = torch::rand({4, 3, 5, 7});
  EXPECT_TRUE(torch::equal(augment(AugmentOptions().hflip(1.f), rgb), torch::flip(rgb, {3})));
}

TEST(AugmentApply, HalfFlipsMirrorSomeSamplesOnly) {
  const torch::Tensor& x = real_images();
  torch::Tensor out = augment(AugmentOptions().hflip(0.5f), x);
  int flipped = 0;
  for (int64_t i = 0; i < x.size(0); ++i) {
    const bool same = torch::equal(out[i], x[i]);
    const bool mirrored = torch::equal(out[i], torch::flip(x[i], {2}));
    ASSERT_TRUE(same || mirrored) << "sample " << i;
    flipped += mirrored && !same;
  }
  EXPECT_GT(flipped, 16);
  EXPECT_LT(flipped, 48);
}

TEST(AugmentApply, CropWithPaddingKeepsShapeAndShiftsWithZeroFill) {
  const torch::Tensor& x = real_images();
  torch::Tensor out = augment(AugmentOptions().crop_padding(2), x);
  EXPECT_EQ(out.sizes(), x.sizes());
  int moved = 0;
  for (int64_t i = 0; i < x.size(0); ++i) {
    auto shift = find_shift(x[i], out[i], 2);
    ASSERT_TRUE(shift.has_value()) << "sample " << i << " is not a shift of at most 2 px";
    moved += shift->first != 0 || shift->second != 0;
  }
  EXPECT_GT(moved, 48);  // 24 of 25 offsets move the image
}

TEST(AugmentApply, CropAndTranslateComposeIntoOneShift) {
  torch::Tensor x = torch::rand({32, 2, 9, 11}) + 0.1f;  // no zeros, so the fill is visible
  torch::Tensor out = augment(AugmentOptions().crop_padding(1).translate(2), x, 5);
  int64_t max_shift = 0;
  for (int64_t i = 0; i < x.size(0); ++i) {
    auto shift = find_shift(x[i], out[i], 3);
    ASSERT_TRUE(shift.has_value()) << "sample " << i;
    max_shift = std::max({max_shift, std::abs(shift->first), std::abs(shift->second)});
  }
  EXPECT_GE(max_shift, 2);
}

TEST(AugmentApply, FlipAndShiftTogether) {
  torch::Tensor x = torch::rand({32, 1, 6, 6}) + 0.1f;
  torch::Tensor out = augment(AugmentOptions().crop_padding(2).hflip(0.5f), x, 9);
  for (int64_t i = 0; i < x.size(0); ++i) {
    const bool plain = find_shift(x[i], out[i], 2).has_value();
    const bool mirrored = find_shift(torch::flip(x[i], {2}), out[i], 2).has_value();
    EXPECT_TRUE(plain || mirrored) << "sample " << i;
  }
}

TEST(AugmentApply, NoiseChangesTheMeanLittle) {
  const torch::Tensor& x = real_images();
  torch::Tensor out = augment(AugmentOptions().noise_std(0.1f), x);
  torch::Tensor diff = out - x;
  EXPECT_NEAR(out.mean().item<float>(), x.mean().item<float>(), 0.002f);
  EXPECT_NEAR(diff.std().item<float>(), 0.1f, 0.002f);
  EXPECT_FALSE(torch::equal(out, x));
}

TEST(AugmentApply, EraseFillsOneRectangle) {
  const torch::Tensor& x = real_images();
  const float fill = 0.5f;  // no pixel of a uint8/255 image equals 0.5 exactly
  torch::Tensor out =
      augment(AugmentOptions().erase(1.f).erase_area(0.05f, 0.2f).erase_value(fill), x);
  int erased = 0;
  for (int64_t i = 0; i < x.size(0); ++i) {
    torch::Tensor changed = (out[i][0] != x[i][0]);
    torch::Tensor filled = (out[i][0] == fill);
    EXPECT_TRUE(torch::equal(changed.logical_and(filled.logical_not()), torch::zeros_like(changed)))
        << "sample " << i << ": a changed pixel is not the fill value";
    if (filled.sum().item<int64_t>() == 0) continue;
    ++erased;
    torch::Tensor nz = filled.nonzero();
    const int64_t y0 = nz.select(1, 0).min().item<int64_t>(),
                  y1 = nz.select(1, 0).max().item<int64_t>();
    const int64_t x0 = nz.select(1, 1).min().item<int64_t>(),
                  x1 = nz.select(1, 1).max().item<int64_t>();
    const int64_t area = (y1 - y0 + 1) * (x1 - x0 + 1);
    EXPECT_EQ(filled.sum().item<int64_t>(), area) << "sample " << i << ": not a full rectangle";
    EXPECT_GE(area, 0.05 * 784 * 0.6);
    EXPECT_LE(area, 0.2 * 784 * 1.4);
  }
  EXPECT_GT(erased, 56);  // almost every sample finds a fitting rectangle in 10 draws
}

TEST(AugmentApply, SameRngSameResultDifferentRngDifferentResult) {
  const torch::Tensor& x = real_images();
  const auto opts = AugmentOptions().crop_padding(2).hflip(0.5f).noise_std(0.05f).erase(0.5f);
  torch::Tensor a = augment(opts, x, 42), b = augment(opts, x, 42), c = augment(opts, x, 43);
  EXPECT_TRUE(torch::equal(a, b));
  EXPECT_FALSE(torch::equal(a, c));
  // In place gives the same as the copy.
  auto aug = Augmenter::Create(opts);
  ASSERT_TRUE(aug.ok());
  torch::Tensor y = x.clone();
  Rng rng(42);
  ASSERT_TRUE(aug->apply(y, rng).ok());
  EXPECT_TRUE(torch::equal(y, a));
}

}  // namespace
}  // namespace kiln::data
