#include "kiln/data/npy.h"

#include <torch/torch.h>

#include <algorithm>
#include <cctype>
#include <cstring>
#include <string>
#include <vector>

#include "kiln/core/files.h"
#include "kiln/data/byte_order.h"

namespace kiln::data {
namespace {

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "npy encoding assumes a little-endian host");

constexpr char kMagic[] = "\x93NUMPY";
constexpr size_t kMagicLen = 6;
/// numpy aligns the data to 64 bytes and leaves room for the first axis to grow to 21 digits
/// (numpy/lib/format.py: ARRAY_ALIGN, GROWTH_AXIS_MAX_DIGITS); we do the same so our headers
/// match np.save byte for byte.
constexpr size_t kAlign = 64;
constexpr size_t kGrowthAxisMaxDigits = 21;

struct DtypeInfo {
  torch::ScalarType type;
  const char* descr;  // as written
  char kind;          // 'b', 'u', 'i', 'f'
  int64_t size;
};

const std::vector<DtypeInfo>& dtypes() {
  static const std::vector<DtypeInfo> kTypes = {
      {torch::kUInt8, "|u1", 'u', 1},   {torch::kInt8, "|i1", 'i', 1},
      {torch::kInt16, "<i2", 'i', 2},   {torch::kInt32, "<i4", 'i', 4},
      {torch::kInt64, "<i8", 'i', 8},   {torch::kFloat32, "<f4", 'f', 4},
      {torch::kFloat64, "<f8", 'f', 8}, {torch::kBool, "|b1", 'b', 1},
  };
  return kTypes;
}

std::string shape_repr(const std::vector<int64_t>& shape) {
  std::string s = "(";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  if (shape.size() == 1) s += ",";
  return s + ")";
}

/// The three keys of an npy header dict, parsed from its Python-literal text.
struct NpyHeader {
  std::string descr;
  bool fortran_order = false;
  std::vector<int64_t> shape;
  bool has_descr = false, has_fortran = false, has_shape = false;
};

/// A tiny parser for the Python dict literal numpy writes: string keys; string, bool or
/// int-tuple values. Not thread-safe (a cursor).
class HeaderParser {
 public:
  explicit HeaderParser(std::string_view s) : s_(s) {}

  bool parse(NpyHeader* h, std::string* error) {
    skip_ws();
    if (!eat('{')) return fail(error, "expected '{'");
    while (true) {
      skip_ws();
      if (eat('}')) break;
      std::string key;
      if (!parse_string(&key)) return fail(error, "expected a quoted key");
      skip_ws();
      if (!eat(':')) return fail(error, "expected ':' after '" + key + "'");
      skip_ws();
      if (key == "descr") {
        if (!parse_string(&h->descr)) return fail(error, "'descr' must be a string");
        h->has_descr = true;
      } else if (key == "fortran_order") {
        if (consume("True")) {
          h->fortran_order = true;
        } else if (consume("False")) {
          h->fortran_order = false;
        } else {
          return fail(error, "'fortran_order' must be True or False");
        }
        h->has_fortran = true;
      } else if (key == "shape") {
        if (!parse_shape(&h->shape)) return fail(error, "'shape' must be a tuple of integers");
        h->has_shape = true;
      } else {
        return fail(error, "unexpected key '" + key + "'");
      }
      skip_ws();
      if (eat(',')) continue;
      skip_ws();
      if (eat('}')) break;
      return fail(error, "expected ',' or '}'");
    }
    return true;
  }

