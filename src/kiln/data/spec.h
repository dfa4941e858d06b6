#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "kiln/core/expected.h"
#include "kiln/core/json.h"
#include "kiln/features/options.h"

namespace kiln::data {

namespace fs = std::filesystem;

/// What a dataset holds.
enum class DatasetKind { kImages, kTable };
/// On-disk format of an image dataset.
enum class ImageFormat { kIdx, kCifar10, kImageFolder };
/// What to do with a row that has a missing (empty / NA) or non-numeric numeric cell.
enum class MissingPolicy { kDrop, kImputeMean, kImputeMedian, kImputeMostFrequent };
/// What to do with a value whose robust z-score exceeds the threshold.
enum class OutlierAction { kKeep, kClip, kDrop };
/// What to do with a record whose field count differs from the header's.
enum class RaggedPolicy { kError, kDrop };
/// Feature scaling fitted on the training split.
enum class ScalingKind { kNone, kStandard, kMinMax, kRobust };
/// Learning task; kAuto decides from the target column.
enum class TaskKind { kAuto, kClassification, kRegression };

const char* to_string(MissingPolicy v);
const char* to_string(OutlierAction v);
const char* to_string(RaggedPolicy v);
const char* to_string(ScalingKind v);
const char* to_string(TaskKind v);

/// One split of an image dataset, e.g. "train" from an IDX pair or CIFAR batches.
struct ImageSplitSource {
  std::string split;              ///< "train" or "test"
  fs::path images;                ///< IDX images file (kIdx)
  fs::path labels;                ///< IDX labels file (kIdx)
  std::vector<fs::path> batches;  ///< CIFAR-10 binary batches (kCifar10)
  fs::path folder;                ///< <folder>/<class>/*.png|jpg|jpeg (kImageFolder)
};

/// How an image folder (format: image_folder) is decoded. Plain value.
struct ImageFolderOptions {
  int64_t height = 0;    ///< output size; 0: every image must already have the first one's size
  int64_t width = 0;     ///< (0 with height 0)
  int64_t channels = 1;  ///< 1 (grey) or 3 (RGB)
  /// "crop": resize the shorter side to fit, then take the centre (no distortion); "stretch":
  /// resize to height x width ignoring the aspect ratio.
  std::string resize = "crop";
  /// A file that cannot be decoded: "skip" (reported, left out) or "fail" (the read fails).
  std::string corrupt = "skip";
};

/// Cleaning applied by `kiln data prepare` (tables).
struct CleaningPolicy {
  MissingPolicy missing = MissingPolicy::kImputeMedian;
  bool drop_duplicates = true;
  OutlierAction outliers = OutlierAction::kDrop;
  double outlier_z = 100.0;  ///< robust z-score threshold for "extreme" outliers
  RaggedPolicy ragged = RaggedPolicy::kError;
};

/// How rows are divided. Fractions sum to 1 for tables; for images with given train/test
/// splits only `val` is used (carved from train).
struct SplitPolicy {
  /// kKiln: per-class (stratified) Rng shuffle, portable across platforms.
  /// kSklearn: the exact rows of scikit-learn's train_test_split(test_size=test,
  /// random_state=seed) (numpy's legacy MT19937 permutation; unstratified): test takes the first
  /// ceil(n*test) rows of the permutation, val the next round(n*val), train the rest. For
  /// comparing with Python baselines on the identical test set.
  enum class Method { kKiln, kSklearn };
  Method method = Method::kKiln;
  double train = 0.7;
  double val = 0.15;
  double test = 0.15;
  uint64_t seed = 42;
  bool stratify = true;
};

/// A dataset as declared in YAML (or implied by `FILE.csv --target COL`). Paths are resolved
/// relative to the spec file. Plain value type.
///
///   KILN_ASSIGN_OR_RETURN(DatasetSpec spec, load_dataset_spec("examples/diabetes/dataset.yaml"));
struct DatasetSpec {
  std::string name;
  fs::path spec_path;  ///< empty when built from a CSV path
  DatasetKind kind = DatasetKind::kTable;

  // Images.
  ImageFormat image_format = ImageFormat::kIdx;
  std::vector<ImageSplitSource> image_splits;
  ImageFolderOptions image_folder;   ///< kImageFolder
  std::vector<std::string> classes;  ///< class names by label; empty: the label numbers

