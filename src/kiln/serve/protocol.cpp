#include "kiln/serve/protocol.h"

#include <charconv>
#include <cmath>
#include <cstring>
#include <limits>

#include "kiln/core/json.h"

namespace kiln::serve {
namespace {

struct TypeInfo {
  DataType type;
  const char* name;
  size_t size;
};
constexpr TypeInfo kTypes[] = {
    {DataType::kBool, "BOOL", 1},     {DataType::kUint8, "UINT8", 1},
    {DataType::kUint16, "UINT16", 2}, {DataType::kUint32, "UINT32", 4},
    {DataType::kUint64, "UINT64", 8}, {DataType::kInt8, "INT8", 1},
    {DataType::kInt16, "INT16", 2},   {DataType::kInt32, "INT32", 4},
    {DataType::kInt64, "INT64", 8},   {DataType::kFp16, "FP16", 2},
    {DataType::kFp32, "FP32", 4},     {DataType::kFp64, "FP64", 8},
    {DataType::kBytes, "BYTES", 0},
};

bool is_int_type(DataType t) {
  return t != DataType::kBool && t != DataType::kFp16 && t != DataType::kFp32 &&
         t != DataType::kFp64 && t != DataType::kBytes;
}

/// Range of an integer datatype as doubles.
void int_range(DataType t, double* lo, double* hi) {
  switch (t) {
    case DataType::kUint8:
      *lo = 0;
      *hi = 255;
      break;
    case DataType::kUint16:
      *lo = 0;
      *hi = 65535;
      break;
    case DataType::kUint32:
      *lo = 0;
      *hi = 4294967295.0;
      break;
    case DataType::kUint64:
      *lo = 0;
      *hi = 18446744073709551615.0;
      break;
    case DataType::kInt8:
      *lo = -128;
      *hi = 127;
      break;
    case DataType::kInt16:
      *lo = -32768;
      *hi = 32767;
      break;
    case DataType::kInt32:
      *lo = -2147483648.0;
      *hi = 2147483647.0;
      break;
    default:
      *lo = -9223372036854775808.0;
      *hi = 9223372036854775807.0;
      break;
  }
}

float half_to_float(uint16_t h) {
  const uint32_t sign = (h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1f, mant = h & 0x3ffu, bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal: normalise
      exp = 127 - 15 + 1;
      while (!(mant & 0x400u)) {
        mant <<= 1;
        --exp;
      }
      mant &= 0x3ffu;
      bits = sign | (exp << 23) | (mant << 13);
    }
  } else if (exp == 31) {
    bits = sign | 0x7f800000u | (mant << 13);
  } else {
    bits = sign | ((exp - 15 + 127) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

template <typename T>
void convert_raw(const char* p, size_t n, std::vector<float>* out) {
  out->resize(n);
  for (size_t i = 0; i < n; ++i) {
    T v;
    std::memcpy(&v, p + i * sizeof(T), sizeof(T));
    (*out)[i] = static_cast<float>(v);
  }
}

/// Appends the decimal digits at `p` to `mantissa` and advances past them; returns how many.
/// Eight at a time where eight bytes are readable (SWAR on little-endian machines). Past 19
/// digits the mantissa overflows: callers refuse more than 18.
__attribute__((always_inline)) inline int read_digits(const char*& p, const char* end,
                                                      uint64_t* mantissa) {
  int count = 0;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
  static constexpr uint64_t kPow10[] = {1,      10,      100,      1000,     10000,
                                        100000, 1000000, 10000000, 100000000};
  while (end - p >= 8) {
    uint64_t v;
    std::memcpy(&v, p, 8);
    // Byte i of t is the digit's value up to the first non-digit, whose byte (and only the
    // bytes from it on) then has its high bit set in t | (t + 0x76...).
    const uint64_t t = v - 0x3030303030303030ull;
    const uint64_t non_digits = (t | (t + 0x7676767676767676ull)) & 0x8080808080808080ull;
    const int n = non_digits ? __builtin_ctzll(non_digits) / 8 : 8;
    if (n == 0) return count;
    // The n digits as the last n of eight (leading zeros), then eight digits to their value.
    uint64_t x = n == 8 ? t : t << (64 - 8 * n);
    x = x * 10 + (x >> 8);
    x = (((x & 0x000000FF000000FFull) * (100 + (1000000ull << 32))) +
         (((x >> 16) & 0x000000FF000000FFull) * (1 + (10000ull << 32)))) >>
        32;
    *mantissa = *mantissa * kPow10[n] + static_cast<uint32_t>(x);
    p += n;
    count += n;
    if (n < 8) return count;
  }
#endif
  while (p < end && static_cast<unsigned>(*p - '0') < 10) {
    *mantissa = *mantissa * 10 + static_cast<unsigned>(*p++ - '0');
    ++count;
  }
  return count;
}

/// The common JSON number forms, -?digits(.digits)?([eE][+-]?digits)? with at most 18 digits and
/// a mantissa below 2^53, converted exactly as std::from_chars would (Clinger's fast path: one
/// correctly rounded multiplication or division by an exact power of ten), about 5x faster.
/// Returns the end of the number, or null when the text needs the general parser;
/// `fraction_syntax`: the text has a '.' or an exponent.
__attribute__((always_inline)) inline const char* fast_number(const char* p, const char* end,
                                                              double* out, bool* fraction_syntax) {
  static constexpr double kPow10[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                                      1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                                      1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};
  const bool negative = p < end && *p == '-';
  if (negative) ++p;
  uint64_t mantissa = 0;
  int digits = 0, scale = 0;
  const char* int_begin = p;
  if (end - p >= 2 && static_cast<unsigned>(p[0] - '0') < 10 && p[1] == '.') {
    mantissa = static_cast<unsigned>(p[0] - '0');  // one integer digit (0.8444): no SWAR
    digits = 1;
    ++p;
  } else {
    digits += read_digits(p, end, &mantissa);
  }
  if (p == int_begin) return nullptr;
  if (p < end && *p == '.') {
    const char* frac_begin = ++p;
    digits += read_digits(p, end, &mantissa);
    if (p == frac_begin) return nullptr;
    scale = -static_cast<int>(p - frac_begin);
  }
  if (p < end && (*p == 'e' || *p == 'E')) {
    ++p;
    const bool exp_negative = p < end && *p == '-';
    if (p < end && (*p == '-' || *p == '+')) ++p;
    const char* exp_begin = p;
    int exp = 0;
    while (p < end && static_cast<unsigned>(*p - '0') < 10 && p - exp_begin < 4)
      exp = exp * 10 + (*p++ - '0');
    if (p == exp_begin || (p < end && static_cast<unsigned>(*p - '0') < 10)) return nullptr;
    scale += exp_negative ? -exp : exp;
  }
  if (digits > 18 || mantissa > (uint64_t{1} << 53) || scale < -22 || scale > 22) return nullptr;
  *fraction_syntax = p - int_begin > digits;  // a '.' or an exponent
  double d = static_cast<double>(mantissa);
  d = scale < 0 ? d / kPow10[-scale] : d * kPow10[scale];
  *out = negative ? -d : d;
  return p;
}

/// What a `data` array held, for checking it against the declared datatype afterwards (the
/// datatype may come after the data in the object).
struct DataScan {
  bool any_string = false, any_bool = false, any_fraction = false, any_number = false;
  bool any_non01 = false;
  double min = std::numeric_limits<double>::infinity();
  double max = -std::numeric_limits<double>::infinity();
  int64_t first_string = -1, first_bool = -1, first_fraction = -1, first_number = -1;
  int64_t first_non01 = -1, argmin = -1, argmax = -1;
  std::vector<std::string>* text = nullptr;  ///< where string elements go (BYTES)
};

class Parser {
 public:
  Parser(const char* begin, const char* end) : start_(begin), p_(begin), end_(end) {}

  Status parse_request(InferRequest* req) {
    ws();
    if (!eat('{')) return err("request", "expected a JSON object");
    ws();
    bool have_inputs = false;
    if (!eat('}')) {
      for (;;) {
        std::string key;
        KILN_RETURN_IF_ERROR(string(&key, "request key"));
        ws();
        if (!eat(':')) return err("request", "expected ':' after \"" + key + "\"");
        ws();
        if (key == "id") {
          if (peek() != '"') return err("id", "must be a string");
          KILN_RETURN_IF_ERROR(string(&req->id, "id"));
          req->has_id = true;
        } else if (key == "inputs") {
          KILN_RETURN_IF_ERROR(inputs(req));
          have_inputs = true;
        } else if (key == "outputs") {
          KILN_RETURN_IF_ERROR(outputs(req));
        } else if (key == "parameters") {
          Json params;
          KILN_RETURN_IF_ERROR(object_value(&params, "parameters"));
          if (params.contains("binary_data_output")) {
            if (!params["binary_data_output"].is_boolean())
              return err("parameters.binary_data_output", "must be a boolean");
            req->binary_data_output = params["binary_data_output"].get<bool>();
          }
        } else {
          KILN_RETURN_IF_ERROR(skip_value(key));
        }
        ws();
        if (eat(',')) {
          ws();
          continue;
        }
        if (eat('}')) break;
        return err("request", "expected ',' or '}'");
      }
    }
    ws();
    if (p_ != end_) return err("request", "unexpected text after the JSON object");
    if (!have_inputs) return err("inputs", "missing (required)");
    return Status::Ok();
  }

 private:
  Status err(const std::string& where, const std::string& what) const {
    return Status::InvalidArgument(where + ": " + what + " (at byte " +
                                   std::to_string(p_ - start_) + ")");
  }
  void ws() {
    while (p_ < end_ && (*p_ == ' ' || *p_ == '\n' || *p_ == '\r' || *p_ == '\t')) ++p_;
  }
  char peek() const { return p_ < end_ ? *p_ : '\0'; }
  bool eat(char c) {
    if (p_ < end_ && *p_ == c) {
      ++p_;
      return true;
    }
    return false;
  }
  bool eat_word(const char* w) {
    const size_t n = std::strlen(w);
    if (static_cast<size_t>(end_ - p_) >= n && std::memcmp(p_, w, n) == 0) {
      p_ += n;
      return true;
    }
    return false;
  }

  Status string(std::string* out, const std::string& where) {
    if (!eat('"')) return err(where, "expected a string");
    out->clear();
    while (p_ < end_) {
      const char* run = p_;
      while (p_ < end_ && *p_ != '"' && *p_ != '\\' && static_cast<unsigned char>(*p_) >= 0x20)
        ++p_;
      out->append(run, p_);
      if (p_ >= end_) break;
      const char c = *p_++;
      if (c == '"') return Status::Ok();
      if (c != '\\') return err(where, "control character in a string");
      if (p_ >= end_) break;
      const char e = *p_++;
      switch (e) {
        case '"':
          out->push_back('"');
          break;
        case '\\':
          out->push_back('\\');
          break;
        case '/':
          out->push_back('/');
          break;
        case 'b':
          out->push_back('\b');
          break;
        case 'f':
          out->push_back('\f');
          break;
        case 'n':
          out->push_back('\n');
          break;
        case 'r':
          out->push_back('\r');
          break;
        case 't':
          out->push_back('\t');
          break;
        case 'u': {
          if (end_ - p_ < 4) return err(where, "bad \\u escape");
          unsigned cp = 0;
          auto r = std::from_chars(p_, p_ + 4, cp, 16);
          if (r.ptr != p_ + 4) return err(where, "bad \\u escape");
          p_ += 4;
          // Surrogate pairs are rare in names and ids; encode each unit as UTF-8 on its own.
          if (cp < 0x80) {
            out->push_back(static_cast<char>(cp));
          } else if (cp < 0x800) {
            out->push_back(static_cast<char>(0xc0 | (cp >> 6)));
            out->push_back(static_cast<char>(0x80 | (cp & 0x3f)));
          } else {
            out->push_back(static_cast<char>(0xe0 | (cp >> 12)));
            out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3f)));
            out->push_back(static_cast<char>(0x80 | (cp & 0x3f)));
          }
          break;
        }
        default:
          return err(where, "bad escape in a string");
      }
    }
    return err(where, "unterminated string");
  }

