#include "kiln/registry/torchscript_import.h"

#include <torch/script.h>
#include <torch/torch.h>

#include <sstream>

#include "kiln/core/files.h"
#include "kiln/model/bundle.h"

namespace kiln::registry {
namespace {

struct DtypeName {
  const char* name;
  c10::ScalarType type;
};
const DtypeName kDtypes[] = {
    {"BOOL", c10::ScalarType::Bool},  {"UINT8", c10::ScalarType::Byte},
    {"INT8", c10::ScalarType::Char},  {"INT16", c10::ScalarType::Short},
    {"INT32", c10::ScalarType::Int},  {"INT64", c10::ScalarType::Long},
    {"FP16", c10::ScalarType::Half},  {"BF16", c10::ScalarType::BFloat16},
    {"FP32", c10::ScalarType::Float}, {"FP64", c10::ScalarType::Double},
};

const char* dtype_name(c10::ScalarType t) {
  for (const auto& d : kDtypes)
    if (d.type == t) return d.name;
  return "?";
}

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? "," : "") + std::to_string(shape[i]);
  return s + "]";
}

}  // namespace

Expected<fs::path> import_torchscript(const fs::path& model_pt, const TorchScriptImport& options,
                                      const fs::path& out_dir) {
  const std::string where = model_pt.string() + ": ";
  if (options.inputs.empty() || options.outputs.empty())
    return Status::InvalidArgument(
        where + "a TorchScript push needs --input and --output NAME:DTYPE:SHAPE declarations");
  KILN_ASSIGN_OR_RETURN(std::string bytes, read_file(model_pt));
  torch::jit::Module module;
  try {
    std::istringstream is(bytes);
    module = torch::jit::load(is, c10::Device(c10::kCPU));
    module.eval();
  } catch (const c10::Error& e) {
    return Status::InvalidArgument(where +
                                   "not a TorchScript module (save it with "
                                   "torch.jit.save(torch.jit.script(model), path)): " +
                                   e.what_without_backtrace());
  }
  // A dry run on zeros of the declared shapes.
  std::vector<c10::IValue> args;
  for (const TensorDecl& in : options.inputs) {
    std::vector<int64_t> shape;
    for (int64_t d : in.shape) shape.push_back(d < 0 ? 1 : d);
    c10::ScalarType type = c10::ScalarType::Float;
    for (const auto& k : kDtypes)
      if (in.dtype == k.name) type = k.type;
    args.emplace_back(torch::zeros(shape, torch::TensorOptions().dtype(type)));
  }
  std::vector<torch::Tensor> outs;
  try {
    torch::NoGradGuard no_grad;
    c10::IValue out = module.forward(args);
    if (out.isTensor()) {
      outs.push_back(out.toTensor());
    } else if (out.isTuple()) {
      for (const auto& e : out.toTupleRef().elements())
        if (e.isTensor()) outs.push_back(e.toTensor());
    } else if (out.isTensorList()) {
      for (const auto& t : out.toTensorVector()) outs.push_back(t);
    }
  } catch (const std::exception& e) {
    std::string what = e.what();
    if (what.size() > 600) what = what.substr(0, 600) + "...";
    return Status::InvalidArgument(where +
                                   "the module rejected zeros of the declared --input "
                                   "signature: " +
                                   what);
  }
  if (outs.size() != options.outputs.size())
    return Status::InvalidArgument(where + "the module returned " + std::to_string(outs.size()) +
                                   " tensor(s); --output declares " +
                                   std::to_string(options.outputs.size()));
  for (size_t i = 0; i < outs.size(); ++i) {
    const TensorDecl& want = options.outputs[i];
    const std::vector<int64_t> got = outs[i].sizes().vec();
    bool ok = got.size() == want.shape.size();
    for (size_t d = 0; ok && d < got.size(); ++d) ok = want.shape[d] < 0 || want.shape[d] == got[d];
    if (!ok)
      return Status::InvalidArgument(where + "output '" + want.name + "' has shape " +
                                     shape_text(got) + " for zeros of the declared inputs; " +
                                     "--output declares " + shape_text(want.shape));
    if (want.dtype != dtype_name(outs[i].scalar_type()))
      return Status::InvalidArgument(where + "output '" + want.name + "' is " +
                                     dtype_name(outs[i].scalar_type()) + "; --output declares " +
                                     want.dtype);
  }
  Json inputs = Json::array(), outputs = Json::array();
  for (const auto& d : options.inputs) inputs.push_back(d.to_json());
  for (const auto& d : options.outputs) outputs.push_back(d.to_json());
  Json manifest = {{"task", options.labels.empty() ? model::kCustomTask : "classification"},
                   {"signature", {{"inputs", inputs}, {"outputs", outputs}}},
                   {"labels", options.labels},
                   {"source", {{"format", "torchscript"}, {"file", model_pt.filename().string()}}}};
  return model::write_module_bundle(out_dir, manifest, bytes);
}

}  // namespace kiln::registry
