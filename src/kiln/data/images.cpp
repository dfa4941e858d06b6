#include "kiln/data/images.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <torch/torch.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <limits>
#include <string>
#include <system_error>

#include "kiln/data/byte_order.h"

namespace kiln::data {
namespace {

namespace fs = std::filesystem;

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "IDX decoding assumes a little-endian host");

constexpr int64_t kCifarImageBytes = 3 * 32 * 32;
constexpr int64_t kCifarRecordBytes = 1 + kCifarImageBytes;
/// Deflate cannot compress better than about 1032:1, so a gzip file of n bytes cannot hold more
/// than ~1032·n bytes: a header claiming more is corrupt (and must not make us allocate it).
constexpr int64_t kMaxDeflateRatio = 1032;

std::string os_reason() { return std::strerror(errno); }

/// An open file descriptor, closed on destruction. Move-only.
class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  Fd(Fd&& o) noexcept : fd_(o.fd_) { o.fd_ = -1; }
  Fd(const Fd&) = delete;
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  int get() const { return fd_; }
  int release() {
    int f = fd_;
    fd_ = -1;
    return f;
  }

 private:
  int fd_;
};

/// Opens a regular file for reading, with messages for the usual mistakes. Sets *size.
Expected<Fd> open_regular(const fs::path& path, int64_t* size) {
  const std::string name = path.string();
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    if (errno == ENOENT || errno == ENOTDIR) return Status::NotFound(name + ": no such file");
    return Status::IoError("cannot open " + name + ": " + os_reason());
  }
  if (S_ISDIR(st.st_mode))
    return Status::InvalidArgument(name + ": is a directory, expected a file");
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Status::IoError("cannot open " + name + ": " + os_reason());
  *size = S_ISREG(st.st_mode) ? static_cast<int64_t>(st.st_size) : -1;
  return Fd(fd);
}

/// Reads up to n bytes; returns how many were read (less only at end of file).
Expected<int64_t> read_up_to(int fd, void* dst, int64_t n, const std::string& name) {
  auto* p = static_cast<char*>(dst);
  int64_t got = 0;
  while (got < n) {
    const size_t chunk = static_cast<size_t>(std::min<int64_t>(n - got, int64_t{1} << 30));
    ssize_t r = ::read(fd, p + got, chunk);
    if (r < 0) {
      if (errno == EINTR) continue;
      return Status::IoError("cannot read " + name + ": " + os_reason());
    }
    if (r == 0) break;
    got += r;
  }
  return got;
}

/// A byte source over a raw or gzip-compressed file. Not thread-safe.
class ByteSource {
 public:
  static Expected<ByteSource> Open(const fs::path& path) {
    int64_t size = 0;
    KILN_ASSIGN_OR_RETURN(Fd fd, open_regular(path, &size));
    const std::string name = path.string();
    unsigned char magic[2] = {0, 0};
    KILN_ASSIGN_OR_RETURN(int64_t n, read_up_to(fd.get(), magic, 2, name));
    if (n == 0) return Status::InvalidArgument(name + ": empty file");
    const bool gz = n == 2 && magic[0] == 0x1f && magic[1] == 0x8b;
    if (::lseek(fd.get(), 0, SEEK_SET) != 0)
      return Status::IoError("cannot seek in " + name + ": " + os_reason());
    ByteSource src(name, size, gz);
    if (gz) {
      src.gz_ = ::gzdopen(fd.get(), "rb");
      if (src.gz_ == nullptr) return Status::IoError("cannot open gzip stream " + name);
      fd.release();  // now owned by gz_
      ::gzbuffer(src.gz_, 1 << 20);
    } else {
      src.fd_ = fd.release();
    }
    return Expected<ByteSource>(std::move(src));
  }

  ByteSource(ByteSource&& o) noexcept
      : name_(std::move(o.name_)),
        file_size_(o.file_size_),
        gzip_(o.gzip_),
        fd_(o.fd_),
        gz_(o.gz_),
        consumed_(o.consumed_) {
    o.fd_ = -1;
    o.gz_ = nullptr;
  }
  ByteSource(const ByteSource&) = delete;
  ~ByteSource() {
    if (gz_ != nullptr) ::gzclose(gz_);
    if (fd_ >= 0) ::close(fd_);
  }

  bool gzip() const { return gzip_; }
  int64_t file_size() const { return file_size_; }
  /// Decompressed bytes delivered so far.
  int64_t consumed() const { return consumed_; }
  const std::string& name() const { return name_; }