  /// Skips any JSON value (validating its syntax).
  Status skip_value(const std::string& where, int depth = 0) {
    if (depth > 64) return err(where, "nested too deeply");
    ws();
    const char c = peek();
    if (c == '"') {
      std::string s;
      return string(&s, where);
    }
    if (c == '{' || c == '[') {
      const char close = c == '{' ? '}' : ']';
      ++p_;
      ws();
      if (eat(close)) return Status::Ok();
      for (;;) {
        if (c == '{') {
          std::string k;
          KILN_RETURN_IF_ERROR(string(&k, where));
          ws();
          if (!eat(':')) return err(where, "expected ':'");
        }
        KILN_RETURN_IF_ERROR(skip_value(where, depth + 1));
        ws();
        if (eat(',')) {
          ws();
          continue;
        }
        if (eat(close)) return Status::Ok();
        return err(where, std::string("expected ',' or '") + close + "'");
      }
    }
    if (eat_word("true") || eat_word("false") || eat_word("null")) return Status::Ok();
    double d;
    auto r = std::from_chars(p_, end_, d);
    if (r.ec != std::errc() || r.ptr == p_) return err(where, "expected a JSON value");
    p_ = r.ptr;
    return Status::Ok();
  }

  /// An object value parsed with nlohmann (parameters: small and rare).
  Status object_value(Json* out, const std::string& where) {
    ws();
    if (peek() != '{') return err(where, "must be an object");
    const char* begin = p_;
    KILN_RETURN_IF_ERROR(skip_value(where));
    try {
      *out = Json::parse(begin, p_);
    } catch (const nlohmann::json::exception& e) {
      return err(where, e.what());
    }
    return Status::Ok();
  }

