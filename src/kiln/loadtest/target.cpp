#include "kiln/loadtest/target.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstring>

#include "kiln/core/csv.h"
#include "kiln/core/files.h"

namespace kiln::loadtest {
namespace {

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

std::string trim(const std::string& s) {
  size_t b = 0, e = s.size();
  while (b < e && std::isspace(static_cast<unsigned char>(s[b]))) ++b;
  while (e > b && std::isspace(static_cast<unsigned char>(s[e - 1]))) --e;
  return s.substr(b, e - b);
}

/// End (one past the closing brace) of the JSON object starting at text[0]; npos if unbalanced.
size_t json_object_end(const std::string& text, size_t start) {
  int depth = 0;
  bool in_string = false, escape = false;
  for (size_t i = start; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (escape)
        escape = false;
      else if (c == '\\')
        escape = true;
      else if (c == '"')
        in_string = false;
      continue;
    }
    if (c == '"')
      in_string = true;
    else if (c == '{' || c == '[')
      ++depth;
    else if (c == '}' || c == ']') {
      if (--depth == 0) return i + 1;
    }
  }
  return std::string::npos;
}

}  // namespace

Expected<Target> parse_target(const std::string& url, bool allow_remote) {
  Target t;
  t.url = url;
  const std::string scheme = "http://";
  if (lower(url.substr(0, 8)) == "https://")
    return Status::InvalidArgument("URL '" + url + "': https is not supported (plain http only)");
  if (lower(url.substr(0, scheme.size())) != scheme)
    return Status::InvalidArgument("URL '" + url + "': expected http://HOST[:PORT]/PATH");
  std::string rest = url.substr(scheme.size());
  const size_t slash = rest.find('/');
  std::string authority = rest.substr(0, slash);
  t.path = slash == std::string::npos ? "/" : rest.substr(slash);
  std::string port_text;
  if (!authority.empty() && authority[0] == '[') {
    const size_t close = authority.find(']');
    if (close == std::string::npos)
      return Status::InvalidArgument("URL '" + url + "': unterminated [IPv6] address");
    t.host = authority.substr(1, close - 1);
    if (close + 1 < authority.size()) {
      if (authority[close + 1] != ':')
        return Status::InvalidArgument("URL '" + url + "': expected ':' after ']'");
      port_text = authority.substr(close + 2);
    }
  } else {
    const size_t colon = authority.find(':');
    t.host = authority.substr(0, colon);
    if (colon != std::string::npos) port_text = authority.substr(colon + 1);
  }
  if (t.host.empty()) return Status::InvalidArgument("URL '" + url + "': no host");
  if (!port_text.empty()) {
    char* end = nullptr;
    const long p = std::strtol(port_text.c_str(), &end, 10);
    if (*end != '\0' || p < 1 || p > 65535)
      return Status::InvalidArgument("URL '" + url + "': bad port '" + port_text + "'");
    t.port = static_cast<int>(p);
  }

  const std::string host = lower(t.host);
  sockaddr_in v4{};
  sockaddr_in6 v6{};
  if (host == "localhost" || inet_pton(AF_INET, host.c_str(), &v4.sin_addr) == 1) {
    if (host == "localhost") inet_pton(AF_INET, "127.0.0.1", &v4.sin_addr);
    v4.sin_family = AF_INET;
    v4.sin_port = htons(static_cast<uint16_t>(t.port));
    t.loopback = (ntohl(v4.sin_addr.s_addr) >> 24) == 127;
    std::memcpy(&t.addr, &v4, sizeof v4);
    t.addr_len = sizeof v4;
  } else if (inet_pton(AF_INET6, host.c_str(), &v6.sin6_addr) == 1) {
    v6.sin6_family = AF_INET6;
    v6.sin6_port = htons(static_cast<uint16_t>(t.port));
    t.loopback = IN6_IS_ADDR_LOOPBACK(&v6.sin6_addr);
    std::memcpy(&t.addr, &v6, sizeof v6);
    t.addr_len = sizeof v6;
  } else if (allow_remote) {
    addrinfo hints{};
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* res = nullptr;
    const int rc = getaddrinfo(t.host.c_str(), std::to_string(t.port).c_str(), &hints, &res);
    if (rc != 0 || res == nullptr)
      return Status::InvalidArgument("URL '" + url + "': cannot resolve '" + t.host +
                                     "': " + gai_strerror(rc));
    std::memcpy(&t.addr, res->ai_addr, res->ai_addrlen);
    t.addr_len = res->ai_addrlen;
    freeaddrinfo(res);
  }
  if (!t.loopback && !allow_remote)
    return Status::InvalidArgument("URL '" + url + "': '" + t.host +
                                   "' is not a loopback address (127.0.0.0/8, ::1, localhost); "
                                   "pass --allow-remote to load a remote server");
  return t;
}

