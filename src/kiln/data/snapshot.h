#pragma once

#include <torch/types.h>

#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "kiln/core/expected.h"
#include "kiln/core/json.h"

namespace kiln::data {

namespace fs = std::filesystem;

/// Format tag and version written into every snapshot manifest.
inline constexpr const char* kSnapshotFormat = "kiln.snapshot";
inline constexpr int kSnapshotFormatVersion = 1;

/// One split of a prepared dataset: inputs and targets, in memory.
struct SplitTensors {
  torch::Tensor x;  ///< images: uint8 N×C×H×W (stored pixels); tables: float32 N×F (transformed)
  torch::Tensor y;  ///< classification: int64 N; regression: float32 N
  /// Tables: float32 N×R, the cleaned feature columns before the fitted transforms (NaN where a
  /// cell is missing), i.e. what a bundle's model.pt takes. Undefined for images (x is raw).
  torch::Tensor raw_x;

  /// The inputs of the served module for these rows: raw_x for tables, x for images.
  const torch::Tensor& served_inputs() const { return raw_x.defined() ? raw_x : x; }
};

/// A prepared dataset, as written by `kiln data prepare` and read by training: a directory named
/// by its content hash holding `manifest.json` and `<split>_x.npy` / `<split>_y.npy` files (tables
/// also `<split>_raw_x.npy`, the untransformed features). The
/// manifest records schema, split sizes, cleaning actions, fitted transforms, source hashes and
/// the sha256 of every file; for tables, each split's "source_lines" (the CSV line of every row,
/// or [source index, line] pairs when several sources were merged). Plain value type; tensors
/// share storage on copy.
struct Snapshot {
  fs::path dir;
  Json manifest;
  std::map<std::string, SplitTensors> splits;

  const std::string& hash() const;  ///< manifest["content_hash"]
  /// Splits present, in the order train, val, test.
  std::vector<std::string> split_names() const;
};

/// Writes a snapshot: the tensors as .npy, `manifest` completed with "files" (sha256 per file)
/// and "content_hash" (sha256 of the canonical manifest without that field, so the same inputs
/// and settings give the same hash, byte for byte), into `parent/<name>-<hash[0:12]>/`, built in
/// a hidden temp directory and renamed into place when complete. If that snapshot already exists
/// it is left as is. Returns the snapshot directory.
Expected<fs::path> write_snapshot(const fs::path& parent, const std::string& name, Json manifest,
                                  const std::map<std::string, SplitTensors>& splits);

/// Reads a snapshot directory, verifying every file's sha256 against the manifest (a mismatch or
/// missing file is a DataLoss error naming the file).
Expected<Snapshot> read_snapshot(const fs::path& dir);

}  // namespace kiln::data
