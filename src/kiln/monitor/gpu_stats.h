#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "kiln/core/expected.h"

namespace kiln::monitor {

class MetricsRegistry;

/// One GPU as the NVIDIA driver's NVML reports it at the moment of reading. A reading NVML does
/// not support on a card is negative.
struct GpuStats {
  int index = 0;                   ///< NVML's device index (CUDA's order unless remapped)
  std::string name;                ///< e.g. "NVIDIA H100 80GB HBM3"
  double utilization = -1;         ///< share of the last sample period a kernel ran, 0..1
  double memory_utilization = -1;  ///< share of it device memory was read or written, 0..1
  int64_t memory_used_bytes = -1;
  int64_t memory_total_bytes = -1;
  double temperature_celsius = -1;
  double power_watts = -1;
};

/// The NVML library Kiln loads: KILN_NVML_LIBRARY when set, else libnvidia-ml.so.1 (the
/// driver's, found by the dynamic loader).
std::string nvml_library();

/// Reads every GPU through NVML (`library`, part of the driver), loaded at run time with dlopen:
/// Kiln has no build dependency on it. Unavailable (saying why) when the library is absent, lacks
/// a function, fails to initialise, or lists no GPU. Thread-safe: each library is loaded and
/// initialised once per process, and kept.
Expected<std::vector<GpuStats>> read_gpu_stats(const std::string& library = nvml_library());

/// Adds a collector exposing, per GPU, kiln_gpu_utilization_ratio,
/// kiln_gpu_memory_utilization_ratio, kiln_gpu_memory_used_bytes, kiln_gpu_memory_total_bytes,
/// kiln_gpu_temperature_celsius and kiln_gpu_power_watts, labelled gpu="INDEX" and name="...",
/// read at each scrape. Where NVML is not there, the families are absent (not zero).
void register_gpu_metrics(MetricsRegistry& registry, const std::string& library = nvml_library());

}  // namespace kiln::monitor
