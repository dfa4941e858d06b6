#pragma once

#include <torch/nn/cloneable.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "kiln/core/expected.h"
#include "kiln/core/json.h"
#include "kiln/model/spec.h"

namespace kiln::model {

/// What one layer of a built network does to one sample.
struct LayerInfo {
  std::string name;  ///< module path: "layers.3", "layers.3.body.0", "layers.3.shortcut"
  std::string type;  ///< spec layer type ("shortcut" for a residual projection)
  std::vector<int64_t> output_shape;  ///< without the batch dim
  int64_t params = 0;                 ///< trainable parameters (children included)
  /// Per sample. conv2d/linear: 2 x multiply-adds (bias not counted); batchnorm: 2 per element;
  /// activations, residual sum: 1 per element; pooling: window size per output element;
  /// adaptive pooling: 1 per input element; dropout, flatten: 0. Children included.
  int64_t flops = 0;
  std::vector<int64_t> input_shape;  ///< without the batch dim
  /// Hyper-parameters with every default filled in and shapes resolved, e.g. conv2d:
  /// {"in", "out", "kernel": [h,w], "stride": [h,w], "padding": [h,w], "bias"}; linear: {"in",
  /// "out", "bias"}; batchnorm: {"features", "eps", "momentum"}; pools: {"kernel", "stride",
  /// "padding"} / {"output_size"}; dropout {"p"}; leaky_relu {"slope"}; elu {"alpha"};
  /// residual {"projection": bool, "stride": [h,w], "projection_batchnorm": bool}.
  Json hparams = Json::object();
  std::vector<LayerInfo> children;  ///< residual: body layers, then the projection if any
};

/// A network built from a ModelSpec for a fixed input shape and number of outputs, shape-checked
/// layer by layer before any training.
///
/// Parameter and buffer names (a contract the exporter relies on):
///   top-level layer i: "layers.<i>.<tensor>" ("layers.0.weight", "layers.0.bias"; batchnorm also
///   "running_mean", "running_var", "num_batches_tracked");
///   residual layer i: body layer j -> "layers.<i>.body.<j>.<tensor>"; projection ->
///   "layers.<i>.shortcut.0.weight" (1x1 conv, no bias) and "layers.<i>.shortcut.1.<bn tensor>".
///   Parameterless layers register no tensors.
///
/// forward() works on any device the module was moved to, with contiguous or channels_last
/// inputs and under autocast (it never forces a dtype). clone() deep-copies (the copy's layers
/// are rebuilt, then the weights copied). Not thread-safe for concurrent forward() in train mode
/// (batchnorm statistics); in eval mode concurrent forward() calls are fine.
///
///   KILN_ASSIGN_OR_RETURN(ModelSpec spec, zoo_model("cnn-small", {{"width", 32}}));
///   KILN_ASSIGN_OR_RETURN(auto net, NetworkImpl::Create(spec, {1, 28, 28}, 10, /*init_seed=*/42));
///   torch::Tensor logits = net->forward(torch::randn({64, 1, 28, 28}));  // 64 x 10
class NetworkImpl : public torch::nn::Cloneable<NetworkImpl> {
 public:
  /// Builds and shape-checks the whole network. A mismatch is InvalidArgument naming the layer
  /// and the shapes ("layer 5 (linear): expects 3136 input features, got 1568 from shape
  /// [32,7,7]"); so is a final shape other than [outputs]. input_shape excludes the batch dim:
  /// {C,H,W} for images, {F} for tables; outputs >= 1.
  ///
  /// Initialisation is deterministic in init_seed: the default CPU generator is seeded with it
  /// while the layers are built and then restored to its previous state, so the caller's random
  /// stream is untouched. Not thread-safe against concurrent users of the default CPU generator.
  static Expected<std::shared_ptr<NetworkImpl>> Create(const ModelSpec& spec,
                                                       std::vector<int64_t> input_shape,
                                                       int64_t outputs, uint64_t init_seed = 0);

  /// N x input_shape (float, any memory format) -> N x outputs. Throws (TORCH_CHECK) when the
  /// input's per-sample shape differs from input_shape().
  torch::Tensor forward(torch::Tensor x);

  /// Rebuilds every layer and re-initialises it from init_seed (as Create did).
  void reset() override;

  const ModelSpec& spec() const { return spec_; }
  const std::vector<int64_t>& input_shape() const { return input_shape_; }
  int64_t outputs() const { return outputs_; }
  uint64_t init_seed() const { return init_seed_; }
  /// One entry per top-level layer (residual children nested).
  const std::vector<LayerInfo>& layer_infos() const { return layer_infos_; }
  /// Sums over layer_infos().
  int64_t total_params() const;
  int64_t total_flops() const;
  /// The "layers" container (top-level layer i is child "i").
  torch::nn::Sequential& layers() { return layers_; }

 private:
  NetworkImpl(ModelSpec spec, std::vector<int64_t> input_shape, int64_t outputs,
              uint64_t init_seed);
  Status build();

  ModelSpec spec_;
  std::vector<int64_t> input_shape_;
  int64_t outputs_ = 1;
  uint64_t init_seed_ = 0;
  std::vector<LayerInfo> layer_infos_;
  torch::nn::Sequential layers_{nullptr};

  friend class torch::nn::Cloneable<NetworkImpl>;
};

/// Module holder, for code that prefers LibTorch's value style: `Network
/// net(*NetworkImpl::Create(...))`.
TORCH_MODULE(Network);

/// "[32,7,7]".
std::string shape_to_string(const std::vector<int64_t>& shape);

}  // namespace kiln::model
