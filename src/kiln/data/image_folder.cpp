#include "kiln/data/image_folder.h"

#include <jpeglib.h>
#include <png.h>
#include <torch/torch.h>

#include <algorithm>
#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <map>
#include <set>

#include "kiln/core/files.h"
#include "kiln/core/hash.h"

namespace kiln::data {

namespace fs = std::filesystem;

namespace {

/// Decoded images larger than this many pixels are refused (a 16k x 16k image): a small file can
/// claim a huge size, and the decode buffer is allocated from that claim.
constexpr int64_t kMaxPixels = int64_t{1} << 28;

bool is_png(const std::string& b) {
  return b.size() >= 8 && std::memcmp(b.data(), "\x89PNG\r\n\x1a\n", 8) == 0;
}
bool is_jpeg(const std::string& b) {
  return b.size() >= 3 && static_cast<unsigned char>(b[0]) == 0xFF &&
         static_cast<unsigned char>(b[1]) == 0xD8 && static_cast<unsigned char>(b[2]) == 0xFF;
}

Expected<torch::Tensor> decode_png(const std::string& bytes, int64_t channels) {
  png_image image;
  std::memset(&image, 0, sizeof(image));
  image.version = PNG_IMAGE_VERSION;
  if (!png_image_begin_read_from_memory(&image, bytes.data(), bytes.size()))
    return Status::InvalidArgument(std::string("PNG: ") + image.message);
  if (static_cast<int64_t>(image.width) * image.height > kMaxPixels) {
    png_image_free(&image);
    return Status::InvalidArgument("PNG: " + std::to_string(image.width) + "x" +
                                   std::to_string(image.height) + " is too large");
  }
  image.format = channels == 1 ? PNG_FORMAT_GRAY : PNG_FORMAT_RGB;
  torch::Tensor out = torch::empty({image.height, image.width, channels}, torch::kUInt8);
  // Images with alpha are composited onto black (libpng's default without a background).
  if (!png_image_finish_read(&image, nullptr, out.data_ptr<uint8_t>(), 0, nullptr)) {
    std::string why = image.message;
    png_image_free(&image);
    return Status::InvalidArgument("PNG: " + why);
  }
  return out.permute({2, 0, 1}).contiguous();
}

struct JpegError {
  jpeg_error_mgr mgr;
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX] = {0};
  bool warned = false;
};

void jpeg_error_exit(j_common_ptr info) {
  auto* err = reinterpret_cast<JpegError*>(info->err);
  (*info->err->format_message)(info, err->message);
  std::longjmp(err->jump, 1);
}

/// libjpeg reports damaged data (e.g. a truncated file, which it pads with grey) as warnings:
/// such an image is corrupt here.
void jpeg_emit_message(j_common_ptr info, int level) {
  auto* err = reinterpret_cast<JpegError*>(info->err);
  if (level < 0 && !err->warned) {
    err->warned = true;
    (*info->err->format_message)(info, err->message);
  }
}

Expected<torch::Tensor> decode_jpeg(const std::string& bytes, int64_t channels) {
  jpeg_decompress_struct info;
  JpegError err;
  info.err = jpeg_std_error(&err.mgr);
  err.mgr.error_exit = jpeg_error_exit;
  err.mgr.emit_message = jpeg_emit_message;
  torch::Tensor out;
  if (setjmp(err.jump)) {
    jpeg_destroy_decompress(&info);
    return Status::InvalidArgument(std::string("JPEG: ") + err.message);
  }
  jpeg_create_decompress(&info);
  jpeg_mem_src(&info, reinterpret_cast<const unsigned char*>(bytes.data()),
               static_cast<unsigned long>(bytes.size()));
  jpeg_read_header(&info, TRUE);
  if (static_cast<int64_t>(info.image_width) * info.image_height > kMaxPixels) {
    jpeg_destroy_decompress(&info);
    return Status::InvalidArgument("JPEG: " + std::to_string(info.image_width) + "x" +
                                   std::to_string(info.image_height) + " is too large");
  }
  info.out_color_space = channels == 1 ? JCS_GRAYSCALE : JCS_RGB;
  jpeg_start_decompress(&info);
  out = torch::empty({info.output_height, info.output_width, channels}, torch::kUInt8);
  const int64_t stride = static_cast<int64_t>(info.output_width) * channels;
  while (info.output_scanline < info.output_height) {
    JSAMPROW row = out.data_ptr<uint8_t>() + info.output_scanline * stride;
    jpeg_read_scanlines(&info, &row, 1);
  }
  jpeg_finish_decompress(&info);
  jpeg_destroy_decompress(&info);
  if (err.warned) return Status::InvalidArgument(std::string("JPEG: damaged data: ") + err.message);
  return out.permute({2, 0, 1}).contiguous();
}

/// uint8 C x H x W to `height` x `width`: bilinear with antialiasing, after a centre crop to the
/// target's aspect ratio ("crop") or not ("stretch").
torch::Tensor resize(const torch::Tensor& image, int64_t height, int64_t width,
                     const std::string& mode) {
  if (image.size(1) == height && image.size(2) == width) return image;
  torch::Tensor x = image.unsqueeze(0).to(torch::kFloat32);
  if (mode == "crop") {
    const double scale = std::max(static_cast<double>(height) / image.size(1),
                                  static_cast<double>(width) / image.size(2));
    const int64_t h = std::max<int64_t>(height, std::llround(image.size(1) * scale));
    const int64_t w = std::max<int64_t>(width, std::llround(image.size(2) * scale));
    x = torch::nn::functional::interpolate(x, torch::nn::functional::InterpolateFuncOptions()
                                                  .size(std::vector<int64_t>{h, w})
                                                  .mode(torch::kBilinear)
                                                  .align_corners(false)
                                                  .antialias(true));
    const int64_t top = (h - height) / 2, left = (w - width) / 2;
    x = x.slice(2, top, top + height).slice(3, left, left + width);
  } else {
    x = torch::nn::functional::interpolate(x, torch::nn::functional::InterpolateFuncOptions()
                                                  .size(std::vector<int64_t>{height, width})
                                                  .mode(torch::kBilinear)
                                                  .align_corners(false)
                                                  .antialias(true));
  }
  return x.round().clamp(0, 255).to(torch::kUInt8).squeeze(0).contiguous();
}

bool has_image_extension(const fs::path& p) {
  std::string ext = p.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(),
                 [](unsigned char c) { return std::tolower(c); });
  return ext == ".png" || ext == ".jpg" || ext == ".jpeg";
}

}  // namespace

