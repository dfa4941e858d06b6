// The exported model.pt and weights.pt load in Python (Debian's python3-torch) and give Kiln's
// outputs. Skipped, with the reason, when /usr/bin/python3 cannot import torch.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <torch/torch.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <limits>
#include <string>

#include "export_helpers.h"
#include "kiln/features/imputer.h"
#include "kiln/features/pipeline.h"
#include "kiln/features/scalers.h"
#include "kiln/model/bundle.h"
#include "kiln/model/export.h"
#include "support/test_support.h"

namespace kiln::model {
namespace {

using testing::build_net;
using testing::max_abs_diff;

constexpr const char* kPython = "/usr/bin/python3";

/// Runs a command, returning its exit code and combined output.
int run_command(const std::string& cmd, std::string* output) {
  output->clear();
  FILE* pipe = ::popen((cmd + " 2>&1").c_str(), "r");
  if (!pipe) return -1;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), pipe)) > 0) output->append(buf, n);
  int status = ::pclose(pipe);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

bool python_torch_available(std::string* why) {
  std::string out;
  if (run_command(std::string(kPython) + " -c 'import torch, numpy'", &out) == 0) return true;
  *why = std::string(kPython) + " cannot import torch and numpy (install python3-torch): " + out;
  return false;
}

/// Float32 tensor as raw little-endian bytes; the shape goes on the Python command line.
void write_raw(const fs::path& path, const torch::Tensor& t) {
  torch::Tensor c = t.to(torch::kFloat32).contiguous();
  std::ofstream(path, std::ios::binary)
      .write(static_cast<const char*>(c.data_ptr()), static_cast<std::streamsize>(c.nbytes()));
}

torch::Tensor read_raw(const fs::path& path, std::vector<int64_t> shape) {
  std::string bytes = kiln::testing::read_text(path);
  torch::Tensor t = torch::empty(shape, torch::kFloat32);
  EXPECT_EQ(bytes.size(), t.nbytes()) << path;
  if (bytes.size() == t.nbytes()) std::memcpy(t.data_ptr(), bytes.data(), bytes.size());
  return t;
}

std::string shape_tuple(const std::vector<int64_t>& shape) {
  std::string s = "(";
  for (int64_t d : shape) s += std::to_string(d) + ",";
  return s + ")";
}

/// Loads `model` in Python, runs it on the raw input, writes the output as raw float32.
void python_forward(const fs::path& model, const fs::path& in, const fs::path& out,
                    const std::vector<int64_t>& shape) {
  const std::string script =
      "import sys, numpy as np, torch\n"
      "m = torch.jit.load(sys.argv[1]); m.eval()\n"
      "x = torch.from_numpy(np.frombuffer(open(sys.argv[2], 'rb').read(), dtype='<f4')"
      ".reshape(" +
      shape_tuple(shape) +
      ").copy())\n"
      "with torch.no_grad(): y = m(x)\n"
      "open(sys.argv[3], 'wb').write(y.to(torch.float32).contiguous().numpy().tobytes())\n"
      "print(tuple(y.shape))\n";
  const fs::path script_path = in.parent_path() / "run.py";
  kiln::testing::write_text(script_path, script);
  std::string output;
  int rc = run_command(std::string(kPython) + " " + script_path.string() + " " + model.string() +
                           " " + in.string() + " " + out.string(),
                       &output);
  EXPECT_EQ(rc, 0) << output;
}

TEST(PythonExport, ImageBundleModelRunsInPython) {
  std::string why;
  if (!python_torch_available(&why)) GTEST_SKIP() << why;
  auto net = build_net(testing::kPeerCnn, {1, 28, 28}, 10);
  ASSERT_TRUE(net);
  const Json pre = testing::image_normalize({0.2860}, {0.3530});
  auto module = export_torchscript(*net, pre);
  ASSERT_TRUE(module.ok()) << module.status();
  kiln::testing::TempDir tmp;
  Json manifest = {{"task", "classification"},
                   {"preprocessing", pre},
                   {"model", net->spec().to_json()},
                   {"input_shape", {1, 28, 28}},
                   {"outputs", 10}};
  ASSERT_TRUE(write_bundle(tmp / "b", manifest, network_state(*net), *module).ok());

  torch::Tensor raw = torch::randint(0, 256, {6, 1, 28, 28}).to(torch::kFloat32);
  write_raw(tmp / "x.bin", raw);
  python_forward(tmp / "b" / "model.pt", tmp / "x.bin", tmp / "y.bin", {6, 1, 28, 28});
  torch::Tensor from_python = read_raw(tmp / "y.bin", {6, 10});
  torch::NoGradGuard no_grad;
  torch::Tensor kiln = module->forward({raw}).toTensor();
  EXPECT_LE(max_abs_diff(from_python, kiln), 1e-4);

  // weights.pt is a plain name -> tensor dict for torch.load.
  std::string out;
  const std::string check = std::string(kPython) + " -c \"import torch; d = torch.load('" +
                            (tmp / "b" / "weights.pt").string() +
                            "'); print(sorted(d)[:2], tuple(d['layers.0.weight'].shape))\"";
  ASSERT_EQ(run_command(check, &out), 0) << out;
  EXPECT_NE(out.find("(32, 1, 3, 3)"), std::string::npos) << out;
}

TEST(PythonExport, TableModelWithMissingValuesRunsInPython) {
  std::string why;
  if (!python_torch_available(&why)) GTEST_SKIP() << why;
  torch::Tensor x = testing::breast_cancer_features();
  torch::manual_seed(11);
  x = x.masked_fill(torch::rand(x.sizes()) < 0.05, std::numeric_limits<float>::quiet_NaN());
  features::Pipeline pipe;
  pipe.add(std::make_unique<features::Imputer>()).add(std::make_unique<features::StandardScaler>());
  ASSERT_TRUE(pipe.fit(x.slice(0, 0, 400)).ok());
  auto net = build_net(R"({"layers": [{"type": "linear", "out": 32}, {"type": "silu"},
      {"type": "batchnorm1d"}, {"type": "linear", "out": "outputs"}]})",
                       {30}, 2);
  ASSERT_TRUE(net);
  auto module = export_torchscript(*net, pipe.to_json());
  ASSERT_TRUE(module.ok()) << module.status();
  kiln::testing::TempDir tmp;
  module->save((tmp / "model.pt").string());

  torch::Tensor test = x.slice(0, 400).contiguous();
  const int64_t n = test.size(0);
  write_raw(tmp / "x.bin", test);
  python_forward(tmp / "model.pt", tmp / "x.bin", tmp / "y.bin", {n, 30});
  torch::Tensor from_python = read_raw(tmp / "y.bin", {n, 2});
  torch::NoGradGuard no_grad;
  torch::Tensor eager = net->forward(*pipe.apply(test));
  EXPECT_FALSE(torch::isnan(from_python).any().item<bool>());
  EXPECT_LE(max_abs_diff(from_python, eager), 1e-4);
}

}  // namespace
}  // namespace kiln::model
