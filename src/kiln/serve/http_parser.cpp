#include "kiln/serve/http_parser.h"

#include <algorithm>
#include <charconv>
#include <cstring>

namespace kiln::serve {
namespace {

char lower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c + 32) : c; }

/// RFC 9110 tchar: the characters of a method or header name.
bool is_tchar(char c) {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return true;
  return std::strchr("!#$%&'*+-.^_`|~", c) != nullptr && c != '\0';
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

/// True when the comma-separated list `value` holds `token` (case-insensitive).
bool has_token(std::string_view value, std::string_view token) {
  while (!value.empty()) {
    const size_t comma = value.find(',');
    if (iequals(trim(value.substr(0, comma)), token)) return true;
    if (comma == std::string_view::npos) break;
    value.remove_prefix(comma + 1);
  }
  return false;
}

/// A refusal: HeadParse or ChunkedParse with kError, the status and what was wrong.
template <typename Parse>
Parse failure(int status, std::string message) {
  Parse p;
  p.result = Parse::kError;
  p.error_status = status;
  p.error = std::move(message);
  return p;
}

HeadParse error(int status, std::string message) {
  return failure<HeadParse>(status, std::move(message));
}

}  // namespace

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (lower(a[i]) != lower(b[i])) return false;
  return true;
}

const std::string_view* HttpRequest::find_header(std::string_view name) const {
  for (const auto& h : headers)
    if (iequals(h.first, name)) return &h.second;
  return nullptr;
}

HeadParse parse_request_head(std::string_view data, const HttpLimits& limits, HttpRequest* req) {
  const size_t end = data.find("\r\n\r\n");
  if (end == std::string_view::npos) {
    if (data.size() > limits.max_header_bytes)
      return error(431, "request headers exceed the limit of " +
                            std::to_string(limits.max_header_bytes) + " bytes");
    // A request line that cannot become valid is refused at once (e.g. a TLS handshake).
    for (char c : data.substr(0, std::min<size_t>(data.size(), 16))) {
      if (c == ' ' || c == '\r') break;
      if (!is_tchar(c)) return error(400, "malformed HTTP request: bad method");
    }
    return {};
  }
  if (end + 4 > limits.max_header_bytes)
    return error(431, "request headers exceed the limit of " +
                          std::to_string(limits.max_header_bytes) + " bytes");
  std::string_view head = data.substr(0, end + 2);  // every line with its CRLF

  // Request line: METHOD SP TARGET SP HTTP/1.x
  size_t eol = head.find("\r\n");
  std::string_view line = head.substr(0, eol);
  head.remove_prefix(eol + 2);
  const size_t sp1 = line.find(' ');
  const size_t sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
  if (sp2 == std::string_view::npos || sp1 == 0 || sp2 == sp1 + 1)
    return error(400, "malformed HTTP request: bad request line");
  req->method = line.substr(0, sp1);
  for (char c : req->method)
    if (!is_tchar(c)) return error(400, "malformed HTTP request: bad method");
  req->target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  for (char c : req->target)
    if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7f)
      return error(400, "malformed HTTP request: bad request target");
  const std::string_view version = line.substr(sp2 + 1);
  if (version.size() != 8 || version.substr(0, 5) != "HTTP/" || version[6] != '.' ||
      version[5] < '0' || version[5] > '9' || version[7] < '0' || version[7] > '9')
    return error(400, "malformed HTTP request: bad HTTP version");
  if (version[5] != '1') return error(505, "HTTP version not supported (HTTP/1.0 and 1.1 are)");
  req->minor_version = version[7] - '0';

  // Header fields.
  req->headers.clear();
  bool have_length = false, close = false, keep_alive = false;
  HeadParse out;
  while (!head.empty()) {
    eol = head.find("\r\n");
    line = head.substr(0, eol);
    head.remove_prefix(eol + 2);
    const size_t colon = line.find(':');
    if (colon == std::string_view::npos || colon == 0)
      return error(400, "malformed HTTP request: bad header line");
    const std::string_view name = line.substr(0, colon);
    for (char c : name)
      if (!is_tchar(c)) return error(400, "malformed HTTP request: bad header name");
    const std::string_view value = trim(line.substr(colon + 1));
    for (char c : value)
      if ((static_cast<unsigned char>(c) < 0x20 && c != '\t') || c == 0x7f)
        return error(400, "malformed HTTP request: control character in a header value");
    req->headers.emplace_back(name, value);
    if (iequals(name, "content-length")) {
      uint64_t n = 0;
      auto r = std::from_chars(value.data(), value.data() + value.size(), n);
      if (value.empty() || r.ec != std::errc() || r.ptr != value.data() + value.size())
        return error(400, "malformed HTTP request: bad Content-Length");
      if (have_length && n != out.content_length)
        return error(400, "malformed HTTP request: conflicting Content-Length headers");
      have_length = true;
      out.content_length = n;
    } else if (iequals(name, "transfer-encoding")) {
      if (!iequals(value, "chunked"))
        return error(501, "Transfer-Encoding '" + std::string(value) +
                              "' is not supported (chunked is, or a Content-Length)");
      if (out.chunked)
        return error(400, "malformed HTTP request: more than one Transfer-Encoding header");
      out.chunked = true;
    } else if (iequals(name, "connection")) {
      close |= has_token(value, "close");
      keep_alive |= has_token(value, "keep-alive");
    } else if (iequals(name, "expect")) {
      out.expect_continue = iequals(value, "100-continue");
    }
  }
  if (out.chunked && have_length)  // RFC 9112 6.1: a request smuggling vector; refuse it
    return error(400, "malformed HTTP request: both Transfer-Encoding and Content-Length");
  if (out.chunked && req->minor_version == 0)
    return error(400, "malformed HTTP request: Transfer-Encoding in an HTTP/1.0 request");
  req->keep_alive = !close && (req->minor_version >= 1 || keep_alive);
  if (out.content_length > static_cast<uint64_t>(limits.max_body_bytes))
    return error(413, "request body exceeds the limit of " + std::to_string(limits.max_body_bytes) +
                          " bytes");
  out.result = HeadParse::kDone;
  out.head_bytes = end + 4;
  return out;
}

