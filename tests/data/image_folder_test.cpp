// Image folders (format: image_folder): ROOT/<class>/*.png|jpg written from real Fashion-MNIST
// images, decoded with libpng/libjpeg-turbo, a corrupt file skipped or refused by policy, resizing
// and RGB, limits that keep every class, and `prepare` and `profile` working on them as on IDX.
#include "kiln/data/image_folder.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <fstream>

#include "kiln/core/files.h"
#include "kiln/data/prepare.h"
#include "kiln/data/profile.h"
#include "kiln/data/spec.h"
#include "support/test_support.h"

namespace kiln::data {
namespace {

using testing::TempDir;

constexpr int kPerClass = 6;
const std::vector<std::string> kClasses = {"bag", "coat", "sneaker"};
const std::vector<int64_t> kFmnistLabels = {8, 4, 7};  // Bag, Coat, Sneaker

/// Real Fashion-MNIST test images of three classes, kPerClass each, in class order.
ImageSet fmnist_three_classes() {
  auto all = read_idx_images(testing::fashion_mnist_dir() / "t10k-images-idx3-ubyte.gz",
                             testing::fashion_mnist_dir() / "t10k-labels-idx1-ubyte.gz", 400);
  EXPECT_TRUE(all.ok()) << all.status();
  std::vector<torch::Tensor> images;
  std::vector<int64_t> labels;
  for (size_t c = 0; c < kFmnistLabels.size(); ++c) {
    int taken = 0;
    for (int64_t i = 0; i < all->size() && taken < kPerClass; ++i)
      if (all->labels[i].item<int64_t>() == kFmnistLabels[c]) {
        images.push_back(all->images[i]);
        labels.push_back(static_cast<int64_t>(c));
        ++taken;
      }
  }
  return {torch::stack(images), torch::tensor(labels), "fmnist"};
}

/// Writes `set` as DIR/<class>/NN.png, the last image of each class as JPEG, plus a truncated
/// PNG, a JPEG cut in half (libjpeg pads it with grey and warns), a text file named .jpg, and a
/// README that is not an image.
void write_folder(const fs::path& dir, const ImageSet& set) {
  std::vector<int> written(kClasses.size(), 0);
  for (int64_t i = 0; i < set.size(); ++i) {
    const auto c = static_cast<size_t>(set.labels[i].item<int64_t>());
    const fs::path folder = dir / kClasses[c];
    fs::create_directories(folder);
    char name[16];
    const bool jpeg = written[c] == kPerClass - 1;
    std::snprintf(name, sizeof(name), "%02d.%s", written[c]++, jpeg ? "JPG" : "png");
    auto bytes = jpeg ? encode_jpeg(set.images[i]) : encode_png(set.images[i]);
    ASSERT_TRUE(bytes.ok()) << bytes.status();
    ASSERT_TRUE(write_file_atomic(folder / name, *bytes).ok());
  }
  auto png = encode_png(set.images[0]);
  ASSERT_TRUE(png.ok());
  ASSERT_TRUE(write_file_atomic(dir / "coat" / "zz-truncated.png", png->substr(0, 60)).ok());
  ASSERT_TRUE(write_file_atomic(dir / "bag" / "zz-not-an-image.jpg", "hello").ok());
  auto jpeg = encode_jpeg(set.images[0]);
  ASSERT_TRUE(jpeg.ok());
  ASSERT_TRUE(
      write_file_atomic(dir / "sneaker" / "zz-half.jpeg", jpeg->substr(0, jpeg->size() / 2)).ok());
  ASSERT_TRUE(write_file_atomic(dir / "README.txt", "three classes").ok());
}

TEST(ImageFolder, DecodesPngAndJpegAndSkipsCorruptFilesByPath) {
  TempDir t;
  const ImageSet original = fmnist_three_classes();
  write_folder(t / "train", original);
  ImageFolderOptions options;  // grey, sizes as stored, corrupt: skip
  auto folder = read_image_folder(t / "train", options);
  ASSERT_TRUE(folder.ok()) << folder.status();
  EXPECT_EQ(folder->classes, kClasses);
  EXPECT_EQ(folder->files, 3 * kPerClass + 3);
  ASSERT_EQ(folder->skipped.size(), 3u);
  std::set<std::string> skipped;
  for (const auto& s : folder->skipped) skipped.insert(s.path.filename().string());
  EXPECT_TRUE(skipped.count("zz-truncated.png"));
  EXPECT_TRUE(skipped.count("zz-not-an-image.jpg"));
  EXPECT_TRUE(skipped.count("zz-half.jpeg"));
  const ImageSet& set = folder->set;
  ASSERT_EQ(set.images.sizes(), (c10::IntArrayRef{3 * kPerClass, 1, 28, 28}));
  // Files are interleaved across classes: image k is class k % 3, file k / 3 of that class.
  for (int64_t k = 0; k < set.size(); ++k) {
    const int64_t c = k % 3, n = k / 3;
    EXPECT_EQ(set.labels[k].item<int64_t>(), c);
    const torch::Tensor want = original.images[c * kPerClass + n];
    const double diff =
        (set.images[k].to(torch::kFloat32) - want.to(torch::kFloat32)).abs().max().item<double>();
    if (n == kPerClass - 1)
      EXPECT_LE(diff, 40) << "JPEG (lossy) image " << k;
    else
      EXPECT_EQ(diff, 0) << "PNG (lossless) image " << k;
  }
  // The digest covers content: another byte in one file changes it.
  const std::string before = folder->sha256;
  auto png = encode_png(original.images[1]);
  ASSERT_TRUE(write_file_atomic(t / "train" / "bag" / "00.png", *png).ok());
  auto again = read_image_folder(t / "train", options);
  ASSERT_TRUE(again.ok());
  EXPECT_NE(again->sha256, before);

  options.corrupt = "fail";
  auto refused = read_image_folder(t / "train", options);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("zz-"), std::string::npos) << refused.status();
  EXPECT_NE(refused.status().message().find("cannot decode"), std::string::npos);
}

TEST(ImageFolder, ResizesToRgbAndLimitsKeepEveryClass) {
  TempDir t;
  write_folder(t / "train", fmnist_three_classes());
  ImageFolderOptions options;
  options.height = 32;
  options.width = 40;
  options.channels = 3;
  options.resize = "stretch";
  auto folder = read_image_folder(t / "train", options, {}, 7);
  ASSERT_TRUE(folder.ok()) << folder.status();
  EXPECT_EQ(folder->set.images.sizes(), (c10::IntArrayRef{7, 3, 32, 40}));
  EXPECT_TRUE(torch::equal(folder->set.images.select(1, 0), folder->set.images.select(1, 2)));
  std::set<int64_t> labels;
  for (int64_t i = 0; i < folder->set.size(); ++i)
    labels.insert(folder->set.labels[i].item<int64_t>());
  EXPECT_EQ(labels.size(), 3u);
  options.resize = "crop";
  options.height = options.width = 14;
  auto cropped = read_image_folder(t / "train", options);
  ASSERT_TRUE(cropped.ok()) << cropped.status();
  EXPECT_EQ(cropped->set.images.sizes(), (c10::IntArrayRef{18, 3, 14, 14}));

  // A folder for a class the spec does not list is named.
  auto unlisted = read_image_folder(t / "train", options, {"bag", "coat"});
  ASSERT_FALSE(unlisted.ok());
  EXPECT_NE(unlisted.status().message().find("sneaker"), std::string::npos) << unlisted.status();
  auto missing = read_image_folder(t / "nowhere", options);
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("nowhere"), std::string::npos);
}

