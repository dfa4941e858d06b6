#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace kiln::serve {

/// One HTTP/1.x request as the server hands it to a handler. Every view points into the
/// connection's read buffer: valid only during the handler call (copy what must outlive it).
struct HttpRequest {
  std::string_view method;  ///< e.g. "POST" (case-sensitive, as sent)
  std::string_view target;  ///< e.g. "/v2/models/mlp/infer?x=1"
  int minor_version = 1;    ///< HTTP/1.0 or HTTP/1.1
  bool keep_alive = true;   ///< after the Connection header and the version's default
  std::vector<std::pair<std::string_view, std::string_view>> headers;  ///< as sent, in order
  std::string_view body;

  /// The value of the first header named `name` (case-insensitive); null when absent.
  const std::string_view* find_header(std::string_view name) const;
};

/// Limits of the request parser.
struct HttpLimits {
  size_t max_header_bytes = 64 * 1024;  ///< request line + headers; more: 431
  int64_t max_body_bytes = 16 << 20;    ///< Content-Length above: 413
};

/// What parse_request_head() found at the start of a buffer.
struct HeadParse {
  enum Result { kNeedMore, kDone, kError };
  Result result = kNeedMore;
  size_t head_bytes = 0;         ///< kDone: request line and headers with the blank line
  uint64_t content_length = 0;   ///< kDone: body bytes that follow
  bool expect_continue = false;  ///< kDone: "Expect: 100-continue"
  int error_status = 0;          ///< kError: 400, 411, 413, 431 or 505
  std::string error;             ///< kError: what was wrong, for the {"error": ...} body
};

/// Parses the request line and headers of one HTTP/1.0 or 1.1 request at the start of `data`
/// (CRLF line ends; a strict subset of RFC 9112: no obsolete line folding, no chunked bodies:
/// Transfer-Encoding is answered 411, a missing Content-Length means no body). Fills `req`
/// (method, target, version, keep_alive, headers; not body) with views into `data`. kNeedMore
/// when the head is not complete yet and within limits. Pure; thread-safe.
HeadParse parse_request_head(std::string_view data, const HttpLimits& limits, HttpRequest* req);

/// Case-insensitive ASCII comparison.
bool iequals(std::string_view a, std::string_view b);

/// "OK" for 200, "Not Found" for 404, ...; "Unknown" for codes it does not know.
const char* http_reason(int status);

}  // namespace kiln::serve
