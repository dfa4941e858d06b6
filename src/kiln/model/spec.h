#pragma once

// Model specifications: what a network is made of, as plain data. No tensor code here, so configs
// can be parsed, validated, printed and stored (bundle manifests, registry entries) without
// LibTorch. kiln/model/network.h turns a ModelSpec into modules.

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "kiln/core/expected.h"
#include "kiln/core/json.h"

namespace kiln::model {

/// One layer of a model spec. `type` selects the layer; `params` holds its other keys exactly as
/// written (defaults are NOT filled in, so a spec round-trips unchanged).
///
/// Layer types, their keys and defaults (an unknown key is an error):
///   linear              out (int >= 1 or "outputs", required), in (optional: checked against the
///                       incoming features), bias (true), init
///   conv2d              out (required), kernel (required), stride (1), padding (0), bias (true),
///                       in (optional: checked against the incoming channels), init
///   batchnorm1d/2d      eps (1e-5), momentum (0.1)
///   dropout             p (0.5), 0 <= p < 1
///   maxpool2d/avgpool2d kernel (2), stride (= kernel), padding (0)
///   adaptive_avgpool2d  output_size (1)
///   flatten, relu, gelu, tanh, sigmoid, silu   (no keys)
///   leaky_relu          slope (0.01)
///   elu                 alpha (1.0)
///   residual            body (list of layers, required), projection_batchnorm (true)
/// kernel/stride/padding/output_size are an int or a [h, w] pair. `out: outputs` (the string)
/// means the number of model outputs (classes, or 1 for regression).
/// init: kaiming (kaiming_normal, ReLU gain; fan_out for conv2d, fan_in for linear), xavier
/// (xavier_uniform), normal (N(0, 0.01)), zeros; each sets the bias to zero. Without init the
/// layer keeps LibTorch's default initialisation.
///
/// residual: output = body(x) + shortcut(x). The shortcut is the identity when body(x) has x's
/// shape, else a projection: a 1x1 conv without bias whose stride maps x's spatial size onto the
/// body's, followed by batchnorm2d unless projection_batchnorm is false (3-D inputs only). No
/// activation follows the sum: write it as the next layer.
///
///   {"type": "conv2d", "out": 32, "kernel": 3, "padding": 1, "init": "kaiming"}
struct LayerSpec {
  std::string type;
  Json params = Json::object();
  std::vector<LayerSpec> body;  ///< residual only

  /// {"type": ..., <params>..., "body": [...] (residual only)}.
  Json to_json() const;
};

/// A whole model: a plain list of layers (zoo models are expanded), plus where it came from.
///
///   KILN_ASSIGN_OR_RETURN(ModelSpec spec, parse_model_spec(config["model"]));
///   Json stored = spec.to_json();                       // into a bundle manifest
///   KILN_ASSIGN_OR_RETURN(ModelSpec again, ModelSpec::from_json(stored));
struct ModelSpec {
  std::string name = "custom";       ///< zoo name ("mlp", "cnn-small", "resnet-small") or "custom"
  Json zoo_params = Json::object();  ///< every zoo parameter, defaults included; {} for custom
  std::vector<LayerSpec> layers;     ///< fully expanded

  /// {"name", "zoo_params", "layers": [...]}; from_json() (and parse_model_spec()) read it back.
  Json to_json() const;
  /// Reads to_json()'s form. `name` and `zoo_params` are optional (custom, {}); layers are
  /// validated as in parse_model_spec(). Errors name the path under `where`.
  static Expected<ModelSpec> from_json(const Json& j, const std::string& where = "model");
};

/// All layer types, in documentation order.
const std::vector<std::string>& layer_types();

/// Parses the `model:` section of a config (YAML already converted to Json):
///   {zoo: cnn-small, width: 32, dropout: 0.1}   -> zoo_model("cnn-small", {width: 32, dropout:
///   0.1}) {layers: [{type: conv2d, out: 32, kernel: 3}, {type: relu}, ...]}  -> a custom model
/// (to_json()'s form is accepted as well). Every error is InvalidArgument naming the path and
/// listing the valid values, e.g.
///   "model.layers[3].type: unknown layer 'conv3d' (valid: linear, conv2d, ...)".
/// Shapes are not checked here: NetworkImpl::Create does that.
Expected<ModelSpec> parse_model_spec(const Json& j, const std::string& where = "model");

/// Reads a YAML or JSON file (by extension: .json is JSON, anything else YAML) that holds the
/// model section at top level or under `model:`. Errors are prefixed with the file name.
Expected<ModelSpec> load_model_spec_file(const std::filesystem::path& yaml_or_json);

/// Reads a YAML file into Json: plain scalars become null/bool/int/float when they read as one,
/// quoted scalars stay strings. IoError / InvalidArgument (with line) name the file.
Expected<Json> read_yaml_file(const std::filesystem::path& path);

/// Builds a zoo model with `params` (an object; absent keys take their defaults):
///   mlp           hidden [256, 128], dropout 0, activation relu (any activation layer type)
///                 -> flatten, (linear(h), activation, dropout if > 0) per h, linear(outputs)
///   cnn-small     width 32, hidden 128, dropout 0.2, convs 1 (conv layers per block, 1-4)
///                 -> [conv(width,3,pad 1)-bn-relu] x convs, maxpool,
///                    [conv(2*width,3,pad 1)-bn-relu] x convs, maxpool,
///                    flatten, linear(hidden)-relu, dropout (if > 0), linear(outputs)
///   resnet-small  width 16, depth 1 (blocks per stage), stages 3
///                 -> conv(width,3,pad 1)-bn-relu, then per stage s (channels width*2^s) `depth`
///                    residual blocks {conv3x3(stride 2 on the first block of stages > 0)-bn-relu-
///                    conv3x3-bn} each followed by relu; adaptive_avgpool2d(1), flatten,
///                    linear(outputs)
/// Convs are kaiming-initialised; convs followed by batchnorm have no bias. Errors name the zoo
/// models or the valid parameters.
Expected<ModelSpec> zoo_model(const std::string& name, const Json& params = Json::object());

/// "mlp", "cnn-small", "resnet-small".
const std::vector<std::string>& zoo_names();

}  // namespace kiln::model
