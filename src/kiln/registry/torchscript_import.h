#pragma once

// Models trained elsewhere: a TorchScript file (Python's torch.jit.save) and its declared
// signature become a TorchScript-only bundle, so every later stage handles one kind of thing.

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "kiln/core/expected.h"
#include "kiln/core/json.h"

namespace kiln::registry {

namespace fs = std::filesystem;

/// One declared tensor: "NAME:DTYPE:SHAPE", e.g. "input:FP32:-1,784" (DTYPE an OIP string:
/// BOOL UINT8 INT8 INT16 INT32 INT64 FP16 BF16 FP32 FP64; -1 a free dim).
struct TensorDecl {
  std::string name;
  std::string dtype;
  std::vector<int64_t> shape;
  Json to_json() const;
};

/// Parses "NAME:DTYPE:SHAPE"; InvalidArgument names `flag` and the part at fault.
Expected<TensorDecl> parse_tensor_decl(const std::string& text, const std::string& flag);

/// Options of import_torchscript().
struct TorchScriptImport {
  std::vector<TensorDecl> inputs;
  std::vector<TensorDecl> outputs;
  /// Class names: the bundle's task becomes "classification" (else "custom").
  std::vector<std::string> labels;
};

/// Checks that `model_pt` loads with torch::jit::load and that zeros of the declared input
/// shapes (-1 -> 1) run and give outputs of the declared dtypes and shapes, then writes a
/// TorchScript-only bundle (model::write_module_bundle) to `out_dir`. InvalidArgument (exit 2)
/// for a file that is not TorchScript or a signature mismatch, naming the tensor. Blocks; runs
/// the module once on the CPU. Thread-safe.
Expected<fs::path> import_torchscript(const fs::path& model_pt, const TorchScriptImport& options,
                                      const fs::path& out_dir);

}  // namespace kiln::registry