  /// Reads up to n bytes; fewer only at a clean end of data. A truncated or corrupt gzip stream
  /// is a DataLoss error naming the file and how far it got.
  Expected<int64_t> read(void* dst, int64_t n) {
    if (!gzip_) {
      KILN_ASSIGN_OR_RETURN(int64_t got, read_up_to(fd_, dst, n, name_));
      consumed_ += got;
      return got;
    }
    auto* p = static_cast<char*>(dst);
    int64_t got = 0;
    while (got < n) {
      const unsigned chunk = static_cast<unsigned>(std::min<int64_t>(n - got, INT_MAX / 2));
      int r = ::gzread(gz_, p + got, chunk);
      if (r < 0 || (r < static_cast<int>(chunk) && gz_failed())) {
        int errnum = 0;
        std::string msg = ::gzerror(gz_, &errnum);
        if (msg.rfind("<fd:", 0) == 0 && msg.find(": ") != std::string::npos)
          msg = msg.substr(msg.find(": ") + 2);  // zlib prefixes "<fd:N>: "; we name the file
        if (r > 0) got += r;
        consumed_ += got;
        if (errnum == Z_BUF_ERROR) {
          return Status::DataLoss(name_ + ": truncated gzip stream (" + msg + ") after " +
                                  std::to_string(consumed_) + " bytes of decompressed data");
        }
        return Status::DataLoss(name_ + ": corrupt gzip stream (" + msg + ")");
      }
      if (r == 0) break;
      got += r;
    }
    consumed_ += got;
    return got;
  }

 private:
  ByteSource(std::string name, int64_t size, bool gz)
      : name_(std::move(name)), file_size_(size), gzip_(gz) {}

  bool gz_failed() {
    int errnum = Z_OK;
    ::gzerror(gz_, &errnum);
    return errnum != Z_OK && errnum != Z_STREAM_END;
  }

  std::string name_;
  int64_t file_size_ = -1;
  bool gzip_ = false;
  int fd_ = -1;
  gzFile gz_ = nullptr;
  int64_t consumed_ = 0;
};

struct IdxHeader {
  uint8_t type = 0;
  std::vector<int64_t> dims;
  int64_t elem_size = 0;
  torch::ScalarType dtype = torch::kUInt8;
};

std::string dims_string(const std::vector<int64_t>& dims) {
  std::string s = "[";
  for (size_t i = 0; i < dims.size(); ++i) s += (i ? ", " : "") + std::to_string(dims[i]);
  return s + "]";
}

uint32_t big_endian_u32(const unsigned char* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | uint32_t{p[3]};
}

Expected<IdxHeader> read_idx_header(ByteSource& src) {
  const std::string& name = src.name();
  unsigned char magic[4];
  KILN_ASSIGN_OR_RETURN(int64_t n, src.read(magic, 4));
  if (n == 0) return Status::InvalidArgument(name + ": empty file (no IDX header)");
  if (n < 4)
    return Status::DataLoss(name + ": truncated IDX header (" + std::to_string(n) + " bytes)");
  char hex[32];
  std::snprintf(hex, sizeof hex, "%02x %02x %02x %02x", magic[0], magic[1], magic[2], magic[3]);
  if (magic[0] != 0 || magic[1] != 0) {
    return Status::InvalidArgument(name + ": not an IDX file (magic bytes " + hex +
                                   ", expected 00 00 <type> <rank>)");
  }
  IdxHeader h;
  h.type = magic[2];
  switch (h.type) {
    case 0x08:
      h.dtype = torch::kUInt8;
      h.elem_size = 1;
      break;
    case 0x09:
      h.dtype = torch::kInt8;
      h.elem_size = 1;
      break;
    case 0x0B:
      h.dtype = torch::kInt16;
      h.elem_size = 2;
      break;
    case 0x0C:
      h.dtype = torch::kInt32;
      h.elem_size = 4;
      break;
    case 0x0D:
      h.dtype = torch::kFloat32;
      h.elem_size = 4;
      break;
    case 0x0E:
      h.dtype = torch::kFloat64;
      h.elem_size = 8;
      break;
    default:
      return Status::InvalidArgument(name + ": not an IDX file (magic bytes " + hex +
                                     ": unknown element type 0x" + std::string(hex + 6, 2) + ")");
  }
  const int rank = magic[3];
  if (rank == 0) {
    return Status::InvalidArgument(name + ": not an IDX file (magic bytes " + hex + ": rank 0)");
  }
  std::vector<unsigned char> raw(static_cast<size_t>(rank) * 4);
  KILN_ASSIGN_OR_RETURN(n, src.read(raw.data(), static_cast<int64_t>(raw.size())));
  if (n < static_cast<int64_t>(raw.size())) {
    return Status::DataLoss(name + ": truncated IDX header (rank " + std::to_string(rank) +
                            " needs " + std::to_string(raw.size()) +
                            " bytes of dimensions, found " + std::to_string(n) + ")");
  }
  for (int i = 0; i < rank; ++i) h.dims.push_back(big_endian_u32(raw.data() + 4 * i));
  return h;
}

