#pragma once

#include <torch/script.h>
#include <torch/types.h>

#include <string>

#include "kiln/core/expected.h"

namespace kiln::model {

/// The spellings `device:` (configs) and `--device` (train, tune, compress, eval, predict, serve)
/// take.
inline constexpr const char* kDeviceChoices = "auto, cpu, cuda or cuda:N";

/// Checks a device name's spelling without needing the device, so a config written for a GPU
/// machine validates anywhere: "auto", "cpu", "cuda", "cuda:N" (N a device index).
/// InvalidArgument naming `field` otherwise.
Status check_device_name(const std::string& name, const std::string& field);

/// The device a name means on this machine: auto is cuda:0 when LibTorch sees a CUDA device and
/// cpu otherwise; cuda is cuda:0. FailedPrecondition naming `field` when a CUDA device is asked
/// for and this LibTorch was built without CUDA (Debian's is) or the machine has no such device.
/// Thread-safe.
Expected<torch::Device> resolve_device(const std::string& name, const std::string& field);

/// CUDA devices LibTorch sees: 0 for a CPU-only LibTorch or a machine without a GPU.
int cuda_device_count();

/// "cpu" or "cuda:N", as Kiln prints and records a device.
std::string device_name(const torch::Device& device);

/// Moves a TorchScript module's parameters and buffers to `device` (in place: module handles
/// share their state). InvalidArgument naming `where` for a module with packed int8 operators on
/// a GPU (oneDNN's quantised kernels are CPU-only). Not thread-safe against users of `module`.
Status place_module(torch::jit::Module& module, const torch::Device& device,
                    const std::string& where);

/// The device a module's parameters (else buffers) are on; the CPU for a module with neither.
torch::Device module_device(const torch::jit::Module& module);

}  // namespace kiln::model
