#include "kiln/core/csv.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "support/test_support.h"

namespace kiln {
namespace {

using kiln::testing::TempDir;
using kiln::testing::write_text;

Expected<CsvTable> read_text(const TempDir& dir, const std::string& text,
                             const CsvOptions& options = {}) {
  const auto path = dir / "t.csv";
  write_text(path, text);
  return read_csv(path, options);
}

TEST(CsvRead, BreastCancerReal) {
  auto t = read_csv(kiln::testing::shared_datasets_dir() / "breast_cancer.csv");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->header.size(), 31u);
  EXPECT_EQ(t->header.front(), "mean_radius");
  EXPECT_EQ(t->header.back(), "diagnosis");
  EXPECT_EQ(t->rows.size(), 569u);
  EXPECT_TRUE(t->ragged.empty());
  EXPECT_EQ(t->lines.front(), 2);
  EXPECT_EQ(t->lines.back(), 570);
  EXPECT_EQ(t->column_index("diagnosis"), 30);
  EXPECT_EQ(t->column_index("nope"), -1);
  // The file uses CRLF: no cell may keep the '\r'.
  EXPECT_EQ(t->rows[0][30], "malignant");
  double v = 0;
  ASSERT_TRUE(parse_double(t->rows[0][0], &v));
  EXPECT_DOUBLE_EQ(v, 17.99);
  int malignant = 0;
  for (const auto& r : t->rows) malignant += r[30] == "malignant";
  EXPECT_EQ(malignant, 212);
}

TEST(CsvRead, BreastCancerDirtyRaggedAndMissing) {
  auto t = read_csv(kiln::testing::shared_datasets_dir() / "breast_cancer_dirty.csv");
  ASSERT_TRUE(t.ok()) << t.status();
  ASSERT_EQ(t->ragged.size(), 1u);
  EXPECT_EQ(t->ragged[0].line, 226);
  EXPECT_EQ(t->ragged[0].fields, 28u);
  EXPECT_EQ(t->rows.size(), 576u);
  ASSERT_EQ(t->lines.size(), t->rows.size());
  for (size_t i = 0; i < t->lines.size(); ++i) EXPECT_NE(t->lines[i], 226);
  // Line 31 has "1e30" in column 2 and an empty cell in column 24.
  size_t i31 = 0;
  while (t->lines[i31] != 31) ++i31;
  EXPECT_EQ(t->rows[i31][1], "1e30");
  EXPECT_TRUE(t->is_missing(t->rows[i31][23]));
  int missing = 0, junk = 0;
  for (const auto& row : t->rows) {
    for (size_t c = 0; c + 1 < row.size(); ++c) {
      double v;
      if (t->is_missing(row[c])) {
        ++missing;
      } else if (!parse_double(row[c], &v)) {
        EXPECT_EQ(row[c], "n/a?");
        ++junk;
      }
    }
  }
  EXPECT_EQ(missing, 18);  // 13 empty + 5 "NA"
  EXPECT_EQ(junk, 3);      // "n/a?" is junk, not a missing token
}

TEST(CsvRead, DiabetesReal) {
  auto t = read_csv(kiln::testing::shared_datasets_dir() / "diabetes.csv");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->header.size(), 11u);
  EXPECT_EQ(t->rows.size(), 442u);
  EXPECT_TRUE(t->ragged.empty());
  for (const auto& row : t->rows) {
    for (const auto& cell : row) {
      double v;
      EXPECT_TRUE(parse_double(cell, &v)) << cell;
    }
  }
}

TEST(CsvRead, MaxRows) {
  auto t =
      read_csv(kiln::testing::shared_datasets_dir() / "diabetes.csv", CsvOptions().max_rows(5));
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->rows.size(), 5u);
  EXPECT_EQ(t->lines.back(), 6);
}

TEST(CsvRead, QuotedFields) {
  TempDir dir;
  auto t = read_text(dir,
                     "name, note ,n\n"
                     "\"a,b\",\"say \"\"hi\"\"\",1\n"
                     "\"multi\nline\",x,2\n"
                     "plain,\"\",3\n");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->header, (std::vector<std::string>{"name", "note", "n"}));
  ASSERT_EQ(t->rows.size(), 3u);
  EXPECT_EQ(t->rows[0][0], "a,b");
  EXPECT_EQ(t->rows[0][1], "say \"hi\"");
  EXPECT_EQ(t->rows[1][0], "multi\nline");
  EXPECT_EQ(t->rows[2][1], "");
  // Physical lines: the multi-line record starts on line 3 and ends on line 4.
  EXPECT_EQ(t->lines, (std::vector<int64_t>{2, 3, 5}));
}

TEST(CsvRead, CrlfAndNoFinalNewline) {
  TempDir dir;
  auto t = read_text(dir, "a,b\r\n1,2\r\n3,4");
  ASSERT_TRUE(t.ok()) << t.status();
  ASSERT_EQ(t->rows.size(), 2u);
  EXPECT_EQ(t->rows[0][1], "2");
  EXPECT_EQ(t->rows[1][1], "4");
  EXPECT_EQ(t->header[1], "b");
}

TEST(CsvRead, RaggedLinesAndBlankLines) {
  TempDir dir;
  auto t = read_text(dir, "a,b,c\n1,2,3\n1,2\n\n4,5,6,7\n8,9,10\n\n\n");
  ASSERT_TRUE(t.ok()) << t.status();
  ASSERT_EQ(t->rows.size(), 2u);
  EXPECT_EQ(t->lines, (std::vector<int64_t>{2, 6}));
  ASSERT_EQ(t->ragged.size(), 3u);  // the trailing blank lines are not records
  EXPECT_EQ(t->ragged[0].line, 3);
  EXPECT_EQ(t->ragged[0].fields, 2u);
  EXPECT_EQ(t->ragged[1].line, 4);  // a blank line in the middle: ragged, 0 fields
  EXPECT_EQ(t->ragged[1].fields, 0u);
  EXPECT_EQ(t->ragged[2].line, 5);
  EXPECT_EQ(t->ragged[2].fields, 4u);
}

