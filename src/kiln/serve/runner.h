#pragma once

#include <torch/script.h>

#include <memory>
#include <string>
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
/// torch::InferenceMode on the device its parameters are on (model::place_module): batches go
/// there, outputs come back to the CPU. A tuple or list result gives several outputs.
/// With rows_per_forward > 0, a larger batch runs as forwards of at most that many rows whose
/// outputs are concatenated (model::choose_forward_chunking picks it).
class TorchScriptRunner : public Runner {
 public:
  explicit TorchScriptRunner(torch::jit::Module module, int64_t rows_per_forward = 0);
  Expected<std::vector<torch::Tensor>> run(const torch::Tensor& batch) override;
  int64_t rows_per_forward() const { return rows_per_forward_; }

 private:
  torch::jit::Module module_;
  torch::Device device_;
  int64_t rows_per_forward_;
};

/// A module prepared for CPU serving, and what was done to it.
struct ServingModule {
  torch::jit::Module module;
  bool prepacked = false;  ///< XNNPACK's prepacked operators replace linear and conv
  std::string note;        ///< why it was not prepacked (empty when it was)
};

/// Rewrites `module` for CPU inference with XNNPACK's prepacked operators
/// (torch::jit::optimizeForMobile: linear weights packed once here rather than by the BLAS on
/// every forward, which dominates small batches: 3x the samples/s at batch 1, 1.6x at 64 for the
/// 784-256-128-10 MLP), then runs `probe` through the original and the rewrite and keeps the
/// rewrite only when every output agrees within rtol 1e-4 / atol 1e-5. Otherwise (a LibTorch
/// without XNNPACK, a model with convolutions, which XNNPACK ran slower at batch 16, different
/// outputs) returns the original with the reason in `note`. `module` must be in eval mode.
/// Blocks (two forwards).
ServingModule prepack_for_cpu_serving(const torch::jit::Module& module, const torch::Tensor& probe);

}  // namespace kiln::serve