  // Tables.
  std::vector<fs::path> sources;  ///< one or more CSVs with matching schemas (merged)
  std::string target;
  TaskKind task = TaskKind::kAuto;
  std::vector<std::string> na_tokens;
  std::vector<std::string> drop_columns;  ///< e.g. identifiers
  CleaningPolicy cleaning;
  ScalingKind scaling = ScalingKind::kStandard;
  /// Text (categorical) columns: a category the training split holds fewer than this many times
  /// joins the category "<infrequent>", which then also takes every category training never
  /// saw (scikit-learn's OneHotEncoder min_frequency). 0: every category is its own.
  int64_t category_min_frequency = 0;
  /// Columns that are categories although their cells are numbers (a code such as a sex, a
  /// region or a product id): one-hot encoded by their cells as written, like text columns.
  std::vector<std::string> categorical_columns;
  /// Categorical columns target-encoded instead of one-hot (`categories: {target_encode: [zip]}`):
  /// each category becomes its smoothed, standardised training-target mean (one number, or one
  /// per class for more than two classes), cross-fitted over 5 folds on the training split
  /// (features::OneHotEncoder::fit_target). For columns with many categories.
  std::vector<std::string> target_encoded_columns;
  /// `categories.target_smooth`: the target encoding's shrinkage toward the overall mean,
  /// scikit-learn's TargetEncoder `smooth` as a number m (λ = n / (n + m) for a category of n
  /// rows); < 0 (the default): "auto", the empirical-Bayes weight.
  double target_smooth = -1;
  /// The columns read as categories: categorical_columns, then the target-encoded ones not
  /// already listed (target_encode makes a column of number codes a category too).
  std::vector<std::string> category_column_names() const;
  /// Feature selection and reduction of the numeric columns, fitted on the training split like
  /// the scaler (`features:` in YAML): after imputing, columns whose training variance is at
  /// most the threshold are dropped (before scaling, so the threshold is in the column's own
  /// units; 0 drops constant columns); after scaling, PCA projects onto its components.
  std::optional<features::VarianceThresholdOptions> variance_threshold;
  std::optional<features::PcaOptions> pca;

  SplitPolicy split;
  int64_t limit = 0;  ///< read at most this many records per split/source (0: all)

  /// image_splits with train first (an image folder's train split names the classes the other
  /// splits are labelled with).
  std::vector<const ImageSplitSource*> image_splits_train_first() const;

  /// The settings that shape prepared data, without machine-specific paths (sources appear by
  /// file name only): part of a snapshot's content hash.
  Json to_json() const;
};

/// Reads the feature selection and reduction settings (a spec's `features:`, a train config's
/// `data.features`) into `spec`, over what it has: {variance_threshold: T | null, pca:
/// {n_components: N | variance_fraction: F, whiten: B} | null} (null turns a step off).
/// InvalidArgument names the field ("features.pca.n_components: must be an integer, at least 1").
Status read_feature_settings(const Json& features, DatasetSpec* spec);

/// Parses a dataset YAML file. Errors name the file, the line and the field
/// ("dataset.yaml line 7: cleaning.missing: expected one of drop, mean, median, most_frequent").
/// Unknown keys are errors, so typos never pass silently.
Expected<DatasetSpec> load_dataset_spec(const fs::path& path);

/// The spec implied by a CSV path given directly with `--target COLUMN`: one source, defaults.
DatasetSpec csv_dataset_spec(const fs::path& csv, const std::string& target);

/// A YAML spec path or a CSV path (which then needs `target`). Picks by extension.
Expected<DatasetSpec> resolve_dataset(const std::string& spec_or_csv, const std::string& target);
/// resolve_dataset() with `categorical` (the --categorical flags) added to the table's
/// categories.columns and `target_encoded` (--target-encode) to its categories.target_encode;
/// InvalidArgument for an image dataset.
Expected<DatasetSpec> resolve_dataset(const std::string& spec_or_csv, const std::string& target,
                                      const std::vector<std::string>& categorical,
                                      const std::vector<std::string>& target_encoded = {});

}  // namespace kiln::data
