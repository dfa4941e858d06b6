#include "kiln/serve/runner.h"

#include <c10/core/InferenceMode.h>
#include <torch/csrc/jit/passes/xnnpack_rewrite.h>

#include "kiln/model/device.h"

namespace kiln::serve {

TorchScriptRunner::TorchScriptRunner(torch::jit::Module module)
    : module_(std::move(module)), device_(model::module_device(module_)) {}

Expected<std::vector<torch::Tensor>> TorchScriptRunner::run(const torch::Tensor& batch) {
  try {
    c10::InferenceMode guard;
    // On a GPU the batch goes through pinned memory (a faster copy, queued behind nothing).
    c10::IValue out = module_.forward(
        {device_.is_cpu() ? batch : batch.pin_memory().to(device_, /*non_blocking=*/true)});
    std::vector<torch::Tensor> tensors;
    if (out.isTensor()) {
      tensors.push_back(out.toTensor());
    } else if (out.isTuple()) {
      for (const auto& v : out.toTupleRef().elements()) {
        if (!v.isTensor()) return Status::Internal("model output tuple holds a non-tensor");
        tensors.push_back(v.toTensor());
      }
    } else if (out.isTensorList()) {
      for (const auto& t : out.toTensorVector()) tensors.push_back(t);
    } else if (out.isList()) {
      for (const auto& v : out.toListRef()) {
        if (!v.isTensor()) return Status::Internal("model output list holds a non-tensor");
        tensors.push_back(v.toTensor());
      }
    } else {
      return Status::Internal("model returned " + out.tagKind() + ", not tensors");
    }
    for (auto& t : tensors) t = t.to(torch::kCPU, torch::kFloat32).contiguous();
    return tensors;
  } catch (const c10::Error& e) {
    return Status::Internal(std::string("model forward failed: ") + e.what_without_backtrace());
  } catch (const std::exception& e) {
    return Status::Internal(std::string("model forward failed: ") + e.what());
  }
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