std::string build_request(const Target& target, const std::string& path, const std::string& body,
                          const std::vector<std::string>& extra_headers) {
  std::string r = body.empty() ? "GET " : "POST ";
  r += path + " HTTP/1.1\r\nHost: ";
  r += target.host.find(':') != std::string::npos ? "[" + target.host + "]" : target.host;
  r += ":" + std::to_string(target.port) + "\r\nUser-Agent: kiln-loadtest\r\n";
  for (const auto& h : extra_headers) r += h + "\r\n";
  if (!body.empty()) {
    r += "Content-Type: application/";
    bool binary = false;
    for (const auto& h : extra_headers)
      binary = binary || h.rfind("Inference-Header-Content-Length:", 0) == 0;
    r += binary ? "octet-stream" : "json";
    r += "\r\nContent-Length: " + std::to_string(body.size()) + "\r\n";
  }
  r += "\r\n";
  r += body;
  return r;
}

std::vector<std::string> RequestBody::headers() const {
  if (header_length < 0) return {};
  return {"Inference-Header-Content-Length: " + std::to_string(header_length)};
}

Expected<RequestBody> read_body_file(const std::filesystem::path& path, int64_t header_length) {
  KILN_ASSIGN_OR_RETURN(std::string bytes, read_file(path));
  RequestBody body;
  if (bytes.empty()) return Status::InvalidArgument("--body " + path.string() + ": empty file");
  if (header_length >= 0) {
    if (static_cast<size_t>(header_length) > bytes.size())
      return Status::InvalidArgument("--header-length " + std::to_string(header_length) +
                                     " exceeds the size of --body " + path.string() + " (" +
                                     std::to_string(bytes.size()) + " bytes)");
    body.header_length = header_length;
    body.bytes = std::move(bytes);
    return body;
  }
  size_t start = 0;
  while (start < bytes.size() && std::isspace(static_cast<unsigned char>(bytes[start]))) ++start;
  if (start == bytes.size() || bytes[start] != '{')
    return Status::InvalidArgument("--body " + path.string() +
                                   ": not an OIP request (expected a JSON object, optionally "
                                   "followed by binary tensor data)");
  const size_t end = json_object_end(bytes, start);
  if (end == std::string::npos)
    return Status::InvalidArgument("--body " + path.string() +
                                   ": the leading JSON object is not closed");
  size_t after = end;
  while (after < bytes.size() && std::isspace(static_cast<unsigned char>(bytes[after]))) ++after;
  if (after < bytes.size()) body.header_length = static_cast<int64_t>(end);
  body.bytes = std::move(bytes);
  return body;
}

int64_t ModelInput::features() const {
  int64_t n = 1;
  for (size_t i = 1; i < shape.size(); ++i) n *= shape[i] > 0 ? shape[i] : 1;
  return n;
}

