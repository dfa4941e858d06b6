#pragma once

#include <torch/script.h>

#include <memory>
#include <vector>

#include "kiln/core/expected.h"

namespace kiln::serve {

/// Runs one batch through a model. Implementations are used by one batcher thread at a time
/// (not required to be thread-safe).
class Runner {
 public:
  virtual ~Runner() = default;
  /// `batch` is float32 [N, per-sample dims...]; returns the model's outputs in signature order,
  /// each [N, ...]. Errors are Internal naming the failure.
  virtual Expected<std::vector<torch::Tensor>> run(const torch::Tensor& batch) = 0;
};

/// A TorchScript module (a bundle's model.pt: raw inputs in, preprocessing folded in), run under
/// torch::InferenceMode. A tuple or list result gives several outputs.
class TorchScriptRunner : public Runner {
 public:
  explicit TorchScriptRunner(torch::jit::Module module) : module_(std::move(module)) {}
  Expected<std::vector<torch::Tensor>> run(const torch::Tensor& batch) override;

 private:
  torch::jit::Module module_;
};

}  // namespace kiln::serve
