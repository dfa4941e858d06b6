// `kiln devices`: where Kiln can compute on this machine, and what `--device auto` picks.
#include <torch/torch.h>
#include <torch/version.h>

#include <cstdio>
#include <iostream>
#include <thread>

#include "kiln/cli/commands.h"
#include "kiln/cli/flags.h"
#include "kiln/core/json.h"
#include "kiln/core/threads.h"
#include "kiln/model/device.h"
#include "kiln/monitor/gpu_stats.h"

namespace kiln::cli {
namespace {

std::string gib(int64_t bytes) {
  char text[32];
  std::snprintf(text, sizeof text, "%.1f GiB", static_cast<double>(bytes) / (1 << 30));
  return text;
}

int run_devices(bool json) {
  Json report;
  report["libtorch"] = TORCH_VERSION;
  report["libtorch_cuda"] = at::hasCUDA();
  report["cpu"] = {{"cores", std::max(1u, std::thread::hardware_concurrency())},
                   {"avx512_bf16", cpu_supports_bf16()}};
  Expected<torch::Device> automatic = model::resolve_device("auto", "auto");
  report["auto"] = automatic.ok() ? model::device_name(*automatic) : "cpu";
  Expected<std::vector<monitor::GpuStats>> gpus = monitor::read_gpu_stats();
  Json cuda = Json::array();
  const int count = model::cuda_device_count();
  for (int i = 0; i < count; ++i) {
    Json d = {{"device", "cuda:" + std::to_string(i)}};
    // NVML numbers the cards as CUDA does unless CUDA_VISIBLE_DEVICES remaps them.
    if (gpus.ok() && i < static_cast<int>(gpus->size())) {
      const monitor::GpuStats& g = (*gpus)[static_cast<size_t>(i)];
      d["name"] = g.name;
      d["memory_total_bytes"] = g.memory_total_bytes;
      d["memory_used_bytes"] = g.memory_used_bytes;
      d["utilization"] = g.utilization;
    }
    cuda.push_back(d);
  }
  report["cuda"] = cuda;
  report["nvml"] = gpus.ok() ? std::to_string(gpus->size()) + " GPU(s)" : gpus.status().message();
  if (json) {
    std::cout << report.dump(2) << "\n";
    return 0;
  }
  std::cout << "cpu     " << report["cpu"]["cores"].get<unsigned>() << " cores"
            << (cpu_supports_bf16() ? ", avx512_bf16 (bf16 training and serving)" : "")
            << "; LibTorch " << TORCH_VERSION << (at::hasCUDA() ? " with CUDA" : " without CUDA")
            << "\n";
  for (const Json& d : cuda) {
    std::cout << d["device"].get<std::string>() << "  " << d.value("name", std::string("GPU"));
    if (d.contains("memory_total_bytes") && d["memory_total_bytes"].get<int64_t>() >= 0)
      std::cout << ", " << gib(d["memory_total_bytes"].get<int64_t>()) << " ("
                << gib(d["memory_used_bytes"].get<int64_t>()) << " in use)";
    std::cout << "\n";
  }
  if (cuda.empty() && gpus.ok())
    std::cout << "NVML sees " << gpus->size()
              << " GPU(s), but this LibTorch cannot use them (built without CUDA)\n";
  std::cout << "auto -> " << report["auto"].get<std::string>() << "\n";
  return 0;
}

}  // namespace

void register_devices_command(CLI::App& app, int* exit_code) {
  auto json = std::make_shared<bool>(false);
  CLI::App* devices = app.add_subcommand("devices", kDevicesHelp);
  add_flag(*devices, Flag::kJson, json.get());
  devices->callback([json, exit_code] { *exit_code = run_devices(*json); });
}

}  // namespace kiln::cli
