#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>

#include "kiln/core/expected.h"

namespace kiln {

/// Incremental SHA-256 (OpenSSL EVP). Not thread-safe; one instance per stream.
///
///   Sha256 h; h.update("abc"); std::string hex = h.hex_digest();
class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;

  void update(const void* data, size_t size);
  void update(std::string_view data) { update(data.data(), data.size()); }
  /// Lower-case hex digest (64 chars). Finalises: call once.
  std::string hex_digest();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

/// sha256 of a byte string, lower-case hex.
std::string sha256_hex(std::string_view data);

/// sha256 of a file's bytes, streamed. Errors name the path.
Expected<std::string> sha256_file(const std::filesystem::path& path);

}  // namespace kiln
