#include <gtest/gtest.h>
#include <sqlite3.h>

#include <cstdlib>
#include <set>

#include "kiln/core/expected.h"
#include "kiln/core/files.h"
#include "kiln/core/hash.h"
#include "kiln/core/json.h"
#include "kiln/core/progress.h"
#include "kiln/core/random.h"
#include "kiln/core/sqlite.h"
#include "kiln/core/threads.h"
#include "kiln/core/xml.h"
#include "support/test_support.h"

namespace kiln {
namespace {

using testing::TempDir;

Expected<int> parse_positive(int v) {
  if (v <= 0) return Status::InvalidArgument("value " + std::to_string(v) + " is not positive");
  return v;
}

Status doubled(int v, int* out) {
  KILN_ASSIGN_OR_RETURN(int x, parse_positive(v));
  *out = 2 * x;
  return Status::Ok();
}

TEST(StatusTest, CodesMapToExitCodes) {
  EXPECT_EQ(exit_code_for(Status::Ok()), 0);
  EXPECT_EQ(exit_code_for(Status::InvalidArgument("x")), 2);
  EXPECT_EQ(exit_code_for(Status::NotFound("x")), 2);
  EXPECT_EQ(exit_code_for(Status::DataLoss("x")), 2);
  EXPECT_EQ(exit_code_for(Status::FailedPrecondition("x")), 1);
  EXPECT_EQ(Status::NotFound("a.csv").with_context("profile").to_string(),
            "not found: profile: a.csv");
}

TEST(ExpectedTest, PropagatesValuesAndErrors) {
  int out = 0;
  EXPECT_TRUE(doubled(4, &out).ok());
  EXPECT_EQ(out, 8);
  Status st = doubled(-1, &out);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("-1"), std::string::npos);
  Expected<int> e = Status::NotFound("nope");
  EXPECT_FALSE(e.ok());
  EXPECT_THROW(e.value(), std::logic_error);
  Expected<int> bad_ok = Status::Ok();  // an ok status without a value is a bug, not a value
  EXPECT_EQ(bad_ok.status().code(), StatusCode::kInternal);
}

TEST(FilesTest, AtomicWriteReplacesWholeFileAndLeavesNoTemp) {
  TempDir dir;
  fs::path p = dir / "sub" / "f.txt";
  ASSERT_TRUE(write_file_atomic(p, "first").ok());
  ASSERT_TRUE(write_file_atomic(p, "second, longer").ok());
  EXPECT_EQ(*read_file(p), "second, longer");
  int entries = 0;
  for (auto& e : fs::directory_iterator(p.parent_path())) (void)e, ++entries;
  EXPECT_EQ(entries, 1);
}

TEST(FilesTest, ReadErrorsNameThePath) {
  TempDir dir;
  auto missing = read_file(dir / "absent.bin");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find("absent.bin"), std::string::npos);
  auto directory = read_file(dir.path());
  EXPECT_EQ(directory.status().code(), StatusCode::kInvalidArgument);
}

TEST(FilesTest, StagingDirectoryIsInvisibleUntilPublished) {
  TempDir dir;
  fs::path final_dir = dir / "snap";
  {
    auto staging = StagingDirectory::Create(final_dir);
    ASSERT_TRUE(staging.ok());
    ASSERT_TRUE(write_file_atomic(staging->path() / "a.txt", "x").ok());
    EXPECT_FALSE(fs::exists(final_dir));
    // Dropped without publish(): as if the process failed half way.
  }
  EXPECT_FALSE(fs::exists(final_dir));
  EXPECT_TRUE(fs::is_empty(dir.path()));

  auto staging = StagingDirectory::Create(final_dir);
  ASSERT_TRUE(write_file_atomic(staging->path() / "a.txt", "x").ok());
  bool replaced = false;
  ASSERT_TRUE(staging->publish(&replaced).ok());
  EXPECT_TRUE(replaced);
  EXPECT_EQ(*read_file(final_dir / "a.txt"), "x");

  // Publishing the same content-addressed directory again keeps the first one.
  auto again = StagingDirectory::Create(final_dir);
  ASSERT_TRUE(write_file_atomic(again->path() / "b.txt", "y").ok());
  ASSERT_TRUE(again->publish(&replaced).ok());
  EXPECT_FALSE(replaced);
  EXPECT_FALSE(fs::exists(final_dir / "b.txt"));
  int entries = 0;
  for (auto& e : fs::directory_iterator(dir.path())) (void)e, ++entries;
  EXPECT_EQ(entries, 1);
}

TEST(SqliteTest, OpensInWalModeAndNamesThePathOnError) {
  TempDir dir;
  auto db = open_sqlite_wal(dir / "a.db");
  ASSERT_TRUE(db.ok()) << db.status();
  sqlite3_stmt* stmt = nullptr;
  ASSERT_EQ(sqlite3_prepare_v2(db->get(), "PRAGMA journal_mode", -1, &stmt, nullptr), SQLITE_OK);
  ASSERT_EQ(sqlite3_step(stmt), SQLITE_ROW);
  EXPECT_STREQ(reinterpret_cast<const char*>(sqlite3_column_text(stmt, 0)), "wal");
  sqlite3_finalize(stmt);
  auto missing = open_sqlite_wal(dir / "no-such-dir" / "b.db");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), StatusCode::kIoError);
  EXPECT_NE(missing.status().message().find("no-such-dir/b.db"), std::string::npos);
}

