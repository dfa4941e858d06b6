#pragma once

#include <torch/script.h>

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "kiln/core/expected.h"
#include "kiln/core/json.h"
#include "kiln/model/export.h"
#include "kiln/model/spec.h"

namespace kiln::model {

namespace fs = std::filesystem;

class NetworkImpl;

/// Format tag and version of every bundle manifest. A reader refuses a newer version.
inline constexpr const char* kBundleFormat = "kiln.bundle";
inline constexpr int kBundleFormatVersion = 1;
/// The files every bundle holds.
inline constexpr const char* kBundleManifestFile = "manifest.json";
inline constexpr const char* kBundleWeightsFile = "weights.pt";
inline constexpr const char* kBundleModuleFile = "model.pt";
/// The task of a TorchScript-only bundle whose outputs Kiln does not interpret.
inline constexpr const char* kCustomTask = "custom";

/// A trained model as every stage exchanges it: a directory holding
///   manifest.json  {"format": "kiln.bundle", "format_version": 1,
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
///                   "created_at": ISO 8601 UTC (informational),
///                   "files": {"weights.pt": sha256, "model.pt": sha256, <extra>: sha256}}
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
  /// dir / name.
  fs::path file(const std::string& name) const { return dir / name; }
};

/// Options of write_bundle().
struct WriteBundleOptions {
  /// Replace an existing non-empty directory (it is swapped out only once the new bundle is
  /// complete). Off: such a directory is an AlreadyExists error.
  WriteBundleOptions& overwrite(bool v) {
    overwrite_ = v;
    return *this;
  }
  bool overwrite_ = false;
};

/// The "signature" object of a manifest: one FP32 input "input" of shape [-1, raw_input_shape...]
/// and one FP32 output "logits" (classification) or "predictions" (regression) of [-1, outputs].
Json bundle_signature(const std::string& task, const std::vector<int64_t>& raw_input_shape,
                      int64_t outputs);

/// Writes a bundle to `dir`: `manifest` (everything but "files"; "format", "format_version" are
/// set, "created_at" and "signature" filled in when absent, "lineage.kiln_version"/"git_commit"
/// likewise), `state` as weights.pt, `scripted` as model.pt and each extra file (name -> bytes;
/// plain file names only), each hashed into "files". Built in a hidden sibling directory and
/// renamed into place, so `dir` never holds a partial bundle, even on failure or crash.
/// Errors: InvalidArgument for a manifest missing task/model/input_shape/outputs or a bad extra
/// file name; AlreadyExists when `dir` exists and is not empty (unless overwrite); IoError.
/// Blocks on file I/O and fsync. Thread-safe for distinct `dir`s.
///
///   Json m = {{"task", "classification"}, {"labels", classes}, {"preprocessing", pre},
///             {"model", spec.to_json()}, {"input_shape", {1, 28, 28}}, {"outputs", 10}};
///   KILN_ASSIGN_OR_RETURN(auto module, export_torchscript(*net, pre));
///   KILN_ASSIGN_OR_RETURN(fs::path dir,
///                         write_bundle(out, m, network_state(*net), module, {{"curves.csv",
///                         csv}}));
Expected<fs::path> write_bundle(const fs::path& dir, const Json& manifest, const TensorMap& state,
                                const torch::jit::Module& scripted,
                                const std::map<std::string, std::string>& extra_files = {},
                                const WriteBundleOptions& options = {});

/// Writes a TorchScript-only bundle: manifest.json and model.pt (`module_bytes`, as saved by
/// torch.jit.save), no weights or model spec. `manifest` needs "task" ("custom", or
/// "classification"/"regression" with "labels") and a "signature" whose inputs/outputs each hold
/// name, dtype (OIP: FP32, INT64, ...) and shape (-1 for a free dim). Same atomicity, errors and
/// blocking as write_bundle(); the caller checks that the module loads.
Expected<fs::path> write_module_bundle(const fs::path& dir, const Json& manifest,
                                       const std::string& module_bytes,
                                       const WriteBundleOptions& options = {});

/// The bundle directory a user names: `path` itself when it holds manifest.json, else
/// `path`/bundle when that does (a `kiln train` run directory), else `path` unchanged (reading it
/// then reports what is missing). Touches the file system only to test for those two files.
///
///   bundle_dir_of("runs/fmnist") == "runs/fmnist/bundle"
fs::path bundle_dir_of(const fs::path& path);

/// Reads `dir`/manifest.json and verifies the sha256 of every file it lists. Errors: NotFound
/// (no such directory or no manifest.json); InvalidArgument (not a bundle, a newer
/// format_version, a missing or malformed field, naming it); DataLoss naming the file that is
/// missing or whose bytes do not match. Reads every file once. Thread-safe.
Expected<Bundle> read_bundle(const fs::path& dir);

/// The weights by name, from weights.pt (re-verified against its sha256). DataLoss names the file.
Expected<TensorMap> load_bundle_weights(const Bundle& bundle);

/// The TorchScript module from model.pt (re-verified against its sha256), on the CPU, in eval mode.
Expected<torch::jit::Module> load_bundle_module(const Bundle& bundle);

/// Rebuilds the eager network from the manifest's spec, input_shape and outputs and loads the
/// weights into it (eval mode). For evaluation, fine-tuning and compression.
Expected<std::shared_ptr<NetworkImpl>> load_bundle_network(const Bundle& bundle);

/// Copies `state` into `net`'s parameters and buffers by name. InvalidArgument names a tensor that
/// is missing, unexpected or of the wrong shape; nothing is copied then. Not thread-safe against
/// concurrent use of `net`.
Status load_network_state(NetworkImpl& net, const TensorMap& state);

}  // namespace kiln::model
