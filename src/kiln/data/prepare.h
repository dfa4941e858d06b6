#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>

#include "kiln/core/expected.h"
#include "kiln/core/json.h"
#include "kiln/data/spec.h"

namespace kiln::data {

/// Settings of `kiln data prepare` beyond the spec.
struct PrepareOptions {
  explicit PrepareOptions(std::filesystem::path out_dir) : out_dir_(std::move(out_dir)) {}
  PrepareOptions& seed(uint64_t s) {
    seed_ = s;
    return *this;
  }
  PrepareOptions& limit(int64_t n) {
    limit_ = n;
    return *this;
  }

  std::filesystem::path out_dir_;  ///< the snapshot goes into out_dir/<name>-<hash12>/
  std::optional<uint64_t> seed_;   ///< overrides the spec's split seed
  int64_t limit_ = 0;              ///< overrides the spec's limit when > 0
};

/// What prepare produced.
struct PrepareResult {
  std::filesystem::path snapshot_dir;
  std::string content_hash;
  Json manifest;
};

/// Cleans, types, encodes, splits and scales a dataset into a snapshot (see snapshot.h).
/// Tables: ragged rows are an error (listing every line) unless cleaning.ragged is "drop", then
/// they are rejected and listed; non-numeric cells in numeric columns count as missing; missing
/// cells are dropped or imputed (imputer fitted on train only); duplicates dropped; extreme
/// outliers (robust z above cleaning.outlier_z) dropped, clipped or kept; labels encoded (sorted
/// class names); stratified train/val/test split with the seed; categorical features one-hot
/// encoded and numeric ones scaled, all fitted on train only. Images: val carved from train
/// (stratified), pixels kept as uint8 with the train mean/std recorded for normalisation.
/// Every action lands in the manifest. Nothing is visible in out_dir until the snapshot is
/// complete. Blocks; uses the calling thread (and LibTorch's intra-op threads).
Expected<PrepareResult> prepare_dataset(const DatasetSpec& spec, const PrepareOptions& options);

/// Stratified (or plain, when `labels` is empty) split of row indices 0..n-1 by fractions.
/// Per class: shuffle with `seed`, then take round(n*train) for train, round(n*val) for val, the
/// rest for test. Results are sorted ascending. Deterministic on every platform.
struct SplitIndices {
  std::vector<int64_t> train, val, test;
};
SplitIndices split_indices(int64_t n, const std::vector<int64_t>& labels, double train_fraction,
                           double val_fraction, uint64_t seed);

/// numpy's np.random.RandomState(seed).permutation(n), bit for bit: MT19937 seeded like numpy's
/// legacy seeding (std::mt19937's seeding is the same init_genrand) and numpy's Fisher-Yates with
/// masked rejection sampling (random_interval).
std::vector<int64_t> numpy_legacy_permutation(int64_t n, uint32_t seed);

/// The rows of scikit-learn's train_test_split(range(n), test_size=test_fraction,
/// random_state=seed) (shuffle, no stratify): test = the first ceil(n*test) of
/// numpy_legacy_permutation, val = the next round(n*val), train = the rest. Sorted ascending.
SplitIndices sklearn_split_indices(int64_t n, double test_fraction, double val_fraction,
                                   uint32_t seed);

}  // namespace kiln::data
