#pragma once

// The bundle's manifest, torch-free: what registry, serve and CLI verbs that never touch a
// tensor need (reading and verifying a bundle, its fields, its signature). bundle.h adds writing
// bundles and loading their weights and module.

#include <cstdint>
#include <filesystem>
#include <string>
#include <unordered_map>
#include <vector>

#include "kiln/core/expected.h"
#include "kiln/core/json.h"
#include "kiln/model/spec.h"

namespace kiln::model {

namespace fs = std::filesystem;

/// Format tag and version of every bundle manifest. A reader refuses a newer version and reads
/// version 1 (no self-hash) as before.
inline constexpr const char* kBundleFormat = "kiln.bundle";
inline constexpr int kBundleFormatVersion = 2;
/// The manifest's own hash (format_version 2; see manifest_sha256()).
inline constexpr const char* kManifestHashKey = "manifest_sha256";
/// The files every bundle holds.
inline constexpr const char* kBundleManifestFile = "manifest.json";
inline constexpr const char* kBundleWeightsFile = "weights.pt";
inline constexpr const char* kBundleModuleFile = "model.pt";
/// The same network exported in bfloat16 (export_torchscript's kPrecisionBf16), when recorded.
inline constexpr const char* kBundleBf16ModuleFile = "model_bf16.pt";
/// The number format an exported module computes its network in. "bf16": bfloat16 weights and
/// activations (images in channels_last), every batch norm folded into the convolution or linear
/// layer before it (or a per-channel affine); the prologue and the returned logits stay float32.
/// On CPUs with avx512_bf16 oneDNN runs such convolutions 5-16x faster than Debian LibTorch's
/// fp32 ones (docs/benchmarks.md); its accuracy is measured, not assumed (the trainer evaluates
/// it on the test split and the bundle records it apart).
inline constexpr const char* kPrecisionFp32 = "fp32";
inline constexpr const char* kPrecisionBf16 = "bf16";
/// int8 static quantisation (export_int8: oneDNN's quantised convolution and linear operators).
inline constexpr const char* kPrecisionInt8 = "int8";

/// The task of a TorchScript-only bundle whose outputs Kiln does not interpret.
inline constexpr const char* kCustomTask = "custom";

/// A trained model as every stage exchanges it: a directory holding
///   manifest.json  {"format": "kiln.bundle", "format_version": 2,
///                   "task": "classification" | "regression" | "custom",
///                   "signature": {"inputs": [{"name": "input", "dtype": "FP32", "shape": [-1,
///                   ...]}],
///                                 "outputs": [{"name": "logits" | "predictions", "dtype": "FP32",
///                                              "shape": [-1, outputs]}]},
///                   "labels": [...], "preprocessing": {...} (see export_torchscript),
///                   "test_time_augmentation": "none" | "flip" (folded into model.pt),
///                   "model": ModelSpec::to_json(), "input_shape": [...] (the network's, after
///                   preprocessing), "outputs": N, "training": {...}, "metrics": {...},
///                   "lineage": {"snapshot_hash", "config_hash", "parent", "kiln_version",
///                               "git_commit"},
///                   "precisions": {"bf16": {"file": "model_bf16.pt",
///                                           "metrics": {"test": {...}, "val": {...}}}}
///                     (optional: other number formats of the same network, each with the
///                     metrics of that module on the same splits; serving picks one),
///                   "created_at": ISO 8601 UTC (informational),
///                   "files": {"weights.pt": sha256, "model.pt": sha256, <extra>: sha256},
///                   "manifest_sha256": manifest_sha256() of the rest}
///   weights.pt     every parameter and buffer by name ("layers.0.weight", ...), a pickled
///                  Dict[str, Tensor]: torch::pickle_load in C++, torch.load in Python
///   model.pt       the standalone TorchScript module of export_torchscript (raw inputs in,
///                  preprocessing folded in): torch::jit::load / torch.jit.load
///   <extra files>  e.g. curves.csv, confusion.json; hashed like the others.
/// The signature's input shape is the raw input (before preprocessing); input_shape is the
/// network's. "metrics" test/val are those of model.pt on the raw rows (what serving gives);
/// "metrics.history" is the per-epoch training-time monitor. A Bundle is a plain value read from
/// disk; it owns no tensors. Thread-compatible.
///
///   KILN_ASSIGN_OR_RETURN(Bundle b, read_bundle(dir));      // every file's sha256 verified
///   KILN_ASSIGN_OR_RETURN(torch::jit::Module m, load_bundle_module(b));
///   torch::Tensor logits = m.forward({raw_batch}).toTensor();
struct Bundle {
  fs::path dir;
  Json manifest;