  Status shape(std::vector<int64_t>* out, const std::string& where) {
    if (!eat('[')) return err(where, "must be an array of non-negative integers");
    ws();
    if (eat(']')) return Status::Ok();
    for (;;) {
      ws();
      int64_t v = 0;
      auto r = std::from_chars(p_, end_, v);
      if (r.ec != std::errc() || r.ptr == p_ || v < 0 ||
          (r.ptr < end_ && (*r.ptr == '.' || *r.ptr == 'e' || *r.ptr == 'E')))
        return err(where + "[" + std::to_string(out->size()) + "]",
                   "must be a non-negative integer");
      p_ = r.ptr;
      out->push_back(v);
      ws();
      if (eat(',')) continue;
      if (eat(']')) return Status::Ok();
      return err(where, "expected ',' or ']'");
    }
  }

  /// A (possibly nested) array of scalars, flattened into `out`.
  Status data(std::vector<float>* out, DataScan* scan, const std::string& where, int depth = 0) {
    if (depth > 32) return err(where, "nested too deeply");
    if (!eat('[')) {
      if (depth == 0) return err(where, "must be an array");
      return element(out, scan, where);
    }
    ws();
    if (eat(']')) return Status::Ok();
    for (;;) {
      ws();
      if (peek() == '[') {
        KILN_RETURN_IF_ERROR(data(out, scan, where, depth + 1));
      } else {
        // The common case inline: plain numbers within float32's range, separated by ", " or
        // ",", read in a tight loop until anything else (which the general path takes).
        const char* const first = p_;
        for (const char* next = p_;;) {
          double d;
          bool fraction_syntax;
          const char* q = fast_number(next, end_, &d, &fraction_syntax);
          if (!q || !(std::fabs(d) <= std::numeric_limits<float>::max())) break;
          p_ = q;
          number(out, scan, d, fraction_syntax);
          if (end_ - p_ < 2 || *p_ != ',') break;
          next = p_ + 1;
          if (*next == ' ') ++next;
        }
        if (p_ == first) KILN_RETURN_IF_ERROR(element(out, scan, where));
      }
      ws();
      if (eat(',')) continue;
      if (eat(']')) return Status::Ok();
      return err(where, "expected ',' or ']'");
    }
  }