Expected<ModelInput> parse_model_metadata(const std::string& model, const std::string& json) {
  Json j = Json::parse(json, nullptr, false);
  const std::string where = "metadata of model '" + model + "'";
  if (j.is_discarded() || !j.is_object())
    return Status::InvalidArgument(where + ": not a JSON object");
  if (!j.contains("inputs") || !j["inputs"].is_array() || j["inputs"].empty())
    return Status::InvalidArgument(where + ": no inputs");
  const Json& in = j["inputs"][0];
  ModelInput m;
  m.model = model;
  m.name = in.value("name", "");
  m.datatype = in.value("datatype", "FP32");
  if (!in.contains("shape") || !in["shape"].is_array())
    return Status::InvalidArgument(where + ": inputs[0].shape missing");
  for (const auto& d : in["shape"]) {
    if (!d.is_number_integer())
      return Status::InvalidArgument(where + ": inputs[0].shape is not a list of integers");
    m.shape.push_back(d.get<int64_t>());
  }
  if (j.contains("parameters") && j["parameters"].is_object() &&
      j["parameters"].contains("features") && j["parameters"]["features"].is_array())
    for (const Json& f : j["parameters"]["features"]) {
      if (!f.is_object() || !f.contains("name") || !f["name"].is_string()) {
        m.columns.clear();
        m.categorical.clear();
        break;
      }
      m.columns.push_back(f["name"].get<std::string>());
      m.categorical.push_back(f.value("type", "numeric") == "categorical");
    }
  if (m.name.empty()) return Status::InvalidArgument(where + ": inputs[0].name missing");
  if (m.shape.empty()) m.shape = {-1, 1};
  return m;
}

namespace {

/// `row` (numbers, or a table's cells as text with datatype BYTES) as a one-row request.
Json row_body(const ModelInput& input, const Json& row, const std::string& datatype) {
  Json shape = Json::array();
  shape.push_back(1);
  for (size_t i = 1; i < input.shape.size(); ++i)
    shape.push_back(input.shape[i] > 0 ? input.shape[i] : 1);
  if (input.shape.size() < 2) shape.push_back(static_cast<int64_t>(row.size()));
  return Json{
      {"inputs",
       Json::array(
           {Json{{"name", input.name}, {"shape", shape}, {"datatype", datatype}, {"data", row}}})}};
}

std::string row_body(const ModelInput& input, const std::vector<double>& row) {
  return row_body(input, Json(row), input.datatype).dump();
}

/// One body per row of `table`: the cells at `at`, in that order, trimmed. A column marked in
/// `categorical` goes as text; the others must be numbers. With any text column every cell goes
/// as text (BYTES), an empty numeric cell meaning a missing number.
Expected<std::vector<std::string>> table_bodies(const CsvTable& table, const std::string& what,
                                                const ModelInput& input,
                                                const std::vector<size_t>& at,
                                                const std::vector<bool>& categorical) {
  for (const RaggedLine& r : table.ragged)
    if (r.fields > 0)
      return Status::InvalidArgument(what + ":" + std::to_string(r.line) + ": " +
                                     std::to_string(r.fields) + " values, expected " +
                                     std::to_string(table.header.size()));
  const bool text = std::find(categorical.begin(), categorical.end(), true) != categorical.end();
  std::vector<std::string> bodies;
  bodies.reserve(table.rows.size());
  for (size_t r = 0; r < table.rows.size(); ++r) {
    Json row = Json::array();
    for (size_t k = 0; k < at.size(); ++k) {
      const std::string cell = trim(table.rows[r][at[k]]);
      if (categorical[k] || (text && cell.empty())) {
        row.push_back(cell);  // text: a category, or a missing number ("")
        continue;
      }
      double v = 0;
      if (!parse_double(cell, &v))
        return Status::InvalidArgument(what + ":" + std::to_string(table.lines[r]) + ": column '" +
                                       table.header[at[k]] + "': '" + cell + "' is not a number");
      if (text)
        row.push_back(cell);
      else
        row.push_back(v);
    }
    bodies.push_back(row_body(input, row, text ? "BYTES" : input.datatype).dump());
  }
  if (bodies.empty()) return Status::InvalidArgument(what + ": no data rows");
  return bodies;
}

}  // namespace

std::string zeros_body(const ModelInput& input) {
  return row_body(input, std::vector<double>(static_cast<size_t>(input.features()), 0.0));
}

