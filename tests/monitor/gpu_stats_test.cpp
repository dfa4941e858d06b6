// GPU readings through NVML, loaded at run time: absent without the driver's library (no metric
// families at all, not zeros), and read from a stand-in library with the driver's C ABI
// (fake_nvml.cpp) on machines without a GPU. tests/gpu reads the real NVML on the GPU machine.
#include "kiln/monitor/gpu_stats.h"

#include <gtest/gtest.h>

#include "kiln/monitor/metrics.h"

namespace kiln::monitor {
namespace {

TEST(GpuStatsTest, WithoutNvmlThereAreNoGpuMetrics) {
  const std::string missing = "/nonexistent/libnvidia-ml.so.1";
  Expected<std::vector<GpuStats>> gpus = read_gpu_stats(missing);
  ASSERT_FALSE(gpus.ok());
  EXPECT_EQ(gpus.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(gpus.status().message().find("NVML (" + missing + ") is not installed"),
            std::string::npos)
      << gpus.status().message();
  MetricsRegistry registry;
  register_gpu_metrics(registry, missing);
  EXPECT_EQ(registry.expose().find("kiln_gpu"), std::string::npos) << registry.expose();
}

TEST(GpuStatsTest, ReadsEveryGpuThroughTheDriversAbi) {
  Expected<std::vector<GpuStats>> gpus = read_gpu_stats(KILN_FAKE_NVML);
  ASSERT_TRUE(gpus.ok()) << gpus.status();
  ASSERT_EQ(gpus->size(), 2u);
  const GpuStats& first = (*gpus)[0];
  EXPECT_EQ(first.index, 0);
  EXPECT_EQ(first.name, "Test GPU 80GB");
  EXPECT_DOUBLE_EQ(first.utilization, 0.87);
  EXPECT_DOUBLE_EQ(first.memory_utilization, 0.41);
  EXPECT_EQ(first.memory_used_bytes, int64_t{2} << 30);
  EXPECT_EQ(first.memory_total_bytes, int64_t{80} << 30);
  EXPECT_DOUBLE_EQ(first.temperature_celsius, 45);
  EXPECT_DOUBLE_EQ(first.power_watts, 312.5);
  EXPECT_LT((*gpus)[1].power_watts, 0);  // the card has no power sensor
}

TEST(GpuStatsTest, MetricsNameEachGpuAndSkipWhatACardCannotRead) {
  MetricsRegistry registry;
  register_gpu_metrics(registry, KILN_FAKE_NVML);
  const std::string text = registry.expose();
  for (const char* line :
       {"# TYPE kiln_gpu_utilization_ratio gauge\n"
        "kiln_gpu_utilization_ratio{gpu=\"0\",name=\"Test GPU 80GB\"} 0.87\n",
        "kiln_gpu_utilization_ratio{gpu=\"1\",name=\"Test \\\"GPU\\\" 2\"} 0\n",
        "kiln_gpu_memory_used_bytes{gpu=\"0\",name=\"Test GPU 80GB\"} 2147483648\n",
        "kiln_gpu_memory_total_bytes{gpu=\"1\",name=\"Test \\\"GPU\\\" 2\"} 85899345920\n",
        "kiln_gpu_memory_utilization_ratio{gpu=\"0\",name=\"Test GPU 80GB\"} 0.41\n",
        "kiln_gpu_temperature_celsius{gpu=\"0\",name=\"Test GPU 80GB\"} 45\n",
        "# TYPE kiln_gpu_power_watts gauge\n"
        "kiln_gpu_power_watts{gpu=\"0\",name=\"Test GPU 80GB\"} 312.5\n"})
    EXPECT_NE(text.find(line), std::string::npos) << line << "\n" << text;
  EXPECT_EQ(text.find("kiln_gpu_power_watts{gpu=\"1\""), std::string::npos) << text;
}

}  // namespace
}  // namespace kiln::monitor