Expected<torch::Tensor> read_idx_impl(const fs::path& path, int64_t max_items, IdxHeader* out) {
  KILN_ASSIGN_OR_RETURN(ByteSource src, ByteSource::Open(path));
  const std::string& name = src.name();
  KILN_ASSIGN_OR_RETURN(IdxHeader h, read_idx_header(src));
  const int64_t header_bytes = 4 + 4 * static_cast<int64_t>(h.dims.size());

  // Bytes per item along dimension 0, with overflow checks (dims come from an untrusted file).
  constexpr int64_t kLimit = int64_t{1} << 46;
  int64_t item_bytes = h.elem_size;
  for (size_t i = 1; i < h.dims.size(); ++i) {
    if (h.dims[i] != 0 && item_bytes > kLimit / h.dims[i])
      return Status::InvalidArgument(name + ": implausible IDX dimensions " + dims_string(h.dims));
    item_bytes *= h.dims[i];
  }
  if (h.dims[0] != 0 && item_bytes > kLimit / h.dims[0])
    return Status::InvalidArgument(name + ": implausible IDX dimensions " + dims_string(h.dims));
  const int64_t total_data = item_bytes * h.dims[0];
  const int64_t items = max_items > 0 ? std::min(max_items, h.dims[0]) : h.dims[0];
  const int64_t want = item_bytes * items;
  const std::string expect_msg = name + ": header dimensions " + dims_string(h.dims) + " need " +
                                 std::to_string(total_data) +
                                 " bytes of data after the header, found ";

  // Refuse before allocating when the file cannot possibly hold the data.
  if (src.file_size() >= 0) {
    const int64_t available = src.file_size() - (src.gzip() ? 0 : header_bytes);
    if (!src.gzip() && available < want)
      return Status::DataLoss(expect_msg + std::to_string(available));
    if (src.gzip() && want + header_bytes > available * kMaxDeflateRatio + 4096)
      return Status::DataLoss(expect_msg + "at most " +
                              std::to_string(available * kMaxDeflateRatio) + " in a gzip file of " +
                              std::to_string(available) + " bytes (corrupt header?)");
  }

  std::vector<int64_t> shape = h.dims;
  shape[0] = items;
  torch::Tensor t = torch::empty(shape, torch::TensorOptions().dtype(h.dtype));
  KILN_ASSIGN_OR_RETURN(int64_t got, src.read(t.data_ptr(), want));
  if (got < want) return Status::DataLoss(expect_msg + std::to_string(got));
  if (items == h.dims[0]) {
    // A full read must end exactly here; reading on also makes zlib check the gzip CRC.
    char extra[4096];
    int64_t trailing = 0;
    while (true) {
      KILN_ASSIGN_OR_RETURN(int64_t more, src.read(extra, sizeof extra));
      if (more == 0) break;
      trailing += more;
    }
    if (trailing > 0) {
      return Status::DataLoss(expect_msg + std::to_string(total_data + trailing) + " (" +
                              std::to_string(trailing) + " unexpected trailing bytes)");
    }
  }
  swap_bytes(t.data_ptr(), t.numel(), h.elem_size);
  if (out != nullptr) *out = std::move(h);
  return t;
}

}  // namespace

Expected<torch::Tensor> read_idx(const std::filesystem::path& path, int64_t max_items) {
  return read_idx_impl(path, max_items, nullptr);
}