 private:
  bool fail(std::string* error, const std::string& what) {
    *error = what + " at offset " + std::to_string(pos_);
    return false;
  }
  void skip_ws() {
    while (pos_ < s_.size() && std::isspace(static_cast<unsigned char>(s_[pos_]))) ++pos_;
  }
  bool eat(char c) {
    if (pos_ < s_.size() && s_[pos_] == c) {
      ++pos_;
      return true;
    }
    return false;
  }
  bool consume(std::string_view word) {
    if (s_.substr(pos_, word.size()) == word) {
      pos_ += word.size();
      return true;
    }
    return false;
  }
  bool parse_string(std::string* out) {
    if (pos_ >= s_.size() || (s_[pos_] != '\'' && s_[pos_] != '"')) return false;
    const char q = s_[pos_++];
    out->clear();
    while (pos_ < s_.size() && s_[pos_] != q) out->push_back(s_[pos_++]);
    return eat(q);
  }
  bool parse_shape(std::vector<int64_t>* shape) {
    shape->clear();
    if (!eat('(')) return false;
    while (true) {
      skip_ws();
      if (eat(')')) return true;
      if (pos_ >= s_.size() || !std::isdigit(static_cast<unsigned char>(s_[pos_]))) return false;
      int64_t v = 0;
      while (pos_ < s_.size() && std::isdigit(static_cast<unsigned char>(s_[pos_]))) {
        if (v > (int64_t{1} << 50)) return false;
        v = v * 10 + (s_[pos_++] - '0');
      }
      consume("L");  // Python 2 longs
      shape->push_back(v);
      skip_ws();
      if (eat(',')) continue;
      skip_ws();
      if (eat(')')) return true;
      return false;
    }
  }

  std::string_view s_;
  size_t pos_ = 0;
};

}  // namespace

Expected<std::string> encode_npy(const torch::Tensor& tensor) {
  if (!tensor.defined()) return Status::InvalidArgument("encode_npy: undefined tensor");
  const DtypeInfo* info = nullptr;
  for (const auto& d : dtypes())
    if (d.type == tensor.scalar_type()) info = &d;
  if (info == nullptr) {
    return Status::InvalidArgument(std::string("encode_npy: unsupported dtype ") +
                                   c10::toString(tensor.scalar_type()) +
                                   " (supported: uint8, int8, int16, int32, int64, float32, "
                                   "float64, bool)");
  }
  torch::Tensor t = tensor.cpu().contiguous();
  std::vector<int64_t> shape(t.sizes().begin(), t.sizes().end());

  std::string dict = std::string("{'descr': '") + info->descr +
                     "', 'fortran_order': False, 'shape': " + shape_repr(shape) + ", }";
  if (!shape.empty()) {
    const size_t digits = std::to_string(shape[0]).size();
    if (digits < kGrowthAxisMaxDigits) dict.append(kGrowthAxisMaxDigits - digits, ' ');
  }
  // Version 1.0 holds header lengths below 65536; a longer one would need v2.0.
  const size_t prefix = kMagicLen + 2 + 2;
  const size_t pad = kAlign - ((prefix + dict.size() + 1) % kAlign);
  dict.append(pad, ' ');  // 1..64 spaces, as numpy does (no modulo)
  dict.push_back('\n');
  if (dict.size() > 65535) return Status::InvalidArgument("encode_npy: header too long for v1.0");

  const int64_t data_bytes = t.numel() * info->size;
  std::string out;
  out.reserve(prefix + dict.size() + static_cast<size_t>(data_bytes));
  out.append(kMagic, kMagicLen);
  out.push_back('\x01');
  out.push_back('\x00');
  out.push_back(static_cast<char>(dict.size() & 0xff));
  out.push_back(static_cast<char>((dict.size() >> 8) & 0xff));
  out += dict;
  if (data_bytes > 0) out.append(static_cast<const char*>(t.data_ptr()), data_bytes);
  return out;
}

Status write_npy(const std::filesystem::path& path, const torch::Tensor& tensor) {
  auto bytes = encode_npy(tensor);
  if (!bytes.ok()) return bytes.status().with_context(path.string());
  return write_file_atomic(path, *bytes);
}

Expected<torch::Tensor> read_npy(const std::filesystem::path& path) {
  KILN_ASSIGN_OR_RETURN(std::string bytes, read_file(path));
  return decode_npy(bytes, path.string());
}

