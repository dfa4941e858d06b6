#include "kiln/serve/http_parser.h"

#include <gtest/gtest.h>

#include <string>

namespace kiln::serve {
namespace {

HeadParse parse(const std::string& text, HttpRequest* req, HttpLimits limits = {}) {
  return parse_request_head(text, limits, req);
}

/// The status of a request the parser refuses (0 when it does not).
int refused(const std::string& text, HttpLimits limits = {}) {
  HttpRequest req;
  HeadParse h = parse(text, &req, limits);
  return h.result == HeadParse::kError ? h.error_status : 0;
}

TEST(HttpParser, ParsesRequestLineHeadersAndBodyLength) {
  const std::string head =
      "POST /v2/models/m/infer?x=1 HTTP/1.1\r\nHost: a\r\ncontent-length: 5\r\n"
      "X-API-Key:   k e y \t\r\nInference-Header-Content-Length: 3\r\n\r\n";
  const std::string text = head + "hello";  // the request's views point into it
  HttpRequest req;
  HeadParse h = parse(text, &req);
  ASSERT_EQ(h.result, HeadParse::kDone) << h.error;
  EXPECT_EQ(h.head_bytes, head.size());
  EXPECT_EQ(h.content_length, 5u);
  EXPECT_FALSE(h.expect_continue);
  EXPECT_EQ(req.method, "POST");
  EXPECT_EQ(req.target, "/v2/models/m/infer?x=1");
  EXPECT_EQ(req.minor_version, 1);
  EXPECT_TRUE(req.keep_alive);
  ASSERT_EQ(req.headers.size(), 4u);
  ASSERT_NE(req.find_header("x-api-key"), nullptr);
  EXPECT_EQ(*req.find_header("X-Api-KEY"), "k e y");
  EXPECT_EQ(*req.find_header("inference-header-content-length"), "3");
  EXPECT_EQ(req.find_header("authorization"), nullptr);
}

TEST(HttpParser, EveryProperPrefixNeedsMore) {
  const std::string head =
      "POST /a HTTP/1.1\r\nContent-Length: 2\r\nExpect: 100-continue\r\nConnection: keep-alive"
      "\r\n\r\n";
  for (size_t k = 0; k < head.size(); ++k) {
    HttpRequest req;
    HeadParse h = parse(head.substr(0, k), &req);
    EXPECT_EQ(h.result, HeadParse::kNeedMore) << "prefix of " << k << " bytes: " << h.error;
  }
  HttpRequest req;
  HeadParse h = parse(head, &req);
  ASSERT_EQ(h.result, HeadParse::kDone);
  EXPECT_TRUE(h.expect_continue);
  EXPECT_EQ(h.content_length, 2u);
}

TEST(HttpParser, KeepAliveFollowsVersionAndConnectionHeader) {
  HttpRequest req;
  ASSERT_EQ(parse("GET / HTTP/1.1\r\n\r\n", &req).result, HeadParse::kDone);
  EXPECT_TRUE(req.keep_alive);
  ASSERT_EQ(parse("GET / HTTP/1.1\r\nConnection: Upgrade, CLOSE\r\n\r\n", &req).result,
            HeadParse::kDone);
  EXPECT_FALSE(req.keep_alive);
  ASSERT_EQ(parse("GET / HTTP/1.0\r\n\r\n", &req).result, HeadParse::kDone);
  EXPECT_FALSE(req.keep_alive);
  EXPECT_EQ(req.minor_version, 0);
  ASSERT_EQ(parse("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", &req).result,
            HeadParse::kDone);
  EXPECT_TRUE(req.keep_alive);
  // No Content-Length: no body.
  EXPECT_EQ(parse("POST / HTTP/1.1\r\n\r\n", &req).content_length, 0u);
}

TEST(HttpParser, MalformedRequestsAre400) {
  EXPECT_EQ(refused("GET\r\n\r\n"), 400);
  EXPECT_EQ(refused("GET /\r\n\r\n"), 400);
  EXPECT_EQ(refused("GET  / HTTP/1.1\r\n\r\n"), 400);
  EXPECT_EQ(refused("GET / HTTP/1.1 \r\n\r\n"), 400);
  EXPECT_EQ(refused("G(T / HTTP/1.1\r\n\r\n"), 400);
  EXPECT_EQ(refused("GET / FOO/1.1\r\n\r\n"), 400);
  EXPECT_EQ(refused("GET / HTTP/1\r\n\r\n"), 400);
  EXPECT_EQ(refused("GET /a\x01 HTTP/1.1\r\n\r\n"), 400);
  EXPECT_EQ(refused("GET / HTTP/1.1\r\nNoColon\r\n\r\n"), 400);
  EXPECT_EQ(refused("GET / HTTP/1.1\r\n: empty name\r\n\r\n"), 400);
  EXPECT_EQ(refused("GET / HTTP/1.1\r\nBad Name: x\r\n\r\n"), 400);
  EXPECT_EQ(refused("GET / HTTP/1.1\r\nA: b\r\n folded\r\n\r\n"), 400);
  EXPECT_EQ(refused("GET / HTTP/1.1\r\nA: b\x7f\r\n\r\n"), 400);
  EXPECT_EQ(refused("POST / HTTP/1.1\r\nContent-Length: 12a\r\n\r\n"), 400);
  EXPECT_EQ(refused("POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n"), 400);
  EXPECT_EQ(refused("POST / HTTP/1.1\r\nContent-Length:\r\n\r\n"), 400);
  EXPECT_EQ(refused("POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n"), 400);
  EXPECT_EQ(refused("POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n"), 400);
  EXPECT_EQ(refused("POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n"), 0);
  // A TLS handshake (or other binary) is refused before its head could complete.
  EXPECT_EQ(refused(std::string("\x16\x03\x01\x02\x00", 5)), 400);
  EXPECT_EQ(refused("GET / HTTP/2.0\r\n\r\n"), 505);
}

TEST(HttpParser, LimitsAndChunkedBodies) {
  HttpLimits limits;
  limits.max_header_bytes = 200;
  limits.max_body_bytes = 1000;
  EXPECT_EQ(refused("POST / HTTP/1.1\r\nContent-Length: 1000\r\n\r\n", limits), 0);
  EXPECT_EQ(refused("POST / HTTP/1.1\r\nContent-Length: 1001\r\n\r\n", limits), 413);
  // Chunked bodies are accepted (alone, in HTTP/1.1); other codings are 501.
  EXPECT_EQ(refused("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", limits), 0);
  EXPECT_EQ(refused("POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", limits), 501);
  EXPECT_EQ(
      refused("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n", limits),
      400);
  EXPECT_EQ(refused("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", limits), 400);
  const std::string big = "GET / HTTP/1.1\r\nX: " + std::string(300, 'a');
  EXPECT_EQ(refused(big, limits), 431);               // still incomplete: already too long
  EXPECT_EQ(refused(big + "\r\n\r\n", limits), 431);  // complete but too long
  EXPECT_EQ(refused(big.substr(0, 150), limits), 0);  // incomplete, within the limit
}

TEST(HttpParser, ChunkedBodiesAreDecodedWithinTheLimits) {
  HttpRequest req;
  HeadParse h = parse("POST /x HTTP/1.1\r\ntransfer-encoding: Chunked\r\n\r\n", &req);
  ASSERT_EQ(h.result, HeadParse::kDone) << h.error;
  EXPECT_TRUE(h.chunked);
  EXPECT_EQ(h.content_length, 0u);

  // Sizes in hex, an extension ignored, a trailer field skipped, then the next request.
  const std::string body = "5\r\nhello\r\n1;name=v\r\n \r\nA\r\n0123456789\r\n0\r\nX-T: 1\r\n\r\n";
  const std::string next = "GET / HTTP/1.1\r\n\r\n";
  ChunkedParse c = parse_chunked_body(body + next, {}, nullptr);
  ASSERT_EQ(c.result, ChunkedParse::kDone) << c.error;
  EXPECT_EQ(c.consumed, body.size());
  EXPECT_EQ(c.body_bytes, 16u);
  std::string decoded;
  parse_chunked_body(body + next, {}, &decoded);
  EXPECT_EQ(decoded, "hello 0123456789");
  for (size_t k = 0; k < body.size(); ++k)
    EXPECT_EQ(parse_chunked_body(body.substr(0, k), {}, nullptr).result, ChunkedParse::kNeedMore)
        << "prefix of " << k << " bytes";
  // Resumed a byte at a time with a cursor: the same end, and the cursor only moves forward.
  ChunkedCursor cursor;
  ChunkedParse last;
  for (size_t k = 0; k <= body.size(); ++k) {
    const size_t before = cursor.pos;
    last = parse_chunked_body(body.substr(0, k), {}, nullptr, &cursor);
    EXPECT_GE(cursor.pos, before);
    if (k < body.size()) {
      EXPECT_EQ(last.result, ChunkedParse::kNeedMore) << k;
    }
  }
  ASSERT_EQ(last.result, ChunkedParse::kDone);
  EXPECT_EQ(last.consumed, body.size());
  EXPECT_EQ(last.body_bytes, 16u);

  auto status = [](const std::string& text, HttpLimits limits = {}) {
    ChunkedParse p = parse_chunked_body(text, limits, nullptr);
    return p.result == ChunkedParse::kError ? p.error_status : 0;
  };
  EXPECT_EQ(status("zz\r\n"), 400);                  // not hex
  EXPECT_EQ(status("\r\n"), 400);                    // no size
  EXPECT_EQ(status("3\r\nabcX\r\n0\r\n\r\n"), 400);  // data longer than its size
  HttpLimits small;
  small.max_body_bytes = 10;
  small.max_header_bytes = 64;
  EXPECT_EQ(status("B\r\n", small), 413);                       // one chunk over the limit
  EXPECT_EQ(status("6\r\nabcdef\r\n6\r\n", small), 413);        // the sum over the limit
  EXPECT_EQ(status("1;" + std::string(100, 'e'), small), 400);  // a size line too long
  // Tiny chunks with long extensions: the framing may not exceed twice the body limit.
  std::string framed;
  for (int i = 0; i < 3; ++i) framed += "1;" + std::string(40, 'e') + "\r\nx\r\n";
  EXPECT_EQ(status(framed, small), 413);
}

TEST(HttpParser, Reasons) {
  EXPECT_STREQ(http_reason(200), "OK");
  EXPECT_STREQ(http_reason(413), "Payload Too Large");
  EXPECT_STREQ(http_reason(299), "Unknown");
  EXPECT_TRUE(iequals("Content-Length", "content-LENGTH"));
  EXPECT_FALSE(iequals("Content-Length", "Content-Lengt"));
}

}  // namespace
}  // namespace kiln::serve
