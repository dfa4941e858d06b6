#pragma once

#include <torch/types.h>

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "kiln/core/expected.h"

namespace kiln::data {

/// Labelled images in memory. Plain value type; tensors share storage when copied.
struct ImageSet {
  torch::Tensor images;  ///< uint8, N×C×H×W, the stored pixel values 0–255
  torch::Tensor labels;  ///< int64, N
  std::string source;    ///< where it was read from (for messages and manifests)
  int64_t size() const { return images.defined() ? images.size(0) : 0; }
};

/// Reads one IDX file (gzip-compressed or raw, detected from the bytes) into a tensor with the
/// file's dimensions. Supports element types ubyte (0x08 → uint8), byte, short, int, float,
/// double. `max_items` > 0 reads only the first items along dimension 0.
/// Errors name the file: unreadable (NotFound/IoError), empty or a directory or wrong magic
/// (InvalidArgument), truncated or corrupt gzip, header/size mismatch in either direction
/// ("header dimensions [60000, 28, 28] need 47040000 bytes of data after the header, found 1200")
/// (DataLoss). A gzip header claiming more than deflate could hold in the file is refused before
/// anything is allocated. With `max_items` only the bytes needed are decompressed, so the gzip
/// CRC and trailing-data checks run on full reads only. Blocks on file I/O; thread-safe.
Expected<torch::Tensor> read_idx(const std::filesystem::path& path, int64_t max_items = 0);

/// Reads an MNIST-style image/label pair: images N×H×W ubyte, labels N ubyte. Returns images as
/// N×1×H×W. Errors: either file bad, rank wrong, or image/label count mismatch (names both).
Expected<ImageSet> read_idx_images(const std::filesystem::path& images,
                                   const std::filesystem::path& labels, int64_t max_items = 0);

/// Reads CIFAR-10 binary batches (records of 1 label byte + 3072 pixel bytes, 3×32×32, planar
/// RGB) and concatenates them. Errors: unreadable file, empty file, size not a multiple of 3073
/// ("data_batch_1.bin: 30730001 bytes is not a whole number of 3073-byte records; record 10001
/// is truncated"), label byte > 9 (names the record).
Expected<ImageSet> read_cifar10(const std::vector<std::filesystem::path>& batches,
                                int64_t max_items = 0);

/// The Fashion-MNIST class names, index = label.
const std::vector<std::string>& fashion_mnist_classes();
/// The CIFAR-10 class names, index = label.
const std::vector<std::string>& cifar10_classes();

}  // namespace kiln::data
