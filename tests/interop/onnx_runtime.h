#pragma once

// ONNX Runtime (onnxruntime-node, tools/onnxruntime) and the Python onnx checker, driven from
// tests: a graph `kiln export --format onnx` wrote is run on float32 rows and checked as a third
// party would. Missing tools are test failures naming the install step, not skips.

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "support/test_support.h"

namespace kiln::interop::testing {

namespace fs = std::filesystem;

/// onnx.checker.check_model(full_check=True) in Debian's python3-onnx; "" when it passes, else
/// what it printed.
inline std::string python_onnx_check(const fs::path& model) {
  auto r = kiln::testing::run_program(
      {"/usr/bin/python3", "-c",
       "import sys, onnx; onnx.checker.check_model(onnx.load(sys.argv[1]), full_check=True)",
       model.string()});
  return r.exit_code == 0 ? "" : "exit " + std::to_string(r.exit_code) + ": " + r.out + r.err;
}

/// The model's first output for `x` (N x per-sample shape, float32) from ONNX Runtime on one
/// thread; undefined (and a test failure) when it does not run.
inline torch::Tensor run_onnxruntime(const fs::path& model, const torch::Tensor& x,
                                     const fs::path& work, int64_t batch = 256) {
  fs::create_directories(work);
  const fs::path in = work / "x.f32", out = work / "y.f32";
  torch::Tensor c = x.to(torch::kFloat32).contiguous();
  std::ofstream(in, std::ios::binary)
      .write(static_cast<const char*>(c.data_ptr()), static_cast<std::streamsize>(c.nbytes()));
  std::string shape;
  for (int64_t d = 1; d < c.dim(); ++d) shape += (d > 1 ? "," : "") + std::to_string(c.size(d));
  auto r = kiln::testing::run_program(
      {"node", (kiln::testing::source_dir() / "tools/onnxruntime/run.js").string(), model.string(),
       "--input", in.string(), "--shape", shape, "--output", out.string(), "--batch",
       std::to_string(batch)});
  EXPECT_EQ(r.exit_code, 0) << "ONNX Runtime (scripts/install-deps.sh installs it): " << r.err;
  if (r.exit_code != 0) return {};
  const std::string bytes = kiln::testing::read_text(out);
  const auto rows = c.size(0);
  if (rows == 0 || bytes.size() % (static_cast<size_t>(rows) * sizeof(float)) != 0) {
    ADD_FAILURE() << "ONNX Runtime wrote " << bytes.size() << " bytes for " << rows << " rows";
    return {};
  }
  torch::Tensor y = torch::empty({rows, static_cast<int64_t>(bytes.size() / sizeof(float)) / rows});
  std::memcpy(y.data_ptr(), bytes.data(), bytes.size());
  return y;
}

}  // namespace kiln::interop::testing
