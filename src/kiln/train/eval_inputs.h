#pragma once
// The rows a user hands a trained bundle, as its model.pt takes them: raw features (before the
// fitted preprocessing) from a CSV, IDX images, a .npy array or a prepared snapshot split. Shared
// by `kiln eval`, `kiln predict` and `kiln test`, so every one of them feeds the served module
// exactly the same values.

#include <torch/script.h>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "kiln/core/csv.h"
#include "kiln/core/expected.h"
#include "kiln/model/manifest.h"

namespace kiln::train {

namespace fs = std::filesystem;

/// Raw inputs for a bundle's model.pt. Plain value; tensors share storage on copy.
struct RawInputs {
  torch::Tensor x;        ///< float32, N × the bundle's raw input shape
  torch::Tensor targets;  ///< classification: int64 class index; regression: float32; or undefined
  std::vector<int64_t> lines;  ///< CSV line of each row (empty for other sources)
  /// The CSV as read (null for other sources): slices look up any of its columns by row.
  std::shared_ptr<const CsvTable> table;
  /// Where the rows came from: the file, or "<snapshot dir> split <name>".
  std::string source;
};

/// Reads `path` for `bundle`: a CSV (the bundle's feature columns by name, numeric only; with
/// `want_targets` also its target column, class names mapped to the bundle's labels), a .npy
/// array or an IDX file (…-idx3-ubyte[.gz]) of the raw input shape (images may omit the channel
/// dim). Errors: InvalidArgument naming the file, line and column of a bad cell, a missing column
/// or an unknown label, or a shape that does not match. Blocks on file I/O. Thread-safe.
Expected<RawInputs> read_raw_inputs(const model::Bundle& bundle, const fs::path& path,
                                    bool want_targets);

/// Labelled rows for `bundle` from `data`: a CSV (read_raw_inputs with targets), a snapshot
/// directory, or a dataset spec (.yaml; prepared into $KILN_HOME/snapshots when not yet there),
/// whose `split` is taken. A snapshot prepared differently from the bundle's training data gets a
/// warning on stderr. Errors: InvalidArgument / NotFound naming the source, split or file.
Expected<RawInputs> read_labelled_rows(const model::Bundle& bundle, const std::string& data,
                                       const std::string& split);

/// The snapshot the bundle was trained on (lineage.snapshot_hash), when it is still in
/// $KILN_HOME/snapshots; empty otherwise. Touches the file system only to list that directory.
fs::path lineage_snapshot_dir(const model::Bundle& bundle);

/// True when `path` is a directory holding a snapshot manifest.
bool is_snapshot_dir(const fs::path& path);

/// `module`'s outputs for `x`, run in batches of `batch_size` under NoGradGuard on the device the
/// module is on (model::place_module), returned on the CPU. InvalidArgument
/// carries the module's own message when it rejects the input. Not thread-safe against other
/// users of `module` that change its state.
Expected<torch::Tensor> run_module(torch::jit::Module& module, const torch::Tensor& x,
                                   int64_t batch_size = 1024);

/// The bundle's read_bundle() by reference: a bundle directory (or run directory), NAME@VERSION
/// or NAME@ALIAS, every file's sha256 verified.
Expected<model::Bundle> read_model_ref(const std::string& ref);

}  // namespace kiln::train
