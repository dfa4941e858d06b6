#pragma once

// `kiln export BUNDLE --format onnx`: a Kiln network as an ONNX graph, built in C++ from the
// model spec and weights (torch 1.13 has no Python-free ONNX exporter), with the bundle's
// preprocessing and test-time augmentation folded in, so ONNX Runtime, TensorRT, OpenVINO and
// the other ONNX consumers compute what `kiln serve` serves.

#include <cstdint>
#include <string>
#include <vector>

#include "kiln/core/expected.h"
#include "kiln/core/json.h"
#include "kiln/model/export.h"
#include "kiln/model/manifest.h"
#include "kiln/model/spec.h"

namespace kiln::interop {

/// ONNX opsets this exporter writes. 17 is the newest the Debian onnx 1.12 checker knows and
/// torch 1.13's exporter's maximum; ONNX Runtime 1.30 runs 7..23.
inline constexpr int64_t kOnnxMinOpset = 13;
inline constexpr int64_t kOnnxMaxOpset = 17;

/// How to write the graph. Plain value.
struct OnnxExportOptions {
  int64_t opset = kOnnxMaxOpset;
  /// The graph's input name; its output is named after the bundle's signature ("logits" or
  /// "predictions").
  std::string input_name = "input";
  std::string output_name = "logits";
  /// The graph's name (default: the model spec's name).
  std::string graph_name;
  /// ModelProto.metadata_props (string keys and values), e.g. labels and lineage.
  std::vector<std::pair<std::string, std::string>> metadata;
  /// A free-text description (ModelProto.doc_string).
  std::string doc;
};

/// A serialized ONNX model and what it holds: {"opset", "ir_version", "nodes", "initializers",
/// "parameters" (float values), "input": {"name", "shape"}, "output": {"name", "shape"},
/// "ops": {op_type: count}} (shapes with -1 for the batch axis, named "batch" in the graph).
struct OnnxModel {
  std::string bytes;
  Json summary;
};

/// Builds the ONNX graph of `spec` with `state`'s weights: float32 raw inputs
/// [batch, raw_input_shape(preprocessing, input_shape)...] in, float32 [batch, outputs] out, equal
/// to export_torchscript(spec, state, input_shape, outputs, preprocessing, tta) (fp32) up to
/// float32 rounding. Layers: conv2d, linear, batch norm, max/avg pooling, adaptive average pooling
/// (to 1x1 or an output size dividing the input), flatten, dropout (identity), relu, leaky_relu,
/// elu, tanh, sigmoid, silu, gelu (erf or tanh), residual blocks (identity or 1x1 projection
/// shortcut); preprocessing steps as model::parse_prologue gives them; tta "flip" as the mean of
/// the network on x and on x mirrored along W. Anything else is InvalidArgument naming the layer
/// or step. The model passes onnx::checker::check_model and strict shape inference (its value_info
/// then holds every intermediate shape); a failure there is Internal (a Kiln bug).
/// Pure; thread-safe.
///
///   KILN_ASSIGN_OR_RETURN(OnnxModel m, export_onnx(spec, state, {1, 28, 28}, 10, pre, "flip"));
///   KILN_RETURN_IF_ERROR(write_file_atomic("model.onnx", m.bytes));
Expected<OnnxModel> export_onnx(const model::ModelSpec& spec, const model::TensorMap& state,
                                const std::vector<int64_t>& input_shape, int64_t outputs,
                                const Json& preprocessing, const std::string& tta,
                                const OnnxExportOptions& options = {});

/// export_onnx() of a bundle Kiln trained: its spec, weights.pt, preprocessing and test-time
/// augmentation, the output named by its signature, and metadata_props "kiln.model",
/// "kiln.task", "kiln.labels" (JSON), "kiln.test_time_augmentation", "kiln.preprocessing"
/// ("folded"), "kiln.manifest_sha256", "kiln.metrics.test" (model.pt's numeric test metrics, JSON)
/// besides `options.metadata`. InvalidArgument for a TorchScript-only bundle (no spec and weights:
/// ONNX cannot be rebuilt from a compiled module here) and for an int8-compressed one (its model.pt
/// is not the float network: export its parent). Reads weights.pt.
Expected<OnnxModel> export_bundle_onnx(const model::Bundle& bundle, OnnxExportOptions options = {});

}  // namespace kiln::interop
