#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "kiln/core/expected.h"

namespace kiln::serve {

/// Element type of an Open Inference Protocol v2 tensor.
enum class DataType {
  kBool,
  kUint8,
  kUint16,
  kUint32,
  kUint64,
  kInt8,
  kInt16,
  kInt32,
  kInt64,
  kFp16,
  kFp32,
  kFp64,
  kBytes
};

/// "FP32" -> kFp32; InvalidArgument names `where` for an unknown name.
Expected<DataType> parse_datatype(std::string_view name, const std::string& where);
const char* datatype_name(DataType t);
/// Bytes per element in the binary tensor extension (0 for BYTES: variable).
size_t datatype_size(DataType t);

/// One `inputs[i]` of an inference request, its data already converted to float32 (the only input
/// type Kiln models take; every numeric datatype converts). A BYTES tensor (JSON strings, or
/// binary elements each led by its length as a little-endian uint32: a table's columns as text,
/// which the server converts with the model's schema) keeps its strings in `text`, with a 0 per
/// element in `data`.
struct InputTensor {
  std::string name;
  std::vector<int64_t> shape;
  std::string datatype;
  std::vector<float> data;
  std::vector<std::string> text;  ///< BYTES elements, in order
  int64_t binary_data_size = -1;  ///< from parameters.binary_data_size; -1: JSON data
  bool has_data = false;
};

/// One `outputs[i]` of an inference request.
struct RequestedOutput {
  std::string name;
  bool binary = false;  ///< parameters.binary_data
};

/// A parsed `$inference_request`.
struct InferRequest {
  std::string id;
  bool has_id = false;
  std::vector<InputTensor> inputs;
  std::vector<RequestedOutput> outputs;  ///< empty: the model's default outputs
  bool binary_data_output = false;       ///< parameters.binary_data_output
};

/// Parses an inference request body. `json_length` is the Inference-Header-Content-Length (the
/// JSON header's size) when the binary tensor extension is used, else body.size(); the bytes
/// after it are the tensors whose inputs give parameters.binary_data_size, in input order.
/// A hand-written parser: the `data` arrays (hundreds of numbers per request) are read with
/// std::from_chars straight into float32, without a DOM. Each element is checked against the
/// input's datatype (integers for INT/UINT within range, true/false or 0/1 for BOOL, numbers for
/// FP, strings for BYTES). Errors are InvalidArgument naming the request part, e.g.
/// "inputs[0].data[12]: expected a number". Thread-safe (pure).
Expected<InferRequest> parse_infer_request(std::string_view body, size_t json_length);

/// JSON string literal for `s` (quotes and escapes).
void append_json_string(std::string* out, std::string_view s);
/// Shortest round-trip text of a float (std::to_chars); NaN/Inf, which JSON lacks, as null.
void append_json_float(std::string* out, float v);

}  // namespace kiln::serve