Expected<ImageSet> read_idx_images(const std::filesystem::path& images,
                                   const std::filesystem::path& labels, int64_t max_items) {
  IdxHeader ih, lh;
  // Labels first: they are small, so a bad or missing label file fails before the big read.
  KILN_ASSIGN_OR_RETURN(torch::Tensor y, read_idx_impl(labels, max_items, &lh));
  KILN_ASSIGN_OR_RETURN(torch::Tensor x, read_idx_impl(images, max_items, &ih));
  if (ih.dims.size() != 3 || ih.type != 0x08) {
    return Status::InvalidArgument(
        images.string() + ": expected N×H×W unsigned-byte images, found " +
        std::to_string(ih.dims.size()) + "-d data of type " + std::string(c10::toString(ih.dtype)) +
        " with dimensions " + dims_string(ih.dims));
  }
  if (lh.dims.size() != 1 || lh.type != 0x08) {
    return Status::InvalidArgument(labels.string() + ": expected N unsigned-byte labels, found " +
                                   std::to_string(lh.dims.size()) + "-d data of type " +
                                   std::string(c10::toString(lh.dtype)) + " with dimensions " +
                                   dims_string(lh.dims));
  }
  if (ih.dims[0] != lh.dims[0]) {
    return Status::InvalidArgument("image/label count mismatch: " + images.string() + " has " +
                                   std::to_string(ih.dims[0]) + " images but " + labels.string() +
                                   " has " + std::to_string(lh.dims[0]) + " labels");
  }
  ImageSet set;
  set.images = x.unsqueeze(1);
  set.labels = y.to(torch::kInt64);
  set.source = images.string();
  return set;
}

Expected<ImageSet> read_cifar10(const std::vector<std::filesystem::path>& batches,
                                int64_t max_items) {
  if (batches.empty()) return Status::InvalidArgument("read_cifar10: no batch files given");
  std::vector<torch::Tensor> parts;
  int64_t total = 0;
  std::string source;
  for (const auto& path : batches) {
    if (max_items > 0 && total >= max_items) break;
    const std::string name = path.string();
    source += (source.empty() ? "" : ",") + name;
    int64_t size = 0;
    KILN_ASSIGN_OR_RETURN(Fd fd, open_regular(path, &size));
    if (size == 0) return Status::InvalidArgument(name + ": empty file, expected CIFAR-10 records");
    if (size < 0) return Status::InvalidArgument(name + ": not a regular file");
    if (size % kCifarRecordBytes != 0) {
      return Status::DataLoss(name + ": " + std::to_string(size) +
                              " bytes is not a whole number of 3073-byte records; record " +
                              std::to_string(size / kCifarRecordBytes + 1) + " is truncated (" +
                              std::to_string(size % kCifarRecordBytes) + " of 3073 bytes)");
    }
    int64_t records = size / kCifarRecordBytes;
    if (max_items > 0) records = std::min(records, max_items - total);
    torch::Tensor raw = torch::empty({records, kCifarRecordBytes}, torch::kUInt8);
    const int64_t want = records * kCifarRecordBytes;
    KILN_ASSIGN_OR_RETURN(int64_t got, read_up_to(fd.get(), raw.data_ptr(), want, name));
    if (got < want) {
      return Status::DataLoss(name + ": file shrank while reading (read " + std::to_string(got) +
                              " of " + std::to_string(want) + " bytes)");
    }
    const uint8_t* p = raw.data_ptr<uint8_t>();
    for (int64_t r = 0; r < records; ++r) {
      const uint8_t label = p[r * kCifarRecordBytes];
      if (label > 9) {
        return Status::InvalidArgument(name + ": record " + std::to_string(r + 1) +
                                       " (byte offset " + std::to_string(r * kCifarRecordBytes) +
                                       ") has label " + std::to_string(label) +
                                       "; CIFAR-10 labels are 0-9");
      }
    }
    parts.push_back(std::move(raw));
    total += records;
  }
  torch::Tensor all = parts.size() == 1 ? parts[0] : torch::cat(parts, 0);
  ImageSet set;
  set.labels = all.select(1, 0).to(torch::kInt64);
  set.images = all.narrow(1, 1, kCifarImageBytes).reshape({total, 3, 32, 32}).contiguous();
  set.source = source;
  return set;
}

const std::vector<std::string>& fashion_mnist_classes() {
  static const std::vector<std::string> kNames = {"T-shirt/top", "Trouser",   "Pullover", "Dress",
                                                  "Coat",        "Sandal",    "Shirt",    "Sneaker",
                                                  "Bag",         "Ankle boot"};
  return kNames;
}

const std::vector<std::string>& cifar10_classes() {
  static const std::vector<std::string> kNames = {
      "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"};
  return kNames;
}

}  // namespace kiln::data
