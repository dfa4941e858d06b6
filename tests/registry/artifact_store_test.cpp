// ArtifactStore: content-addressed, read-only, verified on the way in and out; a second put of
// existing content refreshes its mtime so gc's grace period protects it until the push commits.
#include "kiln/registry/artifact_store.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <ctime>

#include "kiln/core/hash.h"
#include "support/test_support.h"

namespace kiln::registry {
namespace {

using kiln::testing::TempDir;
using kiln::testing::write_text;

TEST(ArtifactStoreTest, StoresVerifiedReadOnlyCopiesByContent) {
  TempDir tmp;
  ArtifactStore store(tmp / "artifacts");
  write_text(tmp / "src.bin", "hello artifacts");
  const std::string sha = sha256_hex("hello artifacts");
  ASSERT_TRUE(store.put_file(tmp / "src.bin", sha).ok());
  EXPECT_TRUE(store.contains(sha));
  EXPECT_EQ(store.path_of(sha), tmp / "artifacts" / sha.substr(0, 2) / sha);
  EXPECT_EQ(kiln::testing::read_text(store.path_of(sha)), "hello artifacts");
  EXPECT_EQ(fs::status(store.path_of(sha)).permissions() & fs::perms::owner_write, fs::perms::none);
  EXPECT_TRUE(store.check(sha).ok());
  ASSERT_TRUE(store.copy_verified(sha, tmp / "out.bin").ok());
  EXPECT_EQ(kiln::testing::read_text(tmp / "out.bin"), "hello artifacts");
  // Bytes that do not hash to the claimed name are refused, and nothing is left behind.
  const std::string other = sha256_hex("something else");
  EXPECT_EQ(store.put_file(tmp / "src.bin", other).code(), StatusCode::kDataLoss);
  EXPECT_FALSE(store.contains(other));
  EXPECT_EQ(store.put_file(tmp / "src.bin", "not-a-sha").code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(store.check(other).code(), StatusCode::kNotFound);
  EXPECT_EQ(store.copy_verified(other, tmp / "x").code(), StatusCode::kDataLoss);
}

TEST(ArtifactStoreTest, PuttingExistingContentRefreshesItsAge) {
  TempDir tmp;
  ArtifactStore store(tmp / "artifacts");
  write_text(tmp / "src.bin", "shared weights");
  const std::string sha = sha256_hex("shared weights");
  ASSERT_TRUE(store.put_file(tmp / "src.bin", sha).ok());
  struct timespec old[2] = {{std::time(nullptr) - 86400, 0}, {std::time(nullptr) - 86400, 0}};
  ASSERT_EQ(::utimensat(AT_FDCWD, store.path_of(sha).c_str(), old, 0), 0);
  ASSERT_TRUE(store.put_file(tmp / "src.bin", sha).ok());
  struct stat st {};
  ASSERT_EQ(::stat(store.path_of(sha).c_str(), &st), 0);
  EXPECT_GT(st.st_mtime, std::time(nullptr) - 60);
}

}  // namespace
}  // namespace kiln::registry