TEST(ImageFolder, SpecProfileAndPrepareWorkAsOnIdx) {
  TempDir t;
  const ImageSet set = fmnist_three_classes();
  write_folder(t / "images" / "train", set);
  write_folder(t / "images" / "test", set);
  testing::write_text(t / "spec.yaml", R"(name: clothes
kind: images
format: image_folder
root: images
splits: {train: train, test: test}
image: {size: 28, channels: 1}
corrupt: skip
split: {val: 0.2, seed: 3}
)");
  auto spec = load_dataset_spec(t / "spec.yaml");
  ASSERT_TRUE(spec.ok()) << spec.status();
  auto profile = profile_dataset(*spec, ProfileOptions());
  ASSERT_TRUE(profile.ok()) << profile.status();
  EXPECT_EQ((*profile)["classes"], Json(kClasses));
  EXPECT_EQ((*profile)["splits"]["train"]["rows"], 3 * kPerClass);
  EXPECT_EQ((*profile)["splits"]["train"]["corrupt_skipped"], 3);
  auto prepared = prepare_dataset(*spec, PrepareOptions(t / "snapshots"));
  ASSERT_TRUE(prepared.ok()) << prepared.status();
  const Json& m = prepared->manifest;
  EXPECT_EQ(m["schema"]["target"]["classes"], Json(kClasses));
  EXPECT_EQ(m["schema"]["input"]["shape"], Json({1, 28, 28}));
  EXPECT_EQ(m["cleaning"]["corrupt_skipped"], 6);
  EXPECT_EQ(m["splits"]["test"]["rows"], 3 * kPerClass);
  EXPECT_EQ(m["sources"][0]["folder"], "train");

  testing::write_text(t / "bad.yaml", R"(name: clothes
kind: images
format: image_folder
root: images
splits: {train: train}
image: {size: [28, 0]}
)");
  auto bad = load_dataset_spec(t / "bad.yaml");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("image.size"), std::string::npos) << bad.status();
  testing::write_text(t / "idx.yaml", R"(name: x
kind: images
format: idx
corrupt: skip
splits: {train: {images: a, labels: b}}
)");
  auto idx = load_dataset_spec(t / "idx.yaml");
  ASSERT_FALSE(idx.ok());
  EXPECT_NE(idx.status().message().find("only for format: image_folder"), std::string::npos)
      << idx.status();
}

}  // namespace
}  // namespace kiln::data
