// Offline batched forward throughput of a bundle's model.pt through the server's own runner
// (TorchScript, InferenceMode): the ceiling `kiln serve` saturation is compared with.
// Usage: serve_forward_bench BUNDLE_DIR [--batch 64] [--threads 1] [--seconds 3]
#include <torch/torch.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>

#include "kiln/model/bundle.h"
#include "kiln/serve/runner.h"

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s BUNDLE_DIR [--batch N] [--threads N] [--seconds S]\n", argv[0]);
    return 2;
  }
  int64_t batch = 64;
  int threads = 1;
  double seconds = 3;
  for (int i = 2; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--batch")) batch = std::stoll(argv[i + 1]);
    if (!std::strcmp(argv[i], "--threads")) threads = std::stoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--seconds")) seconds = std::stod(argv[i + 1]);
  }
  torch::set_num_threads(threads);
  auto bundle = kiln::model::read_bundle(argv[1]);
  if (!bundle.ok()) {
    std::fprintf(stderr, "%s\n", bundle.status().to_string().c_str());
    return 2;
  }
  auto module = kiln::model::load_bundle_module(*bundle);
  if (!module.ok()) {
    std::fprintf(stderr, "%s\n", module.status().to_string().c_str());
    return 2;
  }
  kiln::serve::TorchScriptRunner runner(*module);
  std::vector<int64_t> shape{batch};
  for (int64_t d : bundle->raw_input_shape()) shape.push_back(d);
  torch::Tensor x = torch::rand(shape) * 255;
  for (int i = 0; i < 20; ++i) (void)runner.run(x);
  using Clock = std::chrono::steady_clock;
  const auto t0 = Clock::now();
  int64_t n = 0;
  while (std::chrono::duration<double>(Clock::now() - t0).count() < seconds) {
    auto out = runner.run(x);
    if (!out.ok()) return 1;
    n += batch;
  }
  const double s = std::chrono::duration<double>(Clock::now() - t0).count();
  std::printf("offline forward: batch %lld, %d thread(s): %.0f samples/s\n",
              static_cast<long long>(batch), threads, n / s);
  return 0;
}
