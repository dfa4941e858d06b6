// The interop API in a build configured with KILN_ONNX=OFF (Debian's libonnx and libprotobuf left
// out, e.g. on the GPU machine, where they could clash with that machine's LibTorch): every export
// is refused with the reason, so `kiln export --format onnx` says what to do instead.
#include "kiln/interop/onnx_export.h"

namespace kiln::interop {
namespace {

Status built_without_onnx() {
  return Status::FailedPrecondition(
      "this Kiln was built without ONNX export (CMake option KILN_ONNX=OFF); export with "
      "--format torchscript, or use a build with KILN_ONNX=ON");
}

}  // namespace

Expected<OnnxModel> export_onnx(const model::ModelSpec&, const model::TensorMap&,
                                const std::vector<int64_t>&, int64_t, const Json&,
                                const std::string&, const OnnxExportOptions&) {
  return built_without_onnx();
}

Expected<OnnxModel> export_bundle_onnx(const model::Bundle&, OnnxExportOptions) {
  return built_without_onnx();
}

}  // namespace kiln::interop