Expected<torch::Tensor> decode_image(const std::string& bytes, int64_t channels) {
  if (channels != 1 && channels != 3)
    return Status::InvalidArgument("channels must be 1 or 3, got " + std::to_string(channels));
  if (is_png(bytes)) return decode_png(bytes, channels);
  if (is_jpeg(bytes)) return decode_jpeg(bytes, channels);
  return Status::InvalidArgument(bytes.empty() ? "empty file" : "neither PNG nor JPEG data");
}

Expected<std::string> encode_png(const torch::Tensor& image) {
  if (image.dim() != 3 || (image.size(0) != 1 && image.size(0) != 3) ||
      image.scalar_type() != torch::kUInt8)
    return Status::InvalidArgument("encode_png: expected uint8 C x H x W with C 1 or 3");
  torch::Tensor hwc = image.permute({1, 2, 0}).contiguous();
  png_image info;
  std::memset(&info, 0, sizeof(info));
  info.version = PNG_IMAGE_VERSION;
  info.width = static_cast<png_uint_32>(image.size(2));
  info.height = static_cast<png_uint_32>(image.size(1));
  info.format = image.size(0) == 1 ? PNG_FORMAT_GRAY : PNG_FORMAT_RGB;
  png_alloc_size_t size = 0;
  if (!png_image_write_to_memory(&info, nullptr, &size, 0, hwc.data_ptr<uint8_t>(), 0, nullptr))
    return Status::Internal(std::string("encode_png: ") + info.message);
  std::string out(size, '\0');
  if (!png_image_write_to_memory(&info, out.data(), &size, 0, hwc.data_ptr<uint8_t>(), 0, nullptr))
    return Status::Internal(std::string("encode_png: ") + info.message);
  out.resize(size);
  return out;
}

Expected<std::string> encode_jpeg(const torch::Tensor& image, int quality) {
  if (image.dim() != 3 || (image.size(0) != 1 && image.size(0) != 3) ||
      image.scalar_type() != torch::kUInt8)
    return Status::InvalidArgument("encode_jpeg: expected uint8 C x H x W with C 1 or 3");
  torch::Tensor hwc = image.permute({1, 2, 0}).contiguous();
  jpeg_compress_struct info;
  JpegError err;
  info.err = jpeg_std_error(&err.mgr);
  err.mgr.error_exit = jpeg_error_exit;
  unsigned char* buffer = nullptr;
  unsigned long size = 0;
  if (setjmp(err.jump)) {
    jpeg_destroy_compress(&info);
    std::free(buffer);
    return Status::Internal(std::string("encode_jpeg: ") + err.message);
  }
  jpeg_create_compress(&info);
  jpeg_mem_dest(&info, &buffer, &size);
  info.image_width = static_cast<JDIMENSION>(image.size(2));
  info.image_height = static_cast<JDIMENSION>(image.size(1));
  info.input_components = static_cast<int>(image.size(0));
  info.in_color_space = image.size(0) == 1 ? JCS_GRAYSCALE : JCS_RGB;
  jpeg_set_defaults(&info);
  jpeg_set_quality(&info, quality, TRUE);
  jpeg_start_compress(&info, TRUE);
  const int64_t stride = image.size(2) * image.size(0);
  while (info.next_scanline < info.image_height) {
    JSAMPROW row = hwc.data_ptr<uint8_t>() + info.next_scanline * stride;
    jpeg_write_scanlines(&info, &row, 1);
  }
  jpeg_finish_compress(&info);
  std::string out(reinterpret_cast<char*>(buffer), size);
  jpeg_destroy_compress(&info);
  std::free(buffer);
  return out;
}