  Status element(std::vector<float>* out, DataScan* scan, const std::string& where) {
    const int64_t i = static_cast<int64_t>(out->size());
    const char c = peek();
    if (c == '"') {
      // Straight into the tensor's text (BYTES); a string in another tensor is only noted.
      std::string scratch;
      std::string* s = scan->text ? &scan->text->emplace_back() : &scratch;
      KILN_RETURN_IF_ERROR(string(s, where));
      if (scan->first_string < 0) scan->first_string = i;
      scan->any_string = true;
      out->push_back(0.f);
      return Status::Ok();
    }
    if (c == 't' || c == 'f') {
      const bool v = c == 't';
      if (!eat_word(v ? "true" : "false"))
        return err(where + "[" + std::to_string(i) + "]", "expected a number or a boolean");
      if (scan->first_bool < 0) scan->first_bool = i;
      scan->any_bool = true;
      out->push_back(v ? 1.f : 0.f);
      return Status::Ok();
    }
    double d;
    bool fraction_syntax = false;
    std::from_chars_result r{fast_number(p_, end_, &d, &fraction_syntax), std::errc()};
    if (!r.ptr) {
      r = std::from_chars(p_, end_, d);
      for (const char* q = p_; q < r.ptr; ++q)
        fraction_syntax |= *q == '.' || *q == 'e' || *q == 'E';
    }
    if (r.ec != std::errc() || r.ptr == p_) {
      if (r.ec == std::errc::result_out_of_range)
        return err(where + "[" + std::to_string(i) + "]", "number out of range");
      return err(where + "[" + std::to_string(i) + "]", "expected a number");
    }
    if (!std::isfinite(d))
      return err(where + "[" + std::to_string(i) + "]", "NaN and Infinity are not JSON numbers");
    if (std::fabs(d) > std::numeric_limits<float>::max())
      return err(where + "[" + std::to_string(i) + "]", "number out of range for float32");
    p_ = r.ptr;
    number(out, scan, d, fraction_syntax);
    return Status::Ok();
  }

