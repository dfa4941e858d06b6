#pragma once

// Content-addressed files: ROOT/ab/abcdef... named by the sha256 of their bytes, so the same file
// in many versions is stored once. Written to a temp file, fsynced and renamed: a reader never
// sees a partial artifact. Artifacts are read-only (0444).

#include <cstdint>
#include <filesystem>
#include <string>

#include "kiln/core/expected.h"

namespace kiln::registry {

namespace fs = std::filesystem;

/// The artifact directory. Thread-safe and multi-process-safe (every write is temp + rename).
class ArtifactStore {
 public:
  explicit ArtifactStore(fs::path root) : root_(std::move(root)) {}

  const fs::path& root() const { return root_; }
  /// Where the artifact with this sha256 lives (whether or not it exists).
  fs::path path_of(const std::string& sha256) const;
  bool contains(const std::string& sha256) const;

  /// Stores a copy of `source`, whose bytes must hash to `sha256` (DataLoss otherwise, e.g. the
  /// file changed under us). An artifact already present is kept and its mtime refreshed (so gc's
  /// grace period protects it until the caller commits). Blocks on I/O and fsync.
  Status put_file(const fs::path& source, const std::string& sha256);

  /// Copies the artifact to `dest` (mode 0644), verifying its sha256 while copying. DataLoss
  /// names the artifact when it is missing or its bytes do not match.
  Status copy_verified(const std::string& sha256, const fs::path& dest) const;

  /// Re-hashes the artifact: Ok, NotFound (missing) or DataLoss (mismatch), naming its path.
  Status check(const std::string& sha256) const;

 private:
  fs::path root_;
};

/// True for a 64-character lower-case hex string.
bool is_sha256_hex(const std::string& s);

}  // namespace kiln::registry
