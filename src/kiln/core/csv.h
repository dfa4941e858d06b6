#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "kiln/core/expected.h"

namespace kiln {

/// The cell values read as missing unless a spec or flag says otherwise:
/// "", "NA", "N/A", "n/a", "NaN", "nan", "NULL", "null", "None", "#N/A", "?". Junk such as "n/a?"
/// is deliberately not missing: cleaning reports it as an invalid number instead.
const std::vector<std::string>& default_na_tokens();

/// How to read a CSV file.
///
///   auto table = read_csv("data.csv", CsvOptions().na_tokens({"", "NA"}).max_rows(1000));
struct CsvOptions {
  CsvOptions& delimiter(char d) {
    delimiter_ = d;
    return *this;
  }
  CsvOptions& na_tokens(std::vector<std::string> t) {
    na_tokens_ = std::move(t);
    return *this;
  }
  /// Stop after this many data records (0: all). Ragged records count as records.
  CsvOptions& max_rows(int64_t n) {
    max_rows_ = n;
    return *this;
  }

  char delimiter_ = ',';
  std::vector<std::string> na_tokens_ = default_na_tokens();
  int64_t max_rows_ = 0;
};

/// A record whose field count differs from the header's.
struct RaggedLine {
  int64_t line = 0;   ///< 1-based physical line where the record starts (the header is line 1)
  size_t fields = 0;  ///< how many fields it had
};

/// A CSV file as text cells, unparsed: typing and cleaning decide later what a cell means.
/// Quoted fields ("a,b", "say ""hi""", embedded newlines) are unquoted (RFC 4180); cells are
/// otherwise kept as written (not trimmed). Records whose field count differs from the header are
/// not in `rows`; they are listed in `ragged`. Line endings may be LF or CRLF; a UTF-8 BOM is
/// skipped. Blank lines: in a one-column file a blank line is a row with one empty (missing)
/// cell; otherwise a blank line between records is ragged with `fields == 0`. Blank lines after
/// the last record are not records. Plain value type.
struct CsvTable {
  std::string source;                          ///< the path it was read from
  std::vector<std::string> header;             ///< column names, trimmed
  std::vector<std::vector<std::string>> rows;  ///< well-formed records, header.size() cells each
  std::vector<int64_t> lines;                  ///< lines[i]: the line where rows[i] starts
  std::vector<RaggedLine> ragged;              ///< malformed records, in file order
  std::vector<std::string> na_tokens;          ///< tokens that mean missing for this table

  int64_t column_index(std::string_view name) const;  ///< -1 when absent
  bool is_missing(std::string_view cell) const;       ///< cell equals one of na_tokens
};

/// Reads a CSV with a header row. Errors (exit 2 at the CLI): missing or unreadable file, empty
/// file, no header, duplicate or empty column names, unterminated quote (names the line).
Expected<CsvTable> read_csv(const std::filesystem::path& path, const CsvOptions& options = {});

/// Strictly parses a whole cell as a finite-or-infinite double ("1e30" yes, "12abc" no, "" no).
/// Leading/trailing spaces are allowed. "inf"/"infinity" (any case, signed) read as ±infinity;
/// "nan" is rejected, because missing values are the NA tokens' business (CsvTable::is_missing),
/// not a number. Overflow ("1e400"), hex ("0x10") and a lone sign or dot are rejected;
/// underflow ("1e-400") reads as the nearest double. Locale-independent; thread-safe.
bool parse_double(std::string_view cell, double* out);

}  // namespace kiln
