// TensorDecl parsing, free of LibTorch (the `kiln` front binary parses --input/--output before
// it hands a TorchScript import to kiln-engine).
#include <cctype>
#include <sstream>

#include "kiln/registry/torchscript_import.h"

namespace kiln::registry {
namespace {

/// The Open Inference Protocol dtypes a declaration may name (torchscript_import.cpp maps each to
/// its ScalarType).
const char* const kOipDtypes[] = {"BOOL",  "UINT8", "INT8", "INT16", "INT32",
                                  "INT64", "FP16",  "BF16", "FP32",  "FP64"};

}  // namespace

Json TensorDecl::to_json() const {
  return Json{{"name", name}, {"dtype", dtype}, {"shape", shape}};
}

Expected<TensorDecl> parse_tensor_decl(const std::string& text, const std::string& flag) {
  const std::string form =
      flag + " '" + text + "': expected NAME:DTYPE:SHAPE, e.g. input:FP32:-1,784";
  const size_t a = text.find(':');
  const size_t b = a == std::string::npos ? a : text.find(':', a + 1);
  if (b == std::string::npos) return Status::InvalidArgument(form);
  TensorDecl d;
  d.name = text.substr(0, a);
  d.dtype = text.substr(a + 1, b - a - 1);
  const std::string shape = text.substr(b + 1);
  if (d.name.empty()) return Status::InvalidArgument(form + " (empty NAME)");
  for (char& c : d.dtype) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  bool known = false;
  std::string names;
  for (const char* k : kOipDtypes) {
    known = known || d.dtype == k;
    names += (names.empty() ? "" : " ") + std::string(k);
  }
  if (!known)
    return Status::InvalidArgument(flag + " '" + text + "': unknown DTYPE '" + d.dtype +
                                   "' (one of " + names + ")");
  std::stringstream ss(shape);
  std::string part;
  while (std::getline(ss, part, ',')) {
    try {
      size_t pos = 0;
      long long v = std::stoll(part, &pos);
      if (pos != part.size() || v == 0 || v < -1) throw std::invalid_argument(part);
      d.shape.push_back(v);
    } catch (const std::exception&) {
      return Status::InvalidArgument(form + " (SHAPE holds positive sizes or -1, got '" + part +
                                     "')");
    }
  }
  if (d.shape.empty() || shape.back() == ',')
    return Status::InvalidArgument(form + " (empty SHAPE)");
  return d;
}

}  // namespace kiln::registry
