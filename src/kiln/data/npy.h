#pragma once

#include <torch/types.h>

#include <filesystem>
#include <string>

#include "kiln/core/expected.h"

namespace kiln::data {

/// Encodes a contiguous CPU tensor as NumPy .npy v1.0 bytes (little-endian, C order).
/// Supported dtypes: uint8, int32, int64, float32, float64, bool. Deterministic: the same tensor
/// gives the same bytes, so snapshots hash stably.
Expected<std::string> encode_npy(const torch::Tensor& tensor);

/// Writes encode_npy(tensor) atomically (temp file, fsync, rename).
Status write_npy(const std::filesystem::path& path, const torch::Tensor& tensor);

/// Reads a .npy file written by write_npy or numpy.save (v1/v2/v3 header, the dtypes above; int8
/// and int16 too). Big-endian data and fortran_order=True are converted to a native C-order
/// tensor. Errors name the file and what is wrong with the header or size (InvalidArgument for
/// a bad header or dtype, DataLoss when the data size disagrees with the shape).
Expected<torch::Tensor> read_npy(const std::filesystem::path& path);
Expected<torch::Tensor> decode_npy(const std::string& bytes, const std::string& source_name);

}  // namespace kiln::data
