#include "kiln/monitor/gpu_stats.h"

#include <dlfcn.h>

#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>

#include "kiln/monitor/metrics.h"

namespace kiln::monitor {
namespace {

// The slice of NVML's C API (nvml.h, stable since the _v2 entry points of driver 325) used here.
using nvmlReturn_t = int;  // 0: NVML_SUCCESS
using nvmlDevice_t = struct nvmlDevice_st*;
struct nvmlUtilization_t {
  unsigned int gpu;
  unsigned int memory;
};
struct nvmlMemory_t {
  unsigned long long total;
  unsigned long long free;
  unsigned long long used;
};
constexpr int kNvmlTemperatureGpu = 0;  // NVML_TEMPERATURE_GPU
constexpr unsigned int kNameLength = 96;

struct NvmlApi {
  nvmlReturn_t (*init)() = nullptr;
  const char* (*error_string)(nvmlReturn_t) = nullptr;
  nvmlReturn_t (*device_count)(unsigned int*) = nullptr;
  nvmlReturn_t (*handle_by_index)(unsigned int, nvmlDevice_t*) = nullptr;
  nvmlReturn_t (*name)(nvmlDevice_t, char*, unsigned int) = nullptr;
  nvmlReturn_t (*utilization)(nvmlDevice_t, nvmlUtilization_t*) = nullptr;
  nvmlReturn_t (*memory)(nvmlDevice_t, nvmlMemory_t*) = nullptr;
  nvmlReturn_t (*temperature)(nvmlDevice_t, int, unsigned int*) = nullptr;
  nvmlReturn_t (*power)(nvmlDevice_t, unsigned int*) = nullptr;
  std::string unavailable;  // why NVML cannot be used; empty when it can

  std::string error(nvmlReturn_t code) const {
    const char* text = error_string ? error_string(code) : nullptr;
    return text ? std::string(text) : "NVML error " + std::to_string(code);
  }
};

template <typename Fn>
bool bind(void* library, const char* symbol, Fn* fn) {
  *fn = reinterpret_cast<Fn>(dlsym(library, symbol));
  return *fn != nullptr;
}

// The API of `path`, loaded and initialised on first use, kept for the life of the process like
// the driver's own clients keep it.
const NvmlApi& nvml(const std::string& path) {
  static std::mutex mu;
  static std::map<std::string, std::unique_ptr<NvmlApi>> loaded;
  std::lock_guard<std::mutex> lock(mu);
  std::unique_ptr<NvmlApi>& slot = loaded[path];
  if (slot) return *slot;
  slot = std::make_unique<NvmlApi>();
  NvmlApi& api = *slot;
  {
    void* library = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!library) {
      const char* why = dlerror();
      api.unavailable = "NVML (" + path + ") is not installed: " + (why ? why : "dlopen failed");
      return api;
    }
    bind(library, "nvmlErrorString", &api.error_string);
    if (!bind(library, "nvmlInit_v2", &api.init) ||
        !bind(library, "nvmlDeviceGetCount_v2", &api.device_count) ||
        !bind(library, "nvmlDeviceGetHandleByIndex_v2", &api.handle_by_index) ||
        !bind(library, "nvmlDeviceGetName", &api.name) ||
        !bind(library, "nvmlDeviceGetUtilizationRates", &api.utilization) ||
        !bind(library, "nvmlDeviceGetMemoryInfo", &api.memory) ||
        !bind(library, "nvmlDeviceGetTemperature", &api.temperature) ||
        !bind(library, "nvmlDeviceGetPowerUsage", &api.power)) {
      api.unavailable = path + " lacks an NVML function Kiln reads (driver too old?)";
      return api;
    }
    if (nvmlReturn_t r = api.init(); r != 0)
      api.unavailable = "NVML did not initialise: " + api.error(r);
  }
  return api;
}

}  // namespace

std::string nvml_library() {
  const char* path = std::getenv("KILN_NVML_LIBRARY");
  return path && *path ? path : "libnvidia-ml.so.1";
}

Expected<std::vector<GpuStats>> read_gpu_stats(const std::string& library) {
  const NvmlApi& api = nvml(library);
  if (!api.unavailable.empty()) return Status::Unavailable(api.unavailable);
  unsigned int count = 0;
  if (nvmlReturn_t r = api.device_count(&count); r != 0)
    return Status::Unavailable("NVML cannot count the GPUs: " + api.error(r));
  if (count == 0) return Status::Unavailable("NVML lists no GPU");
  std::vector<GpuStats> gpus;
  for (unsigned int i = 0; i < count; ++i) {
    nvmlDevice_t device = nullptr;
    if (nvmlReturn_t r = api.handle_by_index(i, &device); r != 0)
      return Status::Unavailable("NVML GPU " + std::to_string(i) + ": " + api.error(r));
    GpuStats g;
    g.index = static_cast<int>(i);
    char name[kNameLength] = {};
    if (api.name(device, name, kNameLength) == 0) g.name = name;
    nvmlUtilization_t utilization{};
    if (api.utilization(device, &utilization) == 0) {
      g.utilization = utilization.gpu / 100.0;
      g.memory_utilization = utilization.memory / 100.0;
    }
    nvmlMemory_t memory{};
    if (api.memory(device, &memory) == 0) {
      g.memory_used_bytes = static_cast<int64_t>(memory.used);
      g.memory_total_bytes = static_cast<int64_t>(memory.total);
    }
    unsigned int celsius = 0;
    if (api.temperature(device, kNvmlTemperatureGpu, &celsius) == 0)
      g.temperature_celsius = celsius;
    unsigned int milliwatts = 0;
    if (api.power(device, &milliwatts) == 0) g.power_watts = milliwatts / 1000.0;
    gpus.push_back(std::move(g));
  }
  return gpus;
}

void register_gpu_metrics(MetricsRegistry& registry, const std::string& library) {
  registry.add_collector([library](std::string* out) {
    Expected<std::vector<GpuStats>> gpus = read_gpu_stats(library);
    if (!gpus.ok()) return;
    auto family = [&](const char* name, const char* help, auto value) {
      bool any = false;
      for (const GpuStats& g : *gpus) {
        const double v = value(g);
        if (v < 0) continue;  // not supported on this card
        if (!any)
          *out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " gauge\n";
        any = true;
        *out += std::string(name) + "{gpu=\"" + std::to_string(g.index) + "\",name=\"" +
                escape_label_value(g.name) + "\"} " + format_value(v) + "\n";
      }
    };
    family("kiln_gpu_utilization_ratio",
           "Share of the last sample period a kernel ran on the GPU (NVML).",
           [](const GpuStats& g) { return g.utilization; });
    family("kiln_gpu_memory_utilization_ratio",
           "Share of the last sample period GPU memory was read or written (NVML).",
           [](const GpuStats& g) { return g.memory_utilization; });
    family("kiln_gpu_memory_used_bytes", "GPU memory in use, all processes (NVML).",
           [](const GpuStats& g) { return static_cast<double>(g.memory_used_bytes); });
    family("kiln_gpu_memory_total_bytes", "GPU memory installed (NVML).",
           [](const GpuStats& g) { return static_cast<double>(g.memory_total_bytes); });
    family("kiln_gpu_temperature_celsius", "GPU die temperature (NVML).",
           [](const GpuStats& g) { return g.temperature_celsius; });
    family("kiln_gpu_power_watts", "GPU board power draw (NVML).",
           [](const GpuStats& g) { return g.power_watts; });
  });
}

}  // namespace kiln::monitor
