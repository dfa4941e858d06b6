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
  bool chunked = false;          ///< kDone: "Transfer-Encoding: chunked" (parse_chunked_body)
  int error_status = 0;          ///< kError: 400, 413, 431, 501 or 505
  std::string error;             ///< kError: what was wrong, for the {"error": ...} body
};

/// Parses the request line and headers of one HTTP/1.0 or 1.1 request at the start of `data`
/// (CRLF line ends; a strict subset of RFC 9112: no obsolete line folding; a missing
/// Content-Length and Transfer-Encoding means no body). "Transfer-Encoding: chunked" (HTTP/1.1
/// only, without a Content-Length) sets `chunked`: the body then follows in chunks; any other
/// transfer coding is 501. Fills `req` (method, target, version, keep_alive, headers; not body)
/// with views into `data`. kNeedMore when the head is not complete yet and within limits. Pure;
/// thread-safe.
HeadParse parse_request_head(std::string_view data, const HttpLimits& limits, HttpRequest* req);

/// What parse_chunked_body() found.
struct ChunkedParse {
  enum Result { kNeedMore, kDone, kError };
  Result result = kNeedMore;
  size_t consumed = 0;      ///< kDone: bytes of `data` the chunked body took, trailers included
  uint64_t body_bytes = 0;  ///< kDone: decoded size
  int error_status = 0;     ///< kError: 400 (malformed) or 413 (decoded size over the limit)
  std::string error;
};

/// Where a scan of a partly arrived chunked body may resume: the offset just after the last
/// complete chunk and the decoded bytes before it. Start from {}; a new body starts afresh.
struct ChunkedCursor {
  size_t pos = 0;
  uint64_t total = 0;
};

/// Reads a chunked message body (RFC 9112 section 7.1: hex chunk sizes, chunk extensions
/// ignored, trailer fields skipped) at the start of `data`, which begins right after the head.
/// The decoded size is held to limits.max_body_bytes (413) and the chunk-size and trailer lines
/// to limits.max_header_bytes (400). With `body` non-null and the body complete, appends the
/// decoded bytes to it; scan first with nullptr (cheap: it jumps over chunk data) and decode
/// once kDone. With `cursor`, a scan starts where the last one left off and moves it past each
/// complete chunk, so a body arriving over many reads is scanned once in all (the caller keeps
/// the cursor with the connection; decode without one). Pure apart from `cursor`;
/// thread-compatible.
ChunkedParse parse_chunked_body(std::string_view data, const HttpLimits& limits, std::string* body,
                                ChunkedCursor* cursor = nullptr);

/// Case-insensitive ASCII comparison.
bool iequals(std::string_view a, std::string_view b);

/// "OK" for 200, "Not Found" for 404, ...; "Unknown" for codes it does not know.
const char* http_reason(int status);

}  // namespace kiln::serve