  /// Appends a parsed number and notes what the datatype check needs.
  static void number(std::vector<float>* out, DataScan* scan, double d, bool fraction_syntax) {
    const int64_t i = static_cast<int64_t>(out->size());
    scan->any_number = true;
    if (scan->first_number < 0) scan->first_number = i;
    if (fraction_syntax && scan->first_fraction < 0 && d != std::floor(d)) {
      scan->first_fraction = i;
      scan->any_fraction = true;
    }
    if (scan->first_non01 < 0 && d != 0 && d != 1) scan->first_non01 = i;
    if (d < scan->min) {
      scan->min = d;
      scan->argmin = i;
    }
    if (d > scan->max) {
      scan->max = d;
      scan->argmax = i;
    }
    out->push_back(static_cast<float>(d));
  }

  Status check_scan(const InputTensor& in, DataType t, const DataScan& s,
                    const std::string& where) {
    auto at = [&](int64_t i) { return where + ".data[" + std::to_string(i) + "]"; };
    if (t == DataType::kBytes) {
      if (s.any_number)
        return Status::InvalidArgument(at(s.first_number) +
                                       ": a number in a BYTES tensor (expected strings)");
      if (s.any_bool)
        return Status::InvalidArgument(at(s.first_bool) +
                                       ": a boolean in a BYTES tensor (expected strings)");
      return Status::Ok();
    }
    if (s.any_string)
      return Status::InvalidArgument(at(s.first_string) + ": a string in a " + in.datatype +
                                     " tensor (expected numbers)");
    if (t == DataType::kBool) {
      if (s.first_non01 >= 0)
        return Status::InvalidArgument(at(s.first_non01) +
                                       ": not a boolean (BOOL takes true/false)");
      return Status::Ok();
    }
    if (s.any_bool)
      return Status::InvalidArgument(at(s.first_bool) + ": a boolean in a " + in.datatype +
                                     " tensor");
    if (is_int_type(t)) {
      if (s.any_fraction)
        return Status::InvalidArgument(at(s.first_fraction) + ": not an integer (datatype " +
                                       in.datatype + ")");
      double lo, hi;
      int_range(t, &lo, &hi);
      if (s.any_number && s.min < lo)
        return Status::InvalidArgument(at(s.argmin) + ": out of range for " + in.datatype);
      if (s.any_number && s.max > hi)
        return Status::InvalidArgument(at(s.argmax) + ": out of range for " + in.datatype);
    }
    return Status::Ok();
  }