ChunkedParse parse_chunked_body(std::string_view data, const HttpLimits& limits, std::string* body,
                                ChunkedCursor* cursor) {
  const auto too_long = [&](size_t line_bytes) { return line_bytes > limits.max_header_bytes; };
  // Framing (sizes, extensions, CRLFs) may at most double the body: many tiny chunks with long
  // extensions must not make the server buffer without bound.
  const size_t raw_limit = 2 * static_cast<size_t>(std::max<int64_t>(0, limits.max_body_bytes)) +
                           limits.max_header_bytes;
  const auto need_more = [&]() -> ChunkedParse {
    if (data.size() > raw_limit)
      return failure<ChunkedParse>(413, "the chunked request body's framing exceeds " +
                                            std::to_string(raw_limit) + " bytes");
    return {};
  };
  size_t pos = cursor ? cursor->pos : 0;
  uint64_t total = cursor ? cursor->total : 0;
  for (;;) {
    if (pos > raw_limit) return need_more();
    // chunk-size [; chunk-ext] CRLF
    size_t eol = data.find("\r\n", pos);
    if (eol == std::string_view::npos) {
      if (too_long(data.size() - pos))
        return failure<ChunkedParse>(400, "malformed chunked body: a chunk-size line is too long");
      return need_more();
    }
    std::string_view size_text = data.substr(pos, eol - pos);
    size_text = trim(size_text.substr(0, size_text.find(';')));
    uint64_t size = 0;
    auto r = std::from_chars(size_text.data(), size_text.data() + size_text.size(), size, 16);
    if (size_text.empty() || size_text.size() > 16 || r.ec != std::errc() ||
        r.ptr != size_text.data() + size_text.size())
      return failure<ChunkedParse>(400, "malformed chunked body: bad chunk size '" +
                                            std::string(size_text.substr(0, 32)) + "'");
    pos = eol + 2;
    if (size == 0) {  // last-chunk, then trailer fields and the blank line
      const size_t trailers = pos;
      for (;;) {
        eol = data.find("\r\n", pos);
        if (eol == std::string_view::npos) {
          if (too_long(data.size() - trailers))
            return failure<ChunkedParse>(400, "malformed chunked body: trailers exceed the limit");
          return need_more();
        }
        if (too_long(eol - trailers))
          return failure<ChunkedParse>(400, "malformed chunked body: trailers exceed the limit");
        if (eol == pos) break;
        pos = eol + 2;
      }
      ChunkedParse done;
      done.result = ChunkedParse::kDone;
      done.consumed = eol + 2;
      done.body_bytes = total;
      return done;
    }
    if (size > static_cast<uint64_t>(limits.max_body_bytes) ||
        total + size > static_cast<uint64_t>(limits.max_body_bytes))
      return failure<ChunkedParse>(413, "request body exceeds the limit of " +
                                            std::to_string(limits.max_body_bytes) + " bytes");
    total += size;
    if (data.size() - pos < size + 2) return need_more();
    if (data.substr(pos + size, 2) != "\r\n")
      return failure<ChunkedParse>(400,
                                   "malformed chunked body: chunk data is not followed by CRLF");
    if (body) body->append(data.data() + pos, size);
    pos += size + 2;
    if (cursor) *cursor = {pos, total};
  }
}

const char* http_reason(int status) {
  switch (status) {
    case 100:
      return "Continue";
    case 200:
      return "OK";
    case 400:
      return "Bad Request";
    case 401:
      return "Unauthorized";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 408:
      return "Request Timeout";
    case 411:
      return "Length Required";
    case 413:
      return "Payload Too Large";
    case 431:
      return "Request Header Fields Too Large";
    case 500:
      return "Internal Server Error";
    case 501:
      return "Not Implemented";
    case 503:
      return "Service Unavailable";
    case 505:
      return "HTTP Version Not Supported";
    default:
      return "Unknown";
  }
}

}  // namespace kiln::serve