TEST(CsvRead, BlankLineIsMissingValueInOneColumnFile) {
  TempDir dir;
  auto t = read_text(dir, "x\n1\n\n3\n");
  ASSERT_TRUE(t.ok()) << t.status();
  ASSERT_EQ(t->rows.size(), 3u);
  EXPECT_EQ(t->rows[1][0], "");
  EXPECT_TRUE(t->is_missing(t->rows[1][0]));
  EXPECT_TRUE(t->ragged.empty());
}

TEST(CsvRead, HeaderOnlyAndCustomOptions) {
  TempDir dir;
  auto t = read_text(dir, "a;b\n");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->header.size(), 1u);  // default delimiter is ','
  auto u = read_text(dir, "a;b\n1;-\n", CsvOptions().delimiter(';').na_tokens({"-"}));
  ASSERT_TRUE(u.ok()) << u.status();
  ASSERT_EQ(u->rows.size(), 1u);
  EXPECT_TRUE(u->is_missing("-"));
  EXPECT_FALSE(u->is_missing(""));
  EXPECT_TRUE(u->rows.size() == 1 && u->is_missing(u->rows[0][1]));
}

TEST(CsvRead, Utf8BomIsIgnored) {
  TempDir dir;
  auto t = read_text(dir, "\xEF\xBB\xBFid,v\n1,2\n");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->header[0], "id");
}

TEST(CsvErrors, UnterminatedQuoteNamesLine) {
  TempDir dir;
  auto t = read_text(dir, "a,b\n1,2\n3,\"oops\n4,5\n");
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(t.status().message().find("t.csv line 3"), std::string::npos) << t.status();
  EXPECT_NE(t.status().message().find("unterminated"), std::string::npos) << t.status();
}

TEST(CsvErrors, DuplicateAndEmptyHeaderNames) {
  TempDir dir;
  auto dup = read_text(dir, "a,b, a\n1,2,3\n");
  ASSERT_FALSE(dup.ok());
  EXPECT_EQ(dup.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(dup.status().message().find("duplicate column name \"a\" (columns 1 and 3)"),
            std::string::npos)
      << dup.status();
  auto empty = read_text(dir, "a,,c\n1,2,3\n");
  ASSERT_FALSE(empty.ok());
  EXPECT_NE(empty.status().message().find("column 2 has an empty name"), std::string::npos)
      << empty.status();
}

TEST(CsvErrors, EmptyMissingAndDirectory) {
  TempDir dir;
  auto empty = read_text(dir, "");
  ASSERT_FALSE(empty.ok());
  EXPECT_EQ(empty.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(empty.status().message().find("empty file"), std::string::npos);
  auto blank_header = read_text(dir, "\n1,2\n");
  ASSERT_FALSE(blank_header.ok());
  EXPECT_NE(blank_header.status().message().find("line 1"), std::string::npos);

  auto missing = read_csv(dir / "nope.csv");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find("nope.csv"), std::string::npos);
  EXPECT_EQ(exit_code_for(missing.status()), 2);

  auto directory = read_csv(dir.path());
  ASSERT_FALSE(directory.ok());
  EXPECT_EQ(directory.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(exit_code_for(directory.status()), 2);
}

TEST(CsvParseDouble, Strict) {
  double v = 0;
  EXPECT_TRUE(parse_double("1e30", &v));
  EXPECT_EQ(v, 1e30);
  EXPECT_TRUE(parse_double(" -2.5 ", &v));
  EXPECT_EQ(v, -2.5);
  EXPECT_TRUE(parse_double("+3", &v));
  EXPECT_EQ(v, 3);
  EXPECT_TRUE(parse_double(".5", &v));
  EXPECT_EQ(v, 0.5);
  EXPECT_TRUE(parse_double("5.", &v));
  EXPECT_EQ(v, 5);
  EXPECT_TRUE(parse_double("1e-400", &v));  // underflow reads as 0
  EXPECT_EQ(v, 0);
  for (const char* bad : {"", " ", "n/a?", "12abc", "1e", "1e400", "0x10", "--1", "+-1", "1,5",
                          "1 2", "abc", "nan", "NaN", "-nan", "."}) {
    EXPECT_FALSE(parse_double(bad, &v)) << bad;
  }
}

TEST(CsvParseDouble, InfinityIsAValueNanIsNot) {
  double v = 0;
  EXPECT_TRUE(parse_double("inf", &v));
  EXPECT_EQ(v, std::numeric_limits<double>::infinity());
  EXPECT_TRUE(parse_double("-Infinity", &v));
  EXPECT_EQ(v, -std::numeric_limits<double>::infinity());
  EXPECT_FALSE(parse_double("nan", &v));
}

TEST(CsvNaTokens, Defaults) {
  const auto& na = default_na_tokens();
  CsvTable t;
  t.na_tokens = na;
  EXPECT_TRUE(t.is_missing(""));
  EXPECT_TRUE(t.is_missing("NA"));
  EXPECT_TRUE(t.is_missing("NaN"));
  EXPECT_FALSE(t.is_missing("n/a?"));
  EXPECT_FALSE(t.is_missing("0"));
}

}  // namespace
}  // namespace kiln
