// The image half of `kiln data profile` (it reads pixels as tensors); tables are in profile.cpp,
// which stays free of LibTorch for the torch-free `kiln` front binary.
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <unordered_set>

#include "kiln/core/hash.h"
#include "kiln/data/image_folder.h"
#include "kiln/data/images.h"
#include "kiln/data/profile.h"

namespace kiln::data {
namespace {

Expected<ImageSet> read_image_split(const DatasetSpec& spec, const ImageSplitSource& src,
                                    int64_t limit, std::vector<std::string>* classes,
                                    Json* folder_report) {
  if (spec.image_format == ImageFormat::kImageFolder) {
    KILN_ASSIGN_OR_RETURN(ImageFolder folder,
                          read_image_folder(src.folder, spec.image_folder, *classes, limit));
    *classes = folder.classes;
    Json skipped = Json::array();
    for (const SkippedImage& s : folder.skipped)
      skipped.push_back({{"file", s.path.string()}, {"reason", s.reason}});
    *folder_report = {{"folder", src.folder.string()},
                      {"files", folder.files},
                      {"classes", folder.classes},
                      {"corrupt_skipped", folder.skipped.size()},
                      {"skipped_files", skipped}};
    return folder.set;
  }
  if (spec.image_format == ImageFormat::kIdx) return read_idx_images(src.images, src.labels, limit);
  return read_cifar10(src.batches, limit);
}

}  // namespace

Expected<Json> profile_dataset(const DatasetSpec& spec, const ProfileOptions& options) {
  if (spec.kind != DatasetKind::kImages) return profile_table_dataset(spec, options);
  Json report;
  report["dataset"] = spec.name;
  report["kind"] = "images";
  report["task"] = "classification";
  report["sources"] = Json::array();
  Json splits = Json::object();
  int64_t total_dups = 0;
  Json dup_detail = Json::object();
  const int64_t limit = options.limit_ > 0 ? options.limit_ : spec.limit;
  std::vector<std::string> classes = spec.classes;
  const std::vector<const ImageSplitSource*> order = spec.image_splits_train_first();
  for (const ImageSplitSource* src_ptr : order) {
    const ImageSplitSource& src = *src_ptr;
    Json folder_report;
    KILN_ASSIGN_OR_RETURN(ImageSet set,
                          read_image_split(spec, src, limit, &classes, &folder_report));
    std::vector<fs::path> files = spec.image_format == ImageFormat::kIdx
                                      ? std::vector<fs::path>{src.images, src.labels}
                                      : src.batches;
    if (spec.image_format == ImageFormat::kImageFolder) {
      files.clear();
      report["sources"].push_back(
          {{"split", src.split}, {"path", src.folder.string()}, {"files", folder_report["files"]}});
    }
    for (const auto& f : files) {
      KILN_ASSIGN_OR_RETURN(std::string sha, sha256_file(f));
      report["sources"].push_back({{"split", src.split}, {"path", f.string()}, {"sha256", sha}});
    }
    const int64_t n = set.size();
    Json split;
    split["rows"] = n;
    std::vector<int64_t> shape(set.images.sizes().begin(), set.images.sizes().end());
    split["shape"] = shape;
    auto labels = set.labels.accessor<int64_t, 1>();
    std::vector<int64_t> per_label;
    for (int64_t i = 0; i < n; ++i) {
      int64_t l = labels[i];
      if (l >= static_cast<int64_t>(per_label.size())) per_label.resize(static_cast<size_t>(l) + 1);
      per_label[static_cast<size_t>(l)]++;
    }
    Json counts = Json::object();  // in label order
    int64_t lo = INT64_MAX, hi = 0;
    for (size_t l = 0; l < per_label.size(); ++l) {
      counts[l < classes.size() ? classes[l] : std::to_string(l)] = per_label[l];
      lo = std::min(lo, per_label[l]);
      hi = std::max(hi, per_label[l]);
    }
    split["class_counts"] = counts;
    split["imbalance_ratio"] =
        lo > 0 ? static_cast<double>(hi) / static_cast<double>(lo) : INFINITY;
    torch::Tensor px = set.images.to(torch::kFloat64);
    split["pixel_mean"] = px.mean().item<double>();
    split["pixel_std"] = px.std().item<double>();
    split["pixel_min"] = set.images.min().item<int64_t>();
    split["pixel_max"] = set.images.max().item<int64_t>();
    // Exact duplicate images (pixels and label) within the split.
    const int64_t per_image = set.images[0].numel();
    torch::Tensor flat = set.images.reshape({n, per_image}).contiguous();
    const uint8_t* data = flat.data_ptr<uint8_t>();
    std::unordered_set<std::string> seen;
    int64_t dups = 0;
    for (int64_t i = 0; i < n; ++i) {
      std::string key(reinterpret_cast<const char*>(data + i * per_image),
                      static_cast<size_t>(per_image));
      key.push_back(static_cast<char>(labels[i]));
      if (!seen.insert(std::move(key)).second) ++dups;
    }
    split["duplicate_images"] = dups;
    if (spec.image_format == ImageFormat::kImageFolder) {
      split["corrupt_skipped"] = folder_report["corrupt_skipped"];
      split["skipped_files"] = folder_report["skipped_files"];
    }
    total_dups += dups;
    splits[src.split] = split;
  }
  report["splits"] = splits;
  report["classes"] = classes;
  Json issues;
  issues["missing_cells"] = 0;
  issues["non_numeric_cells"] = 0;
  issues["duplicate_rows"] = total_dups;
  issues["ragged_lines"] = Json::array();
  issues["outliers"] = Json::array();
  issues["constant_columns"] = Json::array();
  if (spec.image_format == ImageFormat::kImageFolder) {
    issues["corrupt_files"] = Json::array();
    for (const auto& [name, split] : splits.items())
      for (const auto& f : split["skipped_files"]) issues["corrupt_files"].push_back(f);
  }
  report["issues"] = issues;
  report["verdict"] = profile_verdict(issues, splits);
  return report;
}

}  // namespace kiln::data