TEST(HashTest, KnownVectors) {
  EXPECT_EQ(sha256_hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  TempDir dir;
  ASSERT_TRUE(write_file_atomic(dir / "abc", "abc").ok());
  EXPECT_EQ(*sha256_file(dir / "abc"), sha256_hex("abc"));
  EXPECT_FALSE(sha256_file(dir / "missing").ok());
}

TEST(JsonTest, ReadErrorsNameFileAndOffset) {
  TempDir dir;
  ASSERT_TRUE(write_file_atomic(dir / "bad.json", "{\"a\": [1, 2").ok());
  auto j = read_json_file(dir / "bad.json");
  ASSERT_FALSE(j.ok());
  EXPECT_NE(j.status().message().find("bad.json"), std::string::npos);
  Json v = {{"b", 1.0 / 3.0}, {"a", 2}};
  ASSERT_TRUE(write_json_file_atomic(dir / "ok.json", v).ok());
  EXPECT_EQ(canonical_json(*read_json_file(dir / "ok.json")), canonical_json(v));
}

TEST(JsonTest, NearlyEqualForgivesTheLastBitsOfFloatsOnly) {
  // The same statistic fitted with 1 and 2 threads (Fashion-MNIST's pixel mean, seen in the wild).
  const Json one = {{"kind", "image_normalize"}, {"mean", {0.2858957784039542}}, {"n", 3}};
  const Json two = {{"kind", "image_normalize"}, {"mean", {0.28589577840395425}}, {"n", 3}};
  EXPECT_NE(canonical_json(one), canonical_json(two));
  EXPECT_TRUE(json_nearly_equal(one, two));
  Json far = two;
  far["mean"][0] = 0.2859;
  EXPECT_FALSE(json_nearly_equal(one, far));
  Json other_kind = one;
  other_kind["kind"] = "standardize";
  EXPECT_FALSE(json_nearly_equal(one, other_kind));
  Json more = one;
  more["mean"].push_back(0.5);
  EXPECT_FALSE(json_nearly_equal(one, more));
  Json renamed = {{"kind", "image_normalize"}, {"avg", {0.2858957784039542}}, {"n", 3}};
  EXPECT_FALSE(json_nearly_equal(one, renamed));
  EXPECT_TRUE(json_nearly_equal(Json(1), Json(1.0)));
  EXPECT_FALSE(json_nearly_equal(Json(1), Json(2)));
  EXPECT_FALSE(json_nearly_equal(Json("1"), Json(1.0)));
}

TEST(ThreadsTest, EnvironmentChoosesIntraOpThreads) {
  ::setenv("KILN_THREADS", "3", 1);
  EXPECT_EQ(default_intra_op_threads(), 3);
  ::setenv("KILN_THREADS", "zero", 1);
  ::setenv("OMP_NUM_THREADS", "5", 1);
  EXPECT_EQ(default_intra_op_threads(), 5);
  ::unsetenv("KILN_THREADS");
  ::unsetenv("OMP_NUM_THREADS");
  EXPECT_GE(default_intra_op_threads(), 1);
}

TEST(RandomTest, ShuffleIsAFixedPermutationOfTheSeed) {
  std::vector<int> a(100), b;
  for (int i = 0; i < 100; ++i) a[i] = i;
  b = a;
  deterministic_shuffle(a, 7);
  deterministic_shuffle(b, 7);
  EXPECT_EQ(a, b);
  EXPECT_EQ(std::set<int>(a.begin(), a.end()).size(), 100u);
  std::vector<int> c(100);
  for (int i = 0; i < 100; ++i) c[i] = i;
  deterministic_shuffle(c, 8);
  EXPECT_NE(a, c);
  // Pinned values: a change here changes every snapshot's split.
  Rng r(42);
  EXPECT_EQ(r.next(), 0xbdd732262feb6e95ULL);
  Rng u(1);
  for (int i = 0; i < 1000; ++i) EXPECT_LT(u.below(10), 10u);
}

TEST(ProgressTest, PlainLinesWhenNotATty) {
  TempDir dir;
  fs::path p = dir / "log";
  FILE* f = std::fopen(p.c_str(), "w");
  {
    ProgressBar bar("rows", 100, "rows", f);
    EXPECT_FALSE(bar.is_tty());
    bar.set_plain_interval(0);
    bar.update(50);
    bar.finish("done");
  }
  std::fclose(f);
  std::string text = testing::read_text(p);
  EXPECT_NE(text.find("rows: 50/100 rows (50%)"), std::string::npos) << text;
  EXPECT_NE(text.find("100/100"), std::string::npos) << text;
  EXPECT_NE(text.find("done"), std::string::npos);
  EXPECT_EQ(text.find('\r'), std::string::npos);
  EXPECT_EQ(ProgressBar::format_duration(75), "1m15s");
  EXPECT_EQ(ProgressBar::format_duration(3725), "1h02m");
}

}  // namespace
}  // namespace kiln

TEST(XmlEscapeTest, EntitiesAndForbiddenControlCharacters) {
  EXPECT_EQ(kiln::xml_escape("a<b>&\"c\"'d'"), "a&lt;b&gt;&amp;&quot;c&quot;&apos;d&apos;");
  EXPECT_EQ(kiln::xml_escape(std::string("x\x01y\tz\n", 6)), "xy\tz\n");
  EXPECT_EQ(kiln::xml_escape("µ-naïve"), "µ-naïve") << "UTF-8 passes through";
}
