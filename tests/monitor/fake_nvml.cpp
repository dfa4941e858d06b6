// A stand-in for the NVIDIA driver's libnvidia-ml.so.1, for machines without a GPU: two cards with
// fixed readings, the second without a power sensor. gpu_stats_test loads it through dlopen as
// Kiln loads the real one; the GPU machine's gpu-labelled tests read the real NVML.
#include <cstring>

extern "C" {

struct nvmlDevice_st {
  int index;
};
struct nvmlUtilization_t {
  unsigned int gpu;
  unsigned int memory;
};
struct nvmlMemory_t {
  unsigned long long total;
  unsigned long long free;
  unsigned long long used;
};

static nvmlDevice_st devices[2] = {{0}, {1}};
static int initialised = 0;
constexpr int kSuccess = 0, kUninitialized = 1, kInvalidArgument = 2, kNotSupported = 3;

int nvmlInit_v2() {
  initialised = 1;
  return kSuccess;
}
const char* nvmlErrorString(int code) {
  return code == kNotSupported ? "Not Supported" : "Unknown Error";
}
int nvmlDeviceGetCount_v2(unsigned int* count) {
  if (!initialised) return kUninitialized;
  *count = 2;
  return kSuccess;
}
int nvmlDeviceGetHandleByIndex_v2(unsigned int index, nvmlDevice_st** device) {
  if (index > 1) return kInvalidArgument;
  *device = &devices[index];
  return kSuccess;
}
int nvmlDeviceGetName(nvmlDevice_st* device, char* name, unsigned int length) {
  const char* names[2] = {"Test GPU 80GB", "Test \"GPU\" 2"};
  std::strncpy(name, names[device->index], length - 1);
  return kSuccess;
}
int nvmlDeviceGetUtilizationRates(nvmlDevice_st* device, nvmlUtilization_t* u) {
  u->gpu = device->index == 0 ? 87 : 0;
  u->memory = device->index == 0 ? 41 : 0;
  return kSuccess;
}
int nvmlDeviceGetMemoryInfo(nvmlDevice_st* device, nvmlMemory_t* m) {
  m->total = 85899345920ULL;  // 80 GiB
  m->used = device->index == 0 ? 2147483648ULL : 0;
  m->free = m->total - m->used;
  return kSuccess;
}
int nvmlDeviceGetTemperature(nvmlDevice_st*, int sensor, unsigned int* celsius) {
  if (sensor != 0) return kInvalidArgument;
  *celsius = 45;
  return kSuccess;
}
int nvmlDeviceGetPowerUsage(nvmlDevice_st* device, unsigned int* milliwatts) {
  if (device->index == 1) return kNotSupported;
  *milliwatts = 312500;
  return kSuccess;
}
}
