#pragma once

#include <ostream>
#include <string>
#include <utility>

namespace kiln {

/// What went wrong, coarse enough to map to an exit code or an HTTP status.
enum class StatusCode {
  kOk = 0,
  kInvalidArgument,  ///< bad input: a file, line, field or request part is wrong (exit 2, HTTP 400)
  kNotFound,         ///< a named thing does not exist (exit 2, HTTP 404)
  kAlreadyExists,    ///< refusing to overwrite (exit 2, HTTP 409)
  kFailedPrecondition,  ///< the state does not allow it (exit 1, HTTP 409)
  kDataLoss,            ///< stored data is corrupt or truncated (exit 2, HTTP 500)
  kIoError,             ///< the OS refused a read or write (exit 2, HTTP 500)
  kUnavailable,         ///< try again later (exit 1, HTTP 503)
  kInternal,            ///< a bug in Kiln (exit 1, HTTP 500)
};

/// Name of a code, e.g. "invalid argument".
const char* status_code_name(StatusCode code);

/// The result of an operation at a stage boundary: a code and a message naming the file, line,
/// field or request part at fault. Cheap to copy; immutable after construction; thread-compatible.
///
///   Status s = Status::InvalidArgument("data.csv line 7: expected 31 fields, got 28");
///   if (!s.ok()) std::cerr << s << "\n";
class Status {
 public:
  Status() = default;
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status Ok() { return Status(); }
  static Status InvalidArgument(std::string m) {
    return {StatusCode::kInvalidArgument, std::move(m)};
  }
  static Status NotFound(std::string m) { return {StatusCode::kNotFound, std::move(m)}; }
  static Status AlreadyExists(std::string m) { return {StatusCode::kAlreadyExists, std::move(m)}; }
  static Status FailedPrecondition(std::string m) {
    return {StatusCode::kFailedPrecondition, std::move(m)};
  }
  static Status DataLoss(std::string m) { return {StatusCode::kDataLoss, std::move(m)}; }
  static Status IoError(std::string m) { return {StatusCode::kIoError, std::move(m)}; }
  static Status Unavailable(std::string m) { return {StatusCode::kUnavailable, std::move(m)}; }
  static Status Internal(std::string m) { return {StatusCode::kInternal, std::move(m)}; }

  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }
  /// "invalid argument: <message>", or "ok".
  std::string to_string() const;

  /// A copy whose message is "<context>: <message>", code unchanged.
  Status with_context(const std::string& context) const;

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

std::ostream& operator<<(std::ostream& os, const Status& status);

/// Process exit code for a status, as the CLI uses: 0 ok, 2 bad input/usage, 1 otherwise.
int exit_code_for(const Status& status);

}  // namespace kiln

/// Returns the status from the enclosing function when `expr` is not ok.
#define KILN_RETURN_IF_ERROR(expr)               \
  do {                                           \
    ::kiln::Status kiln_status_ = (expr);        \
    if (!kiln_status_.ok()) return kiln_status_; \
  } while (0)

#define KILN_CONCAT_INNER_(a, b) a##b
#define KILN_CONCAT_(a, b) KILN_CONCAT_INNER_(a, b)
/// `KILN_ASSIGN_OR_RETURN(auto table, read_csv(path));` unwraps an Expected or returns its error.
#define KILN_ASSIGN_OR_RETURN(lhs, expr) \
  KILN_ASSIGN_OR_RETURN_IMPL_(KILN_CONCAT_(kiln_expected_, __LINE__), lhs, expr)
#define KILN_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                                \
  if (!tmp.ok()) return tmp.status();               \
  lhs = std::move(tmp).value()

/// Programmer-error check inside a stage: throws std::logic_error with the location.
#define KILN_CHECK(cond, msg)                                                         \
  do {                                                                                \
    if (!(cond))                                                                      \
      throw std::logic_error(std::string(__FILE__) + ":" + std::to_string(__LINE__) + \
                             ": check failed: " #cond ": " + std::string(msg));       \
  } while (0)