  /// "classification" or "regression".
  std::string task() const;
  /// Class names in output order; empty for regression.
  std::vector<std::string> labels() const;
  /// A table bundle's raw feature columns (schema.features names) in model.pt's input order;
  /// empty for images.
  std::vector<std::string> feature_names() const;
  /// The position of `name` among feature_names(), or -1.
  int64_t feature_index(const std::string& name) const;
  /// The model spec, parsed from manifest["model"].
  Expected<ModelSpec> model_spec() const;
  /// The fitted preprocessing (null when none).
  Json preprocessing() const;
  /// The network's per-sample input shape (after preprocessing).
  std::vector<int64_t> input_shape() const;
  int64_t outputs() const;
  /// The raw per-sample input shape from the signature (what model.pt takes).
  std::vector<int64_t> raw_input_shape() const;
  /// True for bundles Kiln trained (model spec + weights.pt); false for TorchScript-only ones
  /// (write_module_bundle: a model.pt trained elsewhere, its signature, task "custom" or
  /// classification/regression with labels; weights/spec accessors give clear errors).
  bool has_network() const;
  /// manifest["precisions"][precision] ({"file", "metrics"}), or null when the bundle records
  /// no module in that number format. "fp32" is model.pt with manifest["metrics"].
  Json precision_entry(const std::string& precision) const;
  /// The test metrics of the module in `precision` (null when unrecorded).
  Json test_metrics(const std::string& precision) const;
  /// dir / name.
  fs::path file(const std::string& name) const { return dir / name; }
};

/// A table bundle's raw columns (schema.features, in model.pt's input order) and the codes its
/// module takes for the categorical ones (entries with "type": "categorical" and their sorted
/// "categories"): a category's index, features::kMissingCategory's for a missing cell, for one
/// training never saw features::kInfrequentCategory's where the column has it, else -1 (one-hot
/// all zeros). Numeric columns take their number (NaN when
/// missing), parsed by the caller. Immutable once built; thread-safe.
///
///   TableColumns columns(bundle);
///   x[j] = columns.categorical(j) ? columns.code(j, cell, is_missing) : number(cell);
class TableColumns {
 public:
  TableColumns() = default;
  explicit TableColumns(const Bundle& bundle);
  /// From a schema's "features" array (none when it is not an array).
  explicit TableColumns(const Json& schema_features);
  size_t size() const { return names_.size(); }
  const std::string& name(size_t column) const { return names_[column]; }
  bool categorical(size_t column) const { return !codes_[column].empty(); }
  bool any_categorical() const { return !categorical_columns_.empty(); }
  /// The categorical columns' indices, in order.
  const std::vector<size_t>& categorical_columns() const { return categorical_columns_; }
  /// The code of `text` in categorical `column`.
  float code(size_t column, const std::string& text, bool missing) const;
  /// "" when `value` can be categorical `column`'s code: an index of its categories, -1 (one
  /// training never saw) or NaN (missing); else why not, naming the column and its categories.
  /// A client that sends a code column's raw value (sex 2 for categories ["1", "2"]) is told to
  /// send the code or the text.
  std::string code_error(size_t column, float value) const;

 private:
  std::vector<std::string> names_;
  std::vector<std::unordered_map<std::string, int64_t>> codes_;  ///< empty: numeric
  std::vector<std::vector<std::string>> categories_;             ///< by code, per column
  std::vector<size_t> categorical_columns_;
  std::vector<float> missing_code_, unseen_code_;  ///< per column
};

/// The "signature" object of a manifest: one FP32 input "input" of shape [-1, raw_input_shape...]
/// and one FP32 output "logits" (classification) or "predictions" (regression) of [-1, outputs].
Json bundle_signature(const std::string& task, const std::vector<int64_t>& raw_input_shape,
                      int64_t outputs);

/// The manifest's hash of itself (format_version 2): the sha256 of the manifest without its
/// "manifest_sha256" key, as compact JSON with keys sorted at every level (so a tool that
/// reorders keys or re-indents does not trip it; any change of a key or value does).
///
///   m["manifest_sha256"] = manifest_sha256(m);   // what write_bundle stores
std::string manifest_sha256(const Json& manifest);

/// The checks writing and reading apply to the fields stages rely on (task, model spec or
/// signature, input_shape, outputs, labels). InvalidArgument names the field.
Status validate_bundle_manifest(const Json& manifest);

/// A plain file name a bundle may list: no directory part, not "." or "..", no control
/// characters, at most 255 bytes.
bool is_plain_bundle_file_name(const std::string& name);

/// A non-empty JSON array of integers, as a vector; InvalidArgument names `field`.
Expected<std::vector<int64_t>> json_int_list(const Json& j, const std::string& field);

/// The bundle directory a user names: `path` itself when it holds manifest.json, else
/// `path`/bundle when that does (a `kiln train` run directory), else `path` unchanged (reading it
/// then reports what is missing). Touches the file system only to test for those two files.
///
///   bundle_dir_of("runs/fmnist") == "runs/fmnist/bundle"
fs::path bundle_dir_of(const fs::path& path);

/// Whether a bundle's model.pt takes NaN as a missing value (a table pipeline whose imputer fills
/// it in). Images and pipelines without an imputer do not: a NaN there is garbage in.
bool accepts_missing_values(const Json& preprocessing);

/// Refuses input values a model would silently turn into garbage predictions: ±Infinity always,
/// NaN unless `allow_nan` (accepts_missing_values). `values` holds `rows` rows of `row_size`
/// floats. InvalidArgument names the first offending row and position ("row 3, value 17 is
/// NaN"). What serving and `kiln predict` apply before a forward pass. Pure; thread-safe.
Status check_input_values(const float* values, int64_t rows, int64_t row_size, bool allow_nan);

/// Reads `dir`/manifest.json and verifies the sha256 of every file it lists. Errors: NotFound
/// (no such directory or no manifest.json); InvalidArgument (not a bundle, a newer
/// format_version, a missing or malformed field, naming it); DataLoss naming the file that is
/// missing or whose bytes do not match. Reads every file once. Thread-safe.
Expected<Bundle> read_bundle(const fs::path& dir);

}  // namespace kiln::model
