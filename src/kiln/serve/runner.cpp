#include "kiln/serve/runner.h"

#include <c10/core/InferenceMode.h>

namespace kiln::serve {

Expected<std::vector<torch::Tensor>> TorchScriptRunner::run(const torch::Tensor& batch) {
  try {
    c10::InferenceMode guard;
    c10::IValue out = module_.forward({batch});
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
    for (auto& t : tensors) t = t.to(torch::kFloat32).contiguous();
    return tensors;
  } catch (const c10::Error& e) {
    return Status::Internal(std::string("model forward failed: ") + e.what_without_backtrace());
  } catch (const std::exception& e) {
    return Status::Internal(std::string("model forward failed: ") + e.what());
  }
}

}  // namespace kiln::serve
