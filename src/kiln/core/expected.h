#pragma once

#include <stdexcept>
#include <string>
#include <utility>
#include <variant>

#include "kiln/core/status.h"

namespace kiln {

/// A value of type T or the error Status that explains why there is none (C++17 stand-in for
/// std::expected). Thread-compatible. Accessing value() of an error throws std::logic_error.
///
///   Expected<Table> t = read_csv("data.csv", CsvOptions());
///   if (!t.ok()) return t.status();
///   use(*t);
template <typename T>
class Expected {
 public:
  Expected(T value) : state_(std::move(value)) {}        // NOLINT: implicit by design
  Expected(Status status) : state_(std::move(status)) {  // NOLINT
    if (std::get<Status>(state_).ok())
      state_ = Status::Internal("Expected constructed from an ok Status without a value");
  }

  bool ok() const { return std::holds_alternative<T>(state_); }
  explicit operator bool() const { return ok(); }

  const Status& status() const {
    static const Status kOk;
    return ok() ? kOk : std::get<Status>(state_);
  }

  T& value() & {
    check();
    return std::get<T>(state_);
  }
  const T& value() const& {
    check();
    return std::get<T>(state_);
  }
  T&& value() && {
    check();
    return std::get<T>(std::move(state_));
  }

  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

 private:
  void check() const {
    if (!ok()) throw std::logic_error("Expected::value() on error: " + status().to_string());
  }
  std::variant<T, Status> state_;
};

}  // namespace kiln
