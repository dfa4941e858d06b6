#include "kiln/serve/runner.h"

#include <c10/core/InferenceMode.h>
#include <torch/csrc/jit/passes/xnnpack_rewrite.h>

#include "kiln/model/device.h"
#include "kiln/model/forward.h"

namespace kiln::serve {

TorchScriptRunner::TorchScriptRunner(torch::jit::Module module, int64_t rows_per_forward)
    : module_(std::move(module)),
      device_(model::module_device(module_)),
      rows_per_forward_(rows_per_forward) {}

Expected<std::vector<torch::Tensor>> TorchScriptRunner::run(const torch::Tensor& batch) {
  c10::InferenceMode guard;
  torch::Tensor input = batch;
  try {
    // On a GPU the batch goes through pinned memory (a faster copy, queued behind nothing).
    if (!device_.is_cpu()) input = batch.pin_memory().to(device_, /*non_blocking=*/true);
  } catch (const c10::Error& e) {
    return Status::Internal(std::string("cannot move the batch to ") + device_.str() + ": " +
                            e.what_without_backtrace());
  }
  KILN_ASSIGN_OR_RETURN(std::vector<torch::Tensor> tensors,
                        model::forward_in_chunks(module_, input, rows_per_forward_));
  try {
    for (auto& t : tensors) t = t.to(torch::kCPU, torch::kFloat32).contiguous();
  } catch (const c10::Error& e) {
    return Status::Internal(std::string("model outputs cannot come back to the CPU: ") +
                            e.what_without_backtrace());
  }
  return tensors;
}

namespace {

bool has_node_kind_prefix(const torch::jit::Block* block, const std::string& prefix) {
  for (const torch::jit::Node* node : block->nodes()) {
    if (std::string(node->kind().toQualString()).rfind(prefix, 0) == 0) return true;
    for (const torch::jit::Block* inner : node->blocks())
      if (has_node_kind_prefix(inner, prefix)) return true;
  }
  return false;
}

}  // namespace

ServingModule prepack_for_cpu_serving(const torch::jit::Module& module,
                                      const torch::Tensor& probe) {
  ServingModule out{module, false, ""};
  // An int8 module (kiln compress) already runs oneDNN's quantised operators.
  if (has_node_kind_prefix(module.get_method("forward").graph()->block(), "quantized::") ||
      (module.find_method("network") &&
       has_node_kind_prefix(module.get_method("network").graph()->block(), "quantized::"))) {
    out.note = "an int8 module on oneDNN's quantised operators";
    return out;
  }
  torch::jit::Module rewritten;
  try {
    rewritten = torch::jit::optimizeForMobile(module);
  } catch (const c10::Error& e) {
    std::string why = e.what_without_backtrace();
    out.note = "XNNPACK rewrite unavailable: " + why.substr(0, why.find('\n'));
    return out;
  }
  // XNNPACK's convolutions were slower than the saved module's at batch 16 (CNN of the
  // Fashion-MNIST example, docs/benchmarks.md); its linear layers are faster at every batch.
  if (has_node_kind_prefix(rewritten.get_method("forward").graph()->block(), "prepacked::conv")) {
    out.note = "convolutions are faster as saved at serving batch sizes";
    return out;
  }
  TorchScriptRunner original_runner(module), rewritten_runner(rewritten);
  Expected<std::vector<torch::Tensor>> want = original_runner.run(probe);
  Expected<std::vector<torch::Tensor>> got = rewritten_runner.run(probe);
  if (!want.ok() || !got.ok() || want->size() != got->size()) {
    out.note = "the XNNPACK rewrite does not run like the original";
    return out;
  }
  for (size_t i = 0; i < want->size(); ++i) {
    const torch::Tensor& a = (*want)[i];
    const torch::Tensor& b = (*got)[i];
    if (a.sizes() != b.sizes() || !torch::allclose(a, b, 1e-4, 1e-5, /*equal_nan=*/true)) {
      out.note = "the XNNPACK rewrite changes output " + std::to_string(i);
      return out;
    }
  }
  out.module = std::move(rewritten);
  out.prepacked = true;
  return out;
}

}  // namespace kiln::serve
