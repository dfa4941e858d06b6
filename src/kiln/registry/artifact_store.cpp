#include "kiln/registry/artifact_store.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <vector>

#include "kiln/core/files.h"
#include "kiln/core/hash.h"

namespace kiln::registry {
namespace {

std::string os_error(const std::string& what, const fs::path& path) {
  return what + " " + path.string() + ": " + std::strerror(errno);
}

/// Streams `source` into `dest_fd` (when >= 0) while hashing it.
Expected<std::string> hash_copy(const fs::path& source, int dest_fd, const fs::path& dest) {
  int in = ::open(source.c_str(), O_RDONLY | O_CLOEXEC);
  if (in < 0) {
    if (errno == ENOENT) return Status::NotFound(source.string() + ": missing");
    return Status::IoError(os_error("cannot open", source));
  }
  Sha256 h;
  std::vector<char> buf(1 << 20);
  Status st;
  for (;;) {
    ssize_t n = ::read(in, buf.data(), buf.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      st = Status::IoError(os_error("cannot read", source));
      break;
    }
    if (n == 0) break;
    h.update(buf.data(), static_cast<size_t>(n));
    for (ssize_t off = 0; dest_fd >= 0 && off < n;) {
      ssize_t w = ::write(dest_fd, buf.data() + off, static_cast<size_t>(n - off));
      if (w < 0) {
        if (errno == EINTR) continue;
        st = Status::IoError(os_error("cannot write", dest));
        break;
      }
      off += w;
    }
    if (!st.ok()) break;
  }
  ::close(in);
  if (!st.ok()) return st;
  return h.hex_digest();
}

std::string temp_suffix() {
  static std::atomic<uint64_t> counter{0};
  return std::to_string(::getpid()) + "." + std::to_string(counter++);
}

}  // namespace

bool is_sha256_hex(const std::string& s) {
  if (s.size() != 64) return false;
  for (char c : s)
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  return true;
}

fs::path ArtifactStore::path_of(const std::string& sha256) const {
  return root_ / sha256.substr(0, 2) / sha256;
}

bool ArtifactStore::contains(const std::string& sha256) const {
  struct stat st {};
  return ::stat(path_of(sha256).c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

Status ArtifactStore::put_file(const fs::path& source, const std::string& sha256) {
  if (!is_sha256_hex(sha256)) return Status::InvalidArgument("not a sha256: '" + sha256 + "'");
  const fs::path dest = path_of(sha256);
  if (contains(sha256)) {
    // Refresh the mtime: gc keeps unreferenced artifacts younger than its grace period.
    ::utimensat(AT_FDCWD, dest.c_str(), nullptr, 0);
    return Status::Ok();
  }
  const fs::path dir = dest.parent_path();
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return Status::IoError("cannot create directory " + dir.string() + ": " + ec.message());
  const fs::path tmp = dir / ("." + sha256 + ".tmp." + temp_suffix());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0444);
  if (fd < 0) return Status::IoError(os_error("cannot create", tmp));
  Expected<std::string> got = hash_copy(source, fd, tmp);
  Status st = got.ok() ? Status::Ok() : got.status();
  if (st.ok() && *got != sha256)
    st = Status::DataLoss(source.string() + ": sha256 does not match the bundle manifest");
  if (st.ok() && ::fsync(fd) != 0) st = Status::IoError(os_error("cannot fsync", tmp));
  if (::close(fd) != 0 && st.ok()) st = Status::IoError(os_error("cannot close", tmp));
  if (st.ok() && ::rename(tmp.c_str(), dest.c_str()) != 0)
    st = Status::IoError(os_error("cannot rename into", dest));
  if (!st.ok()) {
    ::unlink(tmp.c_str());
    return st;
  }
  return fsync_directory(dir);
}

Status ArtifactStore::copy_verified(const std::string& sha256, const fs::path& dest) const {
  const fs::path src = path_of(sha256);
  int fd = ::open(dest.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return Status::IoError(os_error("cannot create", dest));
  Expected<std::string> got = hash_copy(src, fd, dest);
  Status st = got.ok() ? Status::Ok() : got.status();
  if (st.code() == StatusCode::kNotFound)
    st = Status::DataLoss(src.string() + ": artifact missing");
  else if (st.ok() && *got != sha256)
    st = Status::DataLoss(src.string() + ": artifact is corrupt (sha256 does not match its name)");
  if (st.ok() && ::fsync(fd) != 0) st = Status::IoError(os_error("cannot fsync", dest));
  ::close(fd);
  return st;
}

Status ArtifactStore::check(const std::string& sha256) const {
  const fs::path src = path_of(sha256);
  Expected<std::string> got = hash_copy(src, -1, src);
  if (!got.ok()) return got.status();
  if (*got != sha256)
    return Status::DataLoss(src.string() + ": sha256 mismatch (content hashes to " +
                            got->substr(0, 12) + "...)");
  return Status::Ok();
}

}  // namespace kiln::registry
