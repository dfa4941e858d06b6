#pragma once

#include <torch/script.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "kiln/core/expected.h"
#include "kiln/core/json.h"
#include "kiln/model/manifest.h"
#include "kiln/model/spec.h"

namespace kiln::model {

class NetworkImpl;

/// Tensors by name, as `named_parameters()` + `named_buffers()` of a NetworkImpl give them
/// ("layers.<i>.weight", "layers.<i>.running_mean", ...).
using TensorMap = std::map<std::string, torch::Tensor>;

/// Test-time augmentation folded into an exported module: none, or "flip" (images: the mean of
/// the logits of x and of its horizontal mirror). Whatever a bundle's metrics were measured with
/// is what its module computes.
inline constexpr const char* kTtaNone = "none";
inline constexpr const char* kTtaFlip = "flip";

/// Every parameter and buffer of `net` by its full name, detached (sharing storage with the
/// network: clone before mutating either). Not thread-safe against a concurrent optimiser step.
TensorMap network_state(const NetworkImpl& net);

/// The input shape (without the batch dimension) that the exported module takes: the raw feature
/// count of a table pipeline (its "input_features"), or `model_input_shape` for images and for
/// no preprocessing. InvalidArgument for a malformed or unsupported `preprocessing`.
///
///   raw_input_shape(pipeline_json, {20}) == {30}   // PCA 30 -> 20 in front of the network
Expected<std::vector<int64_t>> raw_input_shape(const Json& preprocessing,
                                               const std::vector<int64_t>& model_input_shape);

/// Compiles a standalone TorchScript module for inference: no Python, no tracing. The source of
/// `forward(self, x)` is generated from `spec` and compiled with torch::jit::Module::define; the
/// tensors of `state` become its parameters and buffers (copied; "." in names becomes "_").
///
/// forward() takes float32 raw inputs, N x raw_input_shape(preprocessing, input_shape):
///  - images ({"kind": "image_normalize", "input_scale", "mean", "std"}): pixel values 0..255,
///    N x C x H x W; the prologue computes (x * input_scale - mean[c]) / std[c].
///  - tables (a kiln::features pipeline or single transform JSON): feature columns in the CSV's
///    order, NaN for missing; the prologue applies imputer, standard/min_max/robust scaler,
///    variance_threshold and pca steps with the same tensor ops as kiln::features.
///  - tables with categorical columns ({"kind": "table"}, see table_preprocessing): the numeric
///    columns as above, then one category code per categorical column (its index in the sorted
///    categories; -1 or NaN for one training never saw), one-hot encoded by the module.
///  - null or an empty object: identity.
/// and returns logits (classification) or predictions (regression), N x outputs, equal to the
/// eager NetworkImpl in eval mode (dropout off, batch norm on running statistics) up to float32
/// rounding. With `tta` kTtaFlip (images only) forward() returns the mean of the network's
/// logits for x and for x mirrored along W, computed by a second method network(x). The module is
/// in eval mode and holds no reference to `state`.
///
/// Errors: InvalidArgument for an unsupported layer or preprocessing step (named, e.g.
/// "preprocessing step 2 (one_hot_encoder): not supported"), a missing or unused tensor, or shapes
/// that do not chain ("layer 4 (linear): expects 1-D input, got [64,7,7]"). A module that compiles
/// but fails a dry run on zeros is Internal (a Kiln bug).
///
/// Thread-safety: pure function. The returned module's forward() may run concurrently.
///
///   KILN_ASSIGN_OR_RETURN(torch::jit::Module m,
///                         export_torchscript(spec, network_state(*net), {1, 28, 28}, 10,
///                                            snapshot.manifest["transforms"]));
///   m.save("model.pt");   // torch.jit.load("model.pt")(x) in Python, torch::jit::load in C++
Expected<torch::jit::Module> export_torchscript(const ModelSpec& spec, const TensorMap& state,
                                                const std::vector<int64_t>& input_shape,
                                                int64_t outputs, const Json& preprocessing = Json(),
                                                const std::string& tta = kTtaNone,
                                                const std::string& precision = kPrecisionFp32);

/// export_torchscript(net.spec(), network_state(net), net.input_shape(), net.outputs(), ...).
Expected<torch::jit::Module> export_torchscript(const NetworkImpl& net,
                                                const Json& preprocessing = Json(),
                                                const std::string& tta = kTtaNone,
                                                const std::string& precision = kPrecisionFp32);

/// What export_int8() did: layers quantised, calibration rows, and each quantisation point's
/// observed activation range [lo, hi] (point 0 is the network's input after preprocessing).
struct Int8Report {
  int64_t quantised_layers = 0;
  int64_t calibration_rows = 0;
  std::vector<std::pair<double, double>> ranges;
};

/// Selects oneDNN as LibTorch's quantized engine (process-wide): Kiln's int8 modules are packed
/// for it and repacked with the current engine when loaded, so call this before loading one.
/// FailedPrecondition when this LibTorch lacks it. Not thread-safe against concurrent loads.
Status use_onednn_quantized_engine();

/// int8 post-training static quantisation: a TorchScript module like export_torchscript's (float32
/// raw inputs in, preprocessing and flip TTA folded in, float32 logits out) whose network runs on
/// oneDNN's quantised operators: each conv2d / linear layer with the batch norm after it folded in
/// and a following ReLU fused, per-output-channel symmetric qint8 weights, quint8 activations
/// whose scale and zero point cover the min/max each takes on `calibration` (raw inputs, e.g.
/// 1,000 training rows); pooling, flatten and ReLU run on the quantised tensors. Supports
/// sequential networks of conv2d, linear, batch norm (after conv2d/linear), max/avg pooling,
/// flatten, dropout and ReLU; anything else is InvalidArgument naming the layer. Selects the
/// oneDNN engine (use_onednn_quantized_engine). Blocks (calibration forwards).
Expected<torch::jit::Module> export_int8(const ModelSpec& spec, const TensorMap& state,
                                         const std::vector<int64_t>& input_shape, int64_t outputs,
                                         const Json& preprocessing, const std::string& tta,
                                         const torch::Tensor& calibration,
                                         Int8Report* report = nullptr);

/// The generated TorchScript source for the same arguments (what export_torchscript compiles), for
/// inspection and debugging. Same errors, without the compile and dry run.
Expected<std::string> torchscript_source(const ModelSpec& spec, const TensorMap& state,
                                         const std::vector<int64_t>& input_shape, int64_t outputs,
                                         const Json& preprocessing = Json(),
                                         const std::string& tta = kTtaNone,
                                         const std::string& precision = kPrecisionFp32);

}  // namespace kiln::model
