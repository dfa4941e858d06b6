#include "kiln/core/csv.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <string>
#include <system_error>
#include <unordered_map>

#include "kiln/core/files.h"

namespace kiln {
namespace {

std::string_view trim(std::string_view s) {
  size_t b = 0, e = s.size();
  while (b < e && std::isspace(static_cast<unsigned char>(s[b]))) ++b;
  while (e > b && std::isspace(static_cast<unsigned char>(s[e - 1]))) --e;
  return s.substr(b, e - b);
}

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(a[i])) !=
        std::tolower(static_cast<unsigned char>(b[i])))
      return false;
  }
  return true;
}

/// One record as the tokenizer sees it.
struct Record {
  std::vector<std::string> fields;
  int64_t line = 0;    // physical line where it starts
  bool blank = false;  // the record was an empty line
};

/// RFC 4180 tokenizer over the whole file text. Not thread-safe (it is a cursor).
class Tokenizer {
 public:
  Tokenizer(std::string_view text, char delimiter, const std::string& source)
      : text_(text), delim_(delimiter), source_(source) {}

  bool at_end() const { return pos_ >= text_.size(); }

  /// Reads the next record. Precondition: !at_end().
  Status next(Record* rec) {
    rec->fields.clear();
    rec->line = line_;
    rec->blank = false;
    std::string field;
    const size_t n = text_.size();
    size_t record_begin = pos_;
    while (true) {
      // At the start of a field.
      field.clear();
      if (pos_ < n && text_[pos_] == '"') {
        const int64_t quote_line = line_;
        const size_t field_index = rec->fields.size() + 1;
        ++pos_;
        while (true) {
          if (pos_ >= n) {
            std::string where = quote_line == rec->line
                                    ? std::string()
                                    : "; the record starts on line " + std::to_string(rec->line);
            return Status::InvalidArgument(
                source_ + " line " + std::to_string(quote_line) + ": unterminated quoted field " +
                std::to_string(field_index) + " (no closing quote before the end of the file" +
                where + ")");
          }
          const char c = text_[pos_];
          if (c == '"') {
            if (pos_ + 1 < n && text_[pos_ + 1] == '"') {
              field.push_back('"');
              pos_ += 2;
              continue;
            }
            ++pos_;
            break;
          }
          if (c == '\n') ++line_;
          field.push_back(c);
          ++pos_;
        }
        // Lenient like Python's csv: text after the closing quote is appended up to the delimiter.
      }
      // Unquoted part (or the tail after a closing quote).
      while (pos_ < n) {
        const char c = text_[pos_];
        if (c == delim_ || c == '\n') break;
        if (c == '\r' && (pos_ + 1 == n || text_[pos_ + 1] == '\n')) break;
        field.push_back(c);
        ++pos_;
      }
      rec->fields.push_back(field);
      if (pos_ >= n) break;
      const char c = text_[pos_];
      if (c == delim_) {
        ++pos_;
        continue;
      }
      // End of line: '\n', "\r\n" or a final '\r'.
      if (c == '\r') ++pos_;
      if (pos_ < n && text_[pos_] == '\n') ++pos_;
      ++line_;
      break;
    }
    if (rec->fields.size() == 1 && rec->fields[0].empty()) {
      // Blank only if nothing (not even a pair of quotes) was on the line.
      std::string_view raw = text_.substr(record_begin, pos_ - record_begin);
      while (!raw.empty() && (raw.back() == '\n' || raw.back() == '\r')) raw.remove_suffix(1);
      rec->blank = raw.empty();
    }
    return Status::Ok();
  }

  /// True when only line terminators remain.
  bool only_blank_lines_remain() const {
    for (size_t i = pos_; i < text_.size(); ++i)
      if (text_[i] != '\n' && text_[i] != '\r') return false;
    return true;
  }

 private:
  std::string_view text_;
  char delim_;
  const std::string& source_;
  size_t pos_ = 0;
  int64_t line_ = 1;
};

}  // namespace

const std::vector<std::string>& default_na_tokens() {
  static const std::vector<std::string> kTokens = {"",     "NA",   "N/A",  "n/a",  "NaN", "nan",
                                                   "NULL", "null", "None", "#N/A", "?"};
  return kTokens;
}