Expected<ImageFolder> read_image_folder(const fs::path& dir, const ImageFolderOptions& options,
                                        const std::vector<std::string>& classes,
                                        int64_t max_items) {
  const std::string where = dir.string();
  if (options.channels != 1 && options.channels != 3)
    return Status::InvalidArgument(where + ": image.channels must be 1 or 3");
  if (options.height < 0 || options.width < 0 || (options.height == 0) != (options.width == 0))
    return Status::InvalidArgument(where + ": image.size must be positive");
  if (options.resize != "crop" && options.resize != "stretch")
    return Status::InvalidArgument(where + ": image.resize must be crop or stretch");
  if (options.corrupt != "skip" && options.corrupt != "fail")
    return Status::InvalidArgument(where + ": corrupt must be skip or fail");
  std::error_code ec;
  if (!fs::is_directory(dir, ec))
    return Status::InvalidArgument(where +
                                   ": not a directory (an image folder holds one "
                                   "subdirectory of images per class)");
  std::vector<std::string> found;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec))
    if (it->is_directory(ec)) found.push_back(it->path().filename().string());
  if (ec) return Status::IoError(where + ": " + ec.message());
  std::sort(found.begin(), found.end());
  ImageFolder out;
  out.classes = classes.empty() ? found : classes;
  std::map<std::string, int64_t> label_of;
  for (size_t i = 0; i < out.classes.size(); ++i)
    label_of[out.classes[i]] = static_cast<int64_t>(i);
  for (const std::string& name : found)
    if (!label_of.count(name))
      return Status::InvalidArgument(where + "/" + name +
                                     ": a folder for a class not in 'classes' (" +
                                     std::to_string(out.classes.size()) + " listed)");
  // Files per class in sorted order, then interleaved across classes so that a limit keeps
  // every class.
  std::vector<std::vector<fs::path>> per_class(out.classes.size());
  for (const std::string& name : found) {
    auto& files = per_class[static_cast<size_t>(label_of[name])];
    for (fs::directory_iterator it(dir / name, ec), end; !ec && it != end; it.increment(ec))
      if (it->is_regular_file(ec) && has_image_extension(it->path())) files.push_back(it->path());
    std::sort(files.begin(), files.end());
  }
  std::vector<std::pair<fs::path, int64_t>> order;
  for (size_t round = 0;; ++round) {
    bool any = false;
    for (size_t c = 0; c < per_class.size(); ++c)
      if (round < per_class[c].size()) {
        order.emplace_back(per_class[c][round], static_cast<int64_t>(c));
        any = true;
      }
    if (!any) break;
  }
  if (max_items > 0 && static_cast<int64_t>(order.size()) > max_items)
    order.resize(static_cast<size_t>(max_items));
  if (order.empty())
    return Status::InvalidArgument(where + ": no .png/.jpg/.jpeg files in <class>/ folders");

  std::vector<torch::Tensor> images;
  std::vector<int64_t> labels;
  std::string digest_lines;
  int64_t height = options.height, width = options.width;
  for (const auto& [path, label] : order) {
    ++out.files;
    const std::string rel = path.lexically_relative(dir).generic_string();
    KILN_ASSIGN_OR_RETURN(std::string bytes, read_file(path));
    digest_lines += rel + " " + sha256_hex(bytes) + "\n";
    Expected<torch::Tensor> image = decode_image(bytes, options.channels);
    if (image.ok() && height == 0) {
      height = image->size(1);
      width = image->size(2);
    }
    if (image.ok() && options.height == 0 && (image->size(1) != height || image->size(2) != width))
      return Status::InvalidArgument(path.string() + ": " + std::to_string(image->size(2)) + "x" +
                                     std::to_string(image->size(1)) +
                                     " differs from the first image's " + std::to_string(width) +
                                     "x" + std::to_string(height) + " (give image.size to resize)");
    if (!image.ok()) {
      if (options.corrupt == "fail")
        return Status::InvalidArgument(path.string() + ": cannot decode (" +
                                       image.status().message() +
                                       "); corrupt: skip leaves such files out");
      out.skipped.push_back({path, image.status().message()});
      continue;
    }
    images.push_back(resize(*image, height, width, options.resize));
    labels.push_back(label);
  }
  if (images.empty())
    return Status::InvalidArgument(
        where + ": none of " + std::to_string(out.files) +
        " image files could be decoded (first: " + out.skipped.front().path.string() + ": " +
        out.skipped.front().reason + ")");
  out.set.images = torch::stack(images);
  out.set.labels = torch::tensor(labels, torch::kLong);
  out.set.source = where;
  out.sha256 = sha256_hex(digest_lines);
  return out;
}

}  // namespace kiln::data
