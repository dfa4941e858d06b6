#pragma once

// The model zoo. zoo_model() and zoo_names() are declared in kiln/model/spec.h (the contract);
// this header adds what tools that list or document the zoo need.

#include <string>

#include "kiln/core/expected.h"
#include "kiln/core/json.h"
#include "kiln/model/spec.h"

namespace kiln::model {

/// Every parameter of a zoo model with its default, e.g. {"width": 32, "hidden": 128,
/// "dropout": 0.2, "convs": 1} for cnn-small; {} for an unknown name.
Json zoo_defaults(const std::string& name);

/// zoo_model() whose errors name `where` (e.g. "model" -> "model.width: expected ...").
Expected<ModelSpec> zoo_model_at(const std::string& name, const Json& params,
                                 const std::string& where);

}  // namespace kiln::model