Expected<torch::Tensor> decode_npy(const std::string& bytes, const std::string& source_name) {
  const std::string& name = source_name;
  if (bytes.empty()) return Status::InvalidArgument(name + ": empty file, expected .npy data");
  if (bytes.size() < kMagicLen + 2 || bytes.compare(0, kMagicLen, kMagic, kMagicLen) != 0)
    return Status::InvalidArgument(name + ": not a .npy file (missing \\x93NUMPY magic)");
  const auto major = static_cast<unsigned char>(bytes[6]);
  size_t len_bytes = 0;
  if (major == 1) {
    len_bytes = 2;
  } else if (major == 2 || major == 3) {
    len_bytes = 4;
  } else {
    return Status::InvalidArgument(name + ": unsupported .npy format version " +
                                   std::to_string(major) + "." +
                                   std::to_string(static_cast<unsigned char>(bytes[7])));
  }
  const size_t prefix = kMagicLen + 2 + len_bytes;
  if (bytes.size() < prefix) return Status::DataLoss(name + ": truncated .npy header");
  size_t header_len = 0;
  for (size_t i = 0; i < len_bytes; ++i)
    header_len |= size_t{static_cast<unsigned char>(bytes[kMagicLen + 2 + i])} << (8 * i);
  if (bytes.size() < prefix + header_len) {
    return Status::DataLoss(name + ": truncated .npy header (declares " +
                            std::to_string(header_len) + " bytes, file has " +
                            std::to_string(bytes.size() - prefix) + ")");
  }
  NpyHeader h;
  std::string error;
  HeaderParser parser(std::string_view(bytes).substr(prefix, header_len));
  if (!parser.parse(&h, &error))
    return Status::InvalidArgument(name + ": malformed .npy header: " + error);
  if (!h.has_descr || !h.has_fortran || !h.has_shape) {
    return Status::InvalidArgument(name +
                                   ": .npy header lacks 'descr', 'fortran_order' or 'shape'");
  }

  // descr: byte order ('<', '>', '|', '=') + kind + size.
  std::string_view d = h.descr;
  char order = '=';
  if (!d.empty() && (d[0] == '<' || d[0] == '>' || d[0] == '|' || d[0] == '=')) {
    order = d[0];
    d.remove_prefix(1);
  }
  const DtypeInfo* info = nullptr;
  for (const auto& t : dtypes()) {
    if (d.size() >= 2 && d[0] == t.kind && d.substr(1) == std::to_string(t.size)) info = &t;
  }
  if (d == "?") info = &dtypes().back();  // numpy's one-char code for bool
  if (info == nullptr) {
    return Status::InvalidArgument(name + ": unsupported .npy dtype '" + h.descr +
                                   "' (supported: u1, i1, i2, i4, i8, f4, f8, b1)");
  }
  const bool swap = order == '>' && info->size > 1;

  int64_t numel = 1;
  for (int64_t s : h.shape) {
    if (s != 0 && numel > (int64_t{1} << 50) / s)
      return Status::InvalidArgument(name + ": implausible .npy shape " + shape_repr(h.shape));
    numel *= s;
  }
  const size_t data_bytes = static_cast<size_t>(numel * info->size);
  const size_t found = bytes.size() - prefix - header_len;
  if (found != data_bytes) {
    return Status::DataLoss(name + ": header says shape " + shape_repr(h.shape) + " of '" +
                            h.descr + "' = " + std::to_string(data_bytes) +
                            " bytes of data, found " + std::to_string(found));
  }

  // Fortran order: the data is the C-order array of the reversed shape, transposed.
  std::vector<int64_t> storage_shape = h.shape;
  if (h.fortran_order) std::reverse(storage_shape.begin(), storage_shape.end());
  torch::Tensor t = torch::empty(storage_shape, torch::TensorOptions().dtype(info->type));
  if (data_bytes > 0) std::memcpy(t.data_ptr(), bytes.data() + prefix + header_len, data_bytes);
  if (swap) swap_bytes(t.data_ptr(), numel, info->size);
  if (info->type == torch::kBool) {
    // numpy writes bools as 0/1, but any nonzero byte must read as true without UB.
    auto* p = static_cast<uint8_t*>(t.data_ptr());
    for (int64_t i = 0; i < numel; ++i) p[i] = p[i] != 0;
  }
  if (h.fortran_order && t.dim() > 1) {
    std::vector<int64_t> perm(static_cast<size_t>(t.dim()));
    for (int64_t i = 0; i < t.dim(); ++i) perm[static_cast<size_t>(i)] = t.dim() - 1 - i;
    t = t.permute(perm).contiguous();
  }
  return t;
}

}  // namespace kiln::data