int64_t CsvTable::column_index(std::string_view name) const {
  for (size_t i = 0; i < header.size(); ++i)
    if (header[i] == name) return static_cast<int64_t>(i);
  return -1;
}

bool CsvTable::is_missing(std::string_view cell) const {
  for (const auto& t : na_tokens)
    if (cell == t) return true;
  return false;
}

bool parse_double(std::string_view cell, double* out) {
  std::string_view s = trim(cell);
  if (s.empty()) return false;
  bool negative = false;
  std::string_view body = s;
  if (body[0] == '+' || body[0] == '-') {
    negative = body[0] == '-';
    body.remove_prefix(1);
    if (body.empty() || body[0] == '+' || body[0] == '-') return false;
  }
  // Infinity is a value ("inf", "infinity", any case, signed). NaN is not: a NaN cell means
  // missing, and missing is decided by the table's NA tokens, so parse_double rejects it.
  if (iequals(body, "inf") || iequals(body, "infinity")) {
    *out = negative ? -std::numeric_limits<double>::infinity()
                    : std::numeric_limits<double>::infinity();
    return true;
  }
  if (!(std::isdigit(static_cast<unsigned char>(body[0])) || body[0] == '.')) return false;
  double v = 0;
  auto [ptr, ec] =
      std::from_chars(body.data(), body.data() + body.size(), v, std::chars_format::general);
  if (ptr != body.data() + body.size()) return false;
  if (ec == std::errc::result_out_of_range) {
    // from_chars leaves v unset on range errors; strtod tells overflow from underflow.
    // Overflow ("1e400") is rejected; underflow ("1e-400") reads as the nearest value.
    v = std::strtod(std::string(body).c_str(), nullptr);
    if (std::isinf(v)) return false;
  } else if (ec != std::errc()) {
    return false;
  }
  *out = negative ? -v : v;
  return true;
}

Expected<CsvTable> read_csv(const std::filesystem::path& path, const CsvOptions& options) {
  const std::string source = path.string();
  KILN_ASSIGN_OR_RETURN(std::string text, read_file(path));
  std::string_view view(text);
  if (view.size() >= 3 && view.substr(0, 3) == "\xEF\xBB\xBF") view.remove_prefix(3);  // BOM
  if (view.empty()) return Status::InvalidArgument(source + ": empty file, expected a header row");
  if (options.delimiter_ == '"' || options.delimiter_ == '\n' || options.delimiter_ == '\r')
    return Status::InvalidArgument(source + ": invalid CSV delimiter");

  CsvTable table;
  table.source = source;
  table.na_tokens = options.na_tokens_;

  Tokenizer tok(view, options.delimiter_, source);
  Record rec;
  KILN_RETURN_IF_ERROR(tok.next(&rec));
  if (rec.blank) return Status::InvalidArgument(source + " line 1: empty header row");
  std::unordered_map<std::string, size_t> seen;
  for (size_t i = 0; i < rec.fields.size(); ++i) {
    std::string name(trim(rec.fields[i]));
    if (name.empty()) {
      return Status::InvalidArgument(source + " line 1: column " + std::to_string(i + 1) +
                                     " has an empty name");
    }
    auto [it, inserted] = seen.emplace(name, i);
    if (!inserted) {
      return Status::InvalidArgument(source + " line 1: duplicate column name \"" + name +
                                     "\" (columns " + std::to_string(it->second + 1) + " and " +
                                     std::to_string(i + 1) + ")");
    }
    table.header.push_back(std::move(name));
  }
  const size_t width = table.header.size();

  int64_t records = 0;
  while (!tok.at_end()) {
    if (options.max_rows_ > 0 && records >= options.max_rows_) break;
    // Blank lines at the very end of the file are formatting, not records.
    if (tok.only_blank_lines_remain()) break;
    KILN_RETURN_IF_ERROR(tok.next(&rec));
    ++records;
    if (rec.blank && width != 1) {
      table.ragged.push_back({rec.line, 0});
      continue;
    }
    if (rec.fields.size() != width) {
      table.ragged.push_back({rec.line, rec.fields.size()});
      continue;
    }
    table.rows.push_back(std::move(rec.fields));
    table.lines.push_back(rec.line);
    rec.fields = {};
  }
  return table;
}

}  // namespace kiln
