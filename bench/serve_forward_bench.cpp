// Offline batched forward throughput of a bundle's model.pt through the server's own runner
// (TorchScript, InferenceMode), prepared as `kiln serve` prepares it (XNNPACK prepacked
// operators; --no-prepack: as saved): the ceiling `kiln serve` saturation is compared with.
// --precision bf16 runs the bundle's bf16 module (model_bf16.pt) as `kiln serve --precision` does.
// --device cuda runs it on the GPU as `kiln serve --device cuda` does: each forward takes a CPU
// batch there and brings the outputs back (so it includes both copies and the sync).
// On a CPU each batch runs in the forwards `kiln serve --max-batch BATCH` would choose
// (choose_forward_chunking); --whole: one forward per batch.
// Usage: serve_forward_bench BUNDLE_DIR [--batch 64] [--threads 1] [--seconds 3] [--no-prepack]
//                            [--precision fp32|bf16] [--device cpu|cuda|cuda:N] [--whole]
#include <torch/torch.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>

#include "kiln/core/threads.h"
#include "kiln/model/bundle.h"
#include "kiln/model/device.h"
#include "kiln/model/forward.h"
#include "kiln/serve/runner.h"

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s BUNDLE_DIR [--batch N] [--threads N] [--seconds S]\n", argv[0]);
    return 2;
  }
  int64_t batch = 64;
  int threads = 1;
  double seconds = 3;
  bool prepack = true;
  bool chunk = true;
  std::string precision = "fp32";
  std::string device_name = "cpu";
  for (int i = 2; i < argc; ++i) {
    const bool has_value = i + 1 < argc;
    if (!std::strcmp(argv[i], "--no-prepack")) prepack = false;
    if (!std::strcmp(argv[i], "--whole")) chunk = false;
    if (!std::strcmp(argv[i], "--batch") && has_value) batch = std::stoll(argv[++i]);
    if (!std::strcmp(argv[i], "--threads") && has_value) threads = std::stoi(argv[++i]);
    if (!std::strcmp(argv[i], "--seconds") && has_value) seconds = std::stod(argv[++i]);
    if (!std::strcmp(argv[i], "--precision") && has_value) precision = argv[++i];
    if (!std::strcmp(argv[i], "--device") && has_value) device_name = argv[++i];
  }
  auto device = kiln::model::resolve_device(device_name, "--device");
  if (!device.ok()) {
    std::fprintf(stderr, "%s\n", device.status().to_string().c_str());
    return 2;
  }
  kiln::configure_allocator_for_tensors();           // as kiln-engine does at start-up
  (void)kiln::model::use_onednn_quantized_engine();  // likewise (int8 bundles)
  torch::set_num_threads(threads);
  auto bundle = kiln::model::read_bundle(argv[1]);
  if (!bundle.ok()) {
    std::fprintf(stderr, "%s\n", bundle.status().to_string().c_str());
    return 2;
  }
  auto module = kiln::model::load_bundle_module(*bundle, precision);
  if (!module.ok()) {
    std::fprintf(stderr, "%s\n", module.status().to_string().c_str());
    return 2;
  }
  std::vector<int64_t> shape{batch};
  for (int64_t d : bundle->raw_input_shape()) shape.push_back(d);
  torch::Tensor x = torch::rand(shape) * 255;
  kiln::serve::ServingModule prepared{*module, false, "--no-prepack"};
  if (precision != "fp32") prepared.note = precision;
  if (prepack && precision == "fp32" && device->is_cpu())
    prepared = kiln::serve::prepack_for_cpu_serving(*module, x);
  if (kiln::Status placed = kiln::model::place_module(prepared.module, *device, argv[1]);
      !placed.ok()) {
    std::fprintf(stderr, "%s\n", placed.to_string().c_str());
    return 2;
  }
  // Batches run in forwards of the size the server would choose for this batch (--whole: one
  // forward per batch, as before the server chose).
  kiln::model::ForwardChunking chunking;
  if (chunk && device->is_cpu())
    chunking = kiln::model::choose_forward_chunking(prepared.module, x);
  kiln::serve::TorchScriptRunner runner(prepared.module, chunking.rows_per_forward);
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
  const std::string forwards =
      chunking.rows_per_forward > 0
          ? ", forwards of " + std::to_string(chunking.rows_per_forward) + " rows: chosen at " +
                std::to_string(static_cast<int64_t>(chunking.chunked_samples_per_s)) +
                " samples/s vs " +
                std::to_string(static_cast<int64_t>(chunking.whole_samples_per_s)) + " whole"
          : std::string();
  std::printf("offline forward (%s%s) on %s: batch %lld, %d thread(s): %.0f samples/s\n",
              prepared.prepacked ? "XNNPACK prepacked" : prepared.note.c_str(), forwards.c_str(),
              kiln::model::device_name(*device).c_str(), static_cast<long long>(batch), threads,
              n / s);
  return 0;
}
