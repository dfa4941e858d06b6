#pragma once

#include <string>

#include "kiln/core/json.h"
#include "kiln/model/network.h"

namespace kiln::model {

/// A fixed-width table of a built network: index, layer, type, output shape, params, FLOPs per
/// sample (residual children indented below their block), then the input shape and totals.
///
///   std::cout << render_summary(*net);
std::string render_summary(const NetworkImpl& net);

/// The same as JSON: {"name", "zoo_params", "input_shape", "outputs", "layers": [{"index",
/// "name", "type", "input_shape", "output_shape", "params", "flops", "hparams"[, "children"]}],
/// "total_params", "total_flops"}.
Json summary_json(const NetworkImpl& net);

/// 421642 -> "421,642".
std::string with_thousands(int64_t n);

}  // namespace kiln::model