  Status input(InputTensor* in, const std::string& where) {
    if (!eat('{')) return err(where, "must be an object");
    ws();
    DataScan scan;
    scan.text = &in->text;
    bool have_name = false, have_shape = false, have_type = false;
    if (!eat('}')) {
      for (;;) {
        std::string key;
        KILN_RETURN_IF_ERROR(string(&key, where));
        ws();
        if (!eat(':')) return err(where, "expected ':'");
        ws();
        if (key == "name") {
          KILN_RETURN_IF_ERROR(string(&in->name, where + ".name"));
          have_name = true;
        } else if (key == "shape") {
          KILN_RETURN_IF_ERROR(shape(&in->shape, where + ".shape"));
          have_shape = true;
        } else if (key == "datatype") {
          KILN_RETURN_IF_ERROR(string(&in->datatype, where + ".datatype"));
          have_type = true;
        } else if (key == "data") {
          in->data.reserve(1024);
          if (in->datatype == "BYTES") in->text.reserve(1024);
          KILN_RETURN_IF_ERROR(data(&in->data, &scan, where + ".data"));
          in->has_data = true;
        } else if (key == "parameters") {
          Json params;
          KILN_RETURN_IF_ERROR(object_value(&params, where + ".parameters"));
          if (params.contains("binary_data_size")) {
            const Json& b = params["binary_data_size"];
            if (!b.is_number_integer() || b.get<int64_t>() < 0)
              return err(where + ".parameters.binary_data_size", "must be a non-negative integer");
            in->binary_data_size = b.get<int64_t>();
          }
        } else {
          KILN_RETURN_IF_ERROR(skip_value(where + "." + key));
        }
        ws();
        if (eat(',')) {
          ws();
          continue;
        }
        if (eat('}')) break;
        return err(where, "expected ',' or '}'");
      }
    }
    if (!have_name) return Status::InvalidArgument(where + ".name: missing (required)");
    if (!have_shape) return Status::InvalidArgument(where + ".shape: missing (required)");
    if (!have_type) return Status::InvalidArgument(where + ".datatype: missing (required)");
    KILN_ASSIGN_OR_RETURN(DataType t, parse_datatype(in->datatype, where + ".datatype"));
    if (in->has_data && in->binary_data_size >= 0)
      return Status::InvalidArgument(where + ": has both \"data\" and parameters.binary_data_size");
    if (!in->has_data && in->binary_data_size < 0)
      return Status::InvalidArgument(where + ".data: missing (required without binary data)");
    if (in->has_data) KILN_RETURN_IF_ERROR(check_scan(*in, t, scan, where));
    return Status::Ok();
  }

  Status inputs(InferRequest* req) {
    if (!eat('[')) return err("inputs", "must be an array");
    ws();
    if (eat(']')) return err("inputs", "is empty");
    for (;;) {
      ws();
      req->inputs.emplace_back();
      KILN_RETURN_IF_ERROR(
          input(&req->inputs.back(), "inputs[" + std::to_string(req->inputs.size() - 1) + "]"));
      ws();
      if (eat(',')) continue;
      if (eat(']')) return Status::Ok();
      return err("inputs", "expected ',' or ']'");
    }
  }

  Status outputs(InferRequest* req) {
    if (!eat('[')) return err("outputs", "must be an array");
    ws();
    if (eat(']')) return Status::Ok();
    for (;;) {
      ws();
      const std::string where = "outputs[" + std::to_string(req->outputs.size()) + "]";
      Json o;
      KILN_RETURN_IF_ERROR(object_value(&o, where));
      RequestedOutput out;
      if (!o.contains("name") || !o["name"].is_string())
        return Status::InvalidArgument(where + ".name: missing (required)");
      out.name = o["name"].get<std::string>();
      if (o.contains("parameters") && o["parameters"].is_object() &&
          o["parameters"].contains("binary_data")) {
        if (!o["parameters"]["binary_data"].is_boolean())
          return Status::InvalidArgument(where + ".parameters.binary_data: must be a boolean");
        out.binary = o["parameters"]["binary_data"].get<bool>();
      }
      req->outputs.push_back(out);
      ws();
      if (eat(',')) continue;
      if (eat(']')) return Status::Ok();
      return err("outputs", "expected ',' or ']'");
    }
  }

  const char* start_;
  const char* p_;
  const char* end_;
};

}  // namespace

Expected<DataType> parse_datatype(std::string_view name, const std::string& where) {
  for (const auto& t : kTypes)
    if (name == t.name) return t.type;
  return Status::InvalidArgument(where + ": unknown datatype \"" + std::string(name) +
                                 "\" (BOOL, UINT8..UINT64, INT8..INT64, FP16, FP32, FP64, BYTES)");
}

const char* datatype_name(DataType t) {
  for (const auto& i : kTypes)
    if (i.type == t) return i.name;
  return "?";
}

size_t datatype_size(DataType t) {
  for (const auto& i : kTypes)
    if (i.type == t) return i.size;
  return 0;
}

