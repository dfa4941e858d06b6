#pragma once

#include <sys/socket.h>

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "kiln/core/expected.h"
#include "kiln/core/json.h"

namespace kiln::loadtest {

/// Where the load goes: an http:// URL resolved once to a socket address.
struct Target {
  std::string url;
  std::string host;  ///< as written (no brackets)
  int port = 80;
  std::string path = "/";  ///< path and query
  sockaddr_storage addr{};
  socklen_t addr_len = 0;
  bool loopback = false;
};

/// Parses `http://HOST[:PORT][/PATH]` (https is refused: no TLS). HOST may be `localhost`, an
/// IPv4 address, `[IPv6]` or, with `allow_remote`, any name (resolved here, blocking).
/// Without `allow_remote` anything but 127.0.0.0/8, ::1 and localhost is refused.
Expected<Target> parse_target(const std::string& url, bool allow_remote);

/// One serialised HTTP/1.1 request (keep-alive) for `path` on `target`; a body makes it a POST.
/// `extra_headers` are full lines without CRLF, e.g. "Inference-Header-Content-Length: 120" (which
/// makes the body application/octet-stream; otherwise it is sent as JSON).
std::string build_request(const Target& target, const std::string& path, const std::string& body,
                          const std::vector<std::string>& extra_headers = {});

/// A request body and the header it needs: a JSON OIP request, or a binary one (a JSON header
/// followed by raw tensor bytes, with `header_length` the JSON part's size).
struct RequestBody {
  std::string bytes;
  int64_t header_length = -1;  ///< -1: plain JSON, no Inference-Header-Content-Length
  std::vector<std::string> headers() const;
};

/// Reads `--body FILE`. With `header_length` < 0 the leading JSON object's end is found by
/// scanning it (strings and escapes respected): bytes after it (other than whitespace) make it a
/// binary OIP body with that header length. Errors name the file.
Expected<RequestBody> read_body_file(const std::filesystem::path& path, int64_t header_length);

/// The model input an OIP server's `GET /v2/models/NAME` reports (the first input).
struct ModelInput {
  std::string model;
  std::string name;
  std::string datatype;
  std::vector<int64_t> shape;  ///< -1 for the batch dimension
  /// A Kiln table model's columns in input order (metadata parameters.features), and which are
  /// categorical (text); empty when the server does not list them.
  std::vector<std::string> columns;
  std::vector<bool> categorical;
  int64_t features() const;  ///< product of the dims after the first (at least 1)
};

/// Parses the metadata JSON of model `model`.
Expected<ModelInput> parse_model_metadata(const std::string& model, const std::string& json);

/// A one-row JSON OIP request of zeros shaped like `input`.
std::string zeros_body(const ModelInput& input);

/// One JSON OIP request per row of a CSV file with a header line, cycled by the generator. When
/// `input` lists its columns, they are taken from the CSV by name in the model's order (others
/// are left out), and a model with a categorical column gets every cell as text (BYTES, as
/// `kiln serve` takes a table's text); otherwise the CSV's columns but those named in
/// `drop_columns` (a label or target) must be `input.features()` numbers in input order. At
/// most `max_rows` rows are read. Errors name file, line, column.
Expected<std::vector<std::string>> csv_bodies(const std::filesystem::path& path,
                                              const std::vector<std::string>& drop_columns,
                                              const ModelInput& input, size_t max_rows = 10000);

/// A small blocking HTTP/1.1 exchange (one connection, Connection: close) for setup calls
/// such as model metadata or a route's weights; `headers` as in build_request (e.g.
/// "Authorization: Bearer KEY"). Blocks up to `timeout_ms`. Thread-safe.
struct HttpReply {
  int status = 0;
  std::string body;
};
/// The header that carries the API key in `key_file` (trailing newline and spaces trimmed) to a
/// `kiln serve --api-key-file`: "Authorization: Bearer KEY". InvalidArgument naming
/// --api-key-file for an empty key; the read's error for a missing file.
Expected<std::string> api_key_header(const std::filesystem::path& key_file);

Expected<HttpReply> http_exchange(const Target& target, const std::string& path,
                                  const std::string& body = "", int timeout_ms = 10000,
                                  const std::vector<std::string>& headers = {});

}  // namespace kiln::loadtest
