#include "kiln/core/files.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>
#include <sstream>

namespace kiln {
namespace {

std::string os_error(const std::string& what, const fs::path& path) {
  return what + " " + path.string() + ": " + std::strerror(errno);
}

std::string unique_suffix() {
  static std::atomic<uint64_t> counter{0};
  std::random_device rd;
  return std::to_string(::getpid()) + "." + std::to_string(counter++) + "." +
         std::to_string(rd() % 100000);
}

Status write_all(int fd, std::string_view data, const fs::path& path) {
  const char* p = data.data();
  size_t left = data.size();
  while (left > 0) {
    ssize_t n = ::write(fd, p, left);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Status::IoError(os_error("cannot write", path));
    }
    p += n;
    left -= static_cast<size_t>(n);
  }
  return Status::Ok();
}

}  // namespace

Expected<std::string> read_file(const fs::path& path) {
  std::error_code ec;
  if (fs::is_directory(path, ec))
    return Status::InvalidArgument(path.string() + ": is a directory, expected a file");
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    if (!fs::exists(path, ec)) return Status::NotFound(path.string() + ": no such file");
    return Status::IoError(os_error("cannot open", path));
  }
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) return Status::IoError(os_error("cannot read", path));
  return ss.str();
}

Status fsync_directory(const fs::path& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (fd < 0) return Status::IoError(os_error("cannot open directory", dir));
  int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) return Status::IoError(os_error("cannot fsync directory", dir));
  return Status::Ok();
}

Status write_file_atomic(const fs::path& path, std::string_view contents) {
  fs::path dir = path.parent_path().empty() ? fs::path(".") : path.parent_path();
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return Status::IoError("cannot create directory " + dir.string() + ": " + ec.message());
  fs::path tmp = dir / ("." + path.filename().string() + ".tmp." + unique_suffix());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) return Status::IoError(os_error("cannot create", tmp));
  Status st = write_all(fd, contents, tmp);
  if (st.ok() && ::fsync(fd) != 0) st = Status::IoError(os_error("cannot fsync", tmp));
  if (::close(fd) != 0 && st.ok()) st = Status::IoError(os_error("cannot close", tmp));
  if (st.ok() && ::rename(tmp.c_str(), path.c_str()) != 0)
    st = Status::IoError(os_error("cannot rename into", path));
  if (!st.ok()) {
    ::unlink(tmp.c_str());
    return st;
  }
  return fsync_directory(dir);
}

Expected<StagingDirectory> StagingDirectory::Create(const fs::path& final_path) {
  fs::path parent = final_path.parent_path().empty() ? fs::path(".") : final_path.parent_path();
  std::error_code ec;
  fs::create_directories(parent, ec);
  if (ec)
    return Status::IoError("cannot create directory " + parent.string() + ": " + ec.message());
  fs::path tmp = parent / ("." + final_path.filename().string() + ".staging." + unique_suffix());
  if (!fs::create_directory(tmp, ec) || ec)
    return Status::IoError("cannot create directory " + tmp.string() + ": " + ec.message());
  return StagingDirectory(tmp, final_path);
}

StagingDirectory::StagingDirectory(StagingDirectory&& other) noexcept
    : temp_path_(std::move(other.temp_path_)),
      final_path_(std::move(other.final_path_)),
      active_(other.active_) {
  other.active_ = false;
}

StagingDirectory::~StagingDirectory() {
  if (!active_) return;
  std::error_code ec;
  fs::remove_all(temp_path_, ec);
}

Status StagingDirectory::publish(bool* replaced) {
  KILN_CHECK(active_, "publish() called twice");
  // Make every file durable before the directory becomes visible under its final name.
  std::error_code ec;
  for (const auto& entry : fs::recursive_directory_iterator(temp_path_, ec)) {
    if (!entry.is_regular_file()) continue;
    int fd = ::open(entry.path().c_str(), O_RDONLY);
    if (fd >= 0) {
      ::fsync(fd);
      ::close(fd);
    }
  }
  KILN_RETURN_IF_ERROR(fsync_directory(temp_path_));
  if (::rename(temp_path_.c_str(), final_path_.c_str()) != 0) {
    if ((errno == ENOTEMPTY || errno == EEXIST) && fs::is_directory(final_path_, ec)) {
      fs::remove_all(temp_path_, ec);
      active_ = false;
      if (replaced) *replaced = false;
      return Status::Ok();
    }
    return Status::IoError(os_error("cannot rename into", final_path_));
  }
  active_ = false;
  if (replaced) *replaced = true;
  fs::path parent = final_path_.parent_path().empty() ? fs::path(".") : final_path_.parent_path();
  return fsync_directory(parent);
}

fs::path kiln_home() {
  if (const char* home = std::getenv("KILN_HOME"); home && *home) return fs::path(home);
  const char* user_home = std::getenv("HOME");
  return fs::path(user_home && *user_home ? user_home : ".") / ".kiln";
}

Expected<fs::path> make_temp_directory(const std::string& prefix) {
  std::string templ = (fs::temp_directory_path() / (prefix + "XXXXXX")).string();
  if (::mkdtemp(templ.data()) == nullptr)
    return Status::IoError(os_error("cannot create temp directory", templ));
  return fs::path(templ);
}

Expected<FileLock> FileLock::TryAcquire(const fs::path& path, Status if_held) {
  std::error_code ec;
  if (path.has_parent_path()) fs::create_directories(path.parent_path(), ec);
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return Status::IoError(path.string() + ": " + std::strerror(errno));
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    ::close(fd);
    if (err == EWOULDBLOCK) return if_held;
    return Status::IoError(path.string() + ": flock: " + std::strerror(err));
  }
  return FileLock(fd);
}

FileLock::~FileLock() {
  if (fd_ >= 0) ::close(fd_);
}

}  // namespace kiln