Expected<InferRequest> parse_infer_request(std::string_view body, size_t json_length) {
  if (json_length > body.size())
    return Status::InvalidArgument("Inference-Header-Content-Length " +
                                   std::to_string(json_length) + " exceeds the body size " +
                                   std::to_string(body.size()));
  InferRequest req;
  Parser parser(body.data(), body.data() + json_length);
  KILN_RETURN_IF_ERROR(parser.parse_request(&req));
  // Binary tensor data follows the JSON header, in input order.
  size_t offset = json_length;
  for (size_t i = 0; i < req.inputs.size(); ++i) {
    InputTensor& in = req.inputs[i];
    if (in.binary_data_size < 0) continue;
    const std::string where = "inputs[" + std::to_string(i) + "]";
    const size_t n = static_cast<size_t>(in.binary_data_size);
    if (offset + n > body.size())
      return Status::InvalidArgument(where + ".parameters.binary_data_size: " + std::to_string(n) +
                                     " bytes, but only " + std::to_string(body.size() - offset) +
                                     " remain after the JSON header");
    KILN_ASSIGN_OR_RETURN(DataType t, parse_datatype(in.datatype, where + ".datatype"));
    if (t == DataType::kBytes) {
      // Each element: its length as a little-endian uint32, then its bytes (Triton's layout).
      const char* p = body.data() + offset;
      for (size_t at = 0; at < n;) {
        if (n - at < 4)
          return Status::InvalidArgument(where + ": binary BYTES element " +
                                         std::to_string(in.text.size()) +
                                         ": its 4-byte length is cut off");
        uint32_t length;
        std::memcpy(&length, p + at, 4);
        at += 4;
        if (length > n - at)
          return Status::InvalidArgument(
              where + ": binary BYTES element " + std::to_string(in.text.size()) + " claims " +
              std::to_string(length) + " bytes, " + std::to_string(n - at) + " remain");
        in.text.emplace_back(p + at, length);
        at += length;
      }
      in.data.assign(in.text.size(), 0.f);
      in.has_data = true;
      offset += n;
      continue;
    }
    const size_t size = datatype_size(t);
    if (n % size != 0)
      return Status::InvalidArgument(where + ".parameters.binary_data_size: " + std::to_string(n) +
                                     " is not a multiple of the " + in.datatype + " element size " +
                                     std::to_string(size));
    const char* p = body.data() + offset;
    const size_t count = n / size;
    switch (t) {
      case DataType::kBool:
      case DataType::kUint8:
        convert_raw<uint8_t>(p, count, &in.data);
        break;
      case DataType::kUint16:
        convert_raw<uint16_t>(p, count, &in.data);
        break;
      case DataType::kUint32:
        convert_raw<uint32_t>(p, count, &in.data);
        break;
      case DataType::kUint64:
        convert_raw<uint64_t>(p, count, &in.data);
        break;
      case DataType::kInt8:
        convert_raw<int8_t>(p, count, &in.data);
        break;
      case DataType::kInt16:
        convert_raw<int16_t>(p, count, &in.data);
        break;
      case DataType::kInt32:
        convert_raw<int32_t>(p, count, &in.data);
        break;
      case DataType::kInt64:
        convert_raw<int64_t>(p, count, &in.data);
        break;
      case DataType::kFp32:
        convert_raw<float>(p, count, &in.data);
        break;
      case DataType::kFp64:
        convert_raw<double>(p, count, &in.data);
        break;
      case DataType::kFp16: {
        in.data.resize(count);
        for (size_t k = 0; k < count; ++k) {
          uint16_t h;
          std::memcpy(&h, p + 2 * k, 2);
          in.data[k] = half_to_float(h);
        }
        break;
      }
      case DataType::kBytes:
        break;
    }
    if (t == DataType::kBool)
      for (size_t k = 0; k < count; ++k)
        if (in.data[k] != 0.f && in.data[k] != 1.f)
          return Status::InvalidArgument(where + ": binary BOOL element " + std::to_string(k) +
                                         " is not 0 or 1");
    in.has_data = true;
    offset += n;
  }
  if (offset != body.size())
    return Status::InvalidArgument(std::to_string(body.size() - offset) +
                                   " bytes after the JSON header are not claimed by any "
                                   "input's binary_data_size");
  return req;
}

void append_json_string(std::string* out, std::string_view s) {
  out->push_back('"');
  for (char c : s) {
    switch (c) {
      case '"':
        *out += "\\\"";
        break;
      case '\\':
        *out += "\\\\";
        break;
      case '\n':
        *out += "\\n";
        break;
      case '\r':
        *out += "\\r";
        break;
      case '\t':
        *out += "\\t";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof(buf), "\\u%04x", c);
          *out += buf;
        } else {
          out->push_back(c);
        }
    }
  }
  out->push_back('"');
}

void append_json_float(std::string* out, float v) {
  if (!std::isfinite(v)) {
    *out += "null";
    return;
  }
  char buf[32];
  auto r = std::to_chars(buf, buf + sizeof(buf), v);
  out->append(buf, r.ptr);
}

}  // namespace kiln::serve