Expected<std::vector<std::string>> csv_bodies(const std::filesystem::path& path,
                                              const std::vector<std::string>& drop_columns,
                                              const ModelInput& input, size_t max_rows) {
  const std::string what = "--data " + path.string();
  auto read = read_csv(path, CsvOptions().max_rows(static_cast<int64_t>(max_rows)));
  if (!read.ok()) return Status::InvalidArgument("--data: " + read.status().message());
  const CsvTable& table = *read;
  for (const auto& d : drop_columns)
    if (table.column_index(d) < 0)
      return Status::InvalidArgument("--drop-column " + d + ": no such column in " + path.string());
  std::vector<size_t> at;
  std::vector<bool> categorical;
  if (!input.columns.empty() && input.columns.size() == input.categorical.size() &&
      static_cast<int64_t>(input.columns.size()) == input.features()) {
    // The model lists its columns: each by name, in the model's order.
    for (const std::string& column : input.columns) {
      const int64_t i = table.column_index(column);
      if (i < 0)
        return Status::InvalidArgument(what + ": no column '" + column + "', which model '" +
                                       input.model + "' takes");
      at.push_back(static_cast<size_t>(i));
    }
    categorical = input.categorical;
  } else {
    for (size_t i = 0; i < table.header.size(); ++i)
      if (std::find(drop_columns.begin(), drop_columns.end(), table.header[i]) ==
          drop_columns.end())
        at.push_back(i);
    if (static_cast<int64_t>(at.size()) != input.features())
      return Status::InvalidArgument(
          what + ": " + std::to_string(at.size()) + " columns after --drop-column, but model '" +
          input.model + "' input '" + input.name + "' takes " + std::to_string(input.features()) +
          " features (drop the label with --drop-column)");
    categorical.assign(at.size(), false);
  }
  return table_bodies(table, what, input, at, categorical);
}

Expected<HttpReply> http_exchange(const Target& target, const std::string& path,
                                  const std::string& body, int timeout_ms,
                                  const std::vector<std::string>& headers) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  const auto left_ms = [&] {
    return static_cast<int>(std::max<int64_t>(
        0, std::chrono::duration_cast<std::chrono::milliseconds>(deadline -
                                                                 std::chrono::steady_clock::now())
               .count()));
  };
  const std::string what =
      (body.empty() ? "GET " : "POST ") + target.url.substr(0, target.url.find('/', 8)) + path;
  const int fd = ::socket(target.addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return Status::IoError(what + ": socket: " + std::strerror(errno));
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&target.addr), target.addr_len) != 0)
    return Status::Unavailable(what + ": connect: " + std::strerror(errno));
  std::string req = build_request(target, path, body, headers);
  req.insert(req.find("\r\n\r\n"), "\r\nConnection: close");
  for (size_t off = 0; off < req.size();) {
    const ssize_t n = ::send(fd, req.data() + off, req.size() - off, MSG_NOSIGNAL);
    if (n <= 0) return Status::Unavailable(what + ": send: " + std::strerror(errno));
    off += static_cast<size_t>(n);
  }
  std::string in;
  char buf[16384];
  for (;;) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, left_ms()) <= 0) return Status::Unavailable(what + ": timed out");
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n < 0) return Status::Unavailable(what + ": recv: " + std::strerror(errno));
    if (n == 0) break;
    in.append(buf, static_cast<size_t>(n));
  }
  const size_t head_end = in.find("\r\n\r\n");
  if (in.size() < 12 || in.compare(0, 5, "HTTP/") != 0 || head_end == std::string::npos)
    return Status::Unavailable(what + ": not an HTTP response");
  HttpReply reply;
  reply.status = std::atoi(in.c_str() + 9);
  reply.body = in.substr(head_end + 4);
  return reply;
}

Expected<std::string> api_key_header(const std::filesystem::path& key_file) {
  KILN_ASSIGN_OR_RETURN(std::string key, read_file(key_file));
  while (!key.empty() && (key.back() == '\n' || key.back() == '\r' || key.back() == ' '))
    key.pop_back();
  if (key.empty())
    return Status::InvalidArgument("--api-key-file " + key_file.string() + ": empty key");
  return "Authorization: Bearer " + key;
}

}  // namespace kiln::loadtest
