#pragma once

// Bring-your-own images: a folder per class (ImageNet's layout, `ROOT/<class>/*.png|jpg|jpeg`),
// decoded with Debian's libpng and libjpeg-turbo, converted to grey or RGB and resized to one
// size, into the same ImageSet the IDX and CIFAR readers give.

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "kiln/core/expected.h"
#include "kiln/data/images.h"
#include "kiln/data/spec.h"

namespace kiln::data {

/// One file left out of an image folder, and why.
struct SkippedImage {
  std::filesystem::path path;
  std::string reason;
};

/// An image folder as read: the images (uint8 N x C x H x W, labels by class index), the class
/// names in label order, the files left out, and a sha256 over every file read (relative path and
/// bytes, in order) that changes with any file's content, name or class.
struct ImageFolder {
  ImageSet set;
  std::vector<std::string> classes;
  std::vector<SkippedImage> skipped;
  std::string sha256;
  int64_t files = 0;  ///< image files considered (decoded or skipped)
};

/// Reads `dir`/<class>/*.{png,jpg,jpeg} (extensions in any case; other files are ignored, as are
/// files directly in `dir`). Classes are `classes` when given (every subdirectory must be one of
/// them; a class without a folder has no images), else the subdirectory names sorted. Files are
/// read in sorted order per class; `max_items` > 0 keeps the first that many files overall.
/// Errors: InvalidArgument for a missing or empty folder, a subdirectory not among `classes`,
/// bad options, a corrupt file under corrupt: fail (naming the file and the decoder's reason),
/// or an image whose size differs from the first one's when no size is given. Blocks on file
/// I/O; thread-safe.
Expected<ImageFolder> read_image_folder(const std::filesystem::path& dir,
                                        const ImageFolderOptions& options,
                                        const std::vector<std::string>& classes = {},
                                        int64_t max_items = 0);

/// Decodes one PNG or JPEG held in `bytes` (format from its signature) to uint8 C x H x W with
/// `channels` 1 or 3. InvalidArgument with the decoder's reason for anything else.
Expected<torch::Tensor> decode_image(const std::string& bytes, int64_t channels);

/// Encodes uint8 C x H x W (C 1 or 3) as PNG bytes (lossless). For tests and tools.
Expected<std::string> encode_png(const torch::Tensor& image);

/// Encodes uint8 C x H x W (C 1 or 3) as baseline JPEG bytes of `quality` (1-100).
Expected<std::string> encode_jpeg(const torch::Tensor& image, int quality = 95);

}  // namespace kiln::data
