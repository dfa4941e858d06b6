#pragma once

#include <filesystem>
#include <string>
#include <string_view>

#include "kiln/core/expected.h"

namespace kiln {

namespace fs = std::filesystem;

/// Reads a whole file. Errors name the path and the OS reason.
Expected<std::string> read_file(const fs::path& path);

/// Writes `contents` to `path` so that readers see the old file or the new one, never a mix:
/// writes `path.tmp.<pid>.<n>` in the same directory, fsyncs it, renames it over `path`, fsyncs
/// the directory. Thread-safe for distinct paths.
Status write_file_atomic(const fs::path& path, std::string_view contents);

/// fsync a directory so that a rename inside it is durable.
Status fsync_directory(const fs::path& dir);

/// A directory built in place and published whole. Create() makes a hidden sibling temp
/// directory next to `final_path`; fill it through path(); publish() fsyncs and renames it to
/// `final_path`. If publish() is never called (error, exception), the destructor removes the temp
/// directory, so no partial result is ever visible. Not thread-safe; move-only.
///
///   KILN_ASSIGN_OR_RETURN(auto staging, StagingDirectory::Create(out / hash));
///   KILN_RETURN_IF_ERROR(write_file_atomic(staging.path() / "manifest.json", text));
///   KILN_RETURN_IF_ERROR(staging.publish());
class StagingDirectory {
 public:
  static Expected<StagingDirectory> Create(const fs::path& final_path);
  StagingDirectory(StagingDirectory&& other) noexcept;
  StagingDirectory& operator=(StagingDirectory&&) = delete;
  StagingDirectory(const StagingDirectory&) = delete;
  ~StagingDirectory();

  const fs::path& path() const { return temp_path_; }
  const fs::path& final_path() const { return final_path_; }

  /// Renames the temp directory to the final path. If the final path already exists (e.g. the
  /// same content-addressed snapshot), the temp directory is discarded and `replaced` is false.
  Status publish(bool* replaced = nullptr);

 private:
  StagingDirectory(fs::path temp, fs::path final_path)
      : temp_path_(std::move(temp)), final_path_(std::move(final_path)) {}
  fs::path temp_path_;
  fs::path final_path_;
  bool active_ = true;
};

/// An exclusive flock(2) on a lock file, held until destroyed. The kernel drops it when the
/// process dies (kill -9 included), so a crashed holder never blocks the next one. Move-only.
///
///   KILN_ASSIGN_OR_RETURN(FileLock lock, FileLock::TryAcquire(dir / "run.lock",
///                                                    Status::Unavailable("already running")));
class FileLock {
 public:
  /// Creates `path` (and its directory) if missing and takes the lock without waiting; returns
  /// `if_held` when another process holds it, IoError naming the path for anything else.
  static Expected<FileLock> TryAcquire(const fs::path& path, Status if_held);
  FileLock(FileLock&& other) noexcept : fd_(other.fd_) { other.fd_ = -1; }
  FileLock& operator=(FileLock&&) = delete;
  FileLock(const FileLock&) = delete;
  ~FileLock();

 private:
  explicit FileLock(int fd) : fd_(fd) {}
  int fd_;
};

/// `$KILN_HOME`, or `~/.kiln` when unset. Not created here.
fs::path kiln_home();

/// A fresh empty directory under the system temp dir, e.g. for tests. Caller removes it.
Expected<fs::path> make_temp_directory(const std::string& prefix);

}  // namespace kiln
