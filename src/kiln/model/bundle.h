#pragma once

#include <torch/script.h>

#include <map>
#include <memory>
#include <string>

#include "kiln/core/expected.h"
#include "kiln/core/json.h"
#include "kiln/model/export.h"
#include "kiln/model/manifest.h"
#include "kiln/model/spec.h"

namespace kiln::model {

class NetworkImpl;

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

/// Writes a bundle to `dir`: `manifest` (everything but "files"; "format", "format_version" and
/// the closing "manifest_sha256" are set, "created_at" and "signature" filled in when absent,
/// "lineage.kiln_version"/"git_commit" likewise), `state` as weights.pt, `scripted` as model.pt and
/// each extra file (name -> bytes; plain file names only), each hashed into "files". Built in a
/// hidden sibling directory and renamed into place, so `dir` never holds a partial bundle, even on
/// failure or crash. Errors: InvalidArgument for a manifest missing task/model/input_shape/outputs
/// or a bad extra file name; AlreadyExists when `dir` exists and is not empty (unless overwrite);
/// IoError. Blocks on file I/O and fsync. Thread-safe for distinct `dir`s.
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

/// The weights by name, from weights.pt (re-verified against its sha256). DataLoss names the file.
Expected<TensorMap> load_bundle_weights(const Bundle& bundle);

/// The TorchScript module from model.pt (re-verified against its sha256), on the CPU, in eval
/// mode; with `precision` other than fp32, the module the manifest's "precisions" records for it
/// (NotFound when it records none, saying how to get one).
Expected<torch::jit::Module> load_bundle_module(const Bundle& bundle,
                                                const std::string& precision = kPrecisionFp32);

/// The number format `kiln serve --precision auto` serves `bundle` in on this CPU: bf16 where
/// the bundle records a bf16 module and the CPU has avx512_bf16, else fp32. What `kiln test` and
/// `kiln compress` measure. Reads /proc/cpuinfo once; thread-safe.
std::string auto_precision(const Bundle& bundle);

/// Rebuilds the eager network from the manifest's spec, input_shape and outputs and loads the
/// weights into it (eval mode). For evaluation, fine-tuning and compression.
Expected<std::shared_ptr<NetworkImpl>> load_bundle_network(const Bundle& bundle);

/// Copies `state` into `net`'s parameters and buffers by name. InvalidArgument names a tensor that
/// is missing, unexpected or of the wrong shape; nothing is copied then. Not thread-safe against
/// concurrent use of `net`.
Status load_network_state(NetworkImpl& net, const TensorMap& state);

}  // namespace kiln::model
