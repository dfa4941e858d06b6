#pragma once

// Test-only loading of the shared CSV datasets for tests/features, which must not link kiln::data:
// a tiny splitter for these plain files (no quoting), and a deterministic train/test split.

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "support/test_support.h"

namespace kiln::features::testing {

/// A CSV whose first `numeric_columns` columns are numbers; the rest are kept as text.
struct Table {
  std::vector<std::string> header;
  torch::Tensor x;                             ///< N x numeric_columns float32
  std::vector<std::vector<std::string>> text;  ///< text[c][r]: trailing non-numeric columns
};

inline std::vector<std::string> split_line(const std::string& line) {
  std::vector<std::string> out;
  std::string cell;
  std::istringstream is(line);
  while (std::getline(is, cell, ',')) out.push_back(cell);
  if (!line.empty() && line.back() == ',') out.emplace_back();
  return out;
}

/// Loads datasets/<name>; fails the test (and returns an empty table) when unreadable.
inline Table load_table(const std::string& name, size_t numeric_columns) {
  Table t;
  const auto path = kiln::testing::shared_datasets_dir() / name;
  std::ifstream in(path);
  EXPECT_TRUE(in.good()) << "cannot open " << path;
  std::string line;
  if (!std::getline(in, line)) return t;
  t.header = split_line(line);
  t.text.resize(t.header.size() - numeric_columns);
  std::vector<float> values;
  int64_t rows = 0;
  while (std::getline(in, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty()) continue;
    auto cells = split_line(line);
    EXPECT_EQ(cells.size(), t.header.size()) << name << " row " << rows;
    for (size_t c = 0; c < numeric_columns; ++c) values.push_back(std::stof(cells[c]));
    for (size_t c = numeric_columns; c < cells.size(); ++c) {
      t.text[c - numeric_columns].push_back(cells[c]);
    }
    ++rows;
  }
  t.x =
      torch::tensor(values, torch::kFloat32).reshape({rows, static_cast<int64_t>(numeric_columns)});
  return t;
}

/// breast_cancer.csv: 569 x 30 features; text[0] is `diagnosis`.
inline Table breast_cancer() { return load_table("breast_cancer.csv", 30); }
/// diabetes.csv: 442 x 11 (10 features then the target, all numeric).
inline Table diabetes() { return load_table("diabetes.csv", 11); }

/// Deterministic split: every 4th row (0, 4, 8, ...) is test, the rest train.
struct Split {
  torch::Tensor train, test;
};
inline Split split(const torch::Tensor& x) {
  const int64_t n = x.size(0);
  torch::Tensor idx = torch::arange(n);
  torch::Tensor is_test = (idx % 4) == 0;
  return {x.index({~is_test}), x.index({is_test})};
}

/// Column means / population std in float64, for checks independent of the library.
inline torch::Tensor col_mean(const torch::Tensor& x) { return x.to(torch::kFloat64).mean(0); }
inline torch::Tensor col_std(const torch::Tensor& x) {
  return x.to(torch::kFloat64).std(0, /*unbiased=*/false);
}

/// Same dtype, shape and bytes: "bit-identical", NaN cells included (torch::equal says NaN != NaN).
inline bool bit_equal(const torch::Tensor& a, const torch::Tensor& b) {
  if (a.scalar_type() != b.scalar_type() || a.sizes() != b.sizes()) return false;
  torch::Tensor ca = a.contiguous().cpu(), cb = b.contiguous().cpu();
  return std::memcmp(ca.data_ptr(), cb.data_ptr(), ca.nbytes()) == 0;
}

/// Text round trip: dump and parse, as a bundle on disk would.
template <typename J>
J reparse(const J& j) {
  return J::parse(j.dump(2));
}

}  // namespace kiln::features::testing
